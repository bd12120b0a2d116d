"""`python -m asr_lora.prepare +recipe=sg_english`: build (or validate) the corpus and write the data report:
what `train` with the same overrides reads, so it then reuses it (`data.render_all=true`: the whole corpus)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from asr_lora.config import CONF_DIR, check_recipe_applied

log = logging.getLogger("asr_lora.prepare")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    check_recipe_applied(cfg)
    # imported here: the data stack loads when the command runs, not when Hydra parses it
    from asr_lora.core.logs import setup_logging
    from asr_lora.core.paths import use_cache_root
    from asr_lora.core.runtime import run_dir_of
    from asr_lora.data.loading import load_data

    run_dir = run_dir_of(cfg.run_dir)
    setup_logging(run_dir, quiet=cfg.quiet)
    use_cache_root(cfg.paths.cache_dir)
    from asr_lora.model.whisper import load_whisper

    _, processor = load_whisper(cfg.model.name_or_path)  # the tokenizer decides label lengths
    from asr_lora.training.job import train_scope

    _, report = load_data(cfg.data, processor.tokenizer, run_dir, scored=cfg.eval.split, scope=train_scope(cfg))
    c = report["counts"]
    log.info("%d rows: %d kept, %d skipped %s", c["seen"], c["kept"], c["skipped"], c["skipped_by_reason"])
    log.info("hours per split: %s", report["hours_per_split"])
    log.info("data report: %s", run_dir / "data_report.json")


if __name__ == "__main__":
    main()
