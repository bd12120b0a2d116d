"""A NaN loss stops the run with a named error and the last good checkpoint stays on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from asr_lora.config import Config
from asr_lora.data.features import SpeechCollator
from asr_lora.training.job import prepare_for_training, trainer_args
from asr_lora.training.trainer import NonFiniteLossError, build_trainer


class PoisonAfter(SpeechCollator):
    """The real collator, whose batches turn to NaN after `good` calls (a corrupt clip, say)."""

    def __init__(self, *a, good: int, **kw):
        super().__init__(*a, **kw)
        self.good, self.n = good, 0

    def __call__(self, rows):
        batch = super().__call__(rows)
        self.n += 1
        if self.n > self.good:
            batch["input_features"] = torch.full_like(batch["input_features"], float("nan"))
        return batch


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, tiny_whisper_dir):
    cfg = OmegaConf.structured(Config)
    cfg.train.max_steps, cfg.train.save_steps, cfg.train.logging_steps = 8, 2, 1
    cfg.train.per_device_train_batch_size, cfg.lora.r, cfg.lora.alpha = 2, 4, 8
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model, _ = prepare_for_training(cfg, model)
    rng = np.random.default_rng(0)
    ds = Dataset.from_list([{"id": f"u{i}", "labels": processor.tokenizer("kopi lah").input_ids,
                             "audio": (0.1 * rng.standard_normal(8000)).astype("float32")} for i in range(16)])
    collator = PoisonAfter(processor, model.config.decoder_start_token_id, good=4)
    args = trainer_args(cfg, tmp_path / "ckpt", [], has_dev=False)
    trainer = build_trainer(model, args, ds, None, collator, processor)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 5.*checkpoint-4"):
        trainer.train()
    assert (tmp_path / "ckpt" / "checkpoint-4" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "ckpt" / "checkpoint-6").exists()


def test_fsdp_preset_without_gpus_is_refused_not_silently_ddp(tmp_path, tiny_whisper_dir):
    """Accelerate enables FSDP only on multi-GPU jobs; on CPU the `train=fsdp` preset would quietly
    run as plain DDP, so the run stops at start and says what to use instead."""
    from test_train_e2e import tiny_cfg

    from asr_lora.training.job import train
    from asr_lora.training.trainer import ShardingUnavailableError

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine can run FSDP; the refusal is for machines without 2+ GPUs")
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "train=fsdp", "lora=none", "train.mode=full",
                   "train.max_steps=2", "train.dataloader_num_workers=0", "eval.before_training=false")
    # One process: the settings check refuses at start. Two CPU processes: the trainer's check does
    # (tests/test_distributed.py).
    with pytest.raises((ShardingUnavailableError, ValueError), match="fsdp only works in distributed|FSDP needs"):
        train(cfg)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_reload_trained_gives_the_model_that_was_trained(tmp_path, tiny_whisper_dir, mode):
    """What rank 0 scores after a sharded (FSDP/DeepSpeed) run: the saved copy, reloaded; its logits
    must equal the in-memory trained model's."""
    from test_train_e2e import tiny_cfg

    from asr_lora.training.job import reload_trained

    extra = ["lora=none", "train.mode=full"] if mode == "full" else []
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", *extra)
    model, _ = prepare_for_training(cfg, WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # stands in for training
    model.save_pretrained(tmp_path / "saved")
    if mode == "full":
        WhisperProcessor.from_pretrained(tiny_whisper_dir).save_pretrained(tmp_path / "saved")
    again = reload_trained(cfg, tmp_path / "saved")
    feats = torch.randn(1, 80, 3000)
    dec = torch.tensor([[50257, 50362, 100, 200]])
    with torch.no_grad():
        a = model.eval()(input_features=feats, decoder_input_ids=dec).logits
        b = again(input_features=feats, decoder_input_ids=dec).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_dev_batches_come_clean_while_training_batches_are_augmented(tmp_path, tiny_whisper_dir):
    """The Trainer has one data_collator for train and eval: dev batches must still see the clean
    audio and <|notimestamps|> targets, or augmentation would choose the checkpoint."""
    from asr_lora.data.augment import Augmenter
    from asr_lora.data.features import log_mel

    cfg = OmegaConf.structured(Config)
    cfg.train.max_steps, cfg.train.per_device_train_batch_size, cfg.train.per_device_eval_batch_size = 1, 4, 4
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model, _ = prepare_for_training(cfg, model)
    rng = np.random.default_rng(0)
    rows = [{"id": f"u{i}", "labels": processor.tokenizer("kopi lah").input_ids, "duration": 1.0,
             "audio": (0.1 * rng.standard_normal(16000)).astype("float32")} for i in range(4)]
    ds = Dataset.from_list(rows)
    aug = Augmenter({"gain": {"enabled": True, "prob": 1.0, "gain_db": [6.0, 6.0]}})
    start = model.config.decoder_start_token_id
    train_collator = SpeechCollator(processor, start, aug, timestamp_probability=1.0)
    clean = SpeechCollator(processor, start)
    args = trainer_args(cfg, tmp_path / "ckpt", [], has_dev=True)
    trainer = build_trainer(model, args, ds, ds, train_collator, processor, eval_collator=clean)
    dev = next(iter(trainer.get_eval_dataloader()))
    expected = log_mel(processor, [r["audio"] for r in rows])
    assert torch.allclose(dev["input_features"], expected)
    no_ts = processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert (dev["labels"][:, 0] == no_ts).all()
    assert trainer.data_collator is train_collator  # training batches still augmented
    batch = train_collator(rows)
    assert not torch.allclose(batch["input_features"], expected) and (batch["labels"][:, 0] != no_ts).all()


def test_dataloader_workers_keep_drawing_across_epochs(tmp_path, tiny_whisper_dir):
    """With DataLoader workers, the Trainer's train batches of a second epoch get new draws of the
    collator's seeded streams (here which rows carry timestamp targets), not the first epoch's
    again: the workers, and the collator copies counting batches in them, are kept between epochs."""
    cfg = OmegaConf.structured(Config)
    cfg.train.per_device_train_batch_size, cfg.train.dataloader_num_workers = 4, 2
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    tok = processor.tokenizer
    no_ts = tok.convert_tokens_to_ids("<|notimestamps|>")
    labels = tok("kopi lah").input_ids
    assert no_ts in labels
    ds = Dataset.from_list([{"id": f"u{i}", "labels": labels, "duration": 1.0,
                             "input_features": np.zeros((80, 3000), dtype=np.float32)} for i in range(16)])
    collator = SpeechCollator(processor, model.config.decoder_start_token_id, seed=0, timestamp_probability=0.5)
    trainer = build_trainer(model, trainer_args(cfg, tmp_path / "ckpt", [], has_dev=False), ds, None, collator,
                            processor)
    loader = trainer.get_train_dataloader()

    def epoch() -> list[list[bool]]:  # per batch, which rows were given timestamp targets
        return [[bool((row == no_ts + 1).any()) for row in batch["labels"]] for batch in loader]

    first, second = epoch(), epoch()
    assert len(first) == len(second) == 4 and any(map(any, first))
    assert first != second
