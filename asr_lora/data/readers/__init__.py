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

from collections.abc import Callable, Iterator
from typing import Any

from asr_lora.data.readers.common_voice import read_common_voice
from asr_lora.data.readers.hf import read_hf
from asr_lora.data.readers.manifest import manifest_shards, read_csv, read_jsonl
from asr_lora.data.readers.nsc import read_nsc
from asr_lora.data.records import Ledger, Record

__all__ = ["READERS", "manifest_shards", "read", "read_common_voice", "read_csv", "read_hf", "read_jsonl", "read_nsc"]


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
