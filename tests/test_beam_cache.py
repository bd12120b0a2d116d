"""Beam search without per-beam copies of the cross-attention states (asr_lora/model/beam_cache.py):
BeamSearchCache skips the cross-attention reorder, FoldedCrossAttention keeps one copy per clip;
the tokens must be the ones transformers' own cache and attention give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from asr_lora.model.beam_cache import BeamSearchCache, FoldedCrossAttention, beam_cache_kwargs, fold_cross_attention
from asr_lora.model.whisper import load_whisper

KW = dict(num_beams=4, num_return_sequences=1, max_new_tokens=12, min_new_tokens=12, do_sample=False)


class NoReorder(EncoderDecoderCache):
    def reorder_cache(self, beam_idx):  # wrong on purpose: shows the reorder matters in this setup
        pass


def _model_and_features(tiny_whisper_dir, clips=3):
    torch.manual_seed(0)
    model, _ = load_whisper(str(tiny_whisper_dir), dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # random init decodes one token over and over; wider weights vary it
        for prm in model.model.decoder.parameters():
            prm.normal_(0.0, 0.3)
    feats = torch.from_numpy(np.random.default_rng(0).standard_normal((clips, 80, 3000)).astype(np.float32))
    return model, feats


def test_beam_search_cache_gives_the_stock_tokens(tiny_whisper_dir):
    model, feats = _model_and_features(tiny_whisper_dir)
    with torch.no_grad():
        stock = model.generate(input_features=feats, **KW)
        ours = model.generate(input_features=feats, **KW, **beam_cache_kwargs(4))
        (name,) = beam_cache_kwargs(4)
        broken = model.generate(input_features=feats, **KW, **{name: NoReorder(DynamicCache(), DynamicCache())})
    assert torch.equal(stock, ours)
    assert not torch.equal(stock, broken)
    assert beam_cache_kwargs(1) == {}
    (cache,) = beam_cache_kwargs(5).values()
    assert isinstance(cache, BeamSearchCache) and cache.num_beams == 1  # no model given: nothing folded


@pytest.mark.parametrize("with_lora", [False, True])
def test_folded_cross_attention_keeps_one_copy_per_clip_and_the_stock_tokens(tiny_whisper_dir, with_lora):
    model, feats = _model_and_features(tiny_whisper_dir)
    if with_lora:  # the recipe's adapters sit on the cross-attention's q_proj/v_proj too
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for n, prm in model.named_parameters():
                if "lora_B" in n:
                    prm.normal_(0.0, 0.5)
        model.eval()
    with torch.no_grad():
        stock = model.generate(input_features=feats, **KW)
        kwargs = beam_cache_kwargs(4, model)
        (cache,) = kwargs.values()
        folded = model.generate(input_features=feats, **KW, **kwargs)
        greedy = model.generate(input_features=feats, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert cache.num_beams == 4
    assert cache.cross_attention_cache.layers[0].keys.shape[0] == 3  # clips, not clips * beams
    assert cache.self_attention_cache.layers[0].keys.shape[0] == 12
    assert torch.equal(stock, folded)
    assert not torch.equal(stock, greedy)  # beam search matters here, so the equality above says something
    assert fold_cross_attention(model) == len(model.get_decoder().layers if not with_lora
                                              else model.base_model.model.get_decoder().layers)
    assert all(isinstance(layer.encoder_attn, FoldedCrossAttention)
               for layer in (model.base_model.model if with_lora else model).get_decoder().layers)


def test_folded_cross_attention_runs_the_stock_forward_outside_folded_beam_search(tiny_whisper_dir):
    model, feats = _model_and_features(tiny_whisper_dir)
    with torch.no_grad():
        before = model(input_features=feats, decoder_input_ids=torch.ones(3, 4, dtype=torch.long)).logits
        fold_cross_attention(model)
        after = model(input_features=feats, decoder_input_ids=torch.ones(3, 4, dtype=torch.long)).logits
    assert torch.equal(before, after)
