"""bench/timestamps.py: recordings put each clip where the true starts say, and a start's error is
the distance to the nearest predicted segment start; the smoke run writes its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import timestamps  # noqa: E402

SR = 16000


def test_recordings_place_each_clip_at_its_true_start():
    clips = [{"text": f"clip {i}", "audio": np.full(int(SR * (1 + i % 3)), 0.1 * (i + 1), np.float32),
              "duration": 1.0 + i % 3} for i in range(12)]
    recs = timestamps.build_recordings(clips, n_rec=2, min_seconds=8.0, seed=0)
    assert len(recs) == 2
    used = 0
    for rec in recs:
        assert len(rec["audio"]) / SR >= 8.0
        for k, start in enumerate(rec["starts"]):
            c = clips[used + k]
            i0 = int(round(start * SR))
            seg = rec["audio"][i0 : i0 + len(c["audio"])]
            assert np.allclose(seg, c["audio"]), (used + k, start)
            assert rec["audio"][i0 - 1] == 0.0  # a pause (or the lead-in) before every clip
        used += len(rec["starts"])
        assert rec["text"].split()[1] == clips[used - len(rec["starts"])]["text"].split()[1]


def test_start_error_is_distance_to_nearest_segment_start():
    segs = [{"start": 0.4}, {"start": 3.0}, {"start": 7.9}]
    assert timestamps.start_errors([0.5, 3.6, 8.0], segs) == pytest.approx([0.1, 0.6, 0.1])
    assert timestamps.start_errors([1.0], []) == [float("inf")]


def test_smoke_run_reports_both_systems(tmp_path):
    env = {**os.environ, "ASR_LORA_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "timestamps.py"), "--tiny", "--recordings", "1"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {r["system"]: r for r in json.loads((tmp_path / "timestamps_tiny.json").read_text())["rows"]}
    assert set(rows) == {"base", "adapted"} and all(r["clip starts"] > 0 for r in rows.values())
