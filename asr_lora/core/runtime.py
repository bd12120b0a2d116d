"""Process plumbing every entry point shares: distributed init, rank-0-first, run dir, seeds."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("asr_lora")



def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed() -> None:
    """Under torchrun, join the process group before data preparation so ranks can wait for rank 0;
    the Trainer (Accelerate) reuses the group it finds."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def run_dir_of(cfg) -> Path:
    """An explicit `run_dir=` (resume, export, evaluate of an old run) or Hydra's fresh one."""
    if cfg.get("run_dir"):
        d = Path(cfg.run_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        d = Path(HydraConfig.get().runtime.output_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _main_process_first:
    def __enter__(self):
        self._barrier(not is_main_process())

    def __exit__(self, *exc):
        self._barrier(is_main_process())
        return False

    @staticmethod
    def _barrier(wait: bool) -> None:
        if wait and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
