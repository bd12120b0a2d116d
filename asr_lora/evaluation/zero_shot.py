"""Zero-shot hypotheses kept between runs.

Every training run decodes its eval split with the frozen base before training, and that pass
depends only on the base weights, the rows and the decoding settings: repeated for each run of a
study it costs as much as training (about 1.5 s per clip at 30 s on 2 cores). Hand-written because
no library caches `generate` outputs. Entries live under `<cache>/zero_shot/<key>.json`; the key
covers the weight files (path, size, mtime), every row's id, text and audio samples, the decoding
settings and the library versions, so anything that could change a hypothesis makes a new entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from asr_lora.core.io import write_json
from asr_lora.core.paths import cache_key

log = logging.getLogger(__name__)

VERSION = "3"  # 2: beam search with folded cross-attention (model/beam_cache.py); 3: the weights' dtype in the key


def _weights_signature(model_dir: str) -> list:
    src = Path(model_dir)
    files = sorted(p for p in src.glob("*") if p.suffix in (".safetensors", ".bin", ".json")) if src.is_dir() else []
    return [str(src), [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]


def rows_signature(ds) -> str:
    h = hashlib.sha256()
    for batch in ds.select_columns(["id", "text", "audio"]).with_format("numpy").iter(batch_size=64):
        for i, t, a in zip(batch["id"], batch["text"], batch["audio"]):
            h.update(f"{i}\t{t}\t".encode())
            h.update(np.asarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


def pass_key(model_dir: str, device, ds, ecfg, prompt: str | None = None) -> str:
    import torch
    import transformers

    parts = [VERSION, _weights_signature(model_dir), str(device), rows_signature(ds), ecfg.beam_size,
             ecfg.batch_size, ecfg.max_new_tokens, torch.__version__, transformers.__version__]
    return cache_key(*parts, prompt, length=20)


def zero_shot_hypotheses(decode, model_dir: str, device, ds, ecfg, cache_dir: Path | None,
                         prompt: str | None = None) -> list[str]:
    """`decode()`'s hypotheses for `ds` (base model in `model_dir` on `device`), from the cache when
    this exact pass was made before; `cache_dir` None: always decode."""
    if cache_dir is None:
        return decode()
    key = pass_key(model_dir, device, ds, ecfg, prompt)
    path = Path(cache_dir) / "zero_shot" / f"{key}.json"
    if path.is_file():
        entry = json.loads(path.read_text())
        if entry.get("ids") == list(ds["id"]):
            log.info("zero-shot hypotheses of %d clips reused from %s", len(ds), path)
            return entry["hypotheses"]
        log.warning("%s does not match these rows; decoding again", path)
    hyps = decode()
    write_json(path, {"ids": list(ds["id"]), "hypotheses": hyps})
    return hyps


def zero_shot_passes(model, processor, ds, ecfg, systems, terms, encoder_cache, model_dir: str,
                     cache_dir: Path | None) -> dict[str, list[str]]:
    """The hypotheses of the zero-shot systems among `systems` ("base", and "prompt": the domain
    terms as Whisper's prompt), each decoded with the adapter off or taken from the cache; the
    training job (before training) and `evaluate` share the entries, so scoring an adapter on rows
    a run has already decoded zero-shot does not decode them again."""
    from asr_lora.evaluation.scoring import decode_system

    param = next(model.parameters())
    device = f"{param.device}/{param.dtype}"  # a pass in bf16 is not the fp32 pass
    out = {}
    for system in (s for s in systems if s in ("base", "prompt")):
        def decode(system=system):
            return decode_system(model, processor, ds, ecfg, system, terms, encoder_cache)[0]

        out[system] = zero_shot_hypotheses(decode, model_dir, device, ds, ecfg, cache_dir,
                                           prompt=terms.prompt if system == "prompt" else None)
    return out
