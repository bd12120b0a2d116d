"""Hugging Face datasets and audiofolders (audio often carried as bytes)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from asr_lora.data.audio import AudioError, decode_bytes, to_mono
from asr_lora.data.readers.base import Reject, Rows
from asr_lora.data.records import Ledger, Record, canonical_split, split_names


@contextlib.contextmanager
def _audio_paths_without_torchcodec() -> Iterator[None]:
    """datasets 4+ imports torchcodec even to store a path or bytes in an Audio column (field
    notes, trap 10), so an audiofolder cannot even be listed without it. Storing a path or bytes
    needs no codec: while reading, and only if torchcodec is absent, do exactly that."""
    from datasets import config
    from datasets.features import Audio

    if config.TORCHCODEC_AVAILABLE:
        yield
        return
    original = Audio.encode_example

    def encode(self: Audio, value: Any) -> Any:
        if isinstance(value, (str, os.PathLike)):
            return {"bytes": None, "path": os.fspath(value)}
        if isinstance(value, Mapping) and "array" not in value and (value.get("bytes") or value.get("path")):
            return {"bytes": value.get("bytes"), "path": value.get("path")}
        return original(self, value)

    Audio.encode_example = encode
    try:
        yield
    finally:
        Audio.encode_example = original


def read_hf(
    source: Any,
    ledger: Ledger,
    *,
    split: str = "train",
    name: str | None = None,
    streaming: bool = False,
    columns: Mapping[str, str] | None = None,
    audio_column: str = "audio",
    cache_dir: str | os.PathLike | None = None,
    subset: str = "main",
    accent: str = "unknown",
    **load_kwargs: Any,
) -> Iterator[Record]:
    """A Hugging Face dataset: a Hub name, a local folder (an `audiofolder` when it holds a
    metadata.csv/jsonl), or an already loaded (Iterable)Dataset. `streaming=True` for corpora
    that do not fit on disk. `columns` maps Record fields (text, id, speaker, accent) to column
    names; unmapped ones are guessed from common names (text/transcription/sentence, ...).
    `split` names the Hub split to load; its rows land in train, dev or test by that name
    (validation -> dev), so a Hub split of another name is refused.
    Audio is never decoded by datasets (no torchcodec): bytes are decoded here with soundfile
    into `Record.audio` at their native rate; a row with only a local path gets `audio_path`."""
    import datasets

    lands_in, lines = _lands_in(split), {}
    with _audio_paths_without_torchcodec():
        if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
            ds, label = source, f"<{type(source).__name__}>"
        else:
            folder, label = Path(source), str(source)
            kw = {"split": split, "streaming": streaming, "cache_dir": cache_dir, **load_kwargs}
            metadata = (sorted([*folder.rglob("metadata.csv"), *folder.rglob("metadata.jsonl")])
                        if folder.is_dir() else [])
            if metadata:
                ds = datasets.load_dataset("audiofolder", data_dir=str(folder), **kw)
                lines = _metadata_lines(metadata)
            else:
                ds = datasets.load_dataset(str(source), name, **kw)
        yield from _hf_rows(ds, label, ledger, (split, lands_in), columns, audio_column, subset, accent, lines)


def _metadata_lines(metadata: list[Path]) -> dict[str, str]:
    """{audio file's resolved path: "metadata.csv:LINE"} for an audiofolder's metadata files, so a
    skipped row names the line a user edits, not datasets' row index (datasets orders rows by file
    listing, not by metadata line)."""
    import csv
    import json

    lines = {}
    for meta in metadata:
        with open(meta, encoding="utf-8", errors="replace", newline="") as f:
            if meta.suffix == ".csv":
                reader = csv.DictReader(f)
                numbered = ((reader.line_num, row) for row in reader)
            else:
                numbered = ((n, _json_or_none(json, text)) for n, text in enumerate(f, 1))
            for n, row in numbered:
                if isinstance(row, dict) and isinstance(row.get("file_name"), str):
                    lines[str((meta.parent / row["file_name"]).resolve())] = f"{meta}:{n}"
    return lines


def _json_or_none(json, text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None  # datasets refuses the file itself, with its own message


def _lands_in(split: str) -> str:
    """The train/dev/test split a Hub split's rows land in: validation -> dev; a slice such as
    `train[:10%]` lands where its split does."""
    if (name := canonical_split(split.split("[", 1)[0])) is None:
        raise ValueError(f"HF split {split!r}: its rows must land in train, dev or test, and it is not one of "
                         f"{split_names()} (a slice such as 'train[:10%]' is fine)")
    return name


_HF_GUESSES = {
    "text": ("text", "transcription", "sentence", "transcript", "normalized_text"),
    "id": ("id", "file_name"),
    "speaker": ("speaker_id", "client_id", "speaker"),
    "accent": ("accent", "accents"),
}
_HF_FIELDS = (*_HF_GUESSES, "split")  # what `columns` may map


def _hf_rows(
    ds: Any,
    label: str,
    ledger: Ledger,
    splits: tuple[str, str],
    columns: Mapping[str, str] | None,
    audio_column: str,
    subset: str,
    accent: str,
    lines: Mapping[str, str] | None = None,
) -> Iterator[Record]:
    from datasets import Audio

    split, lands_in = splits  # the Hub's name, for messages; train/dev/test, for the rows
    names = list(ds.features or {})
    if audio_column not in names:
        raise ValueError(f"{label}: no audio column {audio_column!r}; columns are {names}")
    cols = dict(columns or {})
    if unknown := sorted(set(cols) - set(_HF_FIELDS)):
        raise ValueError(f"{label}: columns names {unknown}, which this reader does not read; it reads "
                         f"{list(_HF_FIELDS)}")
    for field, guesses in _HF_GUESSES.items():
        cols.setdefault(field, next((c for c in guesses if c in names), None))
    # A row's own split (an audiofolder metadata.csv's split column) wins over the Hub split's.
    cols.setdefault("split", "split" if "split" in names else None)
    for field, column in cols.items():
        if (column is None and field == "text") or (column is not None and column not in names):
            raise ValueError(f"{label}: column {column!r} for {field!r} is not among {names}")
    if isinstance(ds.features[audio_column], Audio):
        ds = ds.cast_column(audio_column, Audio(decode=False))

    def make(row: Mapping[str, Any], where: str) -> Record:
        get = {f: "" if c is None or row[c] is None else str(row[c]) for f, c in cols.items()}
        audio = row[audio_column]
        audio = {"path": audio} if isinstance(audio, str) else audio or {}
        row_split = canonical_split(get["split"]) if get["split"] else lands_in
        if row_split is None:
            raise Reject("bad_field", f"split {get['split']!r} is not one of {split_names()}", get["id"] or where)
        rec = Record(
            id=get["id"] or where,
            text=get["text"].strip(),
            speaker=get["speaker"] or "unknown",
            accent=get["accent"] or accent,
            split=row_split,
            subset=subset,
            source=where,
        )
        try:
            if audio.get("bytes"):
                rec.audio, rec.sampling_rate = decode_bytes(audio["bytes"], f"{where} ({audio.get('path')})")
                rec.duration = len(rec.audio) / rec.sampling_rate
            elif audio.get("array") is not None:
                rec.audio, rec.sampling_rate = to_mono(audio["array"]), int(audio["sampling_rate"])
            elif audio.get("path"):
                rec.audio_path = str(audio["path"])
                rec.id = get["id"] or rec.audio_path  # a local file names the row better than its index
            else:
                raise Reject("missing_field", "no audio bytes, array or path", rec.id)
        except AudioError as e:
            raise Reject(e.reason, str(e), rec.id) from None
        return rec

    rows = Rows(ledger, lands_in, check_files=True)
    for index, row in enumerate(ds):
        where = _metadata_line(row[audio_column], lines) or f"{label}[{split}]:{index}"
        if (rec := rows.take(where, make, row, where)) is not None:
            yield rec


def _metadata_line(audio: Any, lines: Mapping[str, str] | None) -> str | None:
    path = audio if isinstance(audio, str) else (audio or {}).get("path") if isinstance(audio, Mapping) else None
    return (lines or {}).get(str(Path(path).resolve())) if path else None
