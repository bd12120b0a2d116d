"""Frozen-encoder output cache.

Hand-written: neither transformers nor peft offers it. When no adapter sits in the encoder, the
encoder is a fixed function of the clean audio, so its output for each clip is computed once and
fed to the decoder as `encoder_outputs` in every training step and in both the base and the
adapted evaluation. On 2 CPU cores the 30 s encoder pass is ~0.6 s per clip, so this turns hours
into minutes; it changes nothing the model computes. It is skipped when waveform/spectrogram
augmentation runs per step (each step would need a fresh encoder pass anyway); augmented takes
pre-rendered once (`augment.copies`, no SpecAugment) are fixed audio and are cached like any clip.
A run that trains under bf16 autocast encodes its training clips under the same autocast, so the
decoder is trained on what the uncached run would feed it; dev and test stay fp32, as they are
scored."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from asr_lora.core.io import atomic_file
from asr_lora.core.logs import progress as progress_bar
from asr_lora.core.runtime import switch
from asr_lora.data.features import log_mel

log = logging.getLogger("asr_lora")


@torch.no_grad()
def encoder_states(encoder, features: torch.Tensor, clips_per_call: int) -> torch.Tensor:
    """`encoder(features).last_hidden_state`, `clips_per_call` clips per call: each clip's states
    depend on that clip alone, so the result is the same, and on CPU a few clips per call stay in
    cache (inference/decode.py's CPU_ENCODER_CHUNK, bench/encoder_chunk.py)."""
    if len(features) <= clips_per_call:
        return encoder(features).last_hidden_state
    return torch.cat([encoder(features[i : i + clips_per_call]).last_hidden_state
                      for i in range(0, len(features), clips_per_call)])


@torch.no_grad()
def encode(model, processor, audios: Sequence[np.ndarray], batch_size: int = 8, progress: bool = False,
           description: str = "encoding", bf16: bool = False) -> torch.Tensor:
    """Encoder hidden states (N, 1500, d) for clean audio, in batches; `bf16`: under bf16 autocast."""

    encoder = model.get_encoder()
    param = next(encoder.parameters())
    outs = []
    with progress_bar(description, len(audios), progress) as advance:
        for i in range(0, len(audios), batch_size):
            feats = log_mel(processor, audios[i : i + batch_size]).to(param.device, param.dtype)
            with torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=bf16):
                hidden = encoder(feats).last_hidden_state
            outs.append(hidden.float().cpu())
            advance(len(feats))
    return torch.cat(outs) if outs else torch.empty(0)


class EncoderCache:
    """id -> encoder output for clean audio; filled lazily in batches."""

    def __init__(self, model, processor, batch_size: int = 8):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.store: dict[str, torch.Tensor] = {}
        self.lazy: list[tuple[Path | None, list[str]]] = []  # (file or None, ids) of lazily filled splits
        self.lazy_bf16 = False  # the lazily filled split is the training one: encoded as training runs

    def fill(self, ids: Sequence[str], audios: Sequence[np.ndarray], progress: bool = True, description="encoding",
             bf16: bool = False):
        todo = [(i, a) for i, a in zip(ids, audios) if i not in self.store]
        if not todo:
            return
        hidden = encode(self.model, self.processor, [a for _, a in todo], self.batch_size, progress, description,
                        bf16)
        for (i, _), h in zip(todo, hidden):
            self.store[i] = h.clone()

    def load_or_fill(self, path, ids: Sequence[str], audios_fn, progress: bool = True, description="encoding",
                     bf16: bool = False):
        """Reuse a saved cache file for exactly these ids, else encode and save it (atomically)."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_file():
            stored = load_file(str(path))
            if set(ids) <= set(stored):
                self.store.update({i: stored[i] for i in ids})
                log.info("encoder outputs for %d clips reused from %s", len(ids), path)
                return
        self.fill(ids, audios_fn(), progress, description, bf16)
        self._save(path, ids)

    def start_lazy(self, path: Path | None, ids: Sequence[str], bf16: bool = False):
        """Fill the split of `ids` on first use (`get` with audios), under bf16 autocast with `bf16`;
        whatever an earlier run saved at `path` (any subset of `ids`) is loaded now, and `save_lazy`
        writes the filled entries back."""
        from safetensors import safe_open

        self.lazy.append((path, list(ids)))
        self.lazy_bf16 = bf16
        if path is not None and path.is_file():
            with safe_open(str(path), framework="pt") as f:
                saved = set(f.keys())
                for i in ids:
                    if i in saved:
                        self.store[i] = f.get_tensor(i)
            log.info("encoder outputs for %d of %d clips reused from %s", len(saved & set(ids)), len(ids), path)

    def save_lazy(self):
        """Write each lazily filled split's entries to its file when they outnumber what it holds."""
        from safetensors import safe_open

        for path, ids in self.lazy:
            have = [i for i in ids if i in self.store]
            if path is None or not have:
                continue
            if path.is_file():
                with safe_open(str(path), framework="pt") as f:
                    if len(list(f.keys())) >= len(have):
                        continue
            self._save(path, have)

    def _save(self, path: Path, ids: Sequence[str]):
        from safetensors.torch import save_file

        with atomic_file(path) as tmp:
            save_file({i: self.store[i].contiguous() for i in ids}, str(tmp))

    def get(self, ids: Sequence[str], audios: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """The cached outputs of `ids`; with `audios`, the missing ones are encoded first (a lazily
        filled split: training draws fewer clips than its split holds when it stops within an epoch).
        The encoder runs in eval mode, as for the up-front fill, so a lazy entry equals an eager one."""
        if audios is not None and any(i not in self.store for i in ids):
            encoder = self.model.get_encoder()
            was_training = encoder.training
            encoder.eval()
            try:
                with torch.no_grad():
                    self.fill(ids, audios, progress=False, bf16=self.lazy_bf16)
            finally:
                encoder.train(was_training)
        return torch.stack([self.store[i] for i in ids])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())


