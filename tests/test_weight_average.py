"""train.ema_decay: the run evaluates, saves and ends on a running average of its weights, while
training itself goes on from the live weights, step for step as without the average."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import TrainerCallback, WhisperForConditionalGeneration, WhisperProcessor

from asr_lora.config import Config
from asr_lora.data.features import SpeechCollator
from asr_lora.training.averaging import check_ema_decay
from asr_lora.training.job import prepare_for_training, trainer_args
from asr_lora.training.trainer import build_trainer


class RecordWeights(TrainerCallback):
    """The trainable weights training starts from and those after each optimizer step (before any
    callback's on_step_end)."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def _record(self, model):
        self.steps.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self._record(model)


def _run(tmp_path, tiny_whisper_dir, ema_decay: float, save_steps: int):
    cfg = OmegaConf.structured(Config)
    cfg.train.max_steps, cfg.train.save_steps, cfg.train.logging_steps = 4, save_steps, 1
    cfg.train.per_device_train_batch_size, cfg.train.warmup_steps, cfg.lora.r, cfg.lora.alpha = 2, 0, 4, 8
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model, _ = prepare_for_training(cfg, model)
    rng = np.random.default_rng(0)
    ds = Dataset.from_list([{"id": f"u{i}", "labels": processor.tokenizer(f"kopi {i} lah").input_ids,
                             "audio": (0.1 * rng.standard_normal(8000)).astype("float32")} for i in range(8)])
    collator = SpeechCollator(processor, model.config.decoder_start_token_id)
    out = tmp_path / f"ema{ema_decay}"
    trainer = build_trainer(model, trainer_args(cfg, out, [], has_dev=False), ds, None, collator, processor,
                            ema_decay=ema_decay)
    record = RecordWeights()
    trainer.add_callback(record)
    trainer.train()
    final = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return record.steps, final, out


def _average(steps, decay):
    avg = {n: w.clone() for n, w in steps[0].items()}
    for weights in steps[1:]:
        for n, w in weights.items():
            avg[n] = decay * avg[n] + (1 - decay) * w
    return avg


def test_the_run_ends_on_the_average_and_trains_as_without_it(tmp_path, tiny_whisper_dir):
    plain_steps, plain_final, _ = _run(tmp_path, tiny_whisper_dir, 0.0, save_steps=4)
    steps, final, out = _run(tmp_path, tiny_whisper_dir, 0.5, save_steps=1)
    assert len(steps) == 5  # the start and 4 optimizer steps
    # Swapping the average in for every save and out again leaves training's own path unchanged.
    for a, b in zip(plain_steps, steps):
        for n in a:
            torch.testing.assert_close(a[n], b[n], rtol=0, atol=0)
    average = _average(steps, 0.5)
    moved = [n for n in final if not torch.equal(final[n], steps[-1][n])]
    assert moved, "the final weights are the last step's, not the average"
    for n in final:
        torch.testing.assert_close(final[n], average[n], rtol=1e-6, atol=1e-7)
    # Each checkpoint holds the average of its own step; the plain run ends on its last step.
    saved = load_file(out / "checkpoint-3" / "adapter_model.safetensors")  # peft drops the adapter name
    at_3 = {n.replace(".default", ""): w for n, w in _average(steps[:4], 0.5).items()}
    assert set(saved) == set(at_3)
    for n in saved:
        torch.testing.assert_close(saved[n], at_3[n], rtol=1e-6, atol=1e-7)
    for n in plain_final:
        torch.testing.assert_close(plain_final[n], plain_steps[-1][n], rtol=0, atol=0)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match=rf"train.ema_decay={decay}.*0 <= decay < 1"):
        check_ema_decay(decay)


def test_the_main_job_trains_with_the_average(tmp_path, tiny_whisper_dir):
    from test_train_e2e import tiny_cfg

    from asr_lora.training.job import train

    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "train.ema_decay=0.9", "train.max_steps=2", "train.eval_steps=2",
                   "train.save_steps=2", "train.dev_eval_max_samples=0")
    train(cfg)
    said = (tmp_path / "run" / "asr_lora.log").read_text()
    assert "the run ends on the running average of its weights (train.ema_decay=0.9, 2 steps)" in " ".join(said.split())


def test_the_main_job_refuses_a_bad_decay_before_any_work(tmp_path, tiny_whisper_dir, monkeypatch):
    from test_replay_kl import forbid_encoding_and_decoding
    from test_train_e2e import tiny_cfg

    from asr_lora.training.job import train

    forbid_encoding_and_decoding(monkeypatch)
    with pytest.raises(ValueError, match=r"train.ema_decay=1.5.*0 <= decay < 1"):
        train(tiny_cfg(tmp_path, tiny_whisper_dir, "train.ema_decay=1.5"))
