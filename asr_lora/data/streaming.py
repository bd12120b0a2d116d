"""Corpus-scale data path: the training split streams from sharded JSONL manifests, and clips are
decoded and turned into log-mel inside DataLoader workers, so memory stays flat as the corpus grows.

`data.streaming` chooses it (auto: when the decoded audio `prepare_data` would hold in memory
exceeds `data.memory_budget_gb`). Two stages:

1. index (one pass, constant memory, cached under the same key scheme as `prepare_data`): read
   the source through its reader, check each clip from its file header (readable, duration; no
   decode), tokenise the label, and write the kept rows as sharded JSONL per split
   (`<cache>/prepared/<name>-<key>-stream/<split>/shard-00000.jsonl`) plus `data_report.json`.
2. load: `datasets` streaming over the train shards (shard-order shuffle + shuffle buffer; under
   DDP Accelerate gives each rank its own shards; DataLoader workers split them again). A map
   decodes each clip and runs the decoded-audio checks (NaN, silence); rejects are dropped by a
   filter and written, with their reason, to `<run>/load_skips/` (workers cannot share one
   ledger; `collect_load_skips` merges them into the run's data report). An optional batched map
   groups clips of similar label length (length-aware batching): neither `datasets` nor the
   Trainer buckets an iterable dataset (the Trainer's `group_by_length` needs `__len__`).
Dev and test are small, so they are decoded into memory as map-style datasets and scored as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from asr_lora.core.io import publish_dir, stage_dir
from asr_lora.core.logs import progress as progress_bar
from asr_lora.core.runtime import switch
from asr_lora.data.audio import SAMPLE_RATE, AudioError, check_audio, duration_reason, load_audio
from asr_lora.data.records import SPLITS, Ledger, Record

log = logging.getLogger(__name__)



DECODED_BYTES_PER_SECOND = SAMPLE_RATE * 4  # float32 mono


def use_streaming(dcfg, records: Iterable[Record] | None = None) -> bool:
    """true/false as set; auto streams when the decoded audio would not fit `memory_budget_gb`.
    The estimate walks the records once (stated durations, else the file header) without keeping them."""
    setting = switch(dcfg.streaming, "data.streaming")
    if setting in ("true", "false"):
        return setting == "true"
    if records is None:
        return False
    seconds = 0.0
    for r in records:
        if r.audio is not None:  # the source hands over samples, not files: nothing to stream from
            log.info("data.streaming=auto: %s holds audio in memory; using the in-memory path", dcfg.source)
            return False
        seconds += _duration(r) or 0.0
    gb = seconds * DECODED_BYTES_PER_SECOND / 2**30
    stream = gb > dcfg.memory_budget_gb
    log.info("decoded audio estimate %.2f GB (%.1f h) %s budget %.1f GB: %s", gb, seconds / 3600,
             ">" if stream else "<=", dcfg.memory_budget_gb, "streaming from shards" if stream else "in memory")
    return stream


def _duration(rec: Record) -> float | None:
    if rec.duration is not None:
        return rec.duration
    if rec.audio is not None:
        return len(rec.audio) / float(rec.sampling_rate or SAMPLE_RATE)
    try:
        import soundfile as sf

        info = sf.info(rec.audio_path)
        return info.frames / info.samplerate
    except Exception:  # not a soundfile format (mp3 via ffmpeg, ...): checked when decoded
        return None


class ShardWriter:
    """Kept rows -> `<dir>/<split>/shard-NNNNN.jsonl`, a new shard every `rows_per_shard` rows."""

    def __init__(self, root: Path, rows_per_shard: int):
        self.root, self.rows_per_shard = root, rows_per_shard
        self.files: dict[str, tuple] = {}  # split -> (file, rows in it, shard index)

    def write(self, row: dict) -> None:
        split = row["split"]
        if split not in SPLITS:  # it names a folder: nothing else may reach the file system
            raise ValueError(f"row {row.get('id')!r}: split {split!r} is not one of {SPLITS}")
        f, n, k = self.files.get(split, (None, 0, -1))
        if f is None or n >= self.rows_per_shard:
            if f is not None:
                f.close()
            k += 1
            (self.root / split).mkdir(parents=True, exist_ok=True)
            f, n = open(self.root / split / f"shard-{k:05d}.jsonl", "w", encoding="utf-8"), 0
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.files[split] = (f, n + 1, k)

    def close(self) -> None:
        for f, _, _ in self.files.values():
            f.close()


def index_rows(records: Iterable[Record], ledger: Ledger, dcfg, tokenizer) -> Iterator[dict]:
    """Header-level checks and labels for each record, without decoding audio."""
    from asr_lora.data.splits import drop_audio, label_or_drop, row_of

    for rec in records:
        if rec.audio is not None:
            raise ValueError(f"data.streaming needs audio files; {rec.source or rec.id} holds in-memory samples "
                             "(use a manifest/CSV source, or data.streaming=false)")
        seconds = _duration(rec)
        if seconds is not None and (reason := duration_reason(seconds, dcfg.min_seconds, dcfg.max_seconds)):
            drop_audio(ledger, rec, reason, seconds)
            continue
        if (label := label_or_drop(rec, ledger, dcfg, tokenizer)) is not None:
            yield row_of(rec, *label, seconds or 0.0)


def index_corpus(dcfg, tokenizer, cache_dir: Path | None = None, progress: bool = True,
                 scope=None) -> tuple[Path, dict]:
    """Stage 1: sharded, filtered, tokenised manifests per split + the data report (cached under
    `cache_dir`, default the cache root); `scope` as `splits.prepare_data`'s."""
    from asr_lora.core.paths import cache_root
    from asr_lora.data.sources import iter_records, manifest_signature
    from asr_lora.data.splits import data_report, prep_key

    ledger = Ledger()
    records, info = iter_records(dcfg, ledger, progress, scope)
    # The in-memory path's key (settings, versions, tokenizer), over the manifest files instead of
    # every audio file, plus the shard size that shapes the output.
    key = prep_key(dcfg, tokenizer, [manifest_signature(info["manifest"]), dcfg.shard_rows])
    target = Path(cache_dir or cache_root()) / "prepared" / f"{dcfg.name}-{key}-stream"
    if (target / "data_report.json").is_file():
        log.info("reusing indexed shards %s", target)
        return target, json.loads((target / "data_report.json").read_text())

    tmp = stage_dir(target)
    writer = ShardWriter(tmp, int(dcfg.shard_rows))

    def written(rows):
        for row in rows:
            writer.write(row)
            advance()
            yield row

    with progress_bar("indexing manifest (headers only)", None, progress) as advance:
        report = data_report(ledger, written(index_rows(records, ledger, dcfg, tokenizer)), info)
    writer.close()
    if not ledger.balanced():
        raise RuntimeError(f"data accounting is off: {ledger.seen} seen != {ledger.kept} kept + "
                           f"{len(ledger.skips)} skipped")
    report["streaming"] = {"shards": {s: len(list((tmp / s).glob("*.jsonl"))) for s in ("train", "dev", "test")
                                      if (tmp / s).is_dir()},
                           "note": "clips are decoded at load time; decode-level rejects are in load_skips"}
    (tmp / "data_report.json").write_text(json.dumps(report, indent=2))
    publish_dir(tmp, target)
    return target, report


