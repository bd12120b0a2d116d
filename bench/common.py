"""Shared helpers for the benchmark scripts: clips, tiny model, memory, tables, result files.

Not a package module: every script does `sys.path.insert(0, <bench dir>)` and imports this.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = Path(os.environ.get("ASR_LORA_BENCH_RESULTS", BENCH / "results"))  # tests point it at a tmp dir
SR = 16000

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("WANDB_MODE", "disabled")

SENTENCES = ["the kopi here very nice lah", "take the MRT to Tampines", "the hawker centre is very crowded",
             "can or not", "the void deck is quiet today", "chope the table first before you order"]


# ---------------------------------------------------------------- data


def corpus_clips(n: int, split: str = "train", subset: str = "main", seed: int = 0) -> list[dict]:
    """n clips of the embedded sg_english corpus (built on first use), spread over voices, as
    {id, text, audio_path, duration}; deterministic for a seed."""
    from asr_lora.data.synthetic.corpus import build_corpus
    from asr_lora.data.readers.manifest import read_jsonl
    from asr_lora.data.records import Ledger

    manifest = build_corpus(progress=False)
    recs = [r for r in read_jsonl(manifest, Ledger()) if r.split == split and r.subset == subset]
    if not recs:
        raise SystemExit(f"{manifest}: no {split}/{subset} clips")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(recs), size=min(n, len(recs)), replace=False))
    return [{"id": recs[i].id, "text": recs[i].text, "audio_path": recs[i].audio_path, "voice": recs[i].voice,
             "part": recs[i].part} for i in pick]


def tiny_en_dev_features(n: int):
    """(model, processor, log-mel of n dev clips): bundled tiny.en in fp32, eval mode, 30 s input."""
    import torch

    from asr_lora.data.features import log_mel
    from asr_lora.model.whisper import load_whisper

    model, processor = load_whisper("bundled:tiny.en", dtype=torch.float32)
    clips = load_clips(corpus_clips(n, "dev"))
    return model.eval(), processor, log_mel(processor, [np.asarray(c["audio"], dtype=np.float32) for c in clips])


def tone_clips(n: int, out_dir: Path, seed: int = 0) -> list[dict]:
    """Synthetic 1-3 s tones in noise written as WAVs (for --tiny smoke runs)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        sec = float(rng.uniform(1.0, 3.0))
        t = np.arange(int(sec * SR)) / SR
        x = 0.2 * np.sin(2 * np.pi * (180 + 35 * i) * t) + 0.01 * rng.standard_normal(len(t))
        path = out_dir / f"tone{i}.wav"
        sf.write(path, x.astype(np.float32), SR)
        clips.append({"id": f"tone{i}", "text": SENTENCES[i % len(SENTENCES)], "audio_path": str(path)})
    return clips


def load_clips(clips: list[dict]) -> list[dict]:
    """Adds the decoded 16 kHz float32 `audio` and exact `duration` to each clip."""
    from asr_lora.data.audio import load_audio

    out = []
    for c in clips:
        x = load_audio(c["audio_path"], SR)
        out.append({**c, "audio": x, "duration": len(x) / SR})
    return out


def make_tiny_whisper(out_dir: Path, seed: int = 0, d_model: int = 32, layers: int = 2, heads: int = 2) -> Path:
    """Random-init Whisper with the real tiny.en tokenizer: the tests' builder (tests/conftest.py),
    reused as is so benchmarks and tests measure the same model; an existing one is kept."""
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_whisper as build

    return build(out_dir, seed=seed, d_model=d_model, layers=layers, heads=heads)


# ---------------------------------------------------------------- measurement


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def rss_mb() -> float:
    return _proc_status("VmRSS")


def _proc_status(key: str) -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    return _proc_status("VmHWM")


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.seconds = time.perf_counter() - self.t0
        return False


def machine_info() -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device_name(), "platform": platform.platform()}
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------- output


def table(rows: list[dict], columns: list[str]) -> str:
    """Markdown table (also readable in a terminal)."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def print_results(rows: list[dict], columns: list[str], ratios: dict[str, Any]) -> None:
    """The variants' table, then the ratios between them (the numbers to quote)."""
    print(table(rows, columns))
    print("\nratios (same invocation):")
    for k, v in ratios.items():
        print(f"  {k}: {v}")


def write_result(name: str, payload: dict) -> Path:
    from asr_lora.core.io import write_json

    path = RESULTS / f"{name}.json"
    write_json(path, payload, default=str)
    return path


def quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:
        pass


# ---------------------------------------------------------------- adapters and merged models


def random_adapter(base: str, out_dir: Path, seed: int = 0, r: int = 8, alpha: int = 16,
                   scope: tuple[str, ...] = ("decoder_self", "decoder_cross"), b_std: float = 0.01,
                   use_dora: bool = False) -> Path:
    """A peft LoRA adapter on `base` (q/v, on the decoder by default) with small random B, so
    it changes the weights (W' != W0) without wrecking the transcripts; saved as safetensors."""
    from types import SimpleNamespace

    import torch

    from asr_lora.model.lora import add_lora
    from asr_lora.model.whisper import load_whisper

    if (out_dir / "adapter_model.safetensors").is_file():
        return out_dir
    torch.manual_seed(seed)
    model, _ = load_whisper(base)
    cfg = SimpleNamespace(r=r, alpha=alpha, dropout=0.0, target_modules=["q_proj", "v_proj"], scope=list(scope),
                          bias="none", use_rslora=False, use_dora=use_dora)
    peft_model = add_lora(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * b_std)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def merged_hf_dir(base: str, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge an adapter into the fp32 base with asr_lora.export and write a plain transformers dir."""
    from asr_lora.export.formats import export_hf
    from asr_lora.export.merge import load_adapter_model, merge_loaded
    from asr_lora.model.whisper import resolve_model_dir

    if (out_dir / "model.safetensors").is_file():
        return out_dir
    peft_model, processor = load_adapter_model(base, adapter_dir)
    merged = merge_loaded(peft_model)
    return export_hf(merged, processor, resolve_model_dir(base), out_dir)


def wer(refs: list[str], hyps: list[str]) -> float:
    from asr_lora.evaluation.metrics import normalized_wer

    return normalized_wer(refs, hyps)
