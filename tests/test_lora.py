"""LoRA on a tiny random Whisper: what gets adapted, what trains, and what stays frozen."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import WhisperForConditionalGeneration

from asr_lora.config import LoraSettings, TrainConfig
from asr_lora.model.lora import LoraScopeError, adapted_module_names, expected_lora_parameters, lora_modules_in
from asr_lora.training.job import prepare_for_training

LAYERS = 2  # make_tiny_whisper default


def _cfg(**lora):
    return OmegaConf.create({"lora": OmegaConf.structured(LoraSettings(**lora)),
                             "train": OmegaConf.structured(TrainConfig())})


def _model(tiny_whisper_dir):
    return WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)


@pytest.mark.parametrize("scope,targets,n_modules", [
    (["encoder"], ["q_proj", "v_proj"], 2 * LAYERS),
    (["decoder_self"], ["q_proj", "v_proj"], 2 * LAYERS),
    (["decoder_cross"], ["q_proj", "v_proj"], 2 * LAYERS),
    (["encoder", "decoder_self", "decoder_cross"], ["q_proj", "v_proj"], 6 * LAYERS),
    (["encoder", "decoder_self", "decoder_cross"], ["q_proj", "k_proj", "v_proj", "out_proj"], 12 * LAYERS),
    (["encoder", "decoder_self"], ["q_proj", "v_proj", "fc1", "fc2"], 8 * LAYERS),
    (["decoder_cross"], ["fc1"], LAYERS),
])
def test_scope_selects_exact_modules_and_parameter_count(tiny_whisper_dir, scope, targets, n_modules):
    model = _model(tiny_whisper_dir)
    names = adapted_module_names(model, targets, scope)
    assert len(names) == n_modules
    expected = expected_lora_parameters(model, names, r=4)
    d = model.config.d_model
    # hand count for attention q/v (d -> d): r*(d+d) each
    if targets == ["q_proj", "v_proj"]:
        assert expected == n_modules * 4 * (d + d)
    peft_model, info = prepare_for_training(_cfg(r=4, alpha=8, scope=scope, target_modules=targets), model)
    assert info["trainable"] == expected
    assert sorted(lora_modules_in(peft_model)) == sorted("base_model.model." + n for n in names)


@pytest.mark.parametrize("bias", ["lora_only", "all"])
def test_trained_biases_are_counted_and_train(tiny_whisper_dir, bias):
    """lora.bias used to stop every run on the parameter-count check, which counted A and B only."""
    model = _model(tiny_whisper_dir)
    names = adapted_module_names(model, ["q_proj", "v_proj"], ["decoder_self"])
    d, matrices = model.config.d_model, len(names)
    biases = {"lora_only": matrices * d,  # Whisper's q_proj and v_proj have biases (k_proj none)
              "all": sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))}[bias]
    assert expected_lora_parameters(model, names, 4, bias) == matrices * 4 * 2 * d + biases
    peft_model, info = prepare_for_training(_cfg(r=4, alpha=8, scope=["decoder_self"], bias=bias), model)
    assert info["trainable"] == matrices * 4 * 2 * d + biases


def test_bad_scope_and_empty_match_are_named(tiny_whisper_dir):
    model = _model(tiny_whisper_dir)
    with pytest.raises(LoraScopeError, match="decoder_ffn"):
        adapted_module_names(model, ["q_proj"], ["decoder_ffn"])
    with pytest.raises(LoraScopeError, match="matches no layer"):
        adapted_module_names(model, ["not_a_layer"], ["encoder"])


def _train_steps(model, steps=3, lr=1e-2, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        feats = torch.randn(2, 80, 3000)
        labels = torch.randint(0, 50000, (2, 6))
        loss = model(input_features=feats, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model


def test_training_moves_every_lora_b_and_freezes_the_base(tiny_whisper_dir):
    model = _model(tiny_whisper_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model, _ = prepare_for_training(_cfg(r=4, alpha=8), model)
    b0 = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert b0 and all((p == 0).all() for p in b0.values())  # starts exactly at W0
    _train_steps(peft_model)
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:
            assert p.abs().sum() > 0, n
    base_now = peft_model.get_base_model().state_dict()
    for k, v in before.items():
        key = k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        now = base_now[key] if key in base_now and key != k else base_now[k]
        assert torch.equal(now, v), k


def test_nonreentrant_gradient_checkpointing_trains_encoder_adapters(tiny_whisper_dir):
    model = _model(tiny_whisper_dir)
    peft_model, _ = prepare_for_training(_cfg(r=4, alpha=8, scope=["encoder", "decoder_self"]), model)
    base = peft_model.get_base_model()
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    _train_steps(peft_model)
    enc_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n and ".encoder." in n]
    assert enc_b and all(p.abs().sum() > 0 for p in enc_b)


def test_full_mode_trains_all_weights(tiny_whisper_dir):
    model = _model(tiny_whisper_dir)
    cfg = _cfg(enabled=False)
    cfg.train.mode = "full"
    model, info = prepare_for_training(cfg, model)
    assert info["trainable"] == info["total"]
    w0 = model.model.encoder.layers[0].fc1.weight.detach().clone()
    _train_steps(model, lr=1e-3)
    assert not torch.equal(w0, model.model.encoder.layers[0].fc1.weight)


def test_mode_and_lora_settings_must_agree(tiny_whisper_dir):
    cfg = _cfg(enabled=True)
    cfg.train.mode = "full"
    with pytest.raises(ValueError, match="lora=none"):
        prepare_for_training(cfg, _model(tiny_whisper_dir))


def _logits(model, feats, ids):
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=ids).logits


def test_scale_adapter_is_wise_ft_and_is_saved_loaded_and_merged_at_that_scale(tiny_whisper_dir, tmp_path):
    from peft import PeftModel
    from peft.helpers import rescale_adapter_scale

    from asr_lora.model.adapters import load_adapter
    from asr_lora.model.lora import scale_adapter

    peft_model, _ = prepare_for_training(_cfg(r=4, alpha=8, dropout=0.0), _model(tiny_whisper_dir))
    _train_steps(peft_model)
    peft_model.eval()
    torch.manual_seed(1)
    feats, ids = torch.randn(2, 80, 3000), torch.randint(0, 50000, (2, 5))
    with rescale_adapter_scale(peft_model, 0.5):  # peft's own W0 + 0.5 * (alpha/r) B A
        want = _logits(peft_model, feats, ids)
    with peft_model.disable_adapter():
        base = _logits(peft_model, feats, ids)
    full = _logits(peft_model, feats, ids)
    assert not torch.allclose(want, full, atol=1e-4) and not torch.allclose(want, base, atol=1e-4)

    assert scale_adapter(peft_model, 0.5) == 6 * LAYERS
    assert torch.allclose(_logits(peft_model, feats, ids), want, atol=1e-5)
    assert peft_model.peft_config["default"].lora_alpha == 4.0
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = load_adapter(_model(tiny_whisper_dir), tmp_path / "adapter")
    assert torch.allclose(_logits(reloaded, feats, ids), want, atol=1e-5)
    merged = reloaded.merge_and_unload(safe_merge=True).eval()
    assert not isinstance(merged, PeftModel)
    assert torch.allclose(_logits(merged, feats, ids), want, atol=1e-4)

    scale_adapter(reloaded_again := load_adapter(_model(tiny_whisper_dir), tmp_path / "adapter"), 0.0)
    assert torch.allclose(_logits(reloaded_again, feats, ids), base, atol=1e-5)  # scale 0 is the base


def test_scale_adapter_names_bad_input(tiny_whisper_dir):
    from asr_lora.model.lora import scale_adapter

    peft_model, _ = prepare_for_training(_cfg(r=4, alpha=8), _model(tiny_whisper_dir))
    with pytest.raises(ValueError, match="lora.scale=-1"):
        scale_adapter(peft_model, -1.0)
    with pytest.raises(ValueError, match="no LoRA adapter 'other'"):
        scale_adapter(peft_model, 0.5, "other")
    from asr_lora.model.lora import add_lora

    for option in ({"use_dora": True}, {"bias": "lora_only"}):
        other = add_lora(_model(tiny_whisper_dir), LoraSettings(r=4, alpha=8, **option))
        with pytest.raises(ValueError, match="scales the B A update only"):
            scale_adapter(other, 0.5)
    for option in ({"use_dora": True}, {"scale": -0.5}):  # refused before any training step
        with pytest.raises(ValueError, match="scales the B A update only|needs a multiplier >= 0"):
            prepare_for_training(_cfg(r=4, alpha=8, **{"scale": 0.5, **option}), _model(tiny_whisper_dir))
    cfg = _cfg(enabled=False, scale=0.5)
    cfg.train.mode = "full"
    with pytest.raises(ValueError, match="train.mode=full has none"):
        prepare_for_training(cfg, _model(tiny_whisper_dir))


@pytest.mark.parametrize("extra", [{"use_rslora": True}, {"alpha_pattern": {"fc1": 32}}])
def test_scale_adapter_with_rslora_and_alpha_pattern_reloads_at_that_scale(tiny_whisper_dir, tmp_path, extra):
    from peft import LoraConfig, get_peft_model
    from peft.helpers import rescale_adapter_scale

    from asr_lora.model.adapters import load_adapter
    from asr_lora.model.lora import scale_adapter

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"], init_lora_weights=False,
                        **extra)  # random B: an update to scale without training
    model = get_peft_model(_model(tiny_whisper_dir), config).eval()
    torch.manual_seed(2)
    feats, ids = torch.randn(1, 80, 3000), torch.randint(0, 50000, (1, 5))
    with rescale_adapter_scale(model, 0.5):
        want = _logits(model, feats, ids)
    scale_adapter(model, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = load_adapter(_model(tiny_whisper_dir), tmp_path / "adapter")
    assert torch.allclose(_logits(model, feats, ids), want, atol=1e-5)
    assert torch.allclose(_logits(reloaded, feats, ids), want, atol=1e-5)
