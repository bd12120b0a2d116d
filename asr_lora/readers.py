"""One small adapter per corpus layout, all yielding `Record`s and accounting for every row.

Each reader is `read_X(source, ledger, **options) -> Iterator[Record]`. For every input row it
calls `ledger.see()`, then either `ledger.keep()` (just before yielding) or `ledger.skip(...)`
with a detail naming "file:line". Reason keys:

    bad_line        undecodable bytes, broken JSON/CSV, a row that is not an object
    missing_field   a required field is absent or empty
    bad_field       a field of the wrong type (duration "abc", negative or NaN, votes "x")
    empty_text      blank transcript
    duplicate_id    id already kept earlier in this call (the first one wins)
    missing_file    referenced audio does not exist
    unreadable / empty_file   (HF only) in-memory audio bytes soundfile cannot decode
    filtered_accent / filtered_votes   (Common Voice) rows deliberately left out

Readers do not decode audio files: the pipeline does, and records "unreadable" there. The HF
reader is the exception, because Hub datasets often carry the audio as bytes, not as files.
Configuration mistakes (wrong folder, a mapped column absent from a header) raise instead of
skipping rows, because then every row would be skipped for the same reason.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .audio import AudioError, decode_bytes, to_mono
from .records import Ledger, Record


class _Reject(Exception):
    """A row that becomes a ledger skip rather than a Record."""

    def __init__(self, reason: str, why: str, id: str | None = None) -> None:
        super().__init__(why)
        self.reason, self.id = reason, id


def _snip(s: Any, n: int = 160) -> str:
    s = s if isinstance(s, str) else repr(s)
    return s if len(s) <= n else s[:n] + "..."


def _resolve(base: Path, p: str) -> str:
    return str(Path(p) if os.path.isabs(p) else base / p)


class _Rows:
    """Per-call bookkeeping shared by all readers: counting, the checks every row ends with,
    and turning `_Reject` into a ledger skip. Ids are claimed only once a row is kept, so a
    good row may reuse the id of an earlier row that was skipped."""

    def __init__(self, ledger: Ledger, split: str | None, check_files: bool = True) -> None:
        self.ledger, self.split, self.check_files, self.ids = ledger, split, check_files, set()

    def take(self, where: str, make: Callable[..., Record], *args: Any, line: str = "") -> Record | None:
        """Count one input row; `make(*args)` builds its Record or raises `_Reject`."""
        self.ledger.see()
        try:
            rec = make(*args)
            self._check(rec)
        except _Reject as e:
            shown = f" [{_snip(line)}]" if line and e.reason in ("missing_file", "duplicate_id") else ""
            self.ledger.skip(e.id or where, e.reason, f"{where}: {e}{shown}", where, self.split)
            return None
        self.ids.add(rec.id)
        self.ledger.keep()
        return rec

    def _check(self, rec: Record) -> None:
        if not rec.text.strip():
            raise _Reject("empty_text", "transcript is empty", rec.id)
        if rec.id in self.ids:
            raise _Reject("duplicate_id", f"id {rec.id!r} already used", rec.id)
        # os.path.isfile, unlike Path.exists, returns False for NUL bytes and over-long names.
        if self.check_files and rec.audio is None and not os.path.isfile(rec.audio_path or ""):
            raise _Reject("missing_file", f"audio not found: {rec.audio_path}", rec.id)


# ------------------------------------------------------------------------------------------ JSONL

_STR_FIELDS = ("id", "speaker", "accent", "split", "subset", "engine", "voice")


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
    `audio_filepath`, `text`, optional `duration`, `id`, `speaker`, `accent`, `split`, `subset`,
    `engine`, `voice` (other keys go to `extra`). Relative paths resolve against the manifest's
    folder. `split`/`subset`/`accent` are defaults for rows that do not say.
    Blank lines are not rows and are not counted."""
    defaults = {"split": split, "subset": subset, "accent": accent}
    rows = _Rows(ledger, split, check_files)  # one id set across shards: duplicates between shards are caught
    for path in manifest_shards(source):
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
        raise _Reject("bad_line", f"not UTF-8 ({e.reason} at byte {e.start}): {_snip(raw)}") from None
    try:
        row = json.loads(line.lstrip("\ufeff") if lineno == 1 else line)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested input
        raise _Reject("bad_line", f"not valid JSON ({_snip(str(e), 80)}): {_snip(line)}") from None
    if not isinstance(row, dict):
        raise _Reject("bad_line", f"expected a JSON object, got {type(row).__name__}: {_snip(line)}")
    # An empty text is its own reason ("empty_text", checked later); an empty path is a missing one.
    for key in ("audio_filepath", "text"):
        if row.get(key) is None or (key == "audio_filepath" and row[key] == ""):
            raise _Reject("missing_field", f"missing {key!r}: {_snip(line)}")
        if not isinstance(row[key], str):
            raise _Reject("bad_field", f"{key!r} must be a string, got {_snip(row[key])}")
    duration = row.get("duration")
    if duration is not None:
        try:  # float() also rejects JSON integers too big for a float
            ok = not isinstance(duration, (bool, str)) and math.isfinite(float(duration)) and duration >= 0
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise _Reject("bad_field", f"'duration' must be a non-negative number, got {_snip(duration)}")
    fields = {k: row.get(k) for k in _STR_FIELDS}
    for key, value in fields.items():
        if isinstance(value, (dict, list)):
            raise _Reject("bad_field", f"{key!r} must be a string, got {_snip(value)}")
        fields[key] = None if value is None or value == "" else str(value)
    try:  # a JSON escape such as "\ud800" decodes to a lone surrogate that no file can hold
        "".join([row["text"], row["audio_filepath"], *filter(None, fields.values())]).encode("utf-8")
    except UnicodeEncodeError:
        raise _Reject("bad_field", f"lone surrogate escape in a text field: {_snip(line)}") from None
    return Record(
        id=fields["id"] or row["audio_filepath"],
        text=row["text"],
        audio_path=_resolve(base, row["audio_filepath"]),
        duration=float(duration) if duration is not None else None,
        speaker=fields["speaker"] or "unknown",
        accent=fields["accent"] or defaults["accent"],
        split=fields["split"] or defaults["split"],
        subset=fields["subset"] or defaults["subset"],
        engine=fields["engine"],
        voice=fields["voice"],
        source=where,
        extra={k: v for k, v in row.items() if k not in ("audio_filepath", "text", "duration", *_STR_FIELDS)},
    )


