"""Where asr_lora keeps what it builds, and how a cached thing is named.

One root (models, corpora, prepared data, encoder outputs, zero-shot passes) and one key helper:
every cache names its entries `cache_key(inputs...)`, so "same inputs, same entry" holds by
construction instead of by seven hand-rolled hashes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ENV = "ASR_LORA_CACHE"


def use_cache_root(cache_dir: str | Path | None) -> None:
    """Set the process's cache root (`paths.cache_dir`); None keeps $ASR_LORA_CACHE or the default.
    Kept in the environment so that worker processes (corpus rendering, DataLoader) see it too."""
    if cache_dir:
        os.environ[ENV] = str(Path(cache_dir).expanduser().resolve())


def cache_root() -> Path:
    """$ASR_LORA_CACHE (set by `use_cache_root` from `paths.cache_dir`), else ~/.cache/asr_lora."""
    return Path(os.environ.get(ENV, Path.home() / ".cache" / "asr_lora"))


def cache_key(*inputs, length: int = 16) -> str:
    """A short, stable name for a cache entry made from these inputs (JSON-able, or str()-able)."""
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def job_dirname(overrides: str, limit: int = 120) -> str:
    """A sweep job's folder name from its overrides (conf/config.yaml's hydra.sweep.subdir): one
    folder ("/" in a path value made nested ones) and short enough for any file system (255 bytes),
    a digest keeping long names apart."""
    name = overrides.replace("/", "_")
    if len(name.encode()) <= limit:
        return name
    return name.encode()[: limit - 13].decode(errors="ignore") + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
