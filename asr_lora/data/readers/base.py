"""What every reader shares: the row accounting helper, table reading, path resolution."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from asr_lora.data.audio import parse_address
from asr_lora.data.records import Ledger, Record, canonical_split, split_names


class Reject(Exception):
    """A row that becomes a ledger skip rather than a Record."""

    def __init__(self, reason: str, why: str, id: str | None = None) -> None:
        super().__init__(why)
        self.reason, self.id = reason, id


def snip(s: Any, n: int = 160) -> str:
    s = s if isinstance(s, str) else repr(s)
    return s if len(s) <= n else s[:n] + "..."


def resolve(base: Path, p: str) -> str:
    return str(Path(p) if os.path.isabs(p) else base / p)


class Rows:
    """Per-call bookkeeping shared by all readers: counting, the checks every row ends with,
    and turning `Reject` into a ledger skip. Ids are claimed only once a row is kept, so a
    good row may reuse the id of an earlier row that was skipped."""

    def __init__(self, ledger: Ledger, split: str | None, check_files: bool = True) -> None:
        self.ledger, self.check_files, self.ids = ledger, check_files, set()
        self.split = None if split is None else default_split(split)

    def take(self, where: str, make: Callable[..., Record], *args: Any, line: str = "") -> Record | None:
        """Count one input row; `make(*args)` builds its Record or raises `Reject`."""
        self.ledger.see()
        try:
            rec = make(*args)
            self._check(rec)
        except Reject as e:
            shown = f" [{snip(line)}]" if line and e.reason in ("missing_file", "duplicate_id") else ""
            self.ledger.skip(e.id or where, e.reason, f"{where}: {e}{shown}", where, self.split)
            return None
        self.ids.add(rec.id)
        self.ledger.keep()
        return rec

    def _check(self, rec: Record) -> None:
        if rec.split is not None:
            # Later stages keep only train/dev/test: any other name would lose the row unsaid.
            if (split := canonical_split(rec.split)) is None:
                raise Reject("bad_field", f"split {snip(rec.split, 40)!r} is not one of {split_names()}", rec.id)
            rec.split = split
        if not rec.text.strip():
            raise Reject("empty_text", "transcript is empty", rec.id)
        if rec.id in self.ids:
            raise Reject("duplicate_id", f"id {rec.id!r} already used", rec.id)
        # os.path.isfile, unlike Path.exists, returns False for NUL bytes and over-long names.
        if self.check_files and rec.audio is None and not os.path.isfile(audio_file(rec.audio_path or "")):
            raise Reject("missing_file", f"audio not found: {rec.audio_path}", rec.id)


def default_split(split: str) -> str:
    """A reader's `split` option as train/dev/test; any other name is a configuration mistake."""
    if (name := canonical_split(split)) is None:
        raise ValueError(f"split option {split!r} is not one of {split_names()}")
    return name


def audio_file(path: str) -> str:
    """The file on disk behind an audio path, which may address a segment of it ("<wav>#t=a,b")."""
    return (parse_address(path) or (path,))[0]


def duration(value: Any, *, text: bool = False, name: str = "duration") -> float:
    """A stated length or time in seconds (field `name`): a finite, non-negative number (given as
    `text` in tables)."""
    try:  # float() also rejects JSON integers too big for a float
        seconds = math.nan if isinstance(value, bool) or (isinstance(value, str) and not text) else float(value)
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise Reject("bad_field", f"{name!r} must be a non-negative number, got {snip(value)}")
    return seconds


def read_table(path: Path, delimiter: str, quoting: int) -> Iterator[Any]:
    """First yields the header, then (line number, {column: value} | Reject) per non-blank line.
    Undecodable bytes survive as surrogates so the row, not the file, is rejected.

    Each line is parsed on its own (strict), not by one csv.reader over the file: a transcript with a
    quote it never closes would otherwise swallow every line up to the next quote into one field, and
    those rows would vanish uncounted. No ASR manifest needs a field that spans lines."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = iter(f)
        header = [h.strip() for h in next(csv.reader([next(lines, "")], delimiter=delimiter, quoting=quoting), [])]
        if not header:
            raise ValueError(f"{path}: empty file, expected a header row")
        yield header
        for lineno, line in enumerate(lines, 2):
            if not line.strip(" \r\n"):  # blank; a line of delimiters is a row of empty fields
                continue
            try:
                row = next(csv.reader([line], delimiter=delimiter, quoting=quoting, strict=True))
            except csv.Error as e:
                detail = "a quote opened in it is not closed on its line" if "end of data" in str(e) else e
                yield lineno, Reject("bad_line", f"malformed row ({detail}): {snip(line.rstrip())}")
                continue
            text = delimiter.join(row)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                yield lineno, Reject("bad_line", f"not UTF-8: {snip(text)!a}")
                continue
            if not "".join(row).strip():
                yield lineno, Reject("bad_line", f"every field empty: {row!r}")
                continue
            if len(row) != len(header):
                yield lineno, Reject("bad_line", f"expected {len(header)} fields, got {len(row)}: {snip(row)}")
                continue
            yield lineno, dict(zip(header, row))


def require_columns(path: Path, header: list[str], wanted: Mapping[str, str]) -> None:
    for field, column in wanted.items():
        if column not in header:
            raise ValueError(f"{path}: column {column!r} (for {field!r}) is not in the header {header}")


def ok(row: dict[str, str] | Reject) -> dict[str, str]:
    if isinstance(row, Reject):
        raise row
    return row
