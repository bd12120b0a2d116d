"""The training benchmark runs end to end (smoke size: random tiny Whisper + tones) and reports
the ratios and per-variant dev WER that docs/BENCHMARKS.md quotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train_throughput_smoke_reports_ratios_and_dev_wer(tmp_path):
    env = {**os.environ, "ASR_LORA_BENCH_RESULTS": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--tiny", "--steps", "2", "--clips", "8",
           "--batch-size", "4", "--dev-clips", "4", "--variants", "lora_short_context,full_short_context,reference",
           "--extra", "lora_3_steps=+recipe=sg_english train.encoder_context=batch train.max_steps=3",
           "--name", "smoke"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "smoke.json").read_text())
    rows = {r["variant"]: r for r in out["results"]}
    assert set(rows) == {"lora_short_context", "full_short_context", "reference", "lora_3_steps"}
    assert rows["lora_3_steps"]["steps"] == 3 and rows["lora_short_context"]["steps"] == 2
    assert rows["lora_short_context"]["encoder_context"] == "batch"
    assert all(r["dev_n"] == 4 and r["dev_wer"] >= 0 for r in rows.values())
    assert rows["lora_short_context"]["params"]["trainable"] == rows["reference"]["params"]["trainable"]
    for key in ("lora_short_context/reference throughput (loop)", "reference/lora_3_steps training time (e2e)",
                "lora_short_context/full_short_context peak memory"):
        assert out["ratios"][key] > 0, key
    assert "| dev WER |" in proc.stdout
