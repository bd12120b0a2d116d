"""The one log-mel front end and the training collator.

Front end: transformers' WhisperFeatureExtractor (zero-pad the waveform to 30 s, 80-bin
log-mel), identical for training and evaluation; augmentation touches only training clips."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.data.audio import SAMPLE_RATE

log = logging.getLogger(__name__)



def log_mel(processor, audios: Sequence[np.ndarray]) -> torch.Tensor:
    return processor.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


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

    def _batch_rng(self) -> np.random.Generator:
        """The augmentation RNG of the next batch: seeded by (run seed, DataLoader worker, batch
        counter). Each worker holds its own copy of the collator and counter, so the worker id keeps
        two workers from drawing the same augmentations for their n-th batches."""
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id + 1, self.calls])
        self.calls += 1
        return rng

    def __call__(self, rows: list[dict]) -> dict:
        labels = pad_labels([r["labels"] for r in rows], self.decoder_start_token_id)
        if self.encoder_cache is not None:
            hidden = self.encoder_cache.get([r["id"] for r in rows])
            return {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden), "labels": labels}
        if "input_features" in rows[0] and (self.augmenter is None or not self.augmenter.touches_waveform()):
            feats = torch.stack([torch.as_tensor(np.asarray(r["input_features"], dtype=np.float32)) for r in rows])
            if self.augmenter is not None:
                rng = self._batch_rng()
                feats = torch.stack([torch.as_tensor(self.augmenter.spec(f.numpy(), rng)) for f in feats])
            return {"input_features": feats, "labels": labels}
        audios = [np.asarray(r["audio"], dtype=np.float32) for r in rows]
        if self.augmenter is not None:
            rng = self._batch_rng()
            audios = [self.augmenter(a, rng) for a in audios]
            feats = log_mel(self.processor, audios)
            feats = torch.stack([torch.as_tensor(self.augmenter.spec(f.numpy(), rng)) for f in feats])
        else:
            feats = log_mel(self.processor, audios)
        return {"input_features": feats, "labels": labels}
