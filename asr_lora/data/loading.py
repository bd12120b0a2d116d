"""Prepared splits for an entry point: in memory or streamed, prepared on rank 0 first, with the
data report written into the run directory."""

from __future__ import annotations

import logging
from pathlib import Path

from asr_lora.core.io import write_json
from asr_lora.core.runtime import main_process_first, switch

log = logging.getLogger("asr_lora")



def load_data(dcfg, tokenizer, run_dir: Path | None, *, scored: str = "test", batch_size: int = 8, seed: int = 0,
              progress: bool = True, skip_dir: Path | None = None, scope=None):
    """Prepared splits (cached) and the data report, which is also written into the run dir.

    `dcfg` is the data config section. In memory (`splits.prepare_data`) for corpora that fit
    `data.memory_budget_gb`; otherwise the train split streams from sharded manifests (`streaming`,
    shuffled with `seed`, in batches of `batch_size`) and is a `datasets.IterableDataset`; dev and
    the `scored` split are read whole. `scope`: the splits and parts of a synthetic corpus this run
    reads, the only ones rendered (data/scope.py; None: all)."""
    from asr_lora.data.records import Ledger
    from asr_lora.data.sources import iter_records
    from asr_lora.data.splits import prepare_data
    from asr_lora.data.streaming import index_corpus, load_split, stream_train, use_streaming

    # Rank 0 prepares (and caches) first; the other ranks then read its cache instead of racing it.
    with main_process_first():
        estimate = None
        if switch(dcfg.streaming, "data.streaming") == "auto":
            estimate = iter_records(dcfg, Ledger(), progress, scope)[0]
        if use_streaming(dcfg, estimate):
            root, report = index_corpus(dcfg, tokenizer, None, progress, scope)
            skip_dir = skip_dir or (run_dir / "load_skips" if run_dir is not None else None)
            splits = {"train": stream_train(root, dcfg, batch_size, seed, skip_dir)}
            for s in {"dev", "test", scored} - {"train"}:
                if (root / s).is_dir():
                    splits[s] = load_split(root, s, dcfg, skip_dir)
        else:
            splits, report = prepare_data(dcfg, tokenizer, None, progress, scope)
    if run_dir is not None:
        path = run_dir / "data_report.json"
        write_json(path, report)
    counts = report["counts"]
    log.info("data: %d rows seen, %d kept, %d skipped %s; per split %s", counts["seen"], counts["kept"],
             counts["skipped"], counts["skipped_by_reason"], report["kept_per_split"])
    return splits, report
