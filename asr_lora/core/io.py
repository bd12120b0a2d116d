"""Publishing files and directories atomically: write beside the target, then rename into place.

Every result a user or a later stage reads (reports, metrics, prepared data, caches, exports) goes
through here, so a crash leaves either the old version or the new one, never half of one. The
temporary name is a hidden sibling (same filesystem, so the rename is atomic) unique to the
process, so parallel sweep jobs writing the same cache entry never share one. `numbered_lines`
is the one reader of the line files users hand in (sentences, terms).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content into; it replaces `path` only if the
    block finishes. On an error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the data must be on disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> Path:
    """`obj` as JSON that every parser reads: NaN and infinities (an interval of one speaker, a
    change from zero) are written as null, which Python's json would write as bare NaN/Infinity."""
    dump_kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(finite(obj), allow_nan=False, **dump_kwargs))


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (numpy's included) replaced by None."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        return float(obj) if math.isfinite(obj) else None
    return obj


def stage_dir(target: str | os.PathLike) -> Path:
    """A fresh temporary sibling directory to build `target` in (see `publish_dir`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def publish_dir(staged: Path, target: str | os.PathLike) -> Path:
    """Move a staged directory into place, replacing any previous `target` as a whole."""
    target = Path(target)
    staged.chmod(0o755)  # mkdtemp makes 0700 directories
    if target.exists():  # os.replace cannot overwrite a non-empty directory: move the old one aside
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(staged, target)
        shutil.rmtree(old)
    else:
        os.replace(staged, target)
    return target


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging directory; it becomes `target` only if the block finishes, else it is removed."""
    staged = stage_dir(target)
    try:
        yield staged
        publish_dir(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def numbered_lines(path: str | os.PathLike, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) for every line of a UTF-8 file a user names as `what` (a BOM is
    dropped). Raises FileNotFoundError naming `what` and the path, or ValueError naming file:line
    for bytes that are not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {path}")
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            out.append((n, raw.decode("utf-8").strip().lstrip("\ufeff")))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8") from None
    return out


class JsonFileError(ValueError):
    """A JSON file a command reads is missing, unreadable, not JSON, or not the object expected."""


def read_json(path: str | os.PathLike, what: str = "file", expect: type | None = dict) -> Any:
    """The parsed contents of a JSON file, or JsonFileError naming the file (and the line and column
    of a syntax error) where json.loads would name none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JsonFileError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise JsonFileError(f"{path}: unreadable {what} ({e.__class__.__name__}: {e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise JsonFileError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); a broken {what}?") from None
    if expect is not None and not isinstance(obj, expect):
        raise JsonFileError(f"{path}: a {what} must hold a JSON {_JSON_NAMES.get(expect, expect.__name__)}, "
                            f"not {_JSON_NAMES.get(type(obj), type(obj).__name__)}")
    return obj


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_bytes(d: str | os.PathLike) -> int:
    """Total size of the files under `d` (0 when it does not exist)."""
    d = Path(d)
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