# -------------------------------------------------------------------------------------- CSV / TSV


def _table(path: Path, delimiter: str, quoting: int) -> Iterator[Any]:
    """First yields the header, then (line number, {column: value} | _Reject) per non-blank row.
    Undecodable bytes survive as surrogates so the row, not the file, is rejected."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise ValueError(f"{path}: empty file, expected a header row")
        yield header
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield reader.line_num, _Reject("bad_line", f"malformed row: {e}")
                continue
            text = delimiter.join(row)
            if not text.strip():
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                yield reader.line_num, _Reject("bad_line", f"not UTF-8: {_snip(text)!a}")
                continue
            if len(row) != len(header):
                yield (
                    reader.line_num,
                    _Reject("bad_line", f"expected {len(header)} fields, got {len(row)}: {_snip(row)}"),
                )
                continue
            yield reader.line_num, dict(zip(header, row))


def _require_columns(path: Path, header: list[str], wanted: Mapping[str, str]) -> None:
    for field, column in wanted.items():
        if column not in header:
            raise ValueError(f"{path}: column {column!r} (for {field!r}) is not in the header {header}")


def _ok(row: dict[str, str] | _Reject) -> dict[str, str]:
    if isinstance(row, _Reject):
        raise row
    return row


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
    defaults are {"audio": "audio_filepath", "text": "text"}. The delimiter follows the extension
    (.tsv -> tab) unless given; TSVs are read unquoted, as Common Voice's must be (its sentences
    contain '"'). Relative audio paths resolve against `audio_root`, else the table's folder."""
    path = Path(source)
    cols = {"audio": "audio_filepath", "text": "text", **dict(columns or {})}
    if unknown := set(cols) - set(_CSV_FIELDS):
        raise ValueError(
            f"{path}: unknown Record field(s) in columns: {sorted(unknown)}; known: {_CSV_FIELDS}"
        )
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    quoting = quoting if quoting is not None else csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    base = Path(audio_root) if audio_root is not None else path.parent
    table = _table(path, delimiter, quoting)
    _require_columns(path, next(table), cols)

    def make(row: dict[str, str] | _Reject, where: str) -> Record:
        val = {field: _ok(row)[column].strip() for field, column in cols.items()}
        if not val["audio"]:
            raise _Reject("missing_field", f"empty {cols['audio']!r}")
        try:
            duration = float(val["duration"]) if val.get("duration") else None
        except ValueError:
            raise _Reject("bad_field", f"duration {val['duration']!r} is not a number") from None
        return Record(
            id=val.get("id") or val["audio"],
            text=val["text"],
            audio_path=_resolve(base, val["audio"]),
            speaker=val.get("speaker") or "unknown",
            accent=val.get("accent") or accent,
            duration=duration,
            split=val.get("split") or split,
            subset=val.get("subset") or subset,
            engine=val.get("engine") or None,
            voice=val.get("voice") or None,
            source=where,
        )

    rows = _Rows(ledger, split, check_files)
    for lineno, row in table:
        where = f"{path}:{lineno}"
        if (rec := rows.take(where, make, row, where, line=str(row))) is not None:
            yield rec


