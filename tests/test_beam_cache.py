"""Beam search without per-beam copies of the cross-attention states (asr_lora/model/beam_cache.py):
BeamSearchCache skips the cross-attention reorder, FoldedCrossAttention keeps one copy per clip,
fold_beam_search gives each generate call its own cache; the tokens must be transformers' own."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.data.features import log_mel
from asr_lora.model.beam_cache import BeamSearchCache, FoldedCrossAttention, fold_beam_search
from asr_lora.model.whisper import load_whisper

KW = dict(num_beams=4, num_return_sequences=1, max_new_tokens=12, min_new_tokens=12, do_sample=False)


class NoReorder(EncoderDecoderCache):
    def reorder_cache(self, beam_idx):  # wrong on purpose: shows the reorder matters in this setup
        pass


def _model(tiny_whisper_dir):
    torch.manual_seed(0)
    model, processor = load_whisper(str(tiny_whisper_dir), dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # random init decodes one token over and over; wider weights vary it
        for prm in model.model.decoder.parameters():
            prm.normal_(0.0, 0.3)
    return model, processor


def _features(clips=3):
    return torch.from_numpy(np.random.default_rng(0).standard_normal((clips, 80, 3000)).astype(np.float32))


def _caches_seen(model):
    """The cache each decoder cross-attention call received (a forward pre-hook per module)."""
    seen = []
    for layer in model.get_decoder().layers:
        layer.encoder_attn.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("cache")), with_kwargs=True)
    return seen


def test_beam_search_cache_gives_the_stock_tokens(tiny_whisper_dir):
    model, _ = _model(tiny_whisper_dir)
    feats = _features()
    with torch.no_grad():
        stock = model.generate(input_features=feats, **KW)
        ours = model.generate(input_features=feats, **KW, cache=BeamSearchCache(DynamicCache(), DynamicCache()))
        broken = model.generate(input_features=feats, **KW, cache=NoReorder(DynamicCache(), DynamicCache()))
    assert torch.equal(stock, ours)
    assert not torch.equal(stock, broken)


@pytest.mark.parametrize("with_lora", [False, True])
def test_folded_beam_search_keeps_one_copy_per_clip_and_the_stock_tokens(tiny_whisper_dir, with_lora):
    model, _ = _model(tiny_whisper_dir)
    with torch.no_grad():  # louder encoder states: each clip decodes to its own tokens
        model.model.encoder.layer_norm.weight.mul_(10.0)
    feats = _features()
    if with_lora:  # the recipe's adapters sit on the cross-attention's q_proj/v_proj too
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for n, prm in model.named_parameters():
                if "lora_B" in n:
                    prm.normal_(0.0, 0.5)
        model.eval()
    whisper = model.base_model.model if with_lora else model
    with torch.no_grad():
        stock = model.generate(input_features=feats, **KW)
        greedy = model.generate(input_features=feats, max_new_tokens=12, min_new_tokens=12, do_sample=False)
        assert fold_beam_search(model) == len(whisper.get_decoder().layers)
        assert fold_beam_search(model) == len(whisper.get_decoder().layers)  # idempotent
        seen = _caches_seen(whisper)
        folded = model.generate(input_features=feats, **KW)
    assert all(isinstance(layer.encoder_attn, FoldedCrossAttention) for layer in whisper.get_decoder().layers)
    cache = seen[0]
    assert isinstance(cache, BeamSearchCache) and cache.num_beams == 4
    assert cache.cross_attention_cache.layers[0].keys.shape[0] == 3  # clips, not clips * beams
    assert cache.self_attention_cache.layers[0].keys.shape[0] == 12
    assert torch.equal(stock, folded)
    assert not torch.equal(stock, greedy)  # beam search matters here, so the equality above says something
    assert len({tuple(row) for row in stock.tolist()}) > 1  # a clip unlike clip 0: which states a beam reads matters


def test_every_inner_generate_call_gets_a_fresh_cache(tiny_whisper_dir):
    # This random model emits timestamp tokens, so Whisper's generate decodes each 30 s window in
    # several inner calls; a cache shared between them would start the second call "full".
    model, processor = _model(tiny_whisper_dir)
    rng = np.random.default_rng(0)
    feats = log_mel(processor, [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 24000)])
    folded_model = copy.deepcopy(model)
    fold_beam_search(folded_model)
    seen = _caches_seen(folded_model)
    kw = dict(num_beams=3, max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        stock = model.generate(input_features=feats, **kw)
        folded = folded_model.generate(input_features=feats, **kw)
    caches = {id(c) for c in seen}
    assert stock.shape[1] > 6 + 3 and len(caches) > 1  # several inner calls, a cache each
    assert all(isinstance(c, BeamSearchCache) for c in seen)
    assert torch.equal(stock, folded)


def test_folded_model_runs_the_stock_forward_outside_beam_search(tiny_whisper_dir):
    model, _ = _model(tiny_whisper_dir)
    feats = _features()
    ids = torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        before = model(input_features=feats, decoder_input_ids=ids).logits
        greedy = model.generate(input_features=feats, max_new_tokens=8, do_sample=False)
        fold_beam_search(model)
        after = model(input_features=feats, decoder_input_ids=ids).logits
        greedy_after = model.generate(input_features=feats, max_new_tokens=8, do_sample=False)
    assert torch.equal(before, after) and torch.equal(greedy, greedy_after)


def test_a_folded_model_copies_pickles_and_keeps_a_cache_the_caller_passes(tiny_whisper_dir):
    import pickle

    model, _ = _model(tiny_whisper_dir)
    feats = _features()
    with torch.no_grad():
        stock = model.generate(input_features=feats, **KW)
        fold_beam_search(model)
        twin = copy.deepcopy(model)
        assert twin._prepare_cache_for_generation.__self__ is twin  # rebound, not the original's
        assert torch.equal(twin.generate(input_features=feats, **KW), stock)
        thawed = pickle.loads(pickle.dumps(model))
        assert torch.equal(thawed.generate(input_features=feats, **KW), stock)
        fold_beam_search(thawed)  # folds again: the stock methods it came back with are replaced
        assert thawed.forward.__func__.__name__ == "forward" and thawed.forward.__func__ is not type(thawed).forward
        assert thawed._prepare_cache_for_generation.__func__ is not type(thawed)._prepare_cache_for_generation
        assert torch.equal(thawed.generate(input_features=feats, **KW), stock)
        # the caller's own cache is the one used (this one is wrong on purpose), not swapped for ours
        broken = model.generate(input_features=feats, **KW, cache=NoReorder(DynamicCache(), DynamicCache()))
        own = EncoderDecoderCache(DynamicCache(), DynamicCache())
        model.generate(input_features=feats, **KW, cache=own)
    assert not torch.equal(broken, stock)
    assert own.self_attention_cache.get_seq_length() > 0  # filled by the call: it was not swapped out


def test_prompted_beam_search_runs_the_prompt_once_per_clip_and_keeps_the_stock_tokens(tiny_whisper_dir):
    model, processor = _model(tiny_whisper_dir)
    feats = _features()
    prompt = torch.as_tensor(processor.get_prompt_ids("kopi siew dai, Toa Payoh, Bukit Timah, chope, shiok"))
    ids = torch.ones(3, 4, dtype=torch.long)
    kw = dict(KW, prompt_ids=prompt)
    with torch.no_grad():
        stock = model.generate(input_features=feats, **kw)
        fold_beam_search(model)
        widths, rows = [], []
        model.proj_out.register_forward_hook(lambda m, a, out: widths.append(out.shape[1]))
        model.model.decoder.register_forward_pre_hook(
            lambda m, a, kw: rows.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
        folded = model.generate(input_features=feats, **kw)
        steps, widths[:], rows[:] = list(zip(widths, rows)), [], []
        # The evaluation's way in: encoder outputs computed once (generate checks kwargs against forward).
        hidden = BaseModelOutput(last_hidden_state=model.get_encoder()(feats).last_hidden_state)
        from_cache = model.generate(encoder_outputs=hidden, **kw)
        full = model(input_features=feats, decoder_input_ids=ids).logits  # after a beam search: every position
    assert torch.equal(stock, folded) and torch.equal(stock, from_cache)
    assert len(prompt) > 5 and {w for w, _ in steps} == {1}  # the prompt's first step included
    assert full.shape[1] == 4
    # The first step ran the prompt once per clip (3 rows, not 3 x 4 beams); then one token per beam.
    assert steps[0][1][0] == 3 and steps[0][1][1] > len(prompt) and {r for _, r in steps[1:]} == {(12, 1)}
    assert rows[0][0] == 3  # from encoder outputs too


def test_a_beam_search_that_asks_for_hidden_states_runs_every_beam_at_the_first_step(tiny_whisper_dir):
    model, processor = _model(tiny_whisper_dir)
    prompt = torch.as_tensor(processor.get_prompt_ids("kopi siew dai, Toa Payoh"))
    fold_beam_search(model)
    rows = []
    model.model.decoder.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0]),
                                                  with_kwargs=True)
    with torch.no_grad():
        model.generate(input_features=_features(), **KW, prompt_ids=prompt, return_dict_in_generate=True,
                       output_hidden_states=True)
        n = len(rows)
        model.generate(input_features=_features(), **KW, prompt_ids=prompt)
    assert rows[0] == 3 * KW["num_beams"]  # per-step hidden states are per beam row: the stock first step
    assert rows[n] == 3  # without them, the prompt runs once per clip
