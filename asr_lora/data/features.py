"""The one log-mel front end, its optional up-front cache, and the training collator.

Front end: transformers' WhisperFeatureExtractor (zero-pad the waveform to 30 s, 80-bin
log-mel), identical for training and evaluation; augmentation touches only training clips."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.core.logs import progress
from asr_lora.core.paths import cache_key
from asr_lora.core.runtime import switch
from asr_lora.data.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)



def log_mel(processor, audios: Sequence[np.ndarray]) -> torch.Tensor:
    return processor.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


ENCODER_STEP_S = 0.02  # one encoder output position: Whisper's 30 s window holds 1500


def mask_encoder_time(hidden: torch.Tensor, seconds: Sequence[float], rng: np.random.Generator, probability: float,
                      masks: int, max_seconds: float) -> torch.Tensor:
    """SpecAugment's time mask, applied to the frozen encoder's cached outputs instead of the log-mel
    (which the cache has already consumed): each row, with `probability`, gets `masks` spans of up to
    `max_seconds` zeroed inside its speech (`seconds` long), so the decoder must finish a word it
    only partly hears from the words around it. Hand-written: the Whisper model's own
    `mask_time_prob` masks input features, which a cached run never sees. Returns a new tensor."""
    out = hidden.clone()
    width = max(1, int(round(max_seconds / ENCODER_STEP_S)))
    for row, sec in enumerate(seconds):
        if rng.random() >= probability:
            continue
        n = min(out.shape[1], max(1, int(np.ceil(sec / ENCODER_STEP_S))))
        for _ in range(masks):
            w = int(rng.integers(1, min(width, n) + 1))
            start = int(rng.integers(0, n - w + 1))
            out[row, start : start + w] = 0
    return out


def encoder_mask_settings(t, cached: bool) -> tuple[float, int, float]:
    """The collator's `encoder_mask` from the train config section (train.encoder_time_mask*), checked:
    it masks the cached encoder outputs, so a run that does not cache them (`cached`) cannot honour it."""
    if not 0 <= t.encoder_time_mask <= 1:
        raise ValueError(f"train.encoder_time_mask must be a probability in [0, 1], got {t.encoder_time_mask}")
    if t.encoder_time_mask > 0 and (t.encoder_time_masks < 1 or t.encoder_time_mask_seconds <= 0):
        raise ValueError("train.encoder_time_masks must be >= 1 and train.encoder_time_mask_seconds > 0, got "
                         f"{t.encoder_time_masks} and {t.encoder_time_mask_seconds}")
    if t.encoder_time_mask > 0 and not cached:
        raise ValueError("train.encoder_time_mask masks the frozen encoder's cached outputs, and this run does not "
                         "cache them (an adapter in the encoder, per-step augmentation, streaming, "
                         "train.cache_encoder_outputs=false, or a cache over its budget); set it to 0 or use "
                         "augment.specaugment, which masks the log-mel")
    return float(t.encoder_time_mask), int(t.encoder_time_masks), float(t.encoder_time_mask_seconds)


def pad_labels(tokenizer, label_lists: Sequence[Sequence[int]], decoder_start_token_id: int) -> torch.Tensor:
    """Right-padded by the tokenizer, padding turned into -100 (ignored by the loss); a leading
    decoder-start token is dropped because the model prepends it itself when shifting labels right."""
    cleaned = [list(x[1:]) if x and x[0] == decoder_start_token_id else list(x) for x in label_lists]
    batch = tokenizer.pad({"input_ids": cleaned}, padding=True, return_tensors="pt", return_attention_mask=True)
    return batch["input_ids"].masked_fill(batch["attention_mask"].ne(1), -100)


def prompted_inputs(tokenizer, label_lists: Sequence[Sequence[int]], prompts: Sequence[Sequence[int] | None],
                    decoder_start_token_id: int, max_positions: int = 448) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder_input_ids, labels) for rows of which some are decoded after a previous-text prompt.

    A prompted row is the sequence Whisper's `generate(prompt_ids=...)` decodes,
    `<|startofprev|> prompt <|startoftranscript|> ... text <|endoftext|>`, with the loss on the
    transcript only (-100 over the prompt, as Whisper was trained); other rows are the usual
    `<|startoftranscript|> ... text`. The model only shifts labels itself when no
    decoder_input_ids are given, so both are built here, right-padded (padding ignored by the loss).
    A prompt that would take the row past the decoder's `max_positions` (Whisper's 448) keeps its
    last tokens after `<|startofprev|>`, as `generate` cuts one, or is left off when none fit."""
    inputs, targets = [], []
    for labels, prompt in zip(label_lists, prompts):
        body = list(labels[1:]) if labels and labels[0] == decoder_start_token_id else list(labels)
        room = max_positions - len(body)  # decoder inputs: the prompt, the start token, body[:-1]
        if prompt and len(prompt) > room:
            prompt = [prompt[0], *prompt[len(prompt) - room + 1:]] if room >= 2 else None
        seq = [*(prompt or []), decoder_start_token_id, *body]
        n_masked = len(prompt or [])  # the prompt's own tokens and the start token are given, not predicted
        inputs.append(seq[:-1])
        targets.append([-100] * n_masked + seq[n_masked + 1 :])
    width = max(len(x) for x in inputs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([x + [pad] * (width - len(x)) for x in inputs])
    labels = torch.tensor([y + [-100] * (width - len(y)) for y in targets])
    return ids, labels


def with_timestamps(labels: Sequence[int], seconds: float, no_timestamps_id: int, eot_id: int) -> list[int]:
    """`<|0.00|> text <|T|> <|endoftext|>` in place of `<|notimestamps|> text <|endoftext|>`: the
    clip as one segment ending at the clip's end (T, in Whisper's 0.02 s steps, capped at 30 s).

    distil-whisper's `timestamp_probability` is the precedent: training only on `<|notimestamps|>`
    targets moves the segment boundaries long-form decoding (the server past 30 s) depends on. The
    end includes the clip's trailing silence: synthetic and read clips have no word timings. Measured
    (bench/timestamps.py): one segment per clip teaches the model to stop after one segment in a
    30 s window, so long-form WER got far worse; windows joined from several clips would be needed."""
    ids = list(labels)
    if no_timestamps_id not in ids or not ids or ids[-1] != eot_id:
        return ids
    begin = no_timestamps_id + 1  # <|0.00|>: Whisper's timestamp tokens follow <|notimestamps|>
    end = begin + int(round(min(max(seconds, 0.02), 30.0) / 0.02))
    i = ids.index(no_timestamps_id)
    return ids[:i] + [begin] + ids[i + 1 : -1] + [end, eot_id]


class SpeechCollator:
    """Batches dataset rows (audio, labels, id) into model inputs.

    `augmenter` (training only) perturbs the waveform and the log-mel with a per-batch RNG derived
    from `seed` and a counter, so a run is reproducible. With an `encoder_cache`, rows become
    `encoder_outputs` instead of `input_features` (rows that carry their audio fill a lazy cache).
    """

    def __init__(self, processor, decoder_start_token_id: int, augmenter=None, encoder_cache=None, seed: int = 0,
                 timestamp_probability: float = 0.0, prompt_ids: Sequence[int] | None = None,
                 prompt_probability: float = 0.0, encoder_mask: tuple[float, int, float] = (0.0, 0, 0.0),
                 mark_replay: bool = False, term_marker=None, own_marker=None):
        self.processor = processor
        # Marks the label tokens that spell a domain term (`term_tokens`) for a term-weighted loss.
        self.term_marker = term_marker
        # Marks the tokens of the domain's own words (`own_tokens`), which the context distillation
        # leaves free (train.context_kl).
        self.own_marker = own_marker
        # Flag the general-English replay rows (`distill_rows`) for the trainer's distillation term.
        self.mark_replay = mark_replay
        # (probability, masks, max_seconds) of `mask_encoder_time` on cached encoder outputs; training only.
        self.encoder_mask = encoder_mask
        # A share of rows is trained after the domain-term prompt (`prompted_inputs`), so that the
        # adapter learns to use the prompt it will be decoded with instead of fighting it; drawn
        # per row from its own seeded stream, like the timestamp targets.
        self.prompt_ids = list(prompt_ids) if prompt_ids is not None else None
        self.prompt_probability = prompt_probability if prompt_ids is not None else 0.0
        # A share of training targets carries segment timestamps (`with_timestamps`), drawn per row
        # from its own seeded stream so the augmentation draws stay what they were.
        self.timestamp_probability = timestamp_probability
        self.decoder_start_token_id = decoder_start_token_id
        self.augmenter = augmenter
        self.encoder_cache = encoder_cache
        self.seed = seed
        self.calls: dict[str, int] = {}  # batches drawn so far, per random stream

    # Each random stream's seed prefix: augmentation, timestamp targets, prompted rows, encoder masks.
    STREAMS = {"augment": (), "timestamps": (7,), "prompt": (11,), "encoder_mask": (13,)}

    def _rng(self, stream: str) -> np.random.Generator:
        """The next batch's RNG of one stream: seeded by (run seed, stream, DataLoader worker, batch
        counter, and under torchrun the rank). Each worker holds its own copy of the collator and
        counters, so the worker id keeps two workers from drawing the same values for their n-th
        batches, and the rank keeps every rank's j-th row from getting rank 0's draws; separate
        streams keep one option's draws from moving another's. Rank 0 adds nothing, so it draws as a
        single process does."""
        info = torch.utils.data.get_worker_info()
        n = self.calls.get(stream, 0)
        self.calls[stream] = n + 1
        rank = int(os.environ.get("RANK", "0"))
        return np.random.default_rng([self.seed, *self.STREAMS[stream], 0 if info is None else info.id + 1, n,
                                      *([rank] if rank else [])])

    def continue_after(self, batches: int) -> None:
        """Draw as if `batches` training batches had been drawn already (a resumed run), so every
        stream goes on where the checkpoint's run left it instead of drawing the first batches'
        values again. Each stream in use is drawn once a batch, so its count is the batch count."""
        self.calls = dict.fromkeys(self.STREAMS, batches)

    def _labels(self, rows: list[dict], seconds: Sequence[float] | None = None) -> dict:
        """{"labels"} (the model shifts them into its decoder inputs), or {"decoder_input_ids",
        "labels"} when some row of the batch is prompted."""
        label_lists = [r["labels"] for r in rows]
        if self.timestamp_probability > 0:
            rng = self._rng("timestamps")
            tok = self.processor.tokenizer
            no_ts, eot = tok.convert_tokens_to_ids("<|notimestamps|>"), tok.eos_token_id
            if seconds is None:
                seconds = [float(r["duration"]) for r in rows]
            label_lists = [with_timestamps(x, t, no_ts, eot) if rng.random() < self.timestamp_probability else x
                           for x, t in zip(label_lists, seconds)]
        if self.prompt_probability > 0:
            rng = self._rng("prompt")
            prompts = [self.prompt_ids if rng.random() < self.prompt_probability else None for _ in rows]
            if any(prompts):
                ids, labels = prompted_inputs(self.processor.tokenizer, label_lists, prompts,
                                              self.decoder_start_token_id)
                return {"decoder_input_ids": ids, "labels": labels}
        return {"labels": pad_labels(self.processor.tokenizer, label_lists, self.decoder_start_token_id)}

    def __call__(self, rows: list[dict]) -> dict:
        batch = self._batch(rows)
        if self.mark_replay:
            batch["distill_rows"] = torch.tensor([r.get("subset") == "general" for r in rows])
        if self.term_marker is not None:
            batch["term_tokens"] = self.term_marker(batch["labels"])
        if self.own_marker is not None:
            batch["own_tokens"] = self.own_marker(batch["labels"])
        return batch

    def _batch(self, rows: list[dict]) -> dict:
        if self.encoder_cache is not None:
            audios = [np.asarray(r["audio"], dtype=np.float32) for r in rows] if "audio" in rows[0] else None
            hidden = self.encoder_cache.get([r["id"] for r in rows], audios)
            if self.encoder_mask[0] > 0:
                hidden = mask_encoder_time(hidden, [float(r["duration"]) for r in rows], self._rng("encoder_mask"),
                                           *self.encoder_mask)
            return {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden), **self._labels(rows)}
        if "input_features" in rows[0] and (self.augmenter is None or not self.augmenter.touches_waveform()):
            feats = torch.stack([torch.as_tensor(np.asarray(r["input_features"], dtype=np.float32)) for r in rows])
            labels = self._labels(rows)
            if self.augmenter is not None:
                rng = self._rng("augment")
                feats = torch.stack([torch.as_tensor(self.augmenter.spec(f.numpy(), rng)) for f in feats])
            return {"input_features": feats, **labels}
        audios = [np.asarray(r["audio"], dtype=np.float32) for r in rows]
        if self.augmenter is not None:
            rng = self._rng("augment")
            audios = [self.augmenter(a, rng) for a in audios]
            feats = log_mel(self.processor, audios)
            feats = torch.stack([torch.as_tensor(self.augmenter.spec(f.numpy(), rng)) for f in feats])
        else:
            feats = log_mel(self.processor, audios)
        # Durations after augmentation: a tempo change moves the clip's end.
        return {"input_features": feats, **self._labels(rows, [len(a) / SAMPLE_RATE for a in audios])}