# ----------------------------------------------------------------------------------- Common Voice


def read_common_voice(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    tsv: str = "validated.tsv",
    accents: str | Iterable[str] | None = None,
    min_up_votes: int = 0,
    min_vote_margin: int | None = None,
    split: str | None = None,
    subset: str = "main",
    check_files: bool = True,
) -> Iterator[Record]:
    """A Common Voice release folder (e.g. `cv-corpus-17.0/en`): `<tsv>` with client_id, path,
    sentence, up_votes, down_votes, accents, ... and audio in `clips/`. `accents` is a regex (or
    a list of them) searched case-insensitively in the free-text accents field, which may hold
    several entries joined by '|'; releases before ~v8 call that column `accent`. Rows failing
    the accent or vote filters are recorded as skips. `clip_durations.tsv` fills durations."""
    folder = Path(source)
    path = folder / tsv
    if not path.is_file():
        raise FileNotFoundError(f"Common Voice table not found: {path}")
    table = _table(path, "\t", csv.QUOTE_NONE)
    header = next(table)
    accent_col = "accent" if "accent" in header and "accents" not in header else "accents"
    needed = {"speaker": "client_id", "audio": "path", "text": "sentence"}
    if accents is not None:
        needed["accent"] = accent_col
    votes = bool(min_up_votes) or min_vote_margin is not None
    if votes:
        needed |= {"up_votes": "up_votes", "down_votes": "down_votes"}
    _require_columns(path, header, needed)
    if isinstance(accents, str):
        accents = [accents]
    pattern = (
        re.compile("|".join(f"(?:{a})" for a in accents), re.IGNORECASE) if accents is not None else None
    )
    durations = _cv_durations(folder / "clip_durations.tsv")

    def make(row: dict[str, str] | _Reject, where: str) -> Record:
        row = _ok(row)
        clip, acc = row["path"].strip(), row.get(accent_col, "").strip()
        uid = Path(clip).stem or None
        if not clip or not row["client_id"].strip():
            raise _Reject("missing_field", "empty path or client_id", uid)
        if pattern is not None and not pattern.search(acc):
            raise _Reject("filtered_accent", f"accents {acc!r} do not match {pattern.pattern!r}", uid)
        if votes:
            try:
                up, down = int(row["up_votes"] or 0), int(row["down_votes"] or 0)
            except ValueError:
                raise _Reject(
                    "bad_field", f"votes not integers: {row['up_votes']!r}, {row['down_votes']!r}", uid
                ) from None
            if up < min_up_votes or (min_vote_margin is not None and up - down < min_vote_margin):
                need = f"need up>={min_up_votes}, up-down>={min_vote_margin}"
                raise _Reject("filtered_votes", f"up={up} down={down} ({need})", uid)
        return Record(
            id=uid,
            text=row["sentence"].strip(),
            audio_path=str(folder / "clips" / clip),
            speaker=row["client_id"].strip(),
            accent=acc or "unknown",
            duration=durations.get(clip),
            split=split,
            subset=subset,
            source=where,
            extra={k: row[k] for k in ("age", "gender", "variant", "locale") if row.get(k)},
        )

    rows = _Rows(ledger, split, check_files)
    for lineno, row in table:
        where = f"{path}:{lineno}"
        if (rec := rows.take(where, make, row, where, line=str(row))) is not None:
            yield rec


