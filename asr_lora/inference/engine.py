"""One Whisper base in memory with any number of named LoRA adapters, decoding a batch of requests
with any mix of them. `transcribe` and the server both decode through it.

`mode="mixed"` (the server's default) decodes a greedy batch in ONE `generate` call with peft's
mixed-adapter inference: `adapter_names=[...]`, one name per row, `"__base__"` for the base.
Beam search groups the rows by adapter instead: the folded cross-attention of
`model/beam_cache.py` keeps one copy of the encoder states per clip, while peft expands the names to
one per beam. `mode="switch"` is the per-request alternative the benchmark compares with: one
request at a time, `set_adapter` (or `disable_adapter`) before each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from asr_lora.data.audio import SAMPLE_RATE
from asr_lora.inference.decode import DecodeOptions, decode_audio, is_multilingual
from asr_lora.model.adapters import adapter_base, check_adapter_dir, load_adapter, scored_beam_size
from asr_lora.model.whisper import load_whisper

log = logging.getLogger(__name__)

BASE = "base"  # the model name that means "no adapter"
ENGLISH = {"en", "english"}
Options = DecodeOptions  # a request's options; the engine fills in its beam size


class OptionError(ValueError):
    """A request option the model cannot honour; `param` names the form field."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


@dataclass
class Job:
    audio: np.ndarray
    model: str  # BASE or an adapter name
    options: DecodeOptions = field(default_factory=DecodeOptions)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class Engine:
    """A Whisper base with named adapters, loaded once at start through `model.adapters.load_adapter`.

    `beam_size` None: the beam the adapters' figures were scored with (their export summary or run
    evaluation), else 1. Every request is decoded with it.
    """

    def __init__(self, model: str | None = None, adapters: dict[str, str | Path] | None = None,
                 device: str | None = None, mode: str = "mixed", max_new_tokens: int = 128,
                 beam_size: int | None = None):
        if mode not in ("mixed", "switch"):
            raise ValueError(f"mode must be 'mixed' or 'switch', got {mode!r}")
        adapters = {name: check_adapter_dir(path) for name, path in (adapters or {}).items()}
        if BASE in adapters:
            raise ValueError(f"{BASE!r} names the base model; choose another adapter name")
        if model is None:  # the base the adapters were trained on, when they name a portable one
            model = next((adapter_base(p) for p in adapters.values()), None) or "bundled:tiny.en"
        if beam_size is None:
            beams = {b for p in adapters.values() if (b := scored_beam_size(p))}
            if len(beams) > 1:
                log.warning("adapters were scored with different beam sizes %s; decoding with %d",
                            sorted(beams), max(beams))
            beam_size = max(beams, default=1)
        self.base_name, self.mode, self.max_new_tokens, self.beam_size = model, mode, max_new_tokens, beam_size
        self.model, self.processor = load_whisper(model, device=device)
        self.model.eval()
        self.adapter_dirs: dict[str, Path] = {}
        for name, path in adapters.items():
            self.load_adapter(name, path)
        self.multilingual = is_multilingual(self.model)
        self.batches: list[list[str]] = []  # model names per generate call, for tests and the benchmark

    def load_adapter(self, name: str, path: str | Path) -> None:
        base = adapter_base(path)
        if base and base != self.base_name:
            log.warning("adapter %s names base %s; serving it on %s", name, base, self.base_name)
        self.model = load_adapter(self.model, path, name)
        self.adapter_dirs[name] = Path(path)

    @property
    def models(self) -> list[str]:
        return [BASE, *self.adapter_dirs]

    def check_options(self, options: DecodeOptions) -> None:
        if options.language and not self.multilingual and options.language.lower() not in ENGLISH:
            raise OptionError("language", f"this base model is English-only; language {options.language!r} "
                                          "is not supported (omit it or pass 'en')")
        if not 0.0 <= options.temperature <= 1.0:
            raise OptionError("temperature", f"temperature must be between 0 and 1, got {options.temperature}")

    def _options(self, options: DecodeOptions) -> DecodeOptions:
        # Sampling has no beams; everything else decodes at the engine's beam size.
        beams = 1 if options.temperature > 0 else self.beam_size
        return replace(options, beam_size=beams, max_new_tokens=self.max_new_tokens)

    def _select(self, name: str):
        """Context manager under which the model decodes as `name` (set_adapter / disable_adapter)."""
        if not self.adapter_dirs:
            return nullcontext()
        if name == BASE:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return nullcontext()

    def transcribe(self, audios: Sequence[np.ndarray], model: str = BASE,
                   options: DecodeOptions = DecodeOptions()) -> list[dict]:
        """Decode several clips as one model (`BASE` or an adapter name)."""
        if model not in self.models:
            raise KeyError(f"no adapter named {model!r}; loaded: {self.models}")
        return self.decode([Job(a, model, options) for a in audios])

    def decode(self, jobs: Sequence[Job]) -> list[dict]:
        """{"text", "segments": [{"start", "end", "text"}], "duration"} per job, in order.

        All jobs must share `options` (the batcher groups them so)."""
        if len({j.options for j in jobs}) > 1:
            raise ValueError("one decode call takes one set of options")
        if not jobs:
            return []
        opts = self._options(jobs[0].options)
        out: list[dict | None] = [None] * len(jobs)
        if self.mode == "mixed" and self.adapter_dirs and opts.beam_size == 1:
            names = [j.model if j.model != BASE else "__base__" for j in jobs]
            self.batches.append([j.model for j in jobs])
            return decode_audio(self.model, self.processor, [j.audio for j in jobs], opts, adapter_names=names,
                                batch_size=len(jobs))
        groups: dict[str, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(j.model, []).append(i)
        for name, idx in groups.items():
            chunks = [idx] if self.mode == "mixed" else [[i] for i in idx]
            for chunk in chunks:
                self.batches.append([name] * len(chunk))
                with self._select(name):
                    res = decode_audio(self.model, self.processor, [jobs[i].audio for i in chunk], opts,
                                       batch_size=len(chunk))
                for i, r in zip(chunk, res):
                    out[i] = r
        return out  # type: ignore[return-value]
