"""Speaker spreadsheets (NSC ships .xlsx per part, e.g. `PART1/DOC/Speaker Information (Part 1).XLSX`
with sheet "Speakers" and columns SCD/PART1, SEX, AGE, ...; Part 3's has sheets "Same Room" and
"Separate Room"). Any sheet whose header row names a speaker-id column is read; columns are matched
by name, case-insensitively, to a few canonical keys, so per-group report tables can group on them.
CSV files with the same columns work too. Column names beyond those seen in public NSC loaders are
guesses: unknown columns are ignored, never an error."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

ID_COLUMNS = ("scd/part1", "scd/part2", "scd/part3", "scd", "speaker id", "speaker_id", "speaker", "spk", "client_id")
CONFERENCE_COLUMNS = ("conference id", "conference_id", "session id")
FIELDS = {
    "gender": ("sex", "gender"),
    "age_group": ("age group", "age_group", "agegroup", "age"),
    "first_language": ("first language", "first_language", "1st language", "native language", "mother tongue",
                       "language"),
    "ethnic_group": ("ethnic group", "ethnic_group", "ethnicity", "race"),
}


def speaker_key(value: object) -> str:
    """Spreadsheet cells hold 1, 1.0, "0001" or " 0001 " for the same speaker: digits lose their
    leading zeros, everything else is stripped and upper-cased."""
    s = str(value).strip()
    if re.fullmatch(r"\d+(\.0+)?", s):
        return str(int(float(s)))
    return s.upper()


def _rows(path: Path) -> Iterator[list[str]]:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True, data_only=True)
        try:
            for ws in wb.worksheets:
                yield []  # a sheet boundary: the header is looked for again
                for row in ws.iter_rows(values_only=True):
                    yield ["" if c is None else str(c) for c in row]
        finally:
            wb.close()
    else:
        data = path.read_bytes()
        for encoding in ("utf-8-sig", "cp1252", "latin-1"):  # a sheet saved as CSV on Windows: cp1252
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        yield []
        yield from csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")


def load_speakers(paths: Iterable[str | Path]) -> dict[str, dict[str, str]]:
    """{speaker key: {gender, age_group, first_language, ethnic_group}} from every sheet of every
    file; a Separate Room sheet's (conference id, speaker id) also becomes "<conference>_<speaker>"."""
    out: dict[str, dict[str, str]] = {}
    for path in paths:
        try:
            _read_sheet(Path(path), out)
        except Exception as e:  # openpyxl and zipfile raise many types; the sheet is metadata only
            log.warning("%s: speaker information not read (%s: %s); its speakers' clips carry no gender, age or "
                        "language", path, type(e).__name__, e)
    return out


def _read_sheet(path: Path, out: dict[str, dict[str, str]]) -> None:
    header: list[str] | None = None
    for row in _rows(path):
        if not row:
            header = None
            continue
        cells = [c.strip().lower() for c in row]
        if header is None:
            if any(c in ID_COLUMNS for c in cells):
                header = cells
            continue
        rec = dict(zip(header, (c.strip() for c in row)))
        sid = next((rec[c] for c in ID_COLUMNS if rec.get(c)), None)
        if sid is None:
            continue
        meta = {}
        for key, names in FIELDS.items():
            value = next((rec[n] for n in names if rec.get(n)), None)
            if value is not None:
                meta[key] = value
        out.setdefault(speaker_key(sid), meta)
        conf = next((rec[c] for c in CONFERENCE_COLUMNS if rec.get(c)), None)
        if conf is not None:
            out.setdefault(f"{speaker_key(conf)}_{speaker_key(sid)}", meta)


def find_speaker_files(folder: Path) -> list[Path]:
    """Spreadsheets with "speaker" in their name in a part folder or its DOC/Documents subfolder."""
    found: list[Path] = []
    for d in (folder, folder / "DOC", folder / "Documents", folder / "Document"):
        if d.is_dir():
            found += [p for p in sorted(d.iterdir()) if p.is_file() and "speaker" in p.name.lower()
                      and p.suffix.lower() in (".xlsx", ".xlsm", ".csv", ".tsv") and not p.name.startswith("~$")]
    return found


def lookup(table: dict[str, dict[str, str]], candidates: Iterable[str]) -> dict[str, str]:
    for c in candidates:
        if (meta := table.get(speaker_key(c))) is not None:
            return dict(meta)
    return {}
