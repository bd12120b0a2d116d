"""Where asr_lora keeps what it builds: the cache root (models, corpora, prepared data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$ASR_LORA_CACHE, else ~/.cache/asr_lora."""
    return Path(os.environ.get("ASR_LORA_CACHE", Path.home() / ".cache" / "asr_lora"))
