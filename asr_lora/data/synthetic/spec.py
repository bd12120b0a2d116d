"""What a synthetic voice is (`Voice`, one voices.json entry) and how a render fails (`SynthError`):
shared by the engine dispatcher (engines.py) and the neural backends (neural.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Part of every cached clip's name: bump it when a backend's output changes, so corpora re-render.
SYNTH_VERSION = 1


class SynthError(RuntimeError):
    """A clip could not be rendered; the message names engine, voice and text."""


@dataclass(frozen=True)
class Voice:
    """One entry of voices.json: an engine voice plus options, and who it counts as."""

    id: str
    engine: str
    voice: str
    speaker: str
    accent: str
    split: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    # Dev/test only: "seen_engine" (engine also in train), "unseen_engine" or "neural"; see voices.py.
    part: str = ""
    # Dev/test held-out voices only: read every sentence of the split instead of a dealt share, so a
    # small held-out part gets several speakers on the same sentences (more words per decision).
    reads_all: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Voice:
        return cls(
            id=d["id"], engine=d["engine"], voice=d["voice"], speaker=d.get("speaker", d["id"]),
            accent=d.get("accent", "unknown"), split=d.get("split", ""), options=dict(d.get("options", {})),
            part=d.get("part", ""), reads_all=d.get("reads_all", False),
        )

    def spec(self) -> dict[str, Any]:
        """What determines the sound (not the split or labels): the cache key of a render."""
        return {"engine": self.engine, "voice": self.voice, "options": dict(sorted(self.options.items())),
                "synth_version": SYNTH_VERSION}
