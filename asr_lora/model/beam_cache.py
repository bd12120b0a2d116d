"""A decoder cache for beam search that does not copy the cross-attention cache every step.

transformers' `EncoderDecoderCache.reorder_cache` index-selects both the self-attention and the
cross-attention key/value states after each beam step. A beam only ever continues a beam of the
same clip, and every beam of a clip holds the same cross-attention states (the clip's encoder
output, copied num_beams times), so that reorder moves nothing: the rows it copies equal the
rows they replace. For Whisper that copy is 1,500 frames x every layer x every beam, each step,
and it was half of beam-5 decoding time on the CPU (bench: cProfile of `transcribe_split`).
Reordering only the self-attention states gives the same tokens without it.
"""

from __future__ import annotations

import functools

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


class BeamSearchCache(EncoderDecoderCache):
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


@functools.cache
def _cache_kwarg() -> str:
    # transformers renamed generate's `past_key_values` to `cache` within 5.x and warns on the old name.
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def beam_cache_kwargs(num_beams: int) -> dict:
    """`generate` kwargs: a fresh BeamSearchCache for beam search, nothing for greedy decoding."""
    return {_cache_kwarg(): BeamSearchCache(DynamicCache(), DynamicCache())} if num_beams > 1 else {}
