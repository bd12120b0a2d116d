"""From a corpus on disk to filtered, tokenised `datasets` splits, with every input row accounted for.

Stages: read (`readers`, or the embedded corpus from `corpus`) -> assign splits where the source
has none (by speaker, so splits stay speaker-disjoint) -> decode + check audio -> normalise and
tokenise text -> `datasets.Dataset` per split. Each rejected row lands in the `Ledger` with its
reason, and `data_report()` turns the ledger plus the kept rows into `data_report.json`.

The prepared splits are saved with `Dataset.save_to_disk` under the cache, keyed by a hash of
the inputs and settings, so later runs with the same config skip decoding and resampling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, load_from_disk

from asr_lora.core.io import atomic_dir
from asr_lora.core.logs import progress
from asr_lora.core.paths import cache_root
from asr_lora.data.audio import SAMPLE_RATE, AudioError, check_audio, load_audio, resample
from asr_lora.data.readers import read
from asr_lora.data.records import Ledger, Record
from asr_lora.data.text import NORMALIZER_VERSION, _resolve_markers, normalize

log = logging.getLogger(__name__)



PIPELINE_VERSION = "1"


SPLITS = ("train", "dev", "test")


def training_text(text: str) -> str:
    """The label the model learns: transcript markup (NSC tags, fillers) resolved to plain words,
    case and punctuation kept, particles kept as words."""
    return " ".join(_resolve_markers(text, particles=True).split())


def speaker_split(speaker: str, fractions: list[float]) -> str:
    """Deterministic speaker -> split, so a speaker never straddles train and test."""
    u = int(hashlib.sha1(speaker.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edges = np.cumsum(fractions) / sum(fractions)
    return SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)]


def iter_records(dcfg, ledger: Ledger, progress: bool = True) -> tuple[Iterator[Record], dict]:
    """All records of the configured source, lazily (the embedded corpus is built first if missing);
    splits are assigned by speaker where the source has none. `info["manifest"]` names the input."""
    info: dict[str, Any] = {"source": dcfg.source, "synthetic": bool(dcfg.synthetic)}
    if dcfg.source == "embedded":
        from asr_lora.data.corpus import build_corpus

        out = Path(dcfg.path) if dcfg.path else None
        manifest = build_corpus(out, seed=dcfg.corpus_seed, workers=dcfg.corpus_workers,
                                max_sentences=dcfg.corpus_max_sentences, progress=progress)
        corpus_info = manifest.parent / "corpus_info.json"
        if corpus_info.is_file():
            info["corpus"] = json.loads(corpus_info.read_text())
        source, path, options = "jsonl", manifest, {}
    else:
        if not dcfg.path:
            raise ValueError(f"data.path is required for data.source={dcfg.source}")
        source, path, options = dcfg.source, dcfg.path, dict(dcfg.options or {})
    info["manifest"] = str(path)
    fractions = list(dcfg.split_fractions)

    def records() -> Iterator[Record]:
        for r in read(source, path, ledger, **options):
            if r.split is None:
                r.split = speaker_split(r.speaker, fractions)
            yield r

    return records(), info


def read_records(dcfg, ledger: Ledger, progress: bool = True) -> tuple[list[Record], dict]:
    records, info = iter_records(dcfg, ledger, progress)
    return list(records), info


def manifest_signature(path: str | Path) -> list:
    """Size and mtime of the input manifest (every shard of a sharded one): a cheap cache key
    that, unlike `_records_signature`, does not stat millions of audio files."""
    from asr_lora.data.readers.manifest import manifest_shards

    p = Path(path)
    try:
        files = manifest_shards(p) if p.suffix == ".jsonl" or p.is_dir() or "*" in str(path) else [p]
    except FileNotFoundError:
        files = [p]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] if f.exists() else [str(f)] for f in files]


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
            "engine": rec.engine or "", "voice": rec.voice or "", "audio_path": rec.audio_path or "",
            "duration": round(seconds, 3)}


def data_report(ledger: Ledger, rows: Iterable[dict], info: dict) -> dict:
    """Counts kept and dropped by reason, hours per split/speaker/accent, every dropped item.
    `rows` is walked once, so a generator works (the streaming index passes one)."""
    hours: dict[str, float] = defaultdict(float)
    by = {k: defaultdict(lambda: {"utterances": 0, "hours": 0.0}) for k in ("speaker", "accent", "subset")}
    per_split: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
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
        "hours_per_split": {s: round(h, 4) for s, h in hours.items()},
        "per_speaker": round_h["speaker"],
        "per_accent": round_h["accent"],
        "per_subset": round_h["subset"],
    }


def _prep_key(dcfg, tokenizer, records_sig: Any) -> str:
    fields = {k: getattr(dcfg, k) for k in (
        "source", "path", "min_seconds", "max_seconds", "silence_dbfs", "max_label_tokens", "corpus_seed",
        "corpus_max_sentences")}
    fields["options"] = json.dumps(dict(dcfg.options or {}), sort_keys=True, default=str)
    fields["split_fractions"] = list(dcfg.split_fractions)
    blob = json.dumps([PIPELINE_VERSION, NORMALIZER_VERSION, fields, len(tokenizer), records_sig], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _records_signature(records: list[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        st = os.stat(r.audio_path) if r.audio_path and os.path.exists(r.audio_path) else None
        h.update(json.dumps([r.id, r.text, r.split, r.audio_path, st.st_size if st else None,
                             st.st_mtime_ns if st else None]).encode())
    return h.hexdigest()


def prepare_data(dcfg, tokenizer, cache_dir: str | Path | None = None, progress: bool = True):
    """Splits as `datasets.Dataset`s plus the data report; cached on disk per inputs + settings."""
    ledger = Ledger()
    records, info = read_records(dcfg, ledger, progress)
    key = _prep_key(dcfg, tokenizer, _records_signature(records))
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


FEATURE_BYTES = 80 * 3000 * 4  # one 30 s log-mel window, float32


def use_feature_cache(dcfg, n_clips: int, reads_per_clip: float | None = None) -> bool:
    """Whether to compute every clip's log-mel once, up front, and keep it (`add_features`).

    auto: only when a training run reads each clip at least twice on average (`reads_per_clip`):
    otherwise the up-front pass computes more log-mels than the run would per batch (the recipe's
    128 steps of 8 read 1,024 of 1,594 train clips), and the features are the same bits either way.
    And only while the cache fits `feature_cache_budget_gb`."""
    setting = str(dcfg.feature_cache).lower()
    if setting in ("true", "false"):
        return setting == "true"
    if reads_per_clip is not None and reads_per_clip < 2:
        log.info("log-mel features computed per batch: the run reads each train clip %.1f times on average",
                 reads_per_clip)
        return False
    need = n_clips * FEATURE_BYTES / 2**30
    if need > dcfg.feature_cache_budget_gb:
        log.info("log-mel cache would need %.1f GB > budget %.1f GB: computing features on the fly",
                 need, dcfg.feature_cache_budget_gb)
        return False
    return True


def add_features(ds: Dataset, processor, batch_size: int = 32) -> Dataset:
    """Attach `input_features` once; `datasets` fingerprints the map and reuses its cache file in
    later runs with the same data and front end."""
    from datasets import Array2D, Features

    fe = processor.feature_extractor
    features = Features({**ds.features, "input_features": Array2D((fe.feature_size, fe.nb_max_frames), "float32")})

    # The map's cache key is given explicitly: the bar's callback in `extract` must not enter it.
    key = hashlib.sha256(json.dumps([ds._fingerprint, fe.to_dict(), "logmel-1"], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    with progress(f"log-mel features ({len(ds)} clips)", len(ds)) as advance:
        def extract(batch):
            arrays = [np.asarray(a, dtype=np.float32) for a in batch["audio"]]
            advance(len(arrays))
            return {"input_features": fe(arrays, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features}

        return ds.map(extract, batched=True, batch_size=batch_size, features=features, new_fingerprint=key)


def subsample(ds: Dataset | None, n: int | None, seed: int) -> Dataset | None:
    if ds is None or n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def keep_part(ds, part, what: str):
    """The rows of `ds` whose voice lies in `part` of voices.json (e.g. the unseen-engine dev
    part, so checkpoints are chosen on voices of engines training never heard). `part` may be a
    list of parts; "real" names the recorded clips (rows with no TTS engine). None: all rows."""
    if ds is None or part is None:
        return ds
    from asr_lora.data.voices import PARTS, REAL_PART, voice_parts

    wanted = [part] if isinstance(part, str) else list(part)
    if bad := [p for p in wanted if p not in (*PARTS, REAL_PART)]:
        raise ValueError(f"{what}={part!r}: unknown parts {bad}; choose from {[*PARTS, REAL_PART]}")
    table = voice_parts()
    voices = ds["voice"]
    have = sorted({table[v] for v in set(voices) if v in table})
    if not have:  # a corpus without parts (real speech, a user's manifest): nothing to choose from
        log.warning("%s=%s: this split has no voices.json parts; using all %d rows", what, part, len(ds))
        return ds
    engines = ds["engine"] if "engine" in ds.column_names else [None] * len(ds)
    keep = [i for i, (v, e) in enumerate(zip(voices, engines))
            if table.get(v or "", REAL_PART if not e else None) in wanted]
    if not keep:
        raise ValueError(f"{what}={part!r}: no rows of that part (parts present: {have}; "
                         "see data/sg_english/voices.json)")
    kept = ds.select(keep)
    log.info("%s=%s: %d of %d rows", what, part if isinstance(part, str) else list(wanted), len(kept), len(ds))
    return kept


def eval_rows(ds, eval_cfg):
    """The rows of a split an evaluation scores: `eval.part`'s parts, then `eval.engines`' engines.
    The training job, `python -m asr_lora.evaluate` and the export's WER check all score these."""
    ds = keep_part(ds, eval_cfg.get("part"), "eval.part")
    return filter_engines(ds, eval_cfg.get("engines") or [], "eval.engines", keep=True)