def _cv_durations(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if path.is_file():
        for _, row in list(_table(path, "\t", csv.QUOTE_NONE))[1:]:
            with contextlib.suppress(TypeError, KeyError, ValueError):
                out[row["clip"]] = float(row["duration[ms]"]) / 1000.0
    return out


# ------------------------------------------------------------------------------------------- NSC


def read_nsc(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    parts: Iterable[str] | None = None,
    channel: str = "CHANNEL0",
    split: str | None = None,
    subset: str = "main",
) -> Iterator[Record]:
    """IMDA National Speech Corpus, Parts 1-2 (read speech). Assumed layout, from the corpus
    documentation as remembered (no copy was at hand to verify):

        <source>/PART1/DATA/CHANNEL0/SCRIPT/000010.TXT          speaker 00001, session 0
        <source>/PART1/DATA/CHANNEL0/WAVE/SPEAKER0001/SESSION0/000010001.WAV

    Script files hold pairs of lines: "<utterance id>\\t<raw transcript>" (with markers such as
    [lah], (ppb), <FIL/>), then a tab-indented normalised transcript. They come as UTF-8 (often
    with a BOM) or UTF-16. The raw transcript becomes `text` (the project normaliser handles the
    markers); the normalised one goes to `extra["normalised"]`. WAVs are found by utterance id
    anywhere under WAVE/, so speaker-number padding (4 vs 5 digits) does not matter; the speaker
    is "<part>/<SPEAKERxxxx folder>". `source` may be the corpus root or one PART folder."""
    root = Path(source)
    if (root / "DATA").is_dir():
        part_dirs = [root]
    else:
        part_dirs = sorted(
            d for d in root.glob("*") if d.name.upper().startswith("PART") and (d / "DATA").is_dir()
        )
    if parts is not None:
        part_dirs = [d for d in part_dirs if d.name.upper() in {p.upper() for p in parts}]
    if not part_dirs:
        raise FileNotFoundError(f"no NSC PART*/DATA folders under {root}")
    rows = _Rows(ledger, split, check_files=False)  # the WAV index below is the existence check
    for part in part_dirs:
        data = part / "DATA" / channel
        scripts = sorted(p for p in (data / "SCRIPT").glob("*") if p.suffix.upper() == ".TXT")
        if not scripts:
            raise FileNotFoundError(f"no script .TXT files in {data / 'SCRIPT'}")
        wavs = {p.stem.upper(): p for p in (data / "WAVE").rglob("*") if p.suffix.upper() == ".WAV"}
        for script in scripts:
            yield from _nsc_script(script, part.name, wavs, rows, subset)


def _decode_script(data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:200]:  # UTF-16 without a BOM: ASCII text full of NULs
        return data.decode("utf-16-le", errors="replace")
    return data.decode("utf-8-sig", errors="surrogateescape")


def _nsc_script(script: Path, part: str, wavs: dict[str, Path], rows: _Rows, subset: str) -> Iterator[Record]:
    def make(line: str, where: str) -> Record:
        m = re.match(r"(\S+)\s+(.*)$", line)
        if "\ufffd" in line or any("\udc80" <= ch <= "\udcff" for ch in line):
            raise _Reject("bad_line", f"undecodable bytes: {_snip(line)!a}")
        if m is None:
            raise _Reject("bad_line", f"expected '<utterance id>\\t<transcript>': {_snip(line)!a}")
        uid = m.group(1)
        wav = wavs.get(uid.upper())
        if wav is None:
            raise _Reject("missing_file", f"no {uid}.WAV under {script.parents[1] / 'WAVE'}", uid)
        speaker_dir = wav.parent.parent if wav.parent.name.upper().startswith("SESSION") else wav.parent
        return Record(
            id=uid,
            text=m.group(2).strip(),
            audio_path=str(wav),
            speaker=f"{part}/{speaker_dir.name}",
            accent="sg",
            split=rows.split,
            subset=subset,
            source=where,
            extra={"session": wav.parent.name},
        )

    pending: Record | None = None  # kept, but waits for its normalised line
    for lineno, line in enumerate(_decode_script(script.read_bytes()).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line[0] in " \t":
            if pending is not None:
                pending.extra["normalised"] = line.strip()
            continue  # a normalised line after a skipped utterance belongs to that skip
        if pending is not None:
            yield pending
        where = f"{script}:{lineno}"
        pending = rows.take(where, make, line, where, line=line)
    if pending is not None:
        yield pending


# ------------------------------------------------------------------------------------ HF datasets


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
    Audio is never decoded by datasets (no torchcodec): bytes are decoded here with soundfile
    into `Record.audio` at their native rate; a row with only a local path gets `audio_path`."""
    import datasets

    with _audio_paths_without_torchcodec():
        if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
            ds, label = source, f"<{type(source).__name__}>"
        else:
            folder, label = Path(source), str(source)
            kw = {"split": split, "streaming": streaming, "cache_dir": cache_dir, **load_kwargs}
            if folder.is_dir() and (any(folder.rglob("metadata.csv")) or any(folder.rglob("metadata.jsonl"))):
                ds = datasets.load_dataset("audiofolder", data_dir=str(folder), **kw)
            else:
                ds = datasets.load_dataset(str(source), name, **kw)
        yield from _hf_rows(ds, label, ledger, split, columns, audio_column, subset, accent)


_HF_GUESSES = {
    "text": ("text", "transcription", "sentence", "transcript", "normalized_text"),
    "id": ("id", "file_name"),
    "speaker": ("speaker_id", "client_id", "speaker"),
    "accent": ("accent", "accents"),
}


def _hf_rows(
    ds: Any,
    label: str,
    ledger: Ledger,
    split: str,
    columns: Mapping[str, str] | None,
    audio_column: str,
    subset: str,
    accent: str,
) -> Iterator[Record]:
    from datasets import Audio

    names = list(ds.features or {})
    if audio_column not in names:
        raise ValueError(f"{label}: no audio column {audio_column!r}; columns are {names}")
    cols = dict(columns or {})
    for field, guesses in _HF_GUESSES.items():
        cols.setdefault(field, next((c for c in guesses if c in names), None))
    for field, column in cols.items():
        if (column is None and field == "text") or (column is not None and column not in names):
            raise ValueError(f"{label}: column {column!r} for {field!r} is not among {names}")
    if isinstance(ds.features[audio_column], Audio):
        ds = ds.cast_column(audio_column, Audio(decode=False))

    def make(row: Mapping[str, Any], where: str) -> Record:
        get = {f: "" if c is None or row[c] is None else str(row[c]) for f, c in cols.items()}
        audio = row[audio_column]
        audio = {"path": audio} if isinstance(audio, str) else audio or {}
        rec = Record(
            id=get["id"] or where,
            text=get["text"].strip(),
            speaker=get["speaker"] or "unknown",
            accent=get["accent"] or accent,
            split=split,
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
                raise _Reject("missing_field", "no audio bytes, array or path", rec.id)
        except AudioError as e:
            raise _Reject(e.reason, str(e), rec.id) from None
        return rec

    rows = _Rows(ledger, split, check_files=True)
    for index, row in enumerate(ds):
        where = f"{label}[{split}]:{index}"
        if (rec := rows.take(where, make, row, where)) is not None:
            yield rec


# ---------------------------------------------------------------------------------------- registry

READERS: dict[str, Callable[..., Iterator[Record]]] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "hf": read_hf,
    "common_voice": read_common_voice,
    "nsc": read_nsc,
}


def read(kind: str, source: Any, ledger: Ledger, **options: Any) -> Iterator[Record]:
    """`read("common_voice", folder, ledger, accents="singapor")` == `read_common_voice(...)`."""
    if kind not in READERS:
        raise ValueError(f"unknown reader {kind!r}; known: {sorted(READERS)}")
    return READERS[kind](source, ledger, **options)
