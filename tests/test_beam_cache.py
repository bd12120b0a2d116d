"""BeamSearchCache (asr_lora/model/beam_cache.py) skips the cross-attention reorder in beam search;
the tokens must be the ones transformers' own cache gives."""

from __future__ import annotations

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from asr_lora.model.beam_cache import BeamSearchCache, beam_cache_kwargs
from asr_lora.model.whisper import load_whisper


class NoReorder(EncoderDecoderCache):
    def reorder_cache(self, beam_idx):  # wrong on purpose: shows the reorder matters in this setup
        pass


def test_beam_search_cache_gives_the_stock_tokens(tiny_whisper_dir):
    torch.manual_seed(0)
    model, _ = load_whisper(str(tiny_whisper_dir), dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # random init decodes one token over and over; wider weights vary it
        for prm in model.model.decoder.parameters():
            prm.normal_(0.0, 0.3)
    feats = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 80, 3000)).astype(np.float32))
    kw = dict(num_beams=4, num_return_sequences=1, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    with torch.no_grad():
        stock = model.generate(input_features=feats, **kw)
        ours = model.generate(input_features=feats, **kw, **beam_cache_kwargs(4))
        (name,) = beam_cache_kwargs(4)
        broken = model.generate(input_features=feats, **kw, **{name: NoReorder(DynamicCache(), DynamicCache())})
    assert torch.equal(stock, ours)
    assert not torch.equal(stock, broken)
    assert beam_cache_kwargs(1) == {}
    (cache,) = beam_cache_kwargs(5).values()
    assert isinstance(cache, BeamSearchCache)
