"""The one log-mel front end, the training collator, and the frozen-encoder cache.

Front end: transformers' WhisperFeatureExtractor (zero-pad the waveform to 30 s, 80-bin log-mel),
identical for training and evaluation; augmentation touches only training clips.

Encoder cache (hand-written: neither transformers nor peft offers it): when no adapter sits in
the encoder, the encoder is a fixed function of the clean audio, so its output for each clip is
computed once and fed to the decoder as `encoder_outputs` in every training step and in both
the base and the adapted evaluation. On 2 CPU cores the 30 s encoder pass is ~0.6 s per clip,
so this turns hours into minutes; it changes nothing the model computes. It is skipped when
waveform/spectrogram augmentation is on (each step would need a fresh encoder pass anyway).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from .inference import SAMPLE_RATE

log = logging.getLogger(__name__)


def log_mel(processor, audios: Sequence[np.ndarray]) -> torch.Tensor:
    return processor.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


@torch.no_grad()
def encode(model, processor, audios: Sequence[np.ndarray], batch_size: int = 8, progress: bool = False,
           description: str = "encoding") -> torch.Tensor:
    """Encoder hidden states (N, 1500, d) for clean audio, in batches."""
    from rich.progress import Progress

    encoder = model.get_encoder()
    param = next(encoder.parameters())
    outs = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(audios))
        for i in range(0, len(audios), batch_size):
            feats = log_mel(processor, audios[i : i + batch_size]).to(param.device, param.dtype)
            outs.append(encoder(feats).last_hidden_state.float().cpu())
            bar.advance(task, len(feats))
    return torch.cat(outs) if outs else torch.empty(0)


class EncoderCache:
    """id -> encoder output for clean audio; filled lazily in batches."""

    def __init__(self, model, processor, batch_size: int = 8):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.store: dict[str, torch.Tensor] = {}

    def fill(self, ids: Sequence[str], audios: Sequence[np.ndarray], progress: bool = True, description="encoding"):
        todo = [(i, a) for i, a in zip(ids, audios) if i not in self.store]
        if not todo:
            return
        hidden = encode(self.model, self.processor, [a for _, a in todo], self.batch_size, progress, description)
        for (i, _), h in zip(todo, hidden):
            self.store[i] = h.clone()

    def load_or_fill(self, path, ids: Sequence[str], audios_fn, progress: bool = True, description="encoding"):
        """Reuse a saved cache file for exactly these ids, else encode and save it (atomically)."""
        from safetensors.torch import load_file, save_file

        path = Path(path)
        if path.is_file():
            stored = load_file(str(path))
            if set(ids) <= set(stored):
                self.store.update({i: stored[i] for i in ids})
                log.info("encoder outputs for %d clips reused from %s", len(ids), path)
                return
        self.fill(ids, audios_fn(), progress, description)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({i: self.store[i].contiguous() for i in ids}, str(tmp))
        os.replace(tmp, path)

    def get(self, ids: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.store[i] for i in ids])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())


def pad_labels(label_lists: Sequence[Sequence[int]], decoder_start_token_id: int) -> torch.Tensor:
    """Right-pad with -100 (ignored by the loss); drop a leading decoder-start token because the
    model prepends it itself when shifting labels right."""
    cleaned = [list(x[1:]) if x and x[0] == decoder_start_token_id else list(x) for x in label_lists]
    width = max(len(x) for x in cleaned)
    out = torch.full((len(cleaned), width), -100, dtype=torch.long)
    for i, x in enumerate(cleaned):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return out


class SpeechCollator:
    """Batches dataset rows (audio, labels, id) into model inputs.

    `augmenter` (training only) perturbs the waveform and the log-mel with a per-batch RNG derived
    from `seed` and a counter, so a run is reproducible. With an `encoder_cache`, rows become
    `encoder_outputs` instead of `input_features`.
    """

    def __init__(self, processor, decoder_start_token_id: int, augmenter=None, encoder_cache=None, seed: int = 0):
        self.processor = processor
        self.decoder_start_token_id = decoder_start_token_id
        self.augmenter = augmenter
        self.encoder_cache = encoder_cache
        self.seed = seed
        self.calls = 0

    def __call__(self, rows: list[dict]) -> dict:
        labels = pad_labels([r["labels"] for r in rows], self.decoder_start_token_id)
        if self.encoder_cache is not None:
            hidden = self.encoder_cache.get([r["id"] for r in rows])
            return {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden), "labels": labels}
        if "input_features" in rows[0] and (self.augmenter is None or not self.augmenter.touches_waveform()):
            feats = torch.stack([torch.as_tensor(np.asarray(r["input_features"], dtype=np.float32)) for r in rows])
            if self.augmenter is not None:
                rng = np.random.default_rng([self.seed, self.calls])
                self.calls += 1
                feats = torch.stack([torch.as_tensor(self.augmenter.spec(f.numpy(), rng)) for f in feats])
            return {"input_features": feats, "labels": labels}
        audios = [np.asarray(r["audio"], dtype=np.float32) for r in rows]
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.calls])
            self.calls += 1
            audios = [self.augmenter(a, rng) for a in audios]
            feats = log_mel(self.processor, audios)
            feats = torch.stack([torch.as_tensor(self.augmenter.spec(f.numpy(), rng)) for f in feats])
        else:
            feats = log_mel(self.processor, audios)
        return {"input_features": feats, "labels": labels}