def cache_enabled(setting: str, mode: str, lora_scope, augment) -> bool:
    """Whether training may cache encoder outputs: `setting` is train.cache_encoder_outputs (auto |
    true | false); it needs a frozen encoder (LoRA without "encoder" in `lora_scope`) and audio that
    is the same every step (`augment`, the augment config section)."""
    setting = switch(setting, "train.cache_encoder_outputs")
    if setting == "false":
        return False
    encoder_frozen = mode == "lora" and "encoder" not in lora_scope
    a = augment
    fixed_audio = not a.enabled or (a.copies > 0 and not (a.specaugment or {}).get("enabled", False))
    if setting == "true":
        if not encoder_frozen or not fixed_audio:
            raise ValueError("train.cache_encoder_outputs=true needs a frozen encoder (no 'encoder' in lora.scope, "
                             "train.mode=lora) and no per-step augmentation (augment.enabled=false, or "
                             "augment.copies>0 with augment.specaugment.enabled=false)")
        return True
    return encoder_frozen and fixed_audio


def encoder_batch_size(model, gpu_batch_size: int) -> int:
    # On CPU the 1500-position attention is memory-bound: one clip at a time is fastest (measured
    # 0.21 s/clip at batch 1 vs 0.27 at 16 on 2 cores); GPUs want big batches.
    return gpu_batch_size if next(model.parameters()).is_cuda else 1


def build_encoder_cache(model, processor, splits: dict, *, auto: bool, budget_gb: float, on_disk: bool,
                        base: str, dtype: str, batch_size: int, lazy: Sequence[str] = (), train_bf16: bool = False):
    """The frozen encoder's outputs for every clip of `splits` (name -> dataset or None), or None when
    `auto` and they would not fit `budget_gb`. `on_disk` keeps them under the cache root, keyed by
    the base model (`base`, `dtype`), the autocast and the rows, for the next run. Splits named in
    `lazy` are not encoded here: their reader passes the audio to `EncoderCache.get`, and
    `save_lazy` keeps what it encoded. `train_bf16`: the "train" split is encoded under bf16
    autocast, as a bf16 training step would encode it."""
    n = sum(len(ds) for ds in splits.values() if ds is not None)
    gb = n * model.config.max_source_positions * model.config.d_model * 4 / 2**30
    if auto and gb > budget_gb:
        log.info("encoder cache would need %.1f GB > %.1f GB budget: encoder runs every step", gb, budget_gb)
        return None
    from asr_lora.core.paths import cache_key, cache_root
    from asr_lora.model.whisper import resolve_model_dir

    src = Path(resolve_model_dir(base))
    weights = src / "model.safetensors"
    model_id = [str(src.resolve()), weights.stat().st_mtime_ns if weights.is_file() else None, dtype]
    cache = EncoderCache(model, processor, batch_size=encoder_batch_size(model, batch_size))
    for name, ds in splits.items():
        if ds is None or not len(ds):
            continue
        audios = lambda ds=ds: [np.asarray(a, dtype=np.float32) for a in ds["audio"]]  # noqa: E731
        bf16 = train_bf16 and name == "train"
        label = f"encoding {name} ({len(ds)} clips, frozen encoder{', bf16' if bf16 else ''})"
        key = model_id + ["bf16"] if bf16 else model_id  # fp32 keys stay what they were
        path = (cache_root() / "encoder" / f"{cache_key(key, ds._fingerprint, len(ds), length=20)}.safetensors"
                if on_disk else None)
        if name in lazy:
            log.info("encoder outputs of the %s split (%d clips) are computed on first use%s", name, len(ds),
                     " (bf16 autocast, as training runs)" if bf16 else "")
            cache.start_lazy(path, ds["id"], bf16)
        elif path is not None:
            cache.load_or_fill(path, ds["id"], audios, True, label, bf16)
        else:
            cache.fill(ds["id"], audios(), True, label, bf16)
    log.info("encoder cache: %d clips, %.0f MB", len(cache.store), cache.nbytes() / 2**20)
    return cache