class LoadSkipLog:
    """Append-only JSONL of clips rejected at load time, one file per process (DataLoader workers
    are separate processes and cannot share the ledger)."""

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory else None

    def add(self, row: dict, reason: str, detail: str) -> None:
        log.warning("skipping %s: %s", row.get("id"), detail)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"skips-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": row.get("id"), "reason": reason, "detail": detail, "split": row.get("split"),
                                "rank": int(os.environ.get("RANK", "0"))}) + "\n")


def collect_load_skips(directory: str | Path) -> dict:
    """Every clip rejected at load time, once (a clip seen in several epochs is one skip)."""
    items: dict[str, dict] = {}
    for p in sorted(Path(directory).glob("skips-*.jsonl")) if Path(directory).is_dir() else []:
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                items.setdefault(item["id"], item)
    by_reason: dict[str, int] = {}
    for item in items.values():
        by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
    return {"skipped": len(items), "skipped_by_reason": by_reason, "skips": list(items.values())}


class DecodeClip:
    """Map function run in the DataLoader workers: decode + the checks that need samples."""

    def __init__(self, dcfg, skip_log: LoadSkipLog):
        self.min_s, self.max_s, self.silence = dcfg.min_seconds, dcfg.max_seconds, dcfg.silence_dbfs
        self.skip_log = skip_log

    def __call__(self, row: dict) -> dict:
        try:
            x = load_audio(row["audio_path"], SAMPLE_RATE)
        except AudioError as e:
            self.skip_log.add(row, e.reason, str(e))
            return {"audio": np.zeros(0, np.float32), "skip": e.reason}
        reason = check_audio(x, SAMPLE_RATE, self.min_s, self.max_s, self.silence)
        if reason:
            self.skip_log.add(row, reason, f"{row['audio_path']}: audio {reason} ({len(x) / SAMPLE_RATE:.2f} s)")
            return {"audio": np.zeros(0, np.float32), "skip": reason}
        return {"audio": x, "skip": ""}


