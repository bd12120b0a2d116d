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
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from asr_lora.data.audio import SAMPLE_RATE
from asr_lora.inference.decode import DecodeOptions, decode_audio, is_multilingual, prompt_ids
from asr_lora.model.adapters import adapter_base, check_adapter_dir, load_adapter, other_base, scored_beam_size
from asr_lora.model.whisper import load_whisper

log = logging.getLogger(__name__)

BASE = "base"  # the model name that means "no adapter"
MIXED_BASE = "__base__"  # peft's name for the base in a mixed-adapter batch
ENGLISH = {"en", "english"}
Options = DecodeOptions  # a request's options; the engine fills in its beam size


class OptionError(ValueError):
    """A request option the model cannot honour; `param` names the form field, `code` the OpenAI
    error code."""

    def __init__(self, param: str, message: str, code: str = "unsupported_value") -> None:
        self.param, self.code = param, code
        super().__init__(message)


class AdapterSpecError(ValueError):
    """An `--adapter` argument that names no loadable adapter directory."""


def language_name(language: str | None) -> str:
    """Whisper's lowercase name of a language code or name ("en", "English" -> "english"), which
    OpenAI echoes; the input lowercased when Whisper does not know it."""
    lang = (language or "en").lower()
    return LANGUAGES.get(TO_LANGUAGE_CODE.get(lang, lang), lang)


def parse_adapter_spec(spec: str) -> tuple[str | None, str]:
    """`[NAME=]DIR` as (NAME or None, DIR). A spec that is itself a directory is a DIR, since sweep
    folders hold '=' (`0_lora.r=4`); otherwise NAME ends at the first '='."""
    if Path(spec).is_dir():
        return None, spec
    name, sep, path = spec.partition("=")
    return (name or None, path) if sep else (None, spec)


def adapter_specs(specs: Sequence[str], need_names: bool = False) -> dict[str, Path]:
    """{name: checked adapter dir} for `--adapter` arguments (unnamed ones are adapter0, adapter1, ...);
    AdapterSpecError, naming the argument, for a missing name (`need_names`) or a bad directory."""
    out = {}
    for i, spec in enumerate(specs):
        name, path = parse_adapter_spec(spec)
        if (need_names and not name) or not path:
            raise AdapterSpecError(f"--adapter {spec!r}: expected NAME=DIR")
        name = name or f"adapter{i}"
        # peft keeps adapters in a ModuleDict (no '.'), the engine reserves the base's names, and a
        # second adapter of one name would silently replace the first
        if not _ADAPTER_NAME.fullmatch(name) or name in (BASE, MIXED_BASE) or _module_attribute(name):
            raise AdapterSpecError(f"--adapter {spec!r}: the name {name!r} is not one an adapter can have; use "
                                   f"letters, digits, '_' and '-', and not {BASE!r} or a torch Module attribute "
                                   "such as 'train' or 'keys'")
        if name in out:
            raise AdapterSpecError(f"--adapter {spec!r}: a second adapter named {name!r}; give each its own NAME=")
        try:
            out[name] = check_adapter_dir(path)
        except (OSError, ValueError) as e:
            raise AdapterSpecError(f"--adapter {spec!r}: {e}") from None
    return out


_ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _module_attribute(name: str) -> bool:
    # peft keeps each adapter's layers in a torch ModuleDict, which refuses a key that is one of its
    # attributes ("train", "keys", "to") with a KeyError deep inside the load.
    import torch

    return hasattr(torch.nn.ModuleDict(), name)


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
        if beam_size is not None and beam_size < 1:
            raise ValueError(f"beam size {beam_size}: must be at least 1")
        from asr_lora.core.runtime import cuda_missing

        if cuda_missing(device):
            raise ValueError(f"device {device!r}: this machine has no CUDA device")
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
        # Whisper's decoder holds max_target_positions tokens, up to 4 of them the start tokens:
        # refused here rather than by every request's generate.
        longest = self.model.config.max_target_positions - 4
        if not 1 <= max_new_tokens <= longest:
            raise ValueError(f"max new tokens {max_new_tokens}: must be 1 to {longest} for this model")
        self.adapter_dirs: dict[str, Path] = {}
        self.dora: set[str] = set()  # DoRA adapters: peft takes no per-row adapter_names for them
        for name, path in adapters.items():
            self.load_adapter(name, path)
        self.multilingual = is_multilingual(self.model)
        self.batches: list[list[str]] = []  # model names per generate call (the latest), for tests and the benchmark

    def load_adapter(self, name: str, path: str | Path) -> None:
        if base := other_base(path, self.base_name):  # a local path to the same base is the same base
            log.warning("adapter %s names base %s; serving it on %s", name, base, self.base_name)
        self.model = load_adapter(self.model, path, name)
        self.adapter_dirs[name] = Path(path)
        if getattr(self.model.peft_config[name], "use_dora", False):
            self.dora.add(name)

    @property
    def models(self) -> list[str]:
        return [BASE, *self.adapter_dirs]

    def check_options(self, options: DecodeOptions) -> None:
        if options.language:
            self._check_language(options.language)
        if not 0.0 <= options.temperature <= 1.0:
            raise OptionError("temperature", f"temperature must be between 0 and 1, got {options.temperature}")

    def _check_language(self, language: str) -> None:
        if not self.multilingual:
            if language.lower() not in ENGLISH:
                raise OptionError("language", f"this base model is English-only; language {language!r} "
                                              "is not supported (omit it or pass 'en')")
            return
        code = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
        known = getattr(self.model.generation_config, "lang_to_id", None) or {}
        if code not in LANGUAGES or f"<|{code}|>" not in known:
            raise OptionError("language", f"language {language!r} is not one this model transcribes; "
                                          "pass a Whisper language code or name such as 'en' or 'english'")

    def prepare(self, options: DecodeOptions) -> DecodeOptions:
        """`options` checked, with the prompt tokenised and cut to fit once here rather than at
        every decode call; OptionError for what the model cannot take."""
        self.check_options(options)
        if not options.prompt or options.prompt_ids is not None:
            return options
        try:
            ids = prompt_ids(self.model, self.processor, options.prompt, self.max_new_tokens)
        except ValueError as e:  # the text spells a special token, e.g. "<|endoftext|>"
            raise OptionError("prompt", f"prompt is not allowed: {e}", "invalid_value") from None
        return replace(options, prompt_ids=ids)

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
        """{"text", "segments": [{"start", "end", "text", "tokens", "seek"}], "duration"} per job, in order.

        All jobs must share `options` (the batcher groups them so)."""
        if len({j.options for j in jobs}) > 1:
            raise ValueError("one decode call takes one set of options")
        if not jobs:
            return []
        opts = self._options(jobs[0].options)
        out: list[dict | None] = [None] * len(jobs)
        # One generate call for every model of the batch (peft's per-row adapter_names), except where
        # generate would drop rows part way: with timestamps, clips whose first window ends early are
        # decoded again alone, while adapter_names keeps every row's name (peft refuses the call);
        # DoRA adapters take no adapter_names at all. Those batches go one model at a time.
        if (self.mode == "mixed" and self.adapter_dirs and opts.beam_size == 1 and not opts.timestamps
                and not self.dora & {j.model for j in jobs}):
            names = [j.model if j.model != BASE else MIXED_BASE for j in jobs]
            self._record([j.model for j in jobs])
            return decode_audio(self.model, self.processor, [j.audio for j in jobs], opts, adapter_names=names,
                                batch_size=len(jobs))
        groups: dict[str, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(j.model, []).append(i)
        for name, idx in groups.items():
            chunks = [idx] if self.mode == "mixed" else [[i] for i in idx]
            for chunk in chunks:
                self._record([name] * len(chunk))
                with self._select(name):
                    res = decode_audio(self.model, self.processor, [jobs[i].audio for i in chunk], opts,
                                       batch_size=len(chunk))
                for i, r in zip(chunk, res):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _record(self, names: list[str]) -> None:
        self.batches.append(names)
        del self.batches[:-1000]  # a server runs for weeks: keep the latest calls only
