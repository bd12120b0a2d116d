"""`python -m asr_lora.evaluate +recipe=sg_english [model=...] [adapter=DIR] [eval.split=test] [eval.beam_size=1]`.

The work is `evaluation.job.evaluate`: base (and adapted, with an adapter) scored on one split.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asr_lora.config import CONF_DIR, check_recipe_applied

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    check_recipe_applied(cfg)
    from asr_lora.evaluation.job import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
