"""One run, several seeds, one averaged adapter (train.seeds).

The recipe is trained under each seed in turn (its LoRA initialised, its batches drawn and its
collator's prompts and masks drawn under that seed, as a run with `seed=` that seed would: the
job's `fit_member`), each adapter kept under `seed<N>/`, then the adapters are averaged into the
run's `adapter/` with `model.adapters.average_adapters` (the exact mean of their LoRA updates). The
run scores, saves and exports the average. The members share the loaded model, the prepared rows,
the encoder outputs and the zero-shot passes, which separate runs would each make again. The rows
are chosen once, under the run's `seed`: where the run draws a subset of them (data.replay_share,
data.max_train_samples, the dev subsample, augmented takes), that subset is every member's, and
only there does a member differ from a run with its seed. Hand-written: the Trainer trains one
model per `train()`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from asr_lora.core.runtime import is_main_process, resume_mode

log = logging.getLogger(__name__)


def check_seeds(seeds, mode: str, resume, lora=None) -> list[int]:
    """train.seeds as a list of distinct ints, [] when the run has one seed; refuses what cannot be
    averaged (full fine-tuning, train.mode; DoRA, `lora` the lora config section) or resumed (a run
    of several members)."""
    seeds = [] if seeds is None else list(seeds)
    if not seeds:
        return []
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"train.seeds={seeds}: two or more distinct integer seeds to average, or [] for one run")
    if mode != "lora":
        raise ValueError(f"train.seeds averages LoRA adapters; train.mode={mode} has none")
    if lora is not None and lora.get("use_dora"):
        raise ValueError("train.seeds averages LoRA updates; with lora.use_dora=true each seed also trains a "
                         "magnitude vector, which the average would not hold")
    if resume_mode(resume) != "false":
        raise ValueError(f"train.resume={resume} continues one run's checkpoints; a train.seeds run cannot be resumed")
    return seeds


def fit_seeds(seeds: list[int], model, fit_member: Callable, out_dir: Path, reload: Callable,
              start_run: Callable[[list[dict]], Any]):
    """`fit_member(seed, model)` for each seed in turn (each member starts from the previous one's
    model, whose LoRA it replaces), the adapters averaged into `out_dir`, and the job's `Fitted` for
    the average: scored on `reload(out_dir, device)`, its summary in the wandb run `start_run(members)`
    opens, each member's steps, loss, time and adapter in `members`."""
    from transformers.trainer_utils import TrainOutput

    from asr_lora.model.adapters import average_adapters

    fitted = []
    for i, seed in enumerate(seeds):
        log.info("seed %d of %d: seed=%d", i + 1, len(seeds), seed)
        fitted.append(fit_member(seed, model))
        model = fitted[-1].model
    last = fitted[-1]
    members = [{"seed": s, "steps": f.result.global_step, "train_loss": f.result.training_loss,
                "seconds": round(f.seconds, 1), "adapter": str(f.adapter_dir)} for s, f in zip(seeds, fitted)]
    if not is_main_process():
        return last
    adapter_dir = average_adapters([f.adapter_dir for f in fitted], out_dir)
    log.info("adapter: the mean of the %d seeds' LoRA updates, %s", len(seeds), adapter_dir)
    run = start_run(members)  # the members' wandb runs are finished; the average's summary has its own
    averaged = reload(adapter_dir, next(model.parameters()).device)
    # The run's steps and loss are its members' together: all their steps, their mean final loss.
    result = TrainOutput(sum(m["steps"] for m in members), sum(m["train_loss"] for m in members) / len(members), {})
    return type(last)(averaged, adapter_dir, last.trainer, result, sum(f.seconds for f in fitted), run, members)
