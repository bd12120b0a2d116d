"""From records to filtered, tokenised `datasets` splits, with every input row accounted for.

Stages: records (`sources`) -> decode + check audio -> normalise and tokenise text ->
`datasets.Dataset` per split. Each rejected row lands in the `Ledger` with its reason, and
`data_report()` turns the ledger plus the kept rows into `data_report.json`.

The prepared splits are saved with `Dataset.save_to_disk` under the cache, keyed by the inputs
and settings, so later runs with the same config skip decoding and resampling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, load_from_disk

from asr_lora.core.io import atomic_dir
from asr_lora.core.logs import progress
from asr_lora.core.paths import cache_key, cache_root
from asr_lora.data.audio import SAMPLE_RATE, AudioError, check_audio, load_audio, resample
from asr_lora.data.records import SPLITS, Ledger, Record
from asr_lora.data.sources import read_records
from asr_lora.data.text import NORMALIZER_VERSION, _resolve_markers, normalize

log = logging.getLogger(__name__)


# Part of every prepared-data cache key: bump it when what a prepared row holds changes, so old entries are rebuilt.
PIPELINE_VERSION = "4"


def training_text(text: str) -> str:
    """The label the model learns: transcript markup (NSC tags, fillers) resolved to plain words,
    case and punctuation kept, particles kept as words."""
    return " ".join(_resolve_markers(text).split())


def _decode(rec: Record) -> np.ndarray:
    if rec.audio is not None:
        x = np.asarray(rec.audio, dtype=np.float32)
        x = x.mean(axis=1) if x.ndim == 2 else x
        return resample(x, int(rec.sampling_rate or SAMPLE_RATE), SAMPLE_RATE)
    return load_audio(rec.audio_path, SAMPLE_RATE)


def process_records(records: list[Record], ledger: Ledger, dcfg, tokenizer, progress_on: bool = True) -> list[dict]:
    """Decode, check and tokenise; rows that fail move from kept to skipped, with their reason."""
    rows = []
    with progress(f"decoding audio ({len(records)} clips)", len(records), progress_on) as advance:
        for rec in records:
            advance()
            where = f" ({rec.source})" if rec.source else ""
            try:
                x = _decode(rec)
            except AudioError as e:
                ledger.drop(rec.id, e.reason, f"{e}{where}", rec.source, rec.split)
                continue
            reason = check_audio(x, SAMPLE_RATE, dcfg.min_seconds, dcfg.max_seconds, dcfg.silence_dbfs)
            if reason:
                drop_audio(ledger, rec, reason, len(x) / SAMPLE_RATE)
                continue
            if (label := label_or_drop(rec, ledger, dcfg, tokenizer)) is not None:
                rows.append(row_of(rec, *label, len(x) / SAMPLE_RATE) | {"audio": x})
    return rows


def drop_audio(ledger: Ledger, rec: Record, reason: str, seconds: float) -> None:
    where = f" ({rec.source})" if rec.source else ""
    ledger.drop(rec.id, reason, f"{rec.audio_path}: audio {reason} ({seconds:.2f} s){where}", rec.source, rec.split)


def label_or_drop(rec: Record, ledger: Ledger, dcfg, tokenizer) -> tuple[str, list[int]] | None:
    """(label text, token ids) for a record, or None after moving it to the ledger's skips
    (empty text after normalisation, or a label longer than `max_label_tokens`)."""
    where = f" ({rec.source})" if rec.source else ""
    label_text = training_text(rec.text)
    if not normalize(rec.text) or not label_text:
        ledger.drop(rec.id, "empty_text", f"{rec.audio_path}: empty text after normalisation{where}",
                    rec.source, rec.split)
        return None
    labels = tokenizer(label_text).input_ids
    if len(labels) > dcfg.max_label_tokens:
        ledger.drop(rec.id, "label_too_long", f"{rec.audio_path}: label has {len(labels)} tokens "
                    f"> {dcfg.max_label_tokens}{where}", rec.source, rec.split)
        return None
    return label_text, labels


def row_of(rec: Record, label_text: str, labels: list[int], seconds: float) -> dict:
    """A kept record as a dataset/manifest row (without samples), the same on both data paths."""
    return {"id": rec.id, "text": rec.text, "label_text": label_text, "labels": labels,
            "speaker": rec.speaker, "accent": rec.accent, "split": rec.split, "subset": rec.subset,
            "engine": rec.engine or "", "voice": rec.voice or "", "part": rec.part or "",
            "audio_path": rec.audio_path or "", "duration": round(seconds, 3)}


def data_report(ledger: Ledger, rows: Iterable[dict], info: dict) -> dict:
    """Counts kept and dropped by reason, hours per split/speaker/accent, every dropped item.
    `rows` is walked once, so a generator works (the streaming index passes one)."""
    hours: dict[str, float] = defaultdict(float)
    by = {k: defaultdict(lambda: {"utterances": 0, "hours": 0.0}) for k in ("speaker", "accent", "subset")}
    per_split: dict[str, Counter] = defaultdict(Counter)
    engines: dict[str, Counter] = defaultdict(Counter)  # "" counts recorded (non-TTS) clips
    for r in rows:
        engines[r["split"]][r.get("engine") or ""] += 1
        h = r["duration"] / 3600
        hours[r["split"]] += h
        per_split[r["split"]][r["subset"]] += 1
        for k in by:
            by[k][f"{r['split']}/{r[k]}"]["utterances"] += 1
            by[k][f"{r['split']}/{r[k]}"]["hours"] += h
    round_h = {k: {g: {"utterances": v["utterances"], "hours": round(v["hours"], 4)} for g, v in d.items()}
               for k, d in by.items()}
    return {
        **info,
        "normalizer_version": NORMALIZER_VERSION,
        "counts": ledger.to_json() | {"balanced": ledger.balanced()},
        "kept_per_split": {s: dict(c) for s, c in per_split.items()},
        "engines_per_split": {s: dict(sorted(c.items())) for s, c in engines.items()},
        "hours_per_split": {s: round(h, 4) for s, h in hours.items()},
        "per_speaker": round_h["speaker"],
        "per_accent": round_h["accent"],
        "per_subset": round_h["subset"],
    }


def prep_key(dcfg, tokenizer, records_sig: Any) -> str:
    """The prepared-data cache entry for these inputs and the settings that change the rows (both
    data paths, in memory and streamed, key their caches with it)."""
    fields = {k: getattr(dcfg, k) for k in (
        "source", "path", "min_seconds", "max_seconds", "silence_dbfs", "max_label_tokens", "corpus_seed",
        "corpus_max_sentences")}
    fields["options"] = dict(dcfg.options or {})
    fields["split_fractions"] = list(dcfg.split_fractions)
    return cache_key(PIPELINE_VERSION, NORMALIZER_VERSION, fields, len(tokenizer), records_sig)


def _records_signature(records: list[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        st = os.stat(r.audio_path) if r.audio_path and os.path.exists(r.audio_path) else None
        # every field a prepared row keeps (row_of): an edited subset, part or engine column must not
        # reuse rows that still carry the old one
        h.update(json.dumps([r.id, r.text, r.split, r.audio_path, st.st_size if st else None,
                             st.st_mtime_ns if st else None, r.speaker, r.accent, r.subset, r.engine, r.voice,
                             r.part, r.duration]).encode())
    return h.hexdigest()


def prepare_data(dcfg, tokenizer, cache_dir: str | Path | None = None, progress: bool = True, scope=None):
    """Splits as `datasets.Dataset`s plus the data report; cached on disk per inputs + settings.
    `scope`: the splits and parts of a synthetic corpus to render and read (data/scope.py)."""
    ledger = Ledger()
    records, info = read_records(dcfg, ledger, progress, scope)
    key = prep_key(dcfg, tokenizer, _records_signature(records))
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / "prepared" / f"{dcfg.name}-{key}"
    if (target / "data_report.json").is_file():
        report = json.loads((target / "data_report.json").read_text())
        splits = {s: load_from_disk(str(target / s)) for s in SPLITS if (target / s).exists()}
        log.info("reusing prepared data %s", target)
        return splits, report

    rows = process_records(records, ledger, dcfg, tokenizer, progress)
    report = data_report(ledger, rows, info)
    if not ledger.balanced():
        raise RuntimeError(f"data accounting is off: {ledger.seen} seen != {ledger.kept} kept + "
                           f"{len(ledger.skips)} skipped")
    splits = {}
    with atomic_dir(target) as tmp:  # parallel sweep jobs each stage their own copy
        for s in SPLITS:
            part = [r for r in rows if r["split"] == s]
            if part:
                ds = Dataset.from_list(part)
                ds.save_to_disk(str(tmp / s))
        (tmp / "data_report.json").write_text(json.dumps(report, indent=2))
    splits = {s: load_from_disk(str(target / s)) for s in SPLITS if (target / s).exists()}
    return splits, report
