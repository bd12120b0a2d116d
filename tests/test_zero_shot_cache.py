"""The zero-shot pass is reused only when nothing that could change a hypothesis changed."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
from datasets import Dataset

from asr_lora.evaluation.zero_shot import zero_shot_hypotheses


def make(audio_scale=1.0):
    rng = np.random.default_rng(0)
    return Dataset.from_dict({"id": ["a", "b"], "text": ["one", "two"],
                              "audio": [audio_scale * rng.standard_normal(800).astype(np.float32) for _ in range(2)]})


def test_reuse_and_every_invalidation(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"w0")
    ecfg = SimpleNamespace(beam_size=1, batch_size=2, max_new_tokens=8)
    calls = []

    def decode():
        calls.append(1)
        return [f"hyp{len(calls)}-a", f"hyp{len(calls)}-b"]

    run = lambda ds, e=ecfg: zero_shot_hypotheses(decode, str(model_dir), "cpu", ds, e, tmp_path / "c")  # noqa: E731
    assert run(make()) == ["hyp1-a", "hyp1-b"]
    assert run(make()) == ["hyp1-a", "hyp1-b"] and len(calls) == 1  # same everything: reused
    run(make(audio_scale=0.5))  # other samples under the same ids and texts
    assert len(calls) == 2
    run(make(), SimpleNamespace(beam_size=4, batch_size=2, max_new_tokens=8))
    assert len(calls) == 3
    os.utime(model_dir / "model.safetensors", ns=(1, 1))  # weights rewritten in place
    run(make())
    assert len(calls) == 4
    assert zero_shot_hypotheses(decode, str(model_dir), "cpu", make(), ecfg, None) and len(calls) == 5


def test_evaluate_takes_the_zero_shot_passes_a_training_run_made(tmp_path, tiny_whisper_dir, monkeypatch):
    import json

    from asr_lora.evaluation import scoring
    from asr_lora.evaluation.job import evaluate
    from asr_lora.training.job import train
    from test_train_e2e import tiny_cfg

    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none")
    train(cfg)
    decoded, original = [], scoring.decode_system
    monkeypatch.setattr(scoring, "decode_system", lambda *a, **k: decoded.append(a[4]) or original(*a, **k))

    def score(*extra):
        run = tmp_path / f"ev{len(decoded)}"
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", f"adapter={tmp_path / 'run' / 'adapter'}",
                          f"run_dir={run}", *extra))
        return json.loads((run / "eval" / "hypotheses.json").read_text())

    hyps = score()
    assert decoded == ["adapted"]  # base and prompt: the training run's zero-shot passes, not decoded again
    trained = json.loads((tmp_path / "run" / "eval" / "hypotheses.json").read_text())
    assert hyps["base"] == trained["base"] and hyps["prompt"] == trained["prompt"] and hyps["ids"] == trained["ids"]
    score("eval.reuse_zero_shot=false")
    assert decoded == ["adapted", "base", "prompt", "adapted"]


def test_a_pass_in_another_dtype_is_not_reused(tmp_path, tiny_whisper_dir, monkeypatch):
    import torch
    from transformers import WhisperForConditionalGeneration

    from asr_lora.evaluation import scoring
    from asr_lora.evaluation.zero_shot import zero_shot_passes

    decoded = []
    monkeypatch.setattr(scoring, "decode_system", lambda model, *a, **k: (decoded.append(model.dtype) or ["x", "y"],))
    ecfg = SimpleNamespace(beam_size=1, batch_size=2, max_new_tokens=8)
    for dtype in (torch.float32, torch.float32, torch.bfloat16):
        model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir, dtype=dtype)
        zero_shot_passes(model, None, make(), ecfg, ["base"], None, None, str(tiny_whisper_dir), tmp_path / "c")
    assert decoded == [torch.float32, torch.bfloat16]  # the fp32 pass reused once, never for bf16
