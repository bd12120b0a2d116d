"""Data path at scale: the in-memory path (decode every clip into a `datasets` table, then the
log-mel feature cache where it fits the budget) vs the streaming path (sharded manifests, clips
decoded and featurised in DataLoader workers), both exactly as `python -m asr_lora.train` runs them.

    .venv/bin/python bench/scale_data_path.py                            # 1k/4k both paths, 32k streaming
    .venv/bin/python bench/scale_data_path.py --sizes 500 2000 --in-memory-max 2000 --batches 10

The embedded sg_english train clips (1594) are replicated, with fresh ids, to each size and written
as sharded JSONL. Each (path, size, workers) point runs in a fresh subprocess so that peak RSS
(process + DataLoader workers, sampled every 50 ms) belongs to that point alone. Reports the
preparation time, the bytes it leaves on disk, the rate at which training batches (log-mel + labels,
batch 16) come out, and peak RSS. Writes bench/results/scale_data_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NSC_UTTERANCES = 2_000_000
SHARD_ROWS = 500


class RssSampler:
    """Peak RSS of this process plus its children (DataLoader workers), sampled every 50 ms."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def _total(self) -> int:
        total = self.proc.memory_info().rss
        for c in self.proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        return total

    def __enter__(self):
        self.peak = self._total()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._total())

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._total())
        return False


def write_manifest(out: Path, n: int) -> Path:
    """n train rows cycling over the embedded corpus's train clips, sharded SHARD_ROWS per file."""
    from asr_lora.data.synthetic.corpus import build_corpus
    from asr_lora.data.readers.manifest import read_jsonl
    from asr_lora.data.records import Ledger

    base = [r for r in read_jsonl(build_corpus(progress=False), Ledger()) if r.split == "train"]
    out.mkdir(parents=True)
    for k in range(0, n, SHARD_ROWS):
        with open(out / f"train-{k // SHARD_ROWS:05d}.jsonl", "w") as f:
            for i in range(k, min(n, k + SHARD_ROWS)):
                r = base[i % len(base)]
                f.write(json.dumps({"id": f"{r.id}#{i}", "audio_filepath": r.audio_path, "text": r.text,
                                    "duration": r.duration, "speaker": r.speaker, "split": "train"}) + "\n")
    return out


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())


def one(args) -> dict:
    """One measurement point (runs in its own process)."""
    import torch
    from omegaconf import OmegaConf
    from transformers import WhisperProcessor

    from asr_lora.config import DataConfig
    from asr_lora.data.features import SpeechCollator, add_features, use_feature_cache
    from asr_lora.data.splits import prepare_data
    from asr_lora.data.streaming import index_corpus, stream_train
    from asr_lora.model.whisper import resolve_model_dir

    torch.manual_seed(0)
    processor = WhisperProcessor.from_pretrained(resolve_model_dir("bundled:tiny.en"))
    dcfg = OmegaConf.structured(DataConfig(name=f"bench{args.n}", source="jsonl", path=args.manifest,
                                           streaming=str(args.one == "streaming").lower(), shard_rows=SHARD_ROWS,
                                           feature_cache_budget_gb=args.feature_budget_gb))
    cache = Path(args.cache)
    collator = SpeechCollator(processor, 50257)
    workers = args.workers[0]
    out: dict = {"path": args.one, "n": args.n, "workers": workers}
    with RssSampler() as prep_rss:
        t0 = time.perf_counter()
        if args.one == "streaming":
            root, _ = index_corpus(dcfg, processor.tokenizer, cache, progress=False)
            ds = stream_train(root, dcfg, args.batch, 0, None)
            kw = {}
        else:
            splits, _ = prepare_data(dcfg, processor.tokenizer, cache, progress=False)
            ds = splits["train"]
            out["feature_cache"] = use_feature_cache(dcfg, len(ds))
            if out["feature_cache"]:
                ds = add_features(ds, processor)
            ds = ds.select_columns(["id", "labels", "input_features" if out["feature_cache"] else "audio"])
            kw = {"shuffle": True, "generator": torch.Generator().manual_seed(0)}
        out["prepare_s"] = round(time.perf_counter() - t0, 1)
    out["prepare_peak_rss_mb"] = round(prep_rss.peak / 2**20)
    out["disk_mb"] = round(_dir_bytes(cache) / 2**20, 1)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=workers, collate_fn=collator,
                                     prefetch_factor=2 if workers else None, **kw)
    n = 0
    with RssSampler() as rss:
        t0 = time.perf_counter()
        for b, batch in enumerate(dl):
            assert batch["input_features"].shape[1:] == (80, 3000)
            n += len(batch["labels"])
            if b + 1 == args.batches:
                break
        dt = time.perf_counter() - t0
    out |= {"batches": b + 1, "utt_per_s": round(n / dt, 1), "train_peak_rss_mb": round(rss.peak / 2**20)}
    return out


