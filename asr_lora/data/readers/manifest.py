"""JSONL (NeMo-style; one file, a folder of shards or a glob) and CSV/TSV manifests."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from asr_lora.data.audio import segment_address
from asr_lora.data.readers.base import Reject, Rows, duration, ok, read_table, require_columns, resolve, snip
from asr_lora.data.records import Ledger, Record

_STR_FIELDS = ("id", "speaker", "accent", "split", "subset", "engine", "voice", "part")


def read_jsonl(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    split: str | None = None,
    subset: str = "main",
    accent: str = "unknown",
    check_files: bool = True,
) -> Iterator[Record]:
    """NeMo manifest (one file, a folder of shards, or a glob): one JSON object per line with
    `audio_filepath`, `text`, optional `duration`, `offset` (with `duration`: that segment of the
    file), `id`, `speaker`, `accent`, `split`, `subset`, `engine`, `voice`, `part` (other keys go to
    `extra`). Relative paths resolve against the manifest's
    folder. `split`/`subset`/`accent` are defaults for rows that do not say.
    Blank lines are not rows and are not counted."""
    defaults = {"split": split, "subset": subset, "accent": accent}
    rows = Rows(ledger, split, check_files)  # one id set across shards: duplicates between shards are caught
    shards = manifest_shards(source)
    root = Path(os.path.commonpath([p.parent.absolute() for p in shards]))
    for path in shards:
        # A row without an id is named by its audio path; shards in different folders (day1/,
        # day2/) may each list clips/001.wav, so there the path is prefixed with the shard's folder.
        id_prefix = path.parent.absolute().relative_to(root).as_posix()
        defaults["id_prefix"] = "" if id_prefix == "." else id_prefix + "/"
        with open(path, "rb") as f:  # binary, so one bad line cannot stop the rest of the file
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    where = f"{path}:{lineno}"
                    line = raw.decode("utf-8", "replace")
                    if (
                        rec := rows.take(
                            where, _jsonl_record, raw, lineno, where, path.parent, defaults, line=line
                        )
                    ) is not None:
                        yield rec


def manifest_shards(source: str | os.PathLike) -> list[Path]:
    """A manifest given as one file, a folder of `*.jsonl` shards, or a glob (`train-*.jsonl`);
    shards are read in name order, one line at a time, so memory does not grow with their size."""
    import glob

    path = Path(source)
    if path.is_dir():
        shards = sorted(path.glob("*.jsonl"))
        if not shards:
            raise FileNotFoundError(f"no *.jsonl manifest shards in {path}")
        return shards
    if any(c in str(source) for c in "*?["):
        shards = sorted(Path(p) for p in glob.glob(str(source)))
        if not shards:
            raise FileNotFoundError(f"no manifest shards match {source}")
        return shards
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    return [path]


def _jsonl_record(raw: bytes, lineno: int, where: str, base: Path, defaults: dict[str, Any]) -> Record:
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise Reject("bad_line", f"not UTF-8 ({e.reason} at byte {e.start}): {snip(raw)}") from None
    try:
        row = json.loads(line.lstrip("\ufeff") if lineno == 1 else line)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested input
        raise Reject("bad_line", f"not valid JSON ({snip(str(e), 80)}): {snip(line)}") from None
    if not isinstance(row, dict):
        raise Reject("bad_line", f"expected a JSON object, got {type(row).__name__}: {snip(line)}")
    # An empty text is its own reason ("empty_text", checked later); an empty path is a missing one.
    for key in ("audio_filepath", "text"):
        if row.get(key) is None or (key == "audio_filepath" and row[key] == ""):
            raise Reject("missing_field", f"missing {key!r}: {snip(line)}")
        if not isinstance(row[key], str):
            raise Reject("bad_field", f"{key!r} must be a string, got {snip(row[key])}")
    seconds = None if row.get("duration") is None else duration(row["duration"])
    relative = not os.path.isabs(row["audio_filepath"])
    audio = resolve(base, row["audio_filepath"])
    default_id = (defaults["id_prefix"] if relative else "") + row["audio_filepath"]
    if row.get("offset") is not None:  # NeMo segment manifests: the clip is [offset, offset + duration) of the file
        if seconds is None:
            raise Reject("missing_field", f"'offset' without 'duration': the segment has no end: {snip(line)}")
        start = duration(row["offset"], name="offset")
        audio = segment_address(audio, start, start + seconds)
        default_id = segment_address(default_id, start, start + seconds)  # one file, many rows
    fields = {k: row.get(k) for k in _STR_FIELDS}
    for key, value in fields.items():
        if isinstance(value, (dict, list)):
            raise Reject("bad_field", f"{key!r} must be a string, got {snip(value)}")
        value = None if value is None else str(value).strip()  # as the CSV reader: "spk7 " is spk7
        fields[key] = value or None
    try:  # a JSON escape such as "\ud800" decodes to a lone surrogate that no file can hold
        "".join([row["text"], row["audio_filepath"], *filter(None, fields.values())]).encode("utf-8")
    except UnicodeEncodeError:
        raise Reject("bad_field", f"lone surrogate escape in a text field: {snip(line)}") from None
    extra = {k: v for k, v in row.items() if k not in ("audio_filepath", "text", "duration", "offset", *_STR_FIELDS)}
    if isinstance(extra.get("extra"), dict):  # what `Record.to_manifest` wrote reads back as it was
        extra |= extra.pop("extra")
    return Record(
        id=fields["id"] or default_id,
        text=row["text"],
        audio_path=audio,
        duration=seconds,
        speaker=fields["speaker"] or "unknown",
        accent=fields["accent"] or defaults["accent"],
        split=fields["split"] or defaults["split"],
        subset=fields["subset"] or defaults["subset"],
        engine=fields["engine"],
        voice=fields["voice"],
        part=fields["part"],
        source=where,
        extra=extra,
    )


_CSV_FIELDS = ("id", "audio", "text", "speaker", "accent", "duration", "split", "subset", "engine", "voice")


def read_csv(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    columns: Mapping[str, str] | None = None,
    delimiter: str | None = None,
    quoting: int | None = None,
    audio_root: str | os.PathLike | None = None,
    split: str | None = None,
    subset: str = "main",
    accent: str = "unknown",
    check_files: bool = True,
) -> Iterator[Record]:
    """CSV/TSV with a header. `columns` maps Record fields (`_CSV_FIELDS`) to header names; the
    defaults are {"audio": "audio_filepath", "text": "text"} and, for the other fields, a column of
    the field's own name (speaker, split, id, ...) when the header has one. The delimiter follows the extension
    (.tsv -> tab) unless given; TSVs are read unquoted, as Common Voice's must be (its sentences
    contain '"'). Relative audio paths resolve against `audio_root`, else the table's folder."""
    path = Path(source)
    # A field mapped to None (data=csv lists every field, so any can be set without Hydra's '+')
    # takes the default: its own name's column when the header has one.
    cols = {"audio": "audio_filepath", "text": "text", **{f: c for f, c in dict(columns or {}).items() if c}}
    if unknown := set(cols) - set(_CSV_FIELDS):
        raise ValueError(
            f"{path}: unknown Record field(s) in columns: {sorted(unknown)}; known: {_CSV_FIELDS}"
        )
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    quoting = quoting if quoting is not None else csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    base = Path(audio_root) if audio_root is not None else path.parent
    table = read_table(path, delimiter, quoting)
    header = next(table)
    # A column named as a Record field (speaker, split, id, ...) is read as it, as the JSONL reader
    # reads its keys: a table's own split column was ignored, and its rows split again by speaker.
    cols.update({f: f for f in _CSV_FIELDS if f not in cols and f in header})
    require_columns(path, header, cols)

    def make(row: dict[str, str] | Reject, where: str) -> Record:
        val = {field: ok(row)[column].strip() for field, column in cols.items()}
        if not val["audio"]:
            raise Reject("missing_field", f"empty {cols['audio']!r}")
        seconds = duration(val["duration"], text=True) if val.get("duration") else None
        return Record(
            id=val.get("id") or val["audio"],
            text=val["text"],
            audio_path=resolve(base, val["audio"]),
            speaker=val.get("speaker") or "unknown",
            accent=val.get("accent") or accent,
            duration=seconds,
            split=val.get("split") or split,
            subset=val.get("subset") or subset,
            engine=val.get("engine") or None,
            voice=val.get("voice") or None,
            source=where,
        )

    rows = Rows(ledger, split, check_files)
    for lineno, row in table:
        where = f"{path}:{lineno}"
        if (rec := rows.take(where, make, row, where, line=str(row))) is not None:
            yield rec
