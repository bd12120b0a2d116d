"""`python -m asr_lora.prepare +recipe=sg_english`: build (or validate) the corpus and write the data report."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR
from .runtime import load_data, run_dir_of, setup_logging

log = logging.getLogger("asr_lora.prepare")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = run_dir_of(cfg)
    setup_logging(run_dir)
    from .model import load_whisper

    _, processor = load_whisper(cfg.model.name_or_path)  # the tokenizer decides label lengths
    _, report = load_data(cfg, processor.tokenizer, run_dir)
    c = report["counts"]
    log.info("%d rows: %d kept, %d skipped %s", c["seen"], c["kept"], c["skipped"], c["skipped_by_reason"])
    log.info("hours per split: %s", report["hours_per_split"])
    log.info("data report: %s", run_dir / "data_report.json")


if __name__ == "__main__":
    main()
