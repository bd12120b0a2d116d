"""Data path at scale: a precomputed log-mel feature cache vs log-mel computed on the fly in
DataLoader workers.

    .venv/bin/python bench/scale_data_path.py                 # 128 utterances, small and quick
    .venv/bin/python bench/scale_data_path.py --n 2048 --workers 0 2 4

The embedded sg_english corpus clips (a few dozen distinct ones, replicated to --n) go through:

  cached     decode + log-mel every clip once into an (N, 80, 3000) float32 memmap on disk, then
             train-style batches read rows back (what a feature cache costs: build time, disk,
             page cache);
  on_the_fly DataLoader workers decode the WAV and run WhisperFeatureExtractor per item (what
             the training collator does; nothing stored).

Reports utterances/s, bytes per utterance, cache size extrapolated to IMDA NSC (~2 M utterances),
and peak RSS (main process + DataLoader workers, sampled). Writes bench/results/scale_data_path.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

N_MELS, FRAMES, SR = 80, 3000, 16000
NSC_UTTERANCES = 2_000_000


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


def _extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=N_MELS)


def log_mel_one(fe, audio: np.ndarray) -> np.ndarray:
    return fe(audio, sampling_rate=SR, return_tensors="np").input_features[0].astype(np.float32)


class OnTheFly:
    """Dataset over audio paths: decode + log-mel in __getitem__ (so in the DataLoader worker)."""

    def __init__(self, paths: list[str]):
        self.paths, self.fe = paths, None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from asr_lora.audio import load_audio

        if self.fe is None:
            self.fe = _extractor()
        return log_mel_one(self.fe, load_audio(self.paths[i], SR))


class Cached:
    """Dataset over a (N, 80, 3000) float32 memmap written once."""

    def __init__(self, path: Path, n: int):
        self.path, self.n, self.arr = path, n, None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.arr is None:
            self.arr = np.load(self.path, mmap_mode="r")
        return np.array(self.arr[i])


def _collate(items):
    import torch

    return torch.from_numpy(np.stack(items))


def iterate(ds, batch: int, workers: int) -> dict:
    import torch

    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=_collate,
                                     generator=torch.Generator().manual_seed(0),
                                     persistent_workers=False, prefetch_factor=2 if workers else None)
    n = 0
    with RssSampler() as rss:
        t0 = time.perf_counter()
        for x in dl:
            assert x.shape[1:] == (N_MELS, FRAMES)
            n += len(x)
        dt = time.perf_counter() - t0
    return {"utterances": n, "seconds": round(dt, 3), "utt_per_s": round(n / dt, 1),
            "peak_rss_mb": round(rss.peak / 2**20, 1)}


def build_cache(paths: list[str], path: Path) -> dict:
    from asr_lora.audio import load_audio

    fe = _extractor()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(paths), N_MELS, FRAMES))
        decoded: dict[str, np.ndarray] = {}
        for i, p in enumerate(paths):
            # replicated clips are recomputed on purpose: the cost per utterance is what scales
            arr[i] = log_mel_one(fe, decoded.setdefault(p, load_audio(p, SR)))
        arr.flush()
        del arr
        dt = time.perf_counter() - t0
    size = path.stat().st_size
    return {"utterances": len(paths), "seconds": round(dt, 3), "utt_per_s": round(len(paths) / dt, 1),
            "peak_rss_mb": round(rss.peak / 2**20, 1), "bytes": size, "bytes_per_utt": size // len(paths)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128, help="utterances (distinct clips replicated to N)")
    ap.add_argument("--distinct", type=int, default=32, help="distinct corpus clips")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--tmp", default=None, help="where the feature cache memmap goes (default: a temp dir)")
    args = ap.parse_args(argv)
    common.quiet()

    clips = common.corpus_clips(args.distinct)
    paths = [clips[i % len(clips)]["audio_path"] for i in range(args.n)]
    tmp = Path(tempfile.mkdtemp(prefix="scale_data_path_", dir=args.tmp))
    rows, runs = [], {}
    try:
        build = build_cache(paths, tmp / "features.npy")
        runs["cache_build"] = build
        rows.append({"path": "cached: build (decode + log-mel, write)", "workers": 0, **build})
        for w in args.workers:
            r = iterate(Cached(tmp / "features.npy", args.n), args.batch, w)
            runs[f"cached_read_w{w}"] = r
            rows.append({"path": "cached: read batches", "workers": w, **r})
        for w in args.workers:
            r = iterate(OnTheFly(paths), args.batch, w)
            runs[f"on_the_fly_w{w}"] = r
            rows.append({"path": "on the fly: decode + log-mel in workers", "workers": w, **r})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_utt = build["bytes_per_utt"]
    payload = {
        "machine": common.machine_info(), "args": vars(args), "runs": runs,
        "feature_bytes_per_utterance": per_utt,
        "feature_cache_for_nsc_tb": round(per_utt * NSC_UTTERANCES / 1e12, 2),
        "note": "log-mel float32 (80 x 3000) per utterance, Whisper pads every clip to 30 s",
    }
    cols = ["path", "workers", "utterances", "seconds", "utt_per_s", "peak_rss_mb"]
    print(common.table(rows, cols))
    print(f"\nfeature cache: {per_utt / 1e6:.2f} MB per utterance -> {payload['feature_cache_for_nsc_tb']} TB "
          f"for {NSC_UTTERANCES:,} utterances (IMDA NSC Parts 1-3)")
    out = common.write_result("scale_data_path", payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
