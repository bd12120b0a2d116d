"""Every Whisper `generate` call in the package: evaluation, export checks, `transcribe` and the
server all decode here, so what was scored is what is deployed.

One front end everywhere: transformers' `WhisperFeatureExtractor` (the waveform is zero-padded to
30 s, then log-mel). faster-whisper pads the normalised log-mel instead, so its transcripts can
differ slightly on the same audio; training and evaluation here always use this one.

`DecodeOptions` holds what a caller may choose (beams, prompt, language, timestamps, temperature);
`_generate_kwargs` turns it into `generate` arguments the same way for every caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.data.audio import SAMPLE_RATE
from asr_lora.model.beam_cache import fold_beam_search
from asr_lora.model.encoder_cache import encoder_states

log = logging.getLogger(__name__)

CHUNK_SECONDS = 30
# A long prompt keeps its last 223 text tokens after <|startofprev|>, as Whisper and OpenAI's API do:
# half the decoder's 448 positions stay for the transcript.
PROMPT_MAX_TOKENS = 223
START_TOKENS = 4  # <|startoftranscript|>, language, task, <|notimestamps|>: between prompt and transcript
# Clips per encoder call on CPU. The 30 s encoder's activations for 16 clips (~150 MB) spill the
# cache: on 2 AVX2 cores it took 0.51 s per clip at 16 clips per call and 0.42 s at 2, with the same
# hypotheses (bench/encoder_chunk.py). GPUs keep the whole batch in one call.
CPU_ENCODER_CHUNK = 2


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode; hashable, so a batcher can group requests that share them."""

    beam_size: int = 1
    prompt: str | None = None  # previous-text prompt (Whisper's `prompt_ids`), e.g. the domain terms
    # `prompt` tokenised and cut to fit (`prompt_ids`) by whoever built the options, once per request;
    # None: tokenised at each decode call
    prompt_ids: tuple[int, ...] | None = None
    language: str | None = None  # multilingual checkpoints only; English when None
    timestamps: bool = False
    # with timestamps: each segment gets the `avg_logprob` of its window (generate keeps its scores)
    logprobs: bool = False
    temperature: float = 0.0
    max_new_tokens: int = 128

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def is_multilingual(model) -> bool:
    return bool(getattr(model.generation_config, "is_multilingual", False))


def prompt_ids(model, processor, prompt: str, max_new_tokens: int) -> tuple[int, ...]:
    """Whisper's `prompt_ids` for `prompt`: <|startofprev|> and the prompt's last tokens, as many as
    leave room for the start tokens and `max_new_tokens` (transformers refuses a longer total);
    () when none fit. Raises ValueError for text that spells a special token, e.g. "<|endoftext|>"."""
    ids = [int(i) for i in processor.get_prompt_ids(prompt)]
    room = model.config.max_target_positions - max_new_tokens - START_TOKENS - 1
    keep = max(0, min(PROMPT_MAX_TOKENS, room))
    if len(ids) - 1 > keep:
        log.debug("prompt of %d tokens cut to its last %d (max_new_tokens %d)", len(ids) - 1, keep, max_new_tokens)
    return (ids[0], *ids[1:][-keep:]) if keep else ()


def _generate_kwargs(model, processor, options: DecodeOptions) -> dict:
    """`generate` kwargs for `options`. English-only checkpoints take no language argument;
    multilingual ones transcribe English unless asked otherwise. Beam search first
    gives the model `model/beam_cache.py`'s fold (one copy of the encoder states per clip, not per
    beam; the same tokens)."""
    if options.beam_size > 1:
        fold_beam_search(model)
    kwargs: dict = {"num_beams": options.beam_size, "max_new_tokens": options.max_new_tokens}
    if options.temperature > 0:
        kwargs.update(do_sample=True, temperature=options.temperature)
    else:
        kwargs["do_sample"] = False
    if is_multilingual(model):
        kwargs.update(language=(options.language or "en").lower(), task="transcribe")
    ids = options.prompt_ids
    if ids is None and options.prompt:
        ids = prompt_ids(model, processor, options.prompt, options.max_new_tokens)
    if ids:
        kwargs["prompt_ids"] = torch.tensor(ids, dtype=torch.long, device=model_device(model))
    if options.timestamps:
        kwargs.update(return_timestamps=True, return_segments=True)
        if options.logprobs:
            kwargs.update(return_dict_in_generate=True, output_scores=True)
    return kwargs


@torch.no_grad()
def generate_ids(model, processor, features: torch.Tensor | None = None, options: DecodeOptions = DecodeOptions(),
                 encoder_hidden: torch.Tensor | None = None, adapter_names: list[str] | None = None):
    """Token ids (or transformers' dict with segments, when `options.timestamps`) for a batch of
    30 s log-mel windows, or for encoder states computed before (`encoder_hidden`).

    `adapter_names`: one peft adapter per row (`"__base__"` for none), peft's mixed-adapter batch.
    On CPU, without per-row adapters, the encoder runs a few clips at a time (the same states)."""
    model.eval()
    param = next(model.parameters())
    kwargs = _generate_kwargs(model, processor, options)
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    if encoder_hidden is None and (param.device.type != "cpu" or adapter_names is not None or options.timestamps):
        return model.generate(input_features=features.to(param.device, param.dtype), **kwargs)
    if encoder_hidden is None:
        encoder_hidden = encoder_states(model.get_encoder(), features.to(param.device, param.dtype),
                                        CPU_ENCODER_CHUNK)
    hidden = encoder_hidden.to(param.device, param.dtype)
    return model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), **kwargs)