def filter_engines(ds, engines, what: str, keep: bool = False):
    """`ds` without (keep=False) or with only (keep=True) the rows of these TTS engines. The
    leave-one-engine-out study trains without engine E and scores on E's dev voices
    (bench/study_unseen.py)."""
    engines = sorted(set(engines or []))
    if ds is None or not engines:
        return ds
    present = set(ds["engine"]) if isinstance(ds, Dataset) else None
    if present is not None and (unknown := [e for e in engines if e not in present]):
        raise ValueError(f"{what}: engines {unknown} have no rows (engines present: {sorted(present - {''})})")
    kept = ds.filter(lambda e: (e in engines) == keep, input_columns="engine")
    if present is not None:
        log.info("%s=%s: %d of %d rows kept", what, engines, len(kept), len(ds))
    return kept


def set_replay_share(ds, share: float | None, seed: int, what: str = "data.replay_share"):
    """`ds` with general-English replay rows (subset "general") making up `share` of it. The
    Singapore English rows stay as they are; general rows are a seeded sample of the split's
    own, whole copies of them first when the share asks for more than there are. Rehearsal is
    the corpus's guard against forgetting, so how much of it to mix in is a study knob (#14)."""
    if ds is None or share is None:
        return ds
    if not 0 <= share < 1:
        raise ValueError(f"{what}={share}: must be at least 0 and below 1 (a share of the train split)")
    subsets = ds["subset"] if "subset" in ds.column_names else [""] * len(ds)
    general = [i for i, s in enumerate(subsets) if s == "general"]
    rest = [i for i, s in enumerate(subsets) if s != "general"]
    want = round(share * len(rest) / (1 - share))
    if want and not general:
        raise ValueError(f"{what}={share}: the train split has no general-English (subset 'general') rows")
    rng = np.random.default_rng(seed)
    picked = general * (want // len(general)) if general else []
    picked += sorted(rng.choice(general, size=want - len(picked), replace=False).tolist()) if want > len(picked) else []
    log.info("%s=%s: %d general-English replay rows (of %d distinct%s) with %d others", what, share,
             len(picked), len(general), ", repeated" if len(picked) > len(general) else "", len(rest))
    return ds.select(sorted(rest + picked))
