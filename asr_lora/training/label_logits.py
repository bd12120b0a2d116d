"""Logits at the label tokens only: the training step's output projection, cut to where a loss reads it."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def logits_only_at(head: torch.nn.Module, at: torch.Tensor):
    """Within the block, the output projection `head` sees only the decoder states where `at` (batch
    x positions) is true, so the model's logits are one row per label token instead of every
    position. The vocabulary projection is most of a training step for a small Whisper (51,865
    outputs per position, forward and backward), and with the term prompt most positions are
    prompt or padding that the loss ignores: this cuts a prompted CPU step by about half. A hook
    rather than a call into the decoder, so DDP, FSDP and DeepSpeed still wrap the whole forward.
    Hand-written: Whisper's forward has no `logits_to_keep`."""
    def select(module, args):
        return (args[0][at.to(args[0].device)], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()
