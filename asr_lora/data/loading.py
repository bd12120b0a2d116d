"""Prepared splits for an entry point: in memory or streamed, prepared on rank 0 first, with the
data report written into the run directory."""

from __future__ import annotations

import logging
from pathlib import Path

from asr_lora.core.io import write_json
from asr_lora.core.runtime import _main_process_first

log = logging.getLogger("asr_lora")



def load_data(cfg, tokenizer, run_dir: Path | None, progress: bool = True, skip_dir: Path | None = None):
    """Prepared splits (cached) and the data report, which is also written into the run dir.

    In memory (`data.prepare_data`) for corpora that fit `data.memory_budget_gb`; otherwise the
    train split streams from sharded manifests (`streaming`) and is a `datasets.IterableDataset`."""
    from asr_lora.core.paths import cache_root
    from asr_lora.data.records import Ledger
    from asr_lora.data.splits import iter_records, prepare_data
    from asr_lora.data.streaming import index_corpus, load_split, stream_train, use_streaming

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
        write_json(path, report)
    counts = report["counts"]
    log.info("data: %d rows seen, %d kept, %d skipped %s; per split %s", counts["seen"], counts["kept"],
             counts["skipped"], counts["skipped_by_reason"], report["kept_per_split"])
    return splits, report
