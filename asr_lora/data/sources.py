"""Where records come from: the configured source (a reader, or the synthetic corpus built first),
with splits assigned by speaker where the source has none, so a speaker never straddles train
and test; a row that names no speaker is split on its own."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from asr_lora.data.readers import read
from asr_lora.data.records import SPLITS, Ledger, Record

log = logging.getLogger(__name__)


def speaker_split(speaker: str, fractions: list[float]) -> str:
    """Deterministic speaker -> split, so a speaker never straddles train and test."""
    u = int(hashlib.sha1(speaker.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edges = np.cumsum(fractions) / sum(fractions)
    return SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)]


def assign_split(rec: Record, fractions: list[float]) -> bool:
    """Set the split of a record its source left without one; True when it names no speaker and
    was therefore split as its own speaker (one shared "unknown" would put every such row in one split)."""
    by_row = rec.speaker in ("", "unknown")
    rec.split = speaker_split(f"row:{rec.id}" if by_row else rec.speaker, fractions)
    return by_row


# The synthetic source's text inputs (config.DataConfig); meaningless to a reader of recorded clips.
SYNTHETIC_INPUTS = ("sentences", "control", "general", "voices", "terms", "train_sentences", "dev_control")


def iter_records(dcfg, ledger: Ledger, progress: bool = True, scope=None) -> tuple[Iterator[Record], dict]:
    """All records of the configured source, lazily (a synthetic corpus is rendered first if missing,
    only its splits and parts in `scope` when one is given: data/scope.py); splits are assigned by
    speaker where the source has none. `info["manifest"]` names the input."""
    info: dict[str, Any] = {"source": dcfg.source, "synthetic": bool(dcfg.synthetic)}
    if dcfg.source == "synthetic":
        from asr_lora.data.synthetic.corpus import CorpusInputs, build_corpus, info_of

        inputs = CorpusInputs.of(dcfg.name, dcfg.sentences, dcfg.control, dcfg.general, dcfg.voices, dcfg.terms,
                                 dcfg.train_sentences, dcfg.dev_control)
        out = Path(dcfg.path) if dcfg.path else None
        manifest = build_corpus(out, seed=dcfg.corpus_seed, workers=dcfg.corpus_workers,
                                max_sentences=dcfg.corpus_max_sentences, progress=progress, inputs=inputs,
                                scope=None if getattr(dcfg, "render_all", False) else scope,
                                respell=(getattr(dcfg, "respell_takes", 0),
                                         tuple(getattr(dcfg, "respell_languages", ()))))
        corpus = json.loads(info_of(manifest).read_text())
        info["corpus"] = corpus
        # Input lines no voice could say: counted like any reader's skips, named by file:line.
        for sk in corpus.get("text_skips", []):
            ledger.see()
            ledger.skip(sk["source"], sk["reason"], sk["detail"], sk["source"])
        source, path, options = "jsonl", manifest, {}
    else:
        if not dcfg.path:
            raise ValueError(f"data.path is required for data.source={dcfg.source}")
        if given := [k for k in SYNTHETIC_INPUTS if dcfg.get(k)]:
            # A recipe's corpus text (sg_english_terms' data.train_sentences) would otherwise be dropped unsaid.
            raise ValueError(f"{', '.join('data.' + k for k in given)}: text the synthetic corpus is rendered from, "
                             f"but data.source={dcfg.source} reads recorded clips from {dcfg.path}; use "
                             f"data=synthetic, or drop it ({' '.join('data.' + k + '=null' for k in given)})"
                             + ("; the terms of recorded clips go in eval.terms" if "terms" in given else ""))
        source, path, options = dcfg.source, dcfg.path, dict(dcfg.options or {})
    info["manifest"] = str(path)
    fractions = list(dcfg.split_fractions)

    def records() -> Iterator[Record]:
        by_row = 0
        splits_of: dict[str, set[str]] = defaultdict(set)  # named speaker -> the splits its rows are in
        placed: dict[str, int] = defaultdict(int)  # rows data.split_fractions placed, per split
        for r in read(source, path, ledger, **options):
            if r.split is None:
                by_row += assign_split(r, fractions)
                placed[r.split] += 1
            if r.split not in SPLITS:  # the readers map split names; a row outside would be lost unsaid
                raise ValueError(f"{r.source or r.id}: split {r.split!r} is not one of {SPLITS}")
            if r.speaker not in ("", "unknown"):
                splits_of[r.speaker].add(r.split)
            yield r
        # Rows that state their split keep it; one speaker's stated and unstated rows, or a source's
        # own splits, can then put that speaker in two splits: said, never silently scored on.
        if straddling := {k: sorted(v) for k, v in splits_of.items() if len(v) > 1}:
            info["speakers_in_several_splits"] = straddling
            log.warning("%d speakers have rows in more than one split, so the scored split hears voices "
                        "training heard (%s); give each speaker's rows one split, or none and let "
                        "data.split_fractions place them", len(straddling),
                        ", ".join(f"{k}: {'/'.join(v)}" for k, v in list(straddling.items())[:5]))
        # Each speaker's split is drawn from its name's hash: with few speakers a split can get none
        # (the test split of 3 speakers is empty 3 times in 4 at 0.8/0.1/0.1).
        if placed and (empty := [s for s, f in zip(SPLITS, fractions) if f > 0 and not placed[s]]):
            info["empty_splits"] = empty
            log.warning("data.split_fractions=%s placed %d rows by speaker and none in %s: too few speakers "
                        "to split by speaker; give the rows a split column", fractions, sum(placed.values()),
                        "/".join(empty))
        if by_row:
            info["rows_split_by_row"] = by_row
            log.warning("%d rows name no speaker and no split: each was split as its own speaker, so one "
                        "speaker's clips may be in both train and test (give rows a speaker to keep them apart)",
                        by_row)

    return records(), info


def read_records(dcfg, ledger: Ledger, progress: bool = True, scope=None) -> tuple[list[Record], dict]:
    records, info = iter_records(dcfg, ledger, progress, scope)
    return list(records), info


def manifest_signature(path: str | Path) -> list:
    """Size and mtime of the input manifest (every shard of a sharded one): a cheap cache key
    that, unlike `_records_signature`, does not stat millions of audio files."""
    from asr_lora.data.readers.manifest import manifest_shards

    p = Path(path)
    try:
        files = manifest_shards(p) if p.suffix == ".jsonl" or p.is_dir() or "*" in str(path) else [p]
    except FileNotFoundError:
        files = [p] if not p.is_dir() else _tables_under(p)
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] if f.exists() else [str(f)] for f in files]


_TABLE_SUFFIXES = (".tsv", ".csv", ".txt", ".textgrid", ".json")


def _tables_under(folder: Path) -> list[Path]:
    """The text files a folder reader (Common Voice's TSVs, NSC's scripts and TextGrids) takes its
    rows from: editing one in place changes the key, where the folder's own mtime would not."""
    found = [Path(d) / n for d, _, names in os.walk(folder) for n in names if n.lower().endswith(_TABLE_SUFFIXES)]
    return sorted(found) or [folder]