def generate_features(model, processor, features: torch.Tensor, beam_size: int = 1, max_new_tokens: int = 128):
    """Token ids for a batch of 30 s log-mel windows, deterministic search with `beam_size` beams."""
    return generate_ids(model, processor, features, DecodeOptions(beam_size=beam_size, max_new_tokens=max_new_tokens))


def decode_ids(processor, ids) -> list[str]:
    return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]


def _avg_logprob(result: dict, eos: int, temperature: float) -> float:
    """Whisper's `avg_logprob` of one window: the mean log-probability of its tokens up to and
    including <|endoftext|>, from the processed scores generate picked them by (a beam search's
    are those of the returned beam). The scores end the sequence, prompt and start tokens before."""
    scores = torch.stack(result["scores"]).float() * (temperature if temperature > 0 else 1.0)  # undo the warper
    tokens = result["sequences"][-len(result["scores"]):].to(scores.device)
    ends = (tokens == eos).nonzero()
    n = int(ends[0]) + 1 if len(ends) else len(tokens)
    logprobs = torch.log_softmax(scores[:n], dim=-1).gather(-1, tokens[:n, None])
    return round(float(logprobs.mean()), 4)


def _window_start(tok, seg: dict) -> float:
    """Start in seconds of the 30 s window a segment was decoded in: its start less the time of its
    opening timestamp token (transformers' segments name no window, OpenAI's `seek` does)."""
    begin = tok.convert_tokens_to_ids("<|0.00|>")
    first = int(seg["tokens"][0]) if len(seg["tokens"]) else -1
    return max(0.0, float(seg["start"]) - ((first - begin) * 0.02 if first >= begin else 0.0))


def _segment(tok, seg: dict, duration: float, options: DecodeOptions) -> dict:
    start, end = (min(float(seg[k]), duration) for k in ("start", "end"))
    out = {"start": round(start, 2), "end": round(max(start, end), 2),
           "text": tok.decode(seg["tokens"], skip_special_tokens=True).strip(),
           # OpenAI's segment fields: the ids as generated (timestamp tokens included) and the
           # window's offset in 10 ms frames.
           "tokens": [int(t) for t in seg["tokens"]], "seek": round(_window_start(tok, seg) * 100)}
    if options.logprobs:
        out["avg_logprob"] = _avg_logprob(seg["result"], tok.eos_token_id, options.temperature)
    return out


def _results(processor, out, durations: Sequence[float], options: DecodeOptions) -> list[dict]:
    tok, timestamps = processor.tokenizer, options.timestamps
    seqs = out["sequences"] if isinstance(out, dict) else out
    results = []
    for row, duration in enumerate(durations):
        text = tok.decode(seqs[row], skip_special_tokens=True).strip()
        segments = []
        if timestamps and isinstance(out, dict):
            segs = (_segment(tok, seg, duration, options) for seg in out["segments"][row])
            segments = [s for s in segs if s["text"]]
        if timestamps and not segments and text:
            segments = [{"start": 0.0, "end": round(duration, 2), "text": text}]
        results.append({"text": text, "segments": segments, "duration": round(duration, 3)})
    return results


@torch.no_grad()
def _decode_long(model, processor, audio: np.ndarray, options: DecodeOptions,
                 adapter_names: list[str] | None) -> dict:
    # transformers' sequential long-form algorithm: unpadded features + timestamps, window by window.
    inputs = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                                         padding="longest", return_attention_mask=True)
    param = next(model.parameters())
    opts = replace(options, timestamps=True)
    kwargs = dict(_generate_kwargs(model, processor, opts), condition_on_prev_tokens=False)
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    out = model.generate(input_features=inputs.input_features.to(param.device, param.dtype),
                         attention_mask=inputs.attention_mask.to(param.device), **kwargs)
    return _results(processor, out, [len(audio) / SAMPLE_RATE], opts)[0]


def decode_audio(model, processor, audios: Sequence[np.ndarray], options: DecodeOptions = DecodeOptions(),
                 adapter_names: list[str] | None = None, batch_size: int = 8) -> list[dict]:
    """{"text", "segments", "duration"} for each 16 kHz mono array, in order. Clips up to 30 s are
    decoded `batch_size` at a time; longer ones one at a time with Whisper's long-form algorithm
    (segments with timestamps)."""
    out: list[dict | None] = [None] * len(audios)
    short = [i for i, a in enumerate(audios) if len(a) <= CHUNK_SECONDS * SAMPLE_RATE]
    for start in range(0, len(short), batch_size):
        idx = short[start: start + batch_size]
        feats = processor.feature_extractor([audios[i] for i in idx], sampling_rate=SAMPLE_RATE,
                                            return_tensors="pt").input_features
        names = [adapter_names[i] for i in idx] if adapter_names is not None else None
        ids = generate_ids(model, processor, feats, options, adapter_names=names)
        durations = [len(audios[i]) / SAMPLE_RATE for i in idx]
        for i, r in zip(idx, _results(processor, ids, durations, options)):
            out[i] = r
    for i in (i for i, r in enumerate(out) if r is None):
        names = [adapter_names[i]] if adapter_names is not None else None
        out[i] = _decode_long(model, processor, audios[i], options, names)
    return out  # type: ignore[return-value]


def transcribe_arrays(model, processor, audios: Sequence[np.ndarray], beam_size: int = 1, batch_size: int = 8,
                      prompt: str | None = None, max_new_tokens: int = DecodeOptions.max_new_tokens) -> list[str]:
    """Transcripts of 16 kHz mono arrays; clips over 30 s go through Whisper's long-form decoding."""
    opts = DecodeOptions(beam_size=beam_size, prompt=prompt, max_new_tokens=max_new_tokens)
    return [r["text"] for r in decode_audio(model, processor, audios, opts, batch_size=batch_size)]
