"""One run, several seeds, one averaged adapter (train.seeds).

The recipe trained under each seed in turn (its LoRA initialised, its rows drawn and its collator's
prompts and masks drawn under that seed, as a run with `seed=` that seed would), each adapter kept
under `seed<N>/`, then averaged into the run's `adapter/` with `model.adapters.average_adapters` (the
exact mean of their LoRA updates). The run scores, saves and exports the average. The members share
the loaded model, the prepared rows, the encoder outputs and the zero-shot passes, which separate
runs would each make again. Hand-written: the Trainer trains one model per `train()`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from asr_lora.core.runtime import is_main_process, seed_everything

log = logging.getLogger(__name__)


def check_seeds(t) -> list[int]:
    """train.seeds as a list of distinct ints, [] when the run has one seed; refuses what cannot be
    averaged (full fine-tuning) or resumed (a run of several members)."""
    seeds = [] if t.seeds is None else list(t.seeds)
    if not seeds:
        return []
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"train.seeds={seeds}: two or more distinct integer seeds to average, or [] for one run")
    if t.mode != "lora":
        raise ValueError(f"train.seeds averages LoRA adapters; train.mode={t.mode} has none")
    if t.resume:
        raise ValueError("train.resume=true continues one run's checkpoints; a train.seeds run cannot be resumed")
    return seeds


def fit_seeds(cfg: DictConfig, model, processor, rows, cache, run_dir: Path, report_to: list[str], params: dict,
              terms, fit: Callable, prepare: Callable, reload: Callable):
    """Train one member per seed with `fit` (the job's, into `run_dir/seed<N>`), each on a fresh LoRA
    from `prepare`, average them into `run_dir/adapter` and return the job's `Fitted` for the average
    (scored on the base reloaded with it by `reload`), with each member's figures in `members`."""
    from asr_lora.core import tracking
    from asr_lora.model.adapters import average_adapters

    seeds, fitted = check_seeds(cfg.train), []
    for i, seed in enumerate(seeds):
        member = cfg.copy()
        with open_dict(member):
            member.seed = seed
        seed_everything(seed)
        model, _ = prepare(member, model.unload())  # the base without the previous member's layers
        log.info("seed %d of %d: seed=%d", i + 1, len(seeds), seed)
        fitted.append(fit(member, model, processor, rows, cache, run_dir / f"seed{seed}", report_to, params, terms))
        model = fitted[-1].model
    last = fitted[-1]
    members = [{"seed": s, "steps": f.result.global_step, "train_loss": f.result.training_loss,
                "seconds": round(f.seconds, 1), "adapter": str(f.adapter_dir)} for s, f in zip(seeds, fitted)]
    if not is_main_process():
        return last
    adapter_dir = average_adapters([f.adapter_dir for f in fitted], run_dir / "adapter")
    log.info("adapter: the mean of the %d seeds' LoRA updates, %s", len(seeds), adapter_dir)
    # The members' wandb runs are finished; the average's summary goes to a run of its own.
    run = tracking.init_run(cfg.logger.wandb, run_dir, f"{cfg.recipe_name}-{run_dir.name}",
                            OmegaConf.to_container(cfg, resolve=True) | {"params": params, "members": members},
                            report_to)
    averaged = reload(cfg, adapter_dir, next(model.parameters()).device)
    return type(last)(averaged, adapter_dir, last.trainer, last.result, sum(f.seconds for f in fitted), run,
                      members)
