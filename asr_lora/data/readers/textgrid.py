"""Praat TextGrids as the IMDA National Speech Corpus ships them: text (long or short form) in
UTF-8, UTF-8 with BOM, UTF-16 with BOM (LE or BE), UTF-16 without BOM, an occasional legacy code
page, and Praat's binary format.

Text TextGrids are parsed by praatio (maintained, on PyPI), given a string we decoded ourselves,
because praatio's own `openTextgrid` only tries UTF-16 then UTF-8 and validates intervals (it
rejects the zero/negative-length intervals NSC contains, which must become recorded skips instead).
praatio does not read the binary format; praat-textgrids does, but it mis-reads tier bounds and
non-ASCII tier names in binary files and UTF-16LE text files, so the binary case alone is parsed
here, following Praat's writer (big-endian doubles, int32 counts, strings as a uint16 length and
ASCII bytes, or 0xFFFF, a uint16 length and UTF-16BE code units).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

BINARY_MAGIC = b"ooBinaryFile\x08TextGrid"


class TextGridError(Exception):
    """A TextGrid that cannot be decoded or parsed; the reader records it as a skip."""


@dataclass
class Tier:
    name: str
    kind: str  # "IntervalTier" or "TextTier"
    intervals: list[tuple[float, float, str]]  # (start, end, label); points have start == end


def read_textgrid(data: bytes) -> list[Tier]:
    """Every tier of a TextGrid file's bytes, intervals in file order, bad ones included."""
    if data.startswith(BINARY_MAGIC):
        try:
            return _binary(io.BytesIO(data[len(BINARY_MAGIC):]))
        except (struct.error, UnicodeDecodeError, ValueError) as e:
            raise TextGridError(f"broken binary TextGrid: {e}") from e
    text = decode_text(data)
    if "ooTextFile" not in text[:300] or "TextGrid" not in text[:300]:
        raise TextGridError(f"not a TextGrid (starts {text[:40]!r})")
    from praatio.utilities import textgrid_io

    try:
        parsed = textgrid_io.parseTextgridStr(text, includeEmptyIntervals=True)
        tiers = []
        for t in parsed["tiers"]:
            if t["class"] == "IntervalTier":
                rows = [(float(a), float(b), str(label)) for a, b, label in t["entries"]]
            else:
                rows = [(float(a), float(a), str(label)) for a, label in t["entries"]]
            tiers.append(Tier(str(t["name"]), t["class"], rows))
    except Exception as e:  # praatio raises IndexError/ValueError/KeyError on malformed files
        raise TextGridError(f"cannot parse TextGrid: {type(e).__name__}: {e}") from e
    return tiers


def decode_text(data: bytes) -> str:
    """BOM first, then UTF-16 recognised by its NUL bytes, then strict UTF-8, then the best guess of
    charset-normalizer (as lhotse's NSC recipe does) for the odd legacy code page."""
    if data.startswith(b"\xef\xbb\xbf"):
        return _strict(data, "utf-8-sig")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return _strict(data, "utf-16")
    head = data[:400]
    if head.count(b"\x00") > len(head) // 4:
        return _strict(data, "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise TextGridError("undecodable bytes: neither UTF-8, UTF-16 nor a recognisable code page")
    return str(best)


def _strict(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise TextGridError(f"not valid {encoding}: {e}") from e


def _string(f: io.BytesIO) -> str:
    (n,) = struct.unpack(">H", _take(f, 2))
    if n == 0xFFFF:
        (n,) = struct.unpack(">H", _take(f, 2))
        return _take(f, 2 * n).decode("utf-16-be")
    return _take(f, n).decode("ascii")


def _take(f: io.BytesIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise ValueError(f"file ends early (wanted {n} bytes, got {len(b)})")
    return b


def _binary(f: io.BytesIO) -> list[Tier]:
    _xmin, _xmax = struct.unpack(">2d", _take(f, 16))
    if not _take(f, 1)[0]:
        return []
    (count,) = struct.unpack(">i", _take(f, 4))
    tiers = []
    for _ in range(count):
        kind = _take(f, _take(f, 1)[0]).decode("ascii")
        if kind not in ("IntervalTier", "TextTier"):
            raise ValueError(f"unknown tier class {kind!r}")
        name = _string(f)
        _take(f, 16)  # tier xmin, xmax
        (n,) = struct.unpack(">i", _take(f, 4))
        rows = []
        for _ in range(n):
            if kind == "IntervalTier":
                a, b = struct.unpack(">2d", _take(f, 16))
            else:
                (a,) = struct.unpack(">d", _take(f, 8))
                b = a
            rows.append((a, b, _string(f)))
        tiers.append(Tier(name, kind, rows))
    return tiers

