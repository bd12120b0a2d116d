"""train.sampling=by_text: every text heard once before any text is heard twice, in the Trainer's loader."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import Seq2SeqTrainingArguments

from asr_lora.training.job import train
from asr_lora.training.sampling import SpreadByText, check_sampling, train_sampler
from asr_lora.training.trainer import SpeechTrainer
from test_train_e2e import tiny_cfg

# 120 sentences read by two voices each and 60 general-English sentences read once: the recipe's mix.
TEXTS = [f"sg {i}" for i in range(120) for _ in range(2)] + [f"general {i}" for i in range(60)]


def test_every_text_is_drawn_once_before_any_is_drawn_twice():
    sampler = SpreadByText(TEXTS, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(TEXTS)))  # one epoch: every clip once
    # A run that stops at 60% of the epoch (the recipe stops at 64%) has heard every sentence.
    head = order[: int(0.6 * len(order))]
    assert len({TEXTS[i] for i in head if TEXTS[i].startswith("sg")}) == 120
    # The Trainer's permutation misses some of them at the same point.
    perm = torch.randperm(len(TEXTS), generator=torch.Generator().manual_seed(0)).tolist()[: len(head)]
    assert len({TEXTS[i] for i in perm if TEXTS[i].startswith("sg")}) < 120
    # Every prefix keeps the split's mix of general English (60 of 300 clips).
    for n in (50, 100, 150, 200):
        share = sum(TEXTS[i].startswith("general") for i in order[:n]) / n
        assert share == pytest.approx(0.2, abs=0.1), (n, share)
    # Seeded: the same order for the same seed and epoch (every rank draws the same), another
    # order in the next epoch.
    assert list(SpreadByText(TEXTS, seed=0)) == order
    sampler.set_epoch(1)
    assert list(sampler) != order and sorted(sampler) == list(range(len(TEXTS)))


def test_the_trainer_draws_in_the_samplers_order(tmp_path):
    ds = Dataset.from_dict({"i": list(range(len(TEXTS)))})
    sampler = SpreadByText(TEXTS, seed=3)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False,
                                    per_device_train_batch_size=10)
    trainer = SpeechTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=ds, train_sampler=sampler,
                            data_collator=lambda rows: {"i": torch.tensor([r["i"] for r in rows])})
    drawn = [int(i) for batch in trainer.get_train_dataloader() for i in batch["i"]]
    assert drawn == list(sampler)


def test_orders_a_run_cannot_honour_are_refused():
    with pytest.raises(ValueError, match="random, by_text"):
        check_sampling("shuffled", streaming=False)
    with pytest.raises(ValueError, match="shard order"):
        check_sampling("by_text", streaming=True)
    with pytest.raises(ValueError, match="length_buckets"):
        check_sampling("by_text", streaming=False, length_buckets=4)
    assert train_sampler("random", {"text": TEXTS}, seed=0) is None  # the Trainer's own
    assert list(train_sampler("by_text", {"text": TEXTS}, seed=0)) == list(SpreadByText(TEXTS, seed=0))


def test_a_run_trains_in_text_order(tmp_path, tiny_whisper_dir):
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.before_training=false", "train.sampling=by_text")
    train(cfg)
    log = (tmp_path / "run/asr_lora.log").read_text()
    assert "training order: by text, 10 clips of 6 texts" in log