FEATURE_BYTES = 80 * 3000 * 4  # one 30 s log-mel window, float32


def use_feature_cache(dcfg, n_clips: int, reads_per_clip: float | None = None,
                      waveform_augmented: bool = False) -> bool:
    """Whether to compute every clip's log-mel once, up front, and keep it (`add_features`).

    auto: only when a training run reads each clip at least twice on average (`reads_per_clip`):
    otherwise the up-front pass computes more log-mels than the run would per batch (the recipe's
    128 steps of 8 read 1,024 of 1,594 train clips), and the features are the same bits either way.
    Never when waveform effects run per step (`waveform_augmented`): the collator then computes each
    train log-mel from the changed audio and would not read the clean ones. And only while the
    cache fits `feature_cache_budget_gb`."""
    setting = switch(dcfg.feature_cache, "data.feature_cache")
    if setting in ("true", "false"):
        return setting == "true"
    if waveform_augmented:
        log.info("log-mel features computed per batch: waveform effects change every train clip per step")
        return False
    if reads_per_clip is not None and reads_per_clip < 2:
        log.info("log-mel features computed per batch: the run reads each train clip %.1f times on average",
                 reads_per_clip)
        return False
    need = n_clips * FEATURE_BYTES / 2**30
    if need > dcfg.feature_cache_budget_gb:
        log.info("log-mel cache would need %.1f GB > budget %.1f GB: computing features on the fly",
                 need, dcfg.feature_cache_budget_gb)
        return False
    return True


def add_features(ds: Dataset, processor, batch_size: int = 32) -> Dataset:
    """Attach `input_features` once; `datasets` fingerprints the map and reuses its cache file in
    later runs with the same data and front end."""
    from datasets import Array2D, Features

    fe = processor.feature_extractor
    features = Features({**ds.features, "input_features": Array2D((fe.feature_size, fe.nb_max_frames), "float32")})

    # The map's cache key is given explicitly: the bar's callback in `extract` must not enter it.
    key = cache_key(ds._fingerprint, fe.to_dict(), "logmel-1")
    with progress(f"log-mel features ({len(ds)} clips)", len(ds)) as advance:
        def extract(batch):
            arrays = [np.asarray(a, dtype=np.float32) for a in batch["audio"]]
            advance(len(arrays))
            return {"input_features": fe(arrays, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features}

        return ds.map(extract, batched=True, batch_size=batch_size, features=features, new_fingerprint=key)
