"""A batch's prompted and plain rows run as two narrower batches (train.split_prompted_rows): the same
loss and gradients as the batch padded to the prompt's width, with fewer positions computed."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperProcessor

from asr_lora.data.features import prompted_inputs
from asr_lora.training.row_groups import row_groups, splits_rows
from test_label_logits import grads, no_dropout, trainer_for
from test_replay_kl import batch, lora_model, move_adapter

PROMPT = [50361, *range(1000, 1012)]


def mixed_batch(processor):
    """Rows 0 and 3 prompted, 1 and 2 plain; rows 1 and 3 general-English replay."""
    inputs = batch(processor, ["main", "general", "main", "general"])
    labels = [[50257, 50362, 220 + i, 300 + i, 400, 50256][: 4 + i % 3] for i in range(4)]
    ids, targets = prompted_inputs(processor.tokenizer, labels, [PROMPT, None, None, PROMPT], 50257)
    inputs.update(decoder_input_ids=ids, labels=targets)
    marked = torch.zeros_like(targets, dtype=torch.bool)
    marked[:, 14] = True  # a token of each prompted row's transcript, and padding or nothing elsewhere
    marked[2, 1] = True
    own = torch.zeros_like(marked)
    own[0, 15] = own[2, 2] = True
    return inputs | {"term_tokens": marked, "own_tokens": own}


@pytest.mark.parametrize("context_kl", [0.0, 0.5])
def test_split_rows_give_the_padded_batch_loss_and_gradients(tmp_path, tiny_whisper_dir, context_kl):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = no_dropout(lora_model(tiny_whisper_dir))
    move_adapter(model)
    model.train()
    inputs = mixed_batch(processor)
    assert [len(g) for g in row_groups(inputs["labels"])] == [2, 2]

    whole = trainer_for(model, tmp_path, term_loss_weight=3.0, replay_kl=1.0)
    whole.context_kl = context_kl
    expect = whole.compute_loss(model, dict(inputs))
    expect.backward()
    want = grads(model)

    widths = []
    hook = model.get_base_model().model.decoder.register_forward_pre_hook(
        lambda m, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True)
    split = trainer_for(model, tmp_path, term_loss_weight=3.0, replay_kl=1.0)
    split.context_kl, split.split_rows = context_kl, True
    got_loss = split.compute_loss(model, dict(inputs))
    got_loss.backward()
    hook.remove()
    got = grads(model)
    # Two training forwards, prompted rows at the prompt's width and plain rows at their own, then
    # the base pass of the distillation term(s).
    width = inputs["labels"].shape[1]
    assert widths[:2] == [(2, width), (2, 5)] and width > 10
    assert got_loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert got.keys() == want.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_only_a_batch_of_both_kinds_is_split(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    plain = batch(processor, ["main", "general"])
    prompted = batch(processor, ["main", "general"], prompt=PROMPT)
    assert row_groups(plain["labels"]) is None and row_groups(prompted["labels"]) is None
    assert row_groups(mixed_batch(processor)["labels"]) is not None


def test_split_setting():
    assert splits_rows("auto", on_cpu=True, world_size=1)
    assert not splits_rows("auto", on_cpu=False, world_size=1)  # a GPU: unmeasured, one wide batch
    assert not splits_rows("auto", on_cpu=True, world_size=2)  # DDP wraps one forward per step
    assert splits_rows(True, on_cpu=False, world_size=1)
    assert not splits_rows("false", on_cpu=True, world_size=1)
    with pytest.raises(ValueError, match="distributed wrapper"):
        splits_rows("true", on_cpu=True, world_size=2)
    with pytest.raises(ValueError, match="split_prompted_rows='sometimes'"):
        splits_rows("sometimes", on_cpu=True, world_size=1)