def label_padding(batch: int, window_batches: int = 50, seed: int = 0) -> dict:
    """What length-aware batching saves: decoder positions per batch (batch x longest label)
    with random batches vs `LengthBuckets` windows, over the embedded corpus's train labels.
    Decoder compute (self + cross attention, FFN, logits) scales with these positions; the encoder,
    always 30 s, does not, so this is the saving on the decoder side only."""
    import numpy as np
    from transformers import WhisperTokenizer

    from asr_lora.data.synthetic.corpus import build_corpus
    from asr_lora.data.readers.manifest import read_jsonl
    from asr_lora.data.records import Ledger
    from asr_lora.data.splits import training_text
    from asr_lora.data.streaming import LengthBuckets
    from asr_lora.model.whisper import resolve_model_dir

    tok = WhisperTokenizer.from_pretrained(resolve_model_dir("bundled:tiny.en"))
    recs = [r for r in read_jsonl(build_corpus(progress=False), Ledger()) if r.split == "train"]
    labels = [tok(training_text(r.text)).input_ids for r in recs]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    ids = [recs[i].id for i in order]
    shuffled = [labels[i] for i in order]

    def positions(seq):
        return sum(len(seq[i : i + batch]) * max(map(len, seq[i : i + batch])) for i in range(0, len(seq), batch))

    window = batch * window_batches
    bucketed, buckets = [], LengthBuckets(batch, seed)
    for k in range(0, len(shuffled), window):
        bucketed += buckets({"id": ids[k : k + window], "labels": shuffled[k : k + window]})["labels"]
    real = sum(map(len, labels))
    rand, buck = positions(shuffled), positions(bucketed)
    return {"clips": len(labels), "batch": batch, "window_batches": window_batches, "label_tokens": real,
            "decoder_positions_random": rand, "decoder_positions_bucketed": buck,
            "padding_random": round(1 - real / rand, 3), "padding_bucketed": round(1 - real / buck, 3),
            "decoder_positions_saved": round(1 - buck / rand, 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 32000])
    ap.add_argument("--in-memory-max", type=int, default=4000, help="largest size the in-memory path is run at")
    ap.add_argument("--batches", type=int, default=40, help="training batches drawn per point")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--feature-budget-gb", type=float, default=8.0)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--one", choices=["in_memory", "streaming"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    common.quiet()
    if args.one:
        print("RESULT " + json.dumps(one(args)))
        return {}

    tmp = Path(tempfile.mkdtemp(prefix="scale_data_path_", dir=args.tmp))
    points = []
    try:
        for n in args.sizes:
            manifest = write_manifest(tmp / f"manifest{n}", n)
            for path in ("in_memory", "streaming"):
                if path == "in_memory" and n > args.in_memory_max:
                    continue
                for w in args.workers:
                    cache = tmp / f"cache_{path}_{n}_{w}"
                    cmd = [sys.executable, __file__, "--one", path, "--n", str(n), "--manifest", str(manifest),
                           "--cache", str(cache), "--workers", str(w), "--batches", str(args.batches),
                           "--batch", str(args.batch), "--feature-budget-gb", str(args.feature_budget_gb)]
                    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"ASR_LORA_CACHE": str(
                        Path(os.environ.get("ASR_LORA_CACHE", Path.home() / ".cache/asr_lora")))})
                    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
                    if res.returncode or not line:
                        raise SystemExit(f"{path} n={n} w={w} failed:\n{res.stderr[-3000:]}")
                    points.append(json.loads(line[0][7:]))
                    print(points[-1], flush=True)
                    shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    feature_mb = 80 * 3000 * 4 / 2**20
    padding = label_padding(args.batch)
    payload = {
        "length_buckets": padding,
        "machine": common.machine_info(), "args": {k: v for k, v in vars(args).items() if v is not None},
        "points": points,
        "feature_cache_bytes_per_utterance": 80 * 3000 * 4,
        "feature_cache_for_nsc_tb": round(80 * 3000 * 4 * NSC_UTTERANCES / 1e12, 2),
        "note": "prepare = in_memory: decode all + datasets table + log-mel cache (if within budget); "
                "streaming: header-only index to sharded JSONL. utt_per_s = training batches out of the DataLoader.",
    }
    cols = ["path", "n", "workers", "feature_cache", "prepare_s", "disk_mb", "prepare_peak_rss_mb", "utt_per_s",
            "train_peak_rss_mb"]
    print(common.table(points, cols))
    print(f"\nlog-mel cache: {feature_mb:.2f} MB per utterance -> {payload['feature_cache_for_nsc_tb']} TB for "
          f"{NSC_UTTERANCES:,} utterances (IMDA NSC Parts 1-3)")
    print(f"length-aware batching (windows of {padding['window_batches']} batches): label padding "
          f"{100 * padding['padding_random']:.0f}% -> {100 * padding['padding_bucketed']:.0f}%, decoder positions "
          f"-{100 * padding['decoder_positions_saved']:.0f}%")
    out = common.write_result("scale_data_path", payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
