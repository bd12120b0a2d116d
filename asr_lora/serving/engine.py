"""Decode a batch of requests on one base with any mix of LoRA adapters.

`mode="mixed"` (the server's default) decodes a batch in ONE `generate` call with peft's
mixed-adapter inference: `adapter_names=[...]`, one name per row, `"__base__"` for the base
(FIELD_NOTES 15). `mode="switch"` is the per-request alternative the benchmark compares with: one
request at a time, `set_adapter` (or `disable_adapter`) before each. Clips over 30 s are decoded
long-form (transformers' sequential algorithm, with segment timestamps) one clip at a time, still
with that clip's adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_lora.data.audio import SAMPLE_RATE
from asr_lora.inference.decode import CHUNK_SECONDS, adapter_base, check_adapter_dir
from asr_lora.model.whisper import load_whisper

log = logging.getLogger(__name__)

BASE = "base"  # the model name that means "no adapter"
ENGLISH = {"en", "english"}


class OptionError(ValueError):
    """A request option the model cannot honour; `param` names the form field."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class Options:
    """Decoding options shared by every row of one `generate` call (the batch key)."""

    timestamps: bool = False
    temperature: float = 0.0
    prompt: str | None = None
    language: str | None = None


@dataclass
class Job:
    audio: np.ndarray
    model: str  # BASE or an adapter name
    options: Options = field(default_factory=Options)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class Engine:
    """A Whisper base with named adapters, loaded once at start through `check_adapter_dir`."""

    def __init__(self, model: str | None = None, adapters: dict[str, str | Path] | None = None,
                 device: str | None = None, mode: str = "mixed", max_new_tokens: int = 128):
        if mode not in ("mixed", "switch"):
            raise ValueError(f"mode must be 'mixed' or 'switch', got {mode!r}")
        adapters = {name: check_adapter_dir(path) for name, path in (adapters or {}).items()}
        if BASE in adapters:
            raise ValueError(f"{BASE!r} names the base model; choose another adapter name")
        if model is None:  # the base the adapters were trained on, when they name a portable one
            model = next((adapter_base(p) for p in adapters.values()), None) or "bundled:tiny.en"
        self.base_name, self.mode, self.max_new_tokens = model, mode, max_new_tokens
        self.model, self.processor = load_whisper(model, device=device)
        self.model.eval()
        self.adapter_dirs: dict[str, Path] = {}
        for name, path in adapters.items():
            self._load_adapter(name, path)
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))
        self.batches: list[list[str]] = []  # model names per generate call, for tests and the benchmark

    def _load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        base = adapter_base(path)
        if base and base != self.base_name:
            log.warning("adapter %s names base %s; serving it on %s", name, base, self.base_name)
        if not self.adapter_dirs:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        else:
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self.model.eval()
        self.adapter_dirs[name] = path

    @property
    def models(self) -> list[str]:
        return [BASE, *self.adapter_dirs]

    def check_options(self, options: Options) -> None:
        if options.language and not self.multilingual and options.language.lower() not in ENGLISH:
            raise OptionError("language", f"this base model is English-only; language {options.language!r} "
                                          "is not supported (omit it or pass 'en')")
        if not 0.0 <= options.temperature <= 1.0:
            raise OptionError("temperature", f"temperature must be between 0 and 1, got {options.temperature}")

    # ------------------------------------------------------------------ decoding

    def decode(self, jobs: Sequence[Job]) -> list[dict]:
        """{"text", "segments": [{"start", "end", "text"}], "duration"} per job, in order.

        All jobs must share `options` (the batcher groups them so)."""
        if len({j.options for j in jobs}) > 1:
            raise ValueError("one decode call takes one set of options")
        out: list[dict | None] = [None] * len(jobs)
        short = [i for i, j in enumerate(jobs) if j.duration <= CHUNK_SECONDS]
        if self.mode == "mixed" and short:
            for i, r in zip(short, self._generate([jobs[i] for i in short])):
                out[i] = r
        else:
            for i in short:
                out[i] = self._generate([jobs[i]])[0]
        for i, j in enumerate(jobs):
            if out[i] is None:  # long-form: one clip per call (transformers drops finished rows)
                out[i] = self._generate([j], long_form=True)[0]
        return out

    def _adapter_context(self, names: list[str]):
        """(extra generate kwargs, context manager) selecting the adapters for these rows."""
        if not self.adapter_dirs:
            return {}, nullcontext()
        if self.mode == "mixed":
            return {"adapter_names": [n if n != BASE else "__base__" for n in names]}, nullcontext()
        (name,) = names
        if name == BASE:
            return {}, self.model.disable_adapter()
        self.model.set_adapter(name)
        return {}, nullcontext()

    @torch.no_grad()
    def _generate(self, jobs: Sequence[Job], long_form: bool = False) -> list[dict]:
        opts = jobs[0].options
        names = [j.model for j in jobs]
        fe = self.processor.feature_extractor
        param = next(self.model.parameters())
        if long_form:
            inputs = fe(jobs[0].audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                        padding="longest", return_attention_mask=True)
            kwargs = dict(attention_mask=inputs.attention_mask.to(param.device), condition_on_prev_tokens=False,
                          max_new_tokens=self.max_new_tokens)
        else:
            inputs = fe([j.audio for j in jobs], sampling_rate=SAMPLE_RATE, return_tensors="pt")
            kwargs = dict(max_new_tokens=self.max_new_tokens)
        timestamps = opts.timestamps or long_form
        kwargs.update(num_beams=1, return_timestamps=timestamps, return_segments=timestamps)
        if opts.temperature > 0:
            kwargs.update(do_sample=True, temperature=opts.temperature)
        else:
            kwargs.update(do_sample=False)
        if self.multilingual:
            kwargs.update(language=(opts.language or "en").lower(), task="transcribe")
        if opts.prompt:
            kwargs["prompt_ids"] = torch.as_tensor(self.processor.get_prompt_ids(opts.prompt)).to(param.device)
        extra, ctx = self._adapter_context(names)
        self.batches.append(names)
        with ctx:
            out = self.model.generate(input_features=inputs.input_features.to(param.device, param.dtype),
                                      **kwargs, **extra)
        tok = self.processor.tokenizer
        results = []
        for row, job in enumerate(jobs):
            seqs = out["sequences"] if isinstance(out, dict) else out
            text = tok.decode(seqs[row], skip_special_tokens=True).strip()
            segments = []
            if timestamps and isinstance(out, dict):
                for seg in out["segments"][row]:
                    seg_text = tok.decode(seg["tokens"], skip_special_tokens=True).strip()
                    start, end = (min(float(seg[k]), job.duration) for k in ("start", "end"))
                    if seg_text:
                        segments.append({"start": round(start, 2), "end": round(max(start, end), 2),
                                         "text": seg_text})
            if timestamps and not segments and text:
                segments = [{"start": 0.0, "end": round(job.duration, 2), "text": text}]
            results.append({"text": text, "segments": segments, "duration": round(job.duration, 3)})
        return results
