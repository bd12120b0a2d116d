"""Segment timestamps after adaptation: does LoRA training on `<|notimestamps|>` targets hurt them?

    .venv/bin/python bench/timestamps.py --adapter outputs/sg_english/<run>/adapter
    .venv/bin/python bench/timestamps.py --tiny            # random tiny Whisper + random adapter (smoke)

Long recordings are built by joining test-split clips of the embedded corpus (unseen-engine and
training-engine voices alike) with known pauses, so every clip's true start is known. Each
recording (> 30 s, so transformers' long-form algorithm runs and emits segments) is decoded by
the serving engine (`asr_lora.inference.engine.Engine`, the path `/v1/audio/transcriptions` uses)
as `base` and as the adapter. For every true clip start, the error is the distance to the nearest
predicted segment start. Reported per system: mean / median / p90 of that error, the share of
clip starts with a segment start within 0.5 s, segments per clip, and the long-form WER.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def build_recordings(clips: list[dict], n_rec: int, min_seconds: float, seed: int) -> list[dict]:
    """Recordings of consecutive clips with 0.4-1.5 s pauses (0.5 s lead-in), each >= min_seconds."""
    rng = np.random.default_rng(seed)
    recs, i = [], 0
    while len(recs) < n_rec and i < len(clips):
        # Positions are counted in samples, so the true starts are exact (no float drift).
        lead = np.zeros(int(0.5 * common.SR), np.float32)
        pieces, starts, texts, n = [lead], [], [], len(lead)
        while n < min_seconds * common.SR and i < len(clips):
            c = clips[i]
            i += 1
            starts.append(n / common.SR)
            texts.append(c["text"])
            gap = np.zeros(int(rng.uniform(0.4, 1.5) * common.SR), np.float32)
            pieces += [c["audio"], gap]
            n += len(c["audio"]) + len(gap)
        if n >= min_seconds * common.SR:
            recs.append({"audio": np.concatenate(pieces), "starts": starts, "text": " ".join(texts)})
    return recs


def start_errors(true_starts: list[float], segments: list[dict]) -> list[float]:
    pred = np.array([s["start"] for s in segments]) if segments else np.array([np.inf])
    return [float(np.min(np.abs(pred - t))) for t in true_starts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", type=Path, help="adapter directory (a training run's adapter/)")
    ap.add_argument("--model", default=None, help="base model (default: the one the adapter names)")
    ap.add_argument("--recordings", type=int, default=12)
    ap.add_argument("--min-seconds", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="random tiny Whisper and adapter, tone clips (smoke)")
    args = ap.parse_args()
    common.quiet()
    from asr_lora.inference.engine import Engine, Job, Options

    tmp = Path(tempfile.mkdtemp(prefix="bench_ts_"))
    if args.tiny:
        base = str(common.make_tiny_whisper(tmp / "tiny"))
        adapter = common.random_adapter(base, tmp / "adapter")
        clips = common.load_clips(common.tone_clips(24, tmp / "tones", args.seed))
        args.min_seconds = min(args.min_seconds, 35.0)
    else:
        if args.adapter is None:
            raise SystemExit("--adapter DIR is required (or --tiny)")
        base, adapter = args.model, args.adapter
        n = int(args.recordings * args.min_seconds / 2.5) + 8
        clips = common.load_clips(common.corpus_clips(n, split="test", subset="main", seed=args.seed))
    recordings = build_recordings(clips, args.recordings, args.min_seconds, args.seed)
    if not recordings:
        raise SystemExit("not enough clips for one recording")
    engine = Engine(base, {"adapted": adapter}, mode="switch")
    rows, per_system = [], {}
    for system in ("base", "adapted"):
        model = "base" if system == "base" else "adapted"
        errors, n_segments, refs, hyps = [], 0, [], []
        for rec in recordings:
            out = engine.decode([Job(rec["audio"], model, Options(timestamps=True))])[0]
            errors += start_errors(rec["starts"], out["segments"])
            n_segments += len(out["segments"])
            refs.append(rec["text"])
            hyps.append(out["text"])
        e = np.array(errors)
        per_system[system] = {"errors": errors, "segments": n_segments}
        rows.append({"system": system, "recordings": len(recordings), "clip starts": len(e),
                     "mean |err| s": round(float(e.mean()), 3), "median s": round(float(np.median(e)), 3),
                     "p90 s": round(float(np.percentile(e, 90)), 3),
                     "within 0.5 s": f"{100 * float((e <= 0.5).mean()):.1f}%",
                     "segments / clip": round(n_segments / len(e), 2),
                     "long-form WER": f"{100 * common.wer(refs, hyps):.2f}%"})
    cols = list(rows[0])
    print(common.table(rows, cols))
    path = common.write_result("timestamps" + ("_tiny" if args.tiny else ""), {
        "machine": common.machine_info(), "adapter": str(adapter), "base": engine.base_name, "rows": rows,
        "recording_seconds": [round(len(r["audio"]) / common.SR, 2) for r in recordings], "per_system": per_system})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
