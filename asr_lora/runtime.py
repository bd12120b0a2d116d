"""What every entry point does the same way: run directory, logging, seeds, data, encoder cache."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("asr_lora")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed() -> None:
    """Under torchrun, join the process group before data preparation so ranks can wait for rank 0;
    the Trainer (Accelerate) reuses the group it finds."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def run_dir_of(cfg) -> Path:
    """An explicit `run_dir=` (resume, export, evaluate of an old run) or Hydra's fresh one."""
    if cfg.get("run_dir"):
        d = Path(cfg.run_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        d = Path(HydraConfig.get().runtime.output_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def setup_logging(run_dir: Path | None = None) -> None:
    from rich.logging import RichHandler

    handlers: list[logging.Handler] = [RichHandler(show_path=False, markup=False)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "asr_lora.log"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers, force=True)
    import transformers

    # Whisper's generate warns on every call about settings we pass on purpose.
    transformers.logging.set_verbosity_error()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(cfg, tokenizer, run_dir: Path | None, progress: bool = True, skip_dir: Path | None = None):
    """Prepared splits (cached) and the data report, which is also written into the run dir.

    In memory (`data.prepare_data`) for corpora that fit `data.memory_budget_gb`; otherwise the
    train split streams from sharded manifests (`streaming`) and is a `datasets.IterableDataset`."""
    from .data import iter_records, prepare_data
    from .model import cache_root
    from .records import Ledger
    from .streaming import index_corpus, load_split, stream_train, use_streaming

    # Rank 0 prepares (and caches) first; the other ranks then read its cache instead of racing it.
    with _main_process_first():
        estimate = None
        if str(cfg.data.streaming).lower() == "auto":
            estimate = iter_records(cfg.data, Ledger(), progress)[0]
        if use_streaming(cfg.data, estimate):
            root, report = index_corpus(cfg.data, tokenizer, Path(cfg.paths.cache_dir or cache_root()), progress)
            skip_dir = skip_dir or (run_dir / "load_skips" if run_dir is not None else None)
            splits = {"train": stream_train(root, cfg.data, cfg.train.per_device_train_batch_size, cfg.seed, skip_dir)}
            for s in {cfg.data.dev_split, cfg.data.test_split, cfg.eval.split, cfg.data.get("split")} - {None, "train"}:
                if (root / s).is_dir():
                    splits[s] = load_split(root, s, cfg.data, skip_dir)
        else:
            splits, report = prepare_data(cfg.data, tokenizer, cfg.paths.cache_dir, progress)
    if run_dir is not None:
        path = run_dir / "data_report.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, path)
    counts = report["counts"]
    log.info("data: %d rows seen, %d kept, %d skipped %s; per split %s", counts["seen"], counts["kept"],
             counts["skipped"], counts["skipped_by_reason"], report["kept_per_split"])
    return splits, report


class _main_process_first:
    def __enter__(self):
        self._barrier(not is_main_process())

    def __exit__(self, *exc):
        self._barrier(is_main_process())
        return False

    @staticmethod
    def _barrier(wait: bool) -> None:
        if wait and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def cache_enabled(cfg) -> bool:
    setting = str(cfg.train.cache_encoder_outputs).lower()
    if setting in ("false", "0", "no"):
        return False
    encoder_frozen = cfg.train.mode == "lora" and "encoder" not in cfg.lora.scope
    if setting in ("true", "1", "yes"):
        if not encoder_frozen or cfg.augment.enabled:
            raise ValueError("train.cache_encoder_outputs=true needs a frozen encoder (no 'encoder' in lora.scope, "
                             "train.mode=lora) and augment.enabled=false")
        return True
    return encoder_frozen and not cfg.augment.enabled


def encoder_batch_size(cfg, model) -> int:
    # On CPU the 1500-position attention is memory-bound: one clip at a time is fastest (measured
    # 0.21 s/clip at batch 1 vs 0.27 at 16 on 2 cores); GPUs want big batches.
    return cfg.eval.batch_size if next(model.parameters()).is_cuda else 1


def _encoder_cache_key(cfg, model, ds) -> str:
    import hashlib

    from .model import resolve_model_dir

    src = Path(resolve_model_dir(cfg.model.name_or_path))
    weights = src / "model.safetensors"
    ident = [str(src.resolve()), weights.stat().st_mtime_ns if weights.is_file() else None, cfg.model.dtype,
             ds._fingerprint, len(ds)]
    return hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:20]


def build_encoder_cache(cfg, model, processor, splits: dict):
    if not cache_enabled(cfg):
        return None
    from .features import EncoderCache

    n = sum(len(ds) for ds in splits.values() if ds is not None)
    gb = n * model.config.max_source_positions * model.config.d_model * 4 / 2**30
    if str(cfg.train.cache_encoder_outputs).lower() == "auto" and gb > cfg.train.encoder_cache_budget_gb:
        log.info("encoder cache would need %.1f GB > %.1f GB budget: encoder runs every step", gb,
                 cfg.train.encoder_cache_budget_gb)
        return None
    from .model import cache_root

    root = Path(cfg.paths.cache_dir) if cfg.paths.cache_dir else cache_root()
    cache = EncoderCache(model, processor, batch_size=encoder_batch_size(cfg, model))
    for name, ds in splits.items():
        if ds is None or not len(ds):
            continue
        audios = lambda ds=ds: [np.asarray(a, dtype=np.float32) for a in ds["audio"]]  # noqa: E731
        label = f"encoding {name} ({len(ds)} clips, frozen encoder)"
        if cfg.train.encoder_cache_on_disk:
            path = root / "encoder" / f"{_encoder_cache_key(cfg, model, ds)}.safetensors"
            cache.load_or_fill(path, ds["id"], audios, True, label)
        else:
            cache.fill(ds["id"], audios(), True, label)
    log.info("encoder cache: %d clips, %.0f MB", len(cache.store), cache.nbytes() / 2**20)
    return cache


def eval_info(cfg, data_report: dict, adapter: str | None, split: str) -> dict:
    corpus = data_report.get("corpus") or {}
    synthetic = bool(cfg.data.synthetic or corpus.get("synthetic"))
    description = (
        "SYNTHETIC speech: Singapore English sentences written for this project, rendered offline by TTS "
        "voices (espeak-ng, flite, festival, piper); real recorded speech only in the control set "
        "where pocketsphinx-testdata is installed." if synthetic else f"{cfg.data.source} corpus at {cfg.data.path}"
    )
    counts = data_report.get("counts", {})
    return {
        "synthetic": synthetic,
        "corpus": {"name": cfg.data.name, "description": description},
        "model": {"base": cfg.model.name_or_path, "adapter": adapter},
        "split": split,
        "data": {"kept": {s: sum(v.values()) for s, v in data_report.get("kept_per_split", {}).items()},
                 "dropped": counts.get("skipped_by_reason", {}),
                 "hours": data_report.get("hours_per_split", {})},
    }


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"asr-lora: {summary.get('recipe')} ({summary.get('run_dir')})")
    t.add_column("")
    t.add_column("value", justify="right")
    p = summary.get("params", {})
    t.add_row("trainable params", f"{p.get('trainable', 0):,} / {p.get('total', 0):,}")
    saved = "adapter size" if summary.get("lora") else "saved model size"
    t.add_row(saved, f"{summary.get('adapter_bytes', 0) / 1e6:.2f} MB")
    tr = summary.get("train", {})
    t.add_row("train steps / time", f"{tr.get('steps')} / {tr.get('seconds')} s")
    ev = summary.get("eval")
    if ev:
        for system in ("base", "adapted"):
            h = ev[system]
            ci = f"[{100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"
            t.add_row(f"{system} WER (test, norm)", f"{100 * h['wer']:.2f}% {ci}")
            if "control_wer" in h:
                t.add_row(f"{system} control WER", f"{100 * h['control_wer']:.2f}%")
        t.add_row("relative WER reduction", f"{100 * ev['relative_wer_reduction']:.1f}%")
        if ev.get("forgetting"):
            f = ev["forgetting"]
            verdict = "PASS" if f["passed"] else "FAIL"
            t.add_row("forgetting gate", f"{verdict} ({100 * f['relative_degradation']:+.1f}%)")
    if summary.get("synthetic_data"):
        t.add_row("data", "SYNTHETIC (TTS) corpus")
    t.add_row("wall time", f"{summary.get('wall_seconds')} s")
    Console().print(t)
