"""Mozilla Common Voice releases (TSV + clips)."""

from __future__ import annotations

import contextlib
import csv
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from asr_lora.data.readers.base import Reject, Rows, ok, read_table, require_columns
from asr_lora.data.records import Ledger, Record


# "Singaporean English" as contributors write it in the free-text accents field: Singapore(an)
# English, singapore english, English (Singapore), S'porean, Singlish, SG English, ...
SG_ACCENT = r"singapor|s'?porean|\bsinglish\b|\bsg\b"

ACCENT_PRESETS = {"sg": SG_ACCENT}

OFFICIAL_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def read_common_voice(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    tsv: str | Iterable[str] = "validated.tsv",
    **options,
) -> Iterator[Record]:
    """`tsv` is one table, a list of them, or "official": the release's own train.tsv, dev.tsv
    and test.tsv (speaker-disjoint), each row taking its file's split. A clip listed in two tables
    is kept once (the first), the other row is a "duplicate_id" skip."""
    if tsv == "official":
        if options.get("split") is not None:
            raise ValueError(f"{source}: tsv=official takes each row's split from its file "
                             f"(train.tsv, dev.tsv, test.tsv); drop split={options['split']!r}")
        options.pop("split", None)
        tables = [(name, split) for split, name in OFFICIAL_SPLITS.items()]
    elif isinstance(tsv, str):
        tables = [(tsv, options.pop("split", None))]
    else:
        split = options.pop("split", None)
        tables = [(t, split) for t in tsv]
    seen: set[str] = set()
    for name, split in tables:
        yield from _read_table(source, ledger, tsv=name, split=split, seen=seen, **options)


def _read_table(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    tsv: str,
    seen: set[str],
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
    the accent or vote filters are recorded as skips. `clip_durations.tsv` fills durations.
    `accents="sg"` is the preset `SG_ACCENT`; a row matches when any one of its '|' entries does,
    `accent` keeps the whole field; `meta["accent"]` is the first matching entry (every entry is
    in `extra["accents"]` when there are several)."""
    folder = Path(source)
    path = folder / tsv
    if not path.is_file():
        raise FileNotFoundError(f"Common Voice table not found: {path}")
    table = read_table(path, "\t", csv.QUOTE_NONE)
    header = next(table)
    accent_col = "accent" if "accent" in header and "accents" not in header else "accents"
    needed = {"speaker": "client_id", "audio": "path", "text": "sentence"}
    if accents is not None:
        needed["accent"] = accent_col
    votes = bool(min_up_votes) or min_vote_margin is not None
    if votes:
        needed |= {"up_votes": "up_votes", "down_votes": "down_votes"}
    require_columns(path, header, needed)
    if isinstance(accents, str):
        accents = [accents]
    if accents is not None:
        accents = [ACCENT_PRESETS.get(a, a) for a in accents]
    pattern = (
        re.compile("|".join(f"(?:{a})" for a in accents), re.IGNORECASE) if accents is not None else None
    )
    durations = _cv_durations(folder / "clip_durations.tsv")

    def make(row: dict[str, str] | Reject, where: str) -> Record:
        row = ok(row)
        clip, acc = row["path"].strip(), row.get(accent_col, "").strip()
        uid = Path(clip).stem or None
        if not clip or not row["client_id"].strip():
            raise Reject("missing_field", "empty path or client_id", uid)
        entries = [e.strip() for e in acc.split("|") if e.strip()]
        hits = [e for e in entries if pattern is None or pattern.search(e)]
        if pattern is not None and not hits:
            raise Reject("filtered_accent", f"accents {acc!r} do not match {pattern.pattern!r}", uid)
        if votes:
            try:
                up, down = int(row["up_votes"] or 0), int(row["down_votes"] or 0)
            except ValueError:
                raise Reject(
                    "bad_field", f"votes not integers: {row['up_votes']!r}, {row['down_votes']!r}", uid
                ) from None
            if up < min_up_votes or (min_vote_margin is not None and up - down < min_vote_margin):
                need = f"need up>={min_up_votes}, up-down>={min_vote_margin}"
                raise Reject("filtered_votes", f"up={up} down={down} ({need})", uid)
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
            extra={k: row[k] for k in ("age", "gender", "variant", "locale") if row.get(k)} | (
                {"accents": entries} if len(entries) > 1 else {}),
            meta={k: row[k].strip() for k in ("age", "gender") if row.get(k, "").strip()}
            | ({"accent": hits[0]} if hits else {}),
        )

    rows = Rows(ledger, split, check_files)
    rows.ids = seen  # shared across the tables of one call
    for lineno, row in table:
        where = f"{path}:{lineno}"
        if (rec := rows.take(where, make, row, where, line=str(row))) is not None:
            yield rec


def _cv_durations(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if path.is_file():
        for _, row in list(read_table(path, "\t", csv.QUOTE_NONE))[1:]:
            with contextlib.suppress(TypeError, KeyError, ValueError):
                out[row["clip"]] = float(row["duration[ms]"]) / 1000.0
    return out
