"""train.replay_kl: distilling the frozen base into the adapter on general-English replay rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from asr_lora.config import CONF_DIR
from asr_lora.data.features import SpeechCollator
from asr_lora.model.lora import add_lora
from asr_lora.training.job import train
from asr_lora.training.distill import replay_distillation
from test_train_e2e import make_corpus, tiny_cfg


def lora_model(model_dir, seed: int = 0):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["lora=qv_ffn", "lora.scope=[decoder_self,decoder_cross]", "lora.r=4",
                                           "lora.alpha=8"])
    torch.manual_seed(seed)
    return add_lora(WhisperForConditionalGeneration.from_pretrained(model_dir), cfg.lora)


def batch(processor, subsets, prompt=None):
    rng = np.random.default_rng(0)
    rows = [{"id": f"u{i}", "audio": (0.1 * rng.standard_normal(8000)).astype("float32"), "subset": s,
             "labels": [50257, 50362, 220 + i, 300 + i, 400, 50256][: 4 + i % 3]} for i, s in enumerate(subsets)]
    return SpeechCollator(processor, 50257, mark_replay=True, prompt_ids=prompt,
                          prompt_probability=1.0 if prompt else 0.0)(rows)


def move_adapter(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = 0.5 * torch.randn(p.shape, generator=g)


def trained_lora(model_dir, loss_of, steps: int, lr: float):
    """A LoRA model trained `steps` Adam steps on `loss_of(model)`. Its output embeddings are scaled
    up, so that a few steps can move the random init's near-uniform output far."""
    model = lora_model(model_dir)
    model.base_model.model.model.decoder.embed_tokens.weight.data *= 30
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = loss_of(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_distillation_is_the_kl_to_the_base_on_the_flagged_rows_only(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = lora_model(tiny_whisper_dir)
    inputs = batch(processor, ["main", "general", "general", "control"])
    rows = inputs.pop("distill_rows")
    assert rows.tolist() == [False, True, True, False]
    labels = inputs["labels"]
    start = replay_distillation(model, inputs, model(**inputs).logits, labels, rows)
    assert abs(float(start.detach())) < 1e-6  # B = 0: the adapted model is the base

    move_adapter(model)
    out = model(**inputs)
    kl = replay_distillation(model, inputs, out.logits, labels, rows)
    with torch.no_grad(), model.disable_adapter():
        base = model(**inputs).logits  # the whole batch, then the flagged rows' label positions
    per_token = []
    for r in (1, 2):
        keep = labels[r] != -100
        p, q = base[r][keep].log_softmax(-1), out.logits[r][keep].log_softmax(-1)
        per_token += (p.exp() * (p - q)).sum(-1).tolist()
    assert kl.item() == pytest.approx(np.mean(per_token), rel=1e-4) and kl.item() > 1e-3
    kl.backward()  # the gradient reaches the adapter, never the frozen base
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_a_prompted_replay_row_is_held_to_the_unprompted_base(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = lora_model(tiny_whisper_dir)
    move_adapter(model)
    prompted = batch(processor, ["general", "general"], prompt=[50360, 700, 701, 702])
    plain = batch(processor, ["general", "general"])
    rows = prompted.pop("distill_rows")
    plain.pop("distill_rows")
    assert "decoder_input_ids" in prompted and "decoder_input_ids" not in plain
    with torch.no_grad():
        out = model(**prompted)
        kl = replay_distillation(model, prompted, out.logits, prompted["labels"], rows)
        with model.disable_adapter():
            unprompted_base = model(**plain).logits[plain["labels"] != -100].log_softmax(-1)
            prompted_base = model(**prompted).logits[prompted["labels"] != -100].log_softmax(-1)
    adapted = out.logits[prompted["labels"] != -100].log_softmax(-1)
    expect = (unprompted_base.exp() * (unprompted_base - adapted)).sum(-1).mean()
    against_prompted = (prompted_base.exp() * (prompted_base - adapted)).sum(-1).mean()
    assert float(kl) == pytest.approx(float(expect), rel=1e-4)
    assert abs(float(kl) - float(against_prompted)) > 1e-3 * float(kl)  # the prompt changes the base's view


def test_the_term_holds_replay_rows_nearer_the_base(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    inputs = batch(processor, ["general"] * 4)
    rows = inputs.pop("distill_rows")
    drift = {}
    for weight in (0.0, 5.0):
        def loss_of(model, weight=weight):
            out = model(**inputs)
            return out.loss + weight * replay_distillation(model, inputs, out.logits, inputs["labels"], rows)

        model = trained_lora(tiny_whisper_dir, loss_of, steps=20, lr=5e-2)
        with torch.no_grad():
            drift[weight] = float(replay_distillation(model, inputs, model(**inputs).logits, inputs["labels"], rows))
    assert drift[5.0] < 0.5 * drift[0.0], drift


def test_a_run_logs_the_term_and_refuses_what_it_cannot_distil(tmp_path, tiny_whisper_dir, monkeypatch):
    manifest = make_corpus(tmp_path / "corpus")
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    for r in rows[6:10]:  # four of the ten train rows become general-English replay
        r["subset"] = "general"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cfg(where, *extra):
        c = tiny_cfg(tmp_path / where, tiny_whisper_dir, "logger=none", "eval.before_training=false", *extra)
        c.data.path = str(manifest)
        return c

    distillation_is_logged_and_refused(tmp_path, monkeypatch, cfg, "replay_kl")


def forbid_encoding_and_decoding(monkeypatch):
    """Within the test, a run that encodes or decodes anything fails: for refusals that must come first."""
    import asr_lora.model.encoder_cache as encoder_cache
    import asr_lora.training.job as job

    def no_work(*a, **k):
        raise AssertionError("encoded or decoded before refusing")

    monkeypatch.setattr(job, "zero_shot", no_work)
    monkeypatch.setattr(encoder_cache, "build_encoder_cache", no_work)


def distillation_is_logged_and_refused(tmp_path, monkeypatch, cfg, setting: str):
    """A run with train.`setting`=1 logs the term beside the loss and trains to another loss than one
    without; a negative weight and a run without an adapter are refused before any work."""
    summary = train(cfg("a", f"train.{setting}=1.0"))
    plain = train(cfg("b"))
    state = json.loads((tmp_path / "a" / "run" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    logged = [h[setting] for h in state["log_history"] if setting in h]
    assert logged and all(np.isfinite(logged)) and max(logged) > 0
    assert summary["train"]["train_loss"] != plain["train"]["train_loss"]

    forbid_encoding_and_decoding(monkeypatch)
    for extra, match in (([f"train.{setting}=-1"], "must be >= 0"),
                         ([f"train.{setting}=1", "train.mode=full", "lora=none"], "has no adapter")):
        with pytest.raises(ValueError, match=match):
            train(cfg("c", *extra))


def test_a_train_split_without_replay_rows_trains_without_the_term_and_says_so(caplog):
    # The recipe sets the term; a corpus of the user's own recordings has no general-English rows.
    from types import SimpleNamespace

    from datasets import Dataset

    from asr_lora.training.distill import check_replay_kl

    t = SimpleNamespace(replay_kl=1.0, mode="lora")
    own = Dataset.from_dict({"id": ["a", "b"], "subset": ["main", "control"]})
    with caplog.at_level("WARNING"):
        assert check_replay_kl(t, own, streaming=False) == 0.0
    assert "no general-English replay rows" in caplog.text and "trains without the term" in caplog.text
    assert check_replay_kl(t, Dataset.from_dict({"id": ["a"]}), streaming=False) == 0.0  # no subset column
    mixed = Dataset.from_dict({"id": ["a", "b"], "subset": ["main", "general"]})
    assert check_replay_kl(t, mixed, streaming=False) == 1.0
    assert check_replay_kl(t, None, streaming=True) == 1.0  # a stream is checked batch by batch
