"""Batched Whisper decoding, long-form audio, and several LoRA adapters on one base.

One front end everywhere: transformers' `WhisperFeatureExtractor` (the waveform is zero-padded to
30 s, then log-mel). faster-whisper pads the normalised log-mel instead, so its transcripts can
differ slightly on the same audio; training and evaluation here always use this one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.data.audio import SAMPLE_RATE, load_audio
from asr_lora.model.beam_cache import fold_beam_search
from asr_lora.model.encoder_cache import encoder_states
from asr_lora.model.whisper import load_whisper

CHUNK_SECONDS = 30
# Clips per encoder call on CPU. The 30 s encoder's activations for 16 clips (~150 MB) spill the
# cache: on 2 AVX2 cores it took 0.51 s per clip at 16 clips per call and 0.42 s at 2, with the same
# hypotheses (bench/encoder_chunk.py). GPUs keep the whole batch in one call.
CPU_ENCODER_CHUNK = 2


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class UnsafeAdapterError(ValueError):
    """An adapter directory that would need pickle to load."""


def check_adapter_dir(path: str | Path) -> Path:
    """Adapters load from safetensors only: refuse a directory holding pickle files."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path}: no adapter_config.json; not a peft adapter directory")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeAdapterError(f"{path}: refusing pickle files {pickles}; convert the adapter to safetensors")
    if not (path / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no adapter_model.safetensors")
    return path


# Where the bundled weights come from, for model cards (the `bundled:` names work offline).
BUNDLED_HUB_IDS = {"bundled:tiny.en": "openai/whisper-tiny.en", "bundled:base": "openai/whisper-base"}
_CONVERTED_DIR = re.compile(r"^(tiny\.en|base)-[0-9a-f]{10}$")  # model/whisper.py's cache names


def portable_base(ref: str | None) -> str | None:
    """A base reference another machine can resolve: `bundled:tiny.en` instead of this machine's
    converted cache directory (`.../models/tiny.en-<hash>`); any other reference is kept."""
    if not ref or ref.startswith(("bundled:", "ct2:")):
        return ref
    p = Path(ref)
    if _CONVERTED_DIR.match(p.name) and p.parent.name == "models" and (p / "asr_lora_source.json").is_file():
        return "bundled:" + p.name.rsplit("-", 1)[0]
    return ref


def adapter_base(path: str | Path) -> str | None:
    """The base an adapter directory names (`base_model_name_or_path`), made portable."""
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    return portable_base(cfg.get("base_model_name_or_path"))


def make_adapter_portable(adapter_dir: str | Path, base: str | None = None) -> Path:
    """Rewrite `adapter_config.json` so its base is a portable reference (atomically)."""
    from asr_lora.core.io import write_json

    path = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["base_model_name_or_path"] = portable_base(base or cfg.get("base_model_name_or_path"))
    write_json(path, cfg, sort_keys=True)
    return path


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate_features(model, processor, features: torch.Tensor, beam_size: int = 1, max_new_tokens: int = 128):
    """Token ids for a batch of 30 s log-mel windows, with the checkpoint's own language/task setup.

    English-only checkpoints take no language argument (FIELD_NOTES 5); multilingual ones are
    asked for English transcription.
    """
    model.eval()
    param = next(model.parameters())
    features = features.to(param.device, param.dtype)
    kwargs = generate_kwargs(model, beam_size, max_new_tokens)
    if param.device.type != "cpu":
        return model.generate(input_features=features, **kwargs)
    # The encoder a few clips at a time (the same states and tokens); the decoder still searches
    # the whole batch.
    hidden = encoder_states(model.get_encoder(), features, CPU_ENCODER_CHUNK)
    return model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), **kwargs)


def generate_kwargs(model, beam_size: int = 1, max_new_tokens: int = 128) -> dict:
    """`generate` kwargs for one short-form call: deterministic search (see `_search_kwargs`)."""
    return dict(_search_kwargs(model, beam_size), max_new_tokens=max_new_tokens, do_sample=False)


