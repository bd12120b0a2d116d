"""An exponential moving average of the trained weights (train.ema_decay), which is what a run
evaluates, saves and exports: the running average of the last hundred or so steps instead of the
last step's weights, the way icefall's averaged models and ESPnet's checkpoint averaging smooth the
end of a run. The update is torch's own (`swa_utils.get_ema_multi_avg_fn`); the Trainer has no
weight average, so this callback keeps one beside the live weights and swaps it in wherever the
Trainer evaluates or saves, then swaps the live weights back so that training goes on from them.

A checkpoint holds the averaged weights, so a resumed run starts a new average from them.
"""

from __future__ import annotations

import logging

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn
from transformers import TrainerCallback

log = logging.getLogger(__name__)


def check_ema_decay(decay: float) -> float:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"train.ema_decay={decay}: the weight of the running average at each step, "
                         "0 <= decay < 1 (0: no average, 0.99: about the last 100 steps)")
    return float(decay)


class WeightAverage(TrainerCallback):
    """Keeps `decay * average + (1 - decay) * weights` of the trainable parameters after every
    optimizer step; the average starts at the weights training starts from."""

    def __init__(self, decay: float):
        self.decay = check_ema_decay(decay)
        self.update = get_ema_multi_avg_fn(self.decay)
        self.params: list[torch.nn.Parameter] = []
        self.average: list[torch.Tensor] = []
        self.live: list[torch.Tensor] | None = None  # the live weights while the average is swapped in

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]
        self.live = None

    def on_step_end(self, args, state, control, **kwargs):
        self.update(self.average, [p.detach() for p in self.params], None)
        # The flow callback, first in the Trainer's list, has set these for this step already.
        if control.should_evaluate or control.should_save:
            self.swap_in()

    def on_evaluate(self, args, state, control, **kwargs):
        if not control.should_save:
            self.swap_out()

    def on_save(self, args, state, control, **kwargs):
        self.swap_out()

    def on_train_end(self, args, state, control, **kwargs):
        # The run ends on the average, unless the Trainer has just loaded the best checkpoint (which
        # holds the average of its own step).
        if not (args.load_best_model_at_end and state.best_model_checkpoint):
            self.swap_in()
            log.info("the run ends on the running average of its weights (train.ema_decay=%g, %d steps)",
                     self.decay, state.global_step)
        else:
            log.info("the run ends on the best checkpoint's running average of its weights (train.ema_decay=%g)",
                     self.decay)
        self.live = None

    @torch.no_grad()
    def swap_in(self) -> None:
        if self.live is None:
            self.live = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.average):
                p.copy_(a)

    @torch.no_grad()
    def swap_out(self) -> None:
        if self.live is not None:
            for p, w in zip(self.params, self.live):
                p.copy_(w)
            self.live = None