class LengthBuckets:
    """Batched map: within each window of clips, order by label length and cut into batches, then
    shuffle the batches (seeded by the window's content), so each batch pads labels to a similar
    length while the epoch order stays random."""

    def __init__(self, batch_size: int, seed: int):
        self.batch_size, self.seed = batch_size, seed

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        order = np.argsort([len(x) for x in batch["labels"]], kind="stable")
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        digest = int(hashlib.sha1("".join(batch["id"][:2]).encode()).hexdigest()[:8], 16)
        np.random.default_rng([self.seed, digest]).shuffle(chunks)
        idx = [int(i) for c in chunks for i in c]
        return {k: [v[i] for i in idx] for k, v in batch.items()}


def _kept(row: dict) -> bool:  # a module-level function, so spawn-started workers can unpickle it
    return not row["skip"]


def split_shards(root: Path, split: str) -> list[Path]:
    return sorted((Path(root) / split).glob("shard-*.jsonl"))


def stream_train(root: Path, dcfg, batch_size: int, seed: int, skip_dir: str | Path | None):
    """Stage 2: the training split as a `datasets.IterableDataset` of {id, labels, audio, subset}
    (subset: which rows are general-English replay, for train.replay_kl and train.context_kl)."""
    from datasets import load_dataset

    shards = split_shards(root, "train")
    if not shards:
        raise ValueError(f"no training shards under {root}/train")
    readers = int(os.environ.get("WORLD_SIZE", "1"))
    if len(shards) < readers:  # Accelerate then has every rank read every shard and drop the others' batches
        log.warning("%d training shards for %d processes: lower data.shard_rows so each rank reads its own",
                    len(shards), readers)
    ds = load_dataset("json", data_files=[str(s) for s in shards], split="train", streaming=True)
    ds = ds.shuffle(seed=seed, buffer_size=int(dcfg.shuffle_buffer))
    ds = ds.map(DecodeClip(dcfg, LoadSkipLog(skip_dir)))
    ds = ds.filter(_kept)
    if dcfg.length_buckets:
        window = batch_size * int(dcfg.length_buckets)
        ds = ds.map(LengthBuckets(batch_size, seed), batched=True, batch_size=window)
    return ds.select_columns(["id", "labels", "audio", "subset"])


def load_split(root: Path, split: str, dcfg, skip_dir: str | Path | None):
    """A small split (dev/test) decoded into a map-style Dataset, rejects logged like training's."""
    from datasets import Dataset

    decode = DecodeClip(dcfg, LoadSkipLog(skip_dir))
    rows = []
    for shard in split_shards(root, split):
        with open(shard, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                out = decode(row)
                if not out["skip"]:
                    rows.append(row | {"audio": out["audio"]})
    return Dataset.from_list(rows) if rows else None
