"""The one record every reader produces, and the ledger that accounts for every input row.

Readers yield `Record`s for usable rows and call `ledger.skip(...)` for the rest, so that
`ledger.seen == ledger.kept + sum(skipped)` always holds and the data report can list
every dropped item with its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


SPLITS = ("train", "dev", "test")  # every source's rows land in one of these
# Other names corpora give the three splits, matched in any case. "eval" is not among them: it
# names the test set in some corpora and the validation set in others.
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "dev", "development": "dev", "validation": "dev",
               "valid": "dev", "val": "dev", "test": "test", "testing": "test"}


def canonical_split(name: str) -> str | None:
    """train, dev or test for a name in `SPLIT_NAMES` (any case, outer spaces ignored), else None."""
    return SPLIT_NAMES.get(name.strip().lower())


def split_names() -> str:
    """The accepted split names, for error messages."""
    return ", ".join(SPLIT_NAMES)


@dataclass
class Record:
    id: str
    text: str
    # A file on disk, or None when `audio` holds samples; may also address a part of a file
    # ("<wav>#t=<start>,<end>", "<zip>#<member>", see `audio.parse_address`).
    audio_path: str | None = None
    audio: np.ndarray | None = None  # float32 mono samples at `sampling_rate`, when in memory
    sampling_rate: int | None = None
    speaker: str = "unknown"
    accent: str = "unknown"
    duration: float | None = None  # seconds, when the source states it
    split: str | None = None
    # "main" (accented), "control" (general English held out, for forgetting) or "general"
    # (general English in train only: replay against forgetting).
    subset: str = "main"
    engine: str | None = None  # TTS engine / voice for synthetic corpora; None for real speech
    voice: str | None = None
    # Synthetic dev/test: "seen_engine" | "unseen_engine" (no train voice uses the engine) | "real";
    # see data/synthetic/voices.py.
    part: str | None = None
    source: str = ""  # "file:line" the record came from, for error messages
    extra: dict[str, Any] = field(default_factory=dict)
    # Speaker metadata the corpus ships (gender, age_group, first_language, ...), one flat string
    # map, so per-group report tables can group on any key without knowing the corpus.
    meta: dict[str, str] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """NeMo-style JSONL row (audio_filepath, text, duration, ...), no samples."""
        d = asdict(self)
        d.pop("audio")
        d["audio_filepath"] = d.pop("audio_path")
        return {k: v for k, v in d.items() if v not in (None, {}, "")}


@dataclass
class Skip:
    id: str
    reason: str  # short machine-readable key, e.g. "missing_file", "too_long"
    detail: str  # human message naming the file and line
    source: str = ""
    split: str | None = None


class Ledger:
    """Counts every input row: kept, or skipped with a reason."""

    def __init__(self) -> None:
        self.seen = 0
        self.kept = 0
        self.skips: list[Skip] = []

    def see(self) -> None:
        self.seen += 1

    def keep(self) -> None:
        self.kept += 1

    def skip(self, id: str, reason: str, detail: str, source: str = "", split: str | None = None) -> None:
        self.skips.append(Skip(id=id, reason=reason, detail=detail, source=source, split=split))

    def drop(self, id: str, reason: str, detail: str, source: str = "", split: str | None = None) -> None:
        """A row a reader kept that a later stage (decoding, filters) rejects."""
        self.kept -= 1
        self.skip(id, reason, detail, source, split)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skips))

    def balanced(self) -> bool:
        return self.seen == self.kept + len(self.skips)

    def to_json(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "kept": self.kept,
            "skipped": len(self.skips),
            "skipped_by_reason": self.skipped_by_reason,
            "skips": [asdict(s) for s in self.skips],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)
