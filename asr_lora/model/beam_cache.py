"""Beam search without per-beam copies of the cross-attention states: a decoder cache, the
cross-attention that reads it, and the hook that gives every beam-search `generate` call one.

transformers runs Whisper's beam search on num_beams copies of each clip's encoder output
(`generate` repeat-interleaves it), so the decoder projects the same 1,500 frames to keys and
values num_beams times, keeps num_beams identical copies in its cache, and each step streams all of
them through attention; `EncoderDecoderCache.reorder_cache` also index-selects those copies after
every step, though a beam only ever continues a beam of the same clip, so the copy moves nothing.
Together that was most of beam-5 decoding time on the CPU (bench/beam_decode.py; a cProfile of
`transcribe_split` had 61 of 120 s in that `index_select` alone). No library option avoids it, so:

- `BeamSearchCache` reorders only the self-attention states and tells the cross-attention how many
  beams each clip has;
- `FoldedCrossAttention` projects keys and values from one copy per clip and attends with the
  clip's beams folded into the query axis: (clips*beams, T) queries become (clips, beams*T).
  Cross-attention has no mask between query positions, so each query row sees the same keys as
  before. Any other call (training, greedy decoding, transformers' own cache, an attention mask,
  attention weights asked for) runs the stock forward unchanged;
- `LastPositionHead` computes the vocabulary logits of the last position only in a beam-search
  forward: generate reads nothing else, but Whisper's forward (no `logits_to_keep`) projects every
  position, so a prompted decode's first step projected each beam's ~200 prompt tokens onto 51,864
  words, more than the rest of the prompt's cost (bench/beam_decode.py);
- `_prefill_once` runs a beam search's first forward on one row per clip: generate starts every
  beam of a clip from the same tokens (a prompt and the start sequence), so the stock first step
  ran the ~200 prompt tokens through the decoder num_beams times over; here they run once and the
  self-attention cache and the logits are repeated for the beams (`batch_repeat_interleave`);
- `fold_beam_search(model)` installs them: the attention class on the decoder's cross-attention
  modules, a wrapper on the model's forward for the first step, and a wrapper on the model's
  `_prepare_cache_for_generation` that turns the cache
  transformers makes for each beam-search call into a `BeamSearchCache`. The cache is made per
  call, not passed in: Whisper's `generate` may call the inner `generate` several times (long-form
  windows, temperature fallback, timestamps), and a cache passed as a kwarg would be reused across
  those calls with the previous call's states in it.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import (ALL_ATTENTION_FUNCTIONS, WhisperAttention,
                                                          WhisperForConditionalGeneration, eager_attention_forward)

_CACHE_KEYS = ("cache", "past_key_values")  # generate's model_kwargs name for it (renamed within 5.x)


class BeamSearchCache(EncoderDecoderCache):
    def __init__(self, *caches, num_beams: int = 1) -> None:
        super().__init__(*caches)
        self.num_beams = num_beams  # > 1: FoldedCrossAttention keeps one cross-attention copy per clip

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


class FoldedCrossAttention(WhisperAttention):
    def forward(self, hidden_states, key_value_states=None, cache=None, attention_mask=None,
                output_attentions=False, **kwargs):
        beams = getattr(cache, "num_beams", 1)
        if (key_value_states is None or beams <= 1 or attention_mask is not None or output_attentions
                or self.config.output_attentions or hidden_states.shape[0] % beams):
            return super().forward(hidden_states, key_value_states=key_value_states, cache=cache,
                                   attention_mask=attention_mask, output_attentions=output_attentions, **kwargs)
        rows, length, _ = hidden_states.shape
        clips, heads, dim = rows // beams, self.num_heads, self.head_dim
        query = (self.q_proj(hidden_states) * self.scaling).view(clips, beams, length, heads, dim)
        query = query.permute(0, 3, 1, 2, 4).reshape(clips, heads, beams * length, dim)
        cross = cache.cross_attention_cache
        if cache.is_updated.get(self.layer_idx):
            keys, values = cross.layers[self.layer_idx].keys, cross.layers[self.layer_idx].values
        else:
            source = key_value_states[::beams]  # generate repeat-interleaved it: rows b*beams.. are clip b
            keys = self.k_proj(source).view(clips, -1, heads, dim).transpose(1, 2).contiguous()
            values = self.v_proj(source).view(clips, -1, heads, dim).transpose(1, 2).contiguous()
            keys, values = cross.update(keys, values, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attend(self, query.contiguous(), keys, values, None, scaling=1.0,
                        dropout=self.dropout if self.training else 0.0,
                        is_causal=False, **kwargs)
        # out: (clips, beams*length, heads, dim) -> (clips*beams, length, heads*dim)
        return self.out_proj(out.reshape(rows, length, heads * dim)), None


class LastPositionHead(nn.Linear):
    """Whisper's `proj_out`; while `keep_last` (set per forward by `_mark_beam_search`) it projects
    the last position only: a beam-search step's logits are read at [:, -1] and nowhere else."""

    keep_last = False

    def forward(self, hidden_states):
        if self.keep_last and hidden_states.shape[1] > 1:
            hidden_states = hidden_states[:, -1:]
        return super().forward(hidden_states)


def _mark_beam_search(whisper, args, kwargs):
    # A forward pre-hook: only a folded beam search passes a BeamSearchCache, and it never asks for a loss.
    cache = next((kwargs[k] for k in _CACHE_KEYS if kwargs.get(k) is not None), None)
    whisper.proj_out.keep_last = isinstance(cache, BeamSearchCache) and kwargs.get("labels") is None