def _search_kwargs(model, beam_size: int) -> dict:
    """What every decode here asks of `generate`: `beam_size` beams, and English transcription on
    multilingual checkpoints. With beam search the model is first given `model/beam_cache.py`'s fold
    (one copy of the encoder states per clip, not per beam; the same tokens)."""
    if beam_size > 1:
        fold_beam_search(model)
    kwargs: dict = {"num_beams": beam_size}
    if getattr(model.generation_config, "is_multilingual", False):
        kwargs.update(language="en", task="transcribe")
    return kwargs


def decode_ids(processor, ids) -> list[str]:
    return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]


def transcribe_arrays(
    model, processor, audios: Sequence[np.ndarray], beam_size: int = 1, batch_size: int = 8
) -> list[str]:
    """Transcribe 16 kHz mono arrays; clips over 30 s go through Whisper's long-form decoding."""
    out: list[str | None] = [None] * len(audios)
    short = [i for i, a in enumerate(audios) if len(a) <= CHUNK_SECONDS * SAMPLE_RATE]
    for start in range(0, len(short), batch_size):
        idx = short[start : start + batch_size]
        feats = processor.feature_extractor(
            [audios[i] for i in idx], sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        for i, text in zip(idx, decode_ids(processor, generate_features(model, processor, feats, beam_size))):
            out[i] = text
    for i in (i for i, a in enumerate(audios) if len(a) > CHUNK_SECONDS * SAMPLE_RATE):
        out[i] = _transcribe_long(model, processor, audios[i], beam_size)
    return [t or "" for t in out]


@torch.no_grad()
def _transcribe_long(model, processor, audio: np.ndarray, beam_size: int) -> str:
    # transformers' sequential long-form algorithm: unpadded features + timestamps, window by window.
    inputs = processor.feature_extractor(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False, padding="longest",
        return_attention_mask=True,
    )
    param = next(model.parameters())
    kwargs = dict(_search_kwargs(model, beam_size), return_timestamps=True, condition_on_prev_tokens=False)
    ids = model.generate(
        input_features=inputs.input_features.to(param.device, param.dtype),
        attention_mask=inputs.attention_mask.to(param.device), **kwargs,
    )
    return decode_ids(processor, ids)[0]


class Transcriber:
    """One base model in memory, any number of named LoRA adapters, switched per call.

    >>> t = Transcriber("bundled:tiny.en", adapters={"sg": "runs/x/adapter"})
    >>> t.transcribe(["a.wav"], use="sg"); t.transcribe(["a.wav"], use=None)  # None = base
    """

    def __init__(self, model: str | None = "bundled:tiny.en", adapters: dict[str, str] | None = None,
                 device: str | None = None, beam_size: int = 1):
        # model=None: the base the first adapter names (`bundled:tiny.en` in exported adapters).
        if model is None:
            model = next((adapter_base(p) for p in (adapters or {}).values()), None) or "bundled:tiny.en"
        self.model, self.processor = load_whisper(model, device=device)
        self.model.eval()
        self.beam_size = beam_size
        self.adapters: list[str] = []
        for name, path in (adapters or {}).items():
            self.load_adapter(name, path)

    def load_adapter(self, name: str, path: str | Path) -> None:
        from peft import PeftModel

        path = check_adapter_dir(path)
        if not self.adapters:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        else:
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self.model.eval()
        self.adapters.append(name)

    def _select(self, use: str | None):
        if use is not None and use not in self.adapters:
            raise KeyError(f"no adapter named {use!r}; loaded: {self.adapters or 'none'}")
        if use is not None:
            self.model.set_adapter(use)
        return use

    def transcribe_arrays(self, audios: Sequence[np.ndarray], use: str | None = None) -> list[str]:
        if not self.adapters or self._select(use) is not None:
            return transcribe_arrays(self.model, self.processor, audios, self.beam_size)
        with self.model.disable_adapter():
            return transcribe_arrays(self.model, self.processor, audios, self.beam_size)

    def transcribe(self, paths: Iterable[str | Path], use: str | None = None) -> list[str]:
        return self.transcribe_arrays([load_audio(p) for p in paths], use=use)
