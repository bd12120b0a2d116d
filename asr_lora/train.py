"""The main job: `python -m asr_lora.train +recipe=sg_english` (the work is `training.job.train`)."""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from asr_lora.config import CONF_DIR, check_recipe_applied

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    check_recipe_applied(cfg)
    from asr_lora.training.job import train

    summary = train(cfg)
    ev = (summary or {}).get("eval") or {}
    return (ev.get("adapted") or {}).get("wer")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Run the function from the importable module, not __main__: Hydra launchers (submitit) pickle it.
    from asr_lora.train import main as _main

    _main()