# Keyword arguments a first step may carry only as None: each holds rows `_prefill_once` does not narrow.
_PREFILL_NONE = ("labels", "attention_mask", "decoder_attention_mask", "decoder_position_ids",
                 "decoder_inputs_embeds", "input_features")
# The keyword arguments a beam-search step passes that `_prefill_once` knows how to narrow to one row
# per clip (or that hold no rows); with any other, the step runs the stock forward.
_PREFILL_KWARGS = {"decoder_input_ids", "encoder_outputs", *_CACHE_KEYS, "use_cache", "cache_position",
                   "return_dict", "output_attentions", "output_hidden_states", *_PREFILL_NONE}


def _prefill_once(self, *args, **kwargs):
    """Whisper's forward; for the first step of a folded beam search (empty `BeamSearchCache`, more
    than one token, every beam of a clip on the same tokens) it runs one row per clip and repeats the
    self-attention cache and the logits for the beams. Installed per instance by fold_beam_search."""
    stock = type(self).forward
    cache = next((kwargs[k] for k in _CACHE_KEYS if kwargs.get(k) is not None), None)
    beams = getattr(cache, "num_beams", 1)
    ids, enc = kwargs.get("decoder_input_ids"), kwargs.get("encoder_outputs")
    if (args or beams <= 1 or not isinstance(cache, BeamSearchCache) or cache.get_seq_length() or ids is None
            or enc is None or ids.shape[1] < 2 or ids.shape[0] % beams or set(kwargs) - _PREFILL_KWARGS
            or any(kwargs.get(k) is not None for k in _PREFILL_NONE)
            # asked-for attentions or hidden states, or a tuple output, would come back one row per clip
            or kwargs.get("output_attentions") or kwargs.get("output_hidden_states")
            or kwargs.get("return_dict") is False
            or not torch.equal(ids[::beams].repeat_interleave(beams, 0), ids)):
        return stock(self, *args, **kwargs)
    hidden = enc.last_hidden_state if hasattr(enc, "last_hidden_state") else enc[0]
    one = BaseModelOutput(last_hidden_state=hidden[::beams])  # generate repeat-interleaved it
    cache.num_beams = 1  # the cross-attention fills its one copy per clip the stock way
    try:
        out = stock(self, **{**kwargs, "decoder_input_ids": ids[::beams], "encoder_outputs": one})
    finally:
        cache.num_beams = beams
    cache.self_attention_cache.batch_repeat_interleave(beams)
    out.logits = out.logits.repeat_interleave(beams, 0)
    return out


# A bound method pickles as getattr(instance, its __name__): named "forward", a pickled model comes
# back with the stock forward (stock beam search, the same tokens), as _prepare_cache_for_generation
# does. generate checks its kwargs against the forward's signature, which inspect reads via __wrapped__.
_prefill_once.__name__ = "forward"
_prefill_once.__wrapped__ = WhisperForConditionalGeneration.forward


def _whisper(model) -> WhisperForConditionalGeneration | None:
    return next((m for m in model.modules() if isinstance(m, WhisperForConditionalGeneration)), None)


def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
    """transformers' own cache preparation, then, for beam search, its fresh EncoderDecoderCache
    turned into a BeamSearchCache that knows the beam count. A cache the caller passed in is left
    alone (transformers marks it `_is_user_defined`). Installed per instance by fold_beam_search as a
    bound method, so a deepcopy rebinds it to the copy and the model still pickles (by name: a
    pickled model comes back with the stock method, i.e. stock beam search, the same tokens)."""
    out = type(self)._prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs)
    for key in _CACHE_KEYS:
        cache = model_kwargs.get(key)
        if (generation_config.num_beams > 1 and type(cache) is EncoderDecoderCache
                and not getattr(cache, "_is_user_defined", False)
                and type(cache.self_attention_cache) is DynamicCache
                and type(cache.cross_attention_cache) is DynamicCache and not cache.get_seq_length()):
            model_kwargs[key] = BeamSearchCache(cache.self_attention_cache, cache.cross_attention_cache,
                                                num_beams=generation_config.num_beams)
    return out


def fold_beam_search(model) -> int:
    """Beam search on `model` (plain, peft-wrapped or merged Whisper) without per-beam copies of the
    cross-attention states; idempotent, and greedy decoding and training are unchanged. Returns the
    number of folded cross-attention modules (0: not a Whisper model, nothing done).

    The cache a folded beam search returns (`return_dict_in_generate=True`) holds one cross-attention
    row per clip beside clips*beams self-attention rows: feed it back only to a folded beam search.
    peft's mixed-adapter batches (`adapter_names`, one name per beam row) are not for a folded beam
    search: the serving engine decodes them greedily, where nothing here applies."""
    whisper = _whisper(model)
    if whisper is None:
        return 0
    n = 0
    for name, module in whisper.named_modules():
        if name.endswith("encoder_attn") and isinstance(module, WhisperAttention):
            if type(module) is WhisperAttention:
                module.__class__ = FoldedCrossAttention  # same weights and state; only forward changes
            n += isinstance(module, FoldedCrossAttention)
    # A pickled model comes back holding the stock methods as instance attributes: install over them.
    for attr, fn in (("_prepare_cache_for_generation", _prepare_cache_for_generation), ("forward", _prefill_once)):
        if n and getattr(vars(whisper).get(attr), "__func__", None) is not fn:
            setattr(whisper, attr, types.MethodType(fn, whisper))
    if n and type(whisper.proj_out) is nn.Linear:
        whisper.proj_out.__class__ = LastPositionHead  # same weight (tied to the embeddings); forward only
        whisper.register_forward_pre_hook(_mark_beam_search, with_kwargs=True)
    return n
