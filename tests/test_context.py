"""Short encoder context while training (asr_lora/context.py) on a tiny random Whisper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from asr_lora.config import LoraSettings, TrainConfig
from asr_lora.data.audio import speech_frames
from asr_lora.data.features import log_mel
from asr_lora.model.context import context_length, disable_short_context, enable_short_context, whisper_encoder
from asr_lora.training.job import prepare_for_training


def _cfg(context="batch", pad_s=1.0, **lora):
    train = OmegaConf.structured(TrainConfig(encoder_context=context, context_pad_s=pad_s))
    return OmegaConf.create({"lora": OmegaConf.structured(LoraSettings(**lora)), "train": train})


def _speech(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


@pytest.fixture(scope="module")
def processor(tiny_whisper_dir):
    return WhisperProcessor.from_pretrained(tiny_whisper_dir)


def test_speech_frames_find_the_longest_clip_and_round_to_seconds(processor):
    feats = log_mel(processor, [_speech(2.0), _speech(4.3, 1)])
    # 4.3 s of audio ends at frame 430 (10 ms hop; the STFT window reaches one frame past it).
    assert 430 <= speech_frames(feats) <= 432
    assert speech_frames(feats[:1]) in range(200, 203)
    assert context_length(feats, pad_s=1.0) == 600  # 4.3 s + 1 s, up to whole seconds
    assert context_length(feats, pad_s=0.0) == 500
    assert context_length(feats[:1], pad_s=0.0) == 300
    assert context_length(log_mel(processor, [_speech(29.9)]), pad_s=1.0) == 3000  # never past 30 s
    silent = log_mel(processor, [np.zeros(16000, np.float32)])
    assert speech_frames(silent) == 0 and context_length(silent, 0.0) == 100


def test_training_mode_runs_the_prefix_and_eval_keeps_30_seconds(tiny_whisper_dir, processor):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    feats = log_mel(processor, [_speech(2.4)])
    encoder = whisper_encoder(model)
    encoder.eval()
    with torch.no_grad():
        full = encoder(feats).last_hidden_state
    enable_short_context(model, pad_s=0.5)
    with torch.no_grad():
        assert torch.equal(encoder(feats).last_hidden_state, full)  # eval: untouched
        encoder.train()
        encoder.dropout = 0.0
        short = encoder(feats).last_hidden_state
    assert short.shape[1] == 150 and full.shape[1] == 1500  # 2.4 + 0.5 s -> 300 frames -> 150 positions
    # Same layers and position table: with padding included in the prefix, the first positions
    # see nearly the same input, but attention over 1350 fewer padding frames changes them.
    assert not torch.allclose(short, full[:, :150], atol=1e-6)
    # A prefix as long as the input computes exactly what the stock encoder computes.
    enable_short_context(model, pad_s=30.0)
    with torch.no_grad():
        assert torch.equal(encoder(feats).last_hidden_state, full)
    disable_short_context(model)
    assert "forward" not in vars(encoder)


def test_encoder_adapters_train_through_the_short_context(tiny_whisper_dir, processor):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    model, _ = prepare_for_training(_cfg(r=4, alpha=8, scope=["encoder", "decoder_self", "decoder_cross"]), model)
    feats = log_mel(processor, [_speech(1.5), _speech(2.9, 1)])
    seen = []
    whisper_encoder(model).layers[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        model(input_features=feats, labels=torch.randint(0, 50000, (2, 5))).loss.backward()
        opt.step()
        opt.zero_grad()
    assert seen == [200, 200]  # (2.9 + 1.0 s, up to 4 s) / 2 conv stride, not 1500
    enc_b = [p for n, p in model.named_parameters() if "lora_B" in n and ".encoder." in n]
    assert enc_b and all(p.abs().sum() > 0 for p in enc_b)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_features=feats, max_new_tokens=3)
    assert seen[-1] == 1500 and out.shape[0] == 2  # generation runs the stock 30 s encoder


def test_unknown_context_setting_is_named(tiny_whisper_dir):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    with pytest.raises(ValueError, match="encoder_context must be 'full' or 'batch'"):
        prepare_for_training(_cfg(context="30s"), model)
    with pytest.raises(ValueError, match="context_pad_s"):
        enable_short_context(model, pad_s=-1)


def test_specaugment_keeps_the_short_context(processor):
    from asr_lora.data.augment import spec_augment

    feats = log_mel(processor, [_speech(2.9)])
    plain = context_length(feats, pad_s=1.0)
    for seed in range(5):  # frequency masks span the padding; time masks must stay on the speech
        masked = spec_augment(feats, np.random.default_rng(seed), 2, 27, 2, 40)
        assert not torch.equal(masked, feats)
        assert context_length(masked, pad_s=1.0) == plain == 400
        assert torch.equal(masked[..., 300:], masked[..., -1:].expand_as(masked[..., 300:]))


def test_gradient_checkpointing_trains_encoder_adapters_through_the_short_context(tiny_whisper_dir, processor):
    # Reentrant checkpoints starve encoder adapters; the short path must not either.
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    model, _ = prepare_for_training(_cfg(r=4, alpha=8, scope=["encoder", "decoder_self"]), model)
    model.get_base_model().activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    seen = []
    whisper_encoder(model).layers[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    model.train()
    feats = log_mel(processor, [_speech(1.5)])
    model(input_features=feats, labels=torch.randint(0, 50000, (1, 5))).loss.backward()
    assert seen and set(seen) == {150}  # 1.5 + 1 s -> 300 frames, also when recomputed for the backward
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n and ".encoder." in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
