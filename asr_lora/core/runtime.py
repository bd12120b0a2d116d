"""Process plumbing every entry point shares: distributed init, rank-0-first, run dir, seeds."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("asr_lora")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed() -> None:
    """Under torchrun, join the process group before data preparation so ranks can wait for rank 0;
    the Trainer (Accelerate) reuses the group it finds."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def run_dir_of(run_dir: str | None) -> Path:
    """An explicit `run_dir=` (resume, export, evaluate of an old run) or Hydra's fresh one."""
    if run_dir:
        d = Path(run_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        d = Path(HydraConfig.get().runtime.output_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def main_process_first():
    """Rank 0 runs the block first (it fills the caches), then the others (they read them)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState().main_process_first()
