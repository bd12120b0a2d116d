"""A training batch's prompted and plain rows run through the model as two narrower batches.

With the term prompt on a share of the rows (train.prompt_probability), a batch is as wide as its
prompted rows (~200 prompt tokens + the transcript), so its plain rows carry ~200 positions of
padding through every decoder layer, forward and backward. The decoder is causal and the padding
sits after each row's last label, so a plain row's logits at its labels are the same whether it is
padded to the prompted width or only to the plain rows' width: running the two groups separately,
each cut to its own width, gives the same loss and gradients with fewer positions computed
(`bench/split_rows.py` measures the step). Hand-written: the Trainer and the collator know one
batch per step, and the prompt is drawn per row.

The groups are run on the model as given, so this is only for a model no distributed wrapper
holds (DDP, FSDP and DeepSpeed expect one forward per backward): `splits_rows` decides.
"""

from __future__ import annotations

import torch

from asr_lora.core.runtime import switch

ROW_KEYS = ("labels", "decoder_input_ids", "term_tokens", "own_tokens")  # batch x positions


def check_split_setting(setting) -> str:
    return switch(setting, "train.split_prompted_rows")  # auto: on the CPU, in one process


def splits_rows(setting, on_cpu: bool, world_size: int) -> bool:
    """Whether a run splits its batches (train.split_prompted_rows): auto does on the CPU in one
    process, where the step is compute-bound and was measured; on a GPU the padded batch is one
    wide kernel launch instead of two and the gain is unmeasured. Refused under several processes."""
    value = check_split_setting(setting)
    if value == "true" and world_size > 1:
        raise ValueError("train.split_prompted_rows=true runs two forwards per step, which a distributed "
                         f"wrapper does not allow ({world_size} processes); set it to auto or false")
    return world_size == 1 and (value == "true" or (value == "auto" and on_cpu))


def row_groups(labels: torch.Tensor) -> list[torch.Tensor] | None:
    """(prompted rows, plain rows) as index tensors, or None when the batch has only one kind. A
    prompted row's first label is masked (the prompt is given, not predicted); a plain row's is not."""
    prompted = labels[:, 0] == -100
    if bool(prompted.all()) or not bool(prompted.any()):
        return None
    return [prompted.nonzero(as_tuple=True)[0], (~prompted).nonzero(as_tuple=True)[0]]


def take_rows(inputs: dict, idx: torch.Tensor, width: int | None = None) -> dict:
    """The batch's rows `idx` (indices, in that order, or a boolean mask), cached encoder outputs
    included; per-position tensors cut to `width` positions."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            value = value[idx.to(value.device)]
            if width is not None and key in ROW_KEYS:
                value = value[:, :width]
        elif hasattr(value, "last_hidden_state"):  # cached encoder outputs
            value = type(value)(last_hidden_state=value.last_hidden_state[idx.to(value.last_hidden_state.device)])
        out[key] = value
    return out


def width_of(labels: torch.Tensor) -> int:
    """Positions up to and including the last label token of any row."""
    return int((labels != -100).any(0).nonzero().max()) + 1
