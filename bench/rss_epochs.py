"""Resident memory per epoch over a long run on the tiny model: does RSS grow with epochs?

    python bench/rss_epochs.py [--epochs 20] [--clips 32]

Runs the real main job (`asr_lora.training.job.train`) on a tiny random Whisper and a JSONL corpus of
tones, with a Trainer callback that samples RSS at the end of every epoch. Prints the table and
the growth from the 2nd epoch (after allocator warm-up) to the last; writes
bench/results/rss_epochs.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, make_tiny_whisper, quiet, rss_mb, table, tone_clips, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    quiet()
    from hydra import compose, initialize_config_dir
    from transformers import TrainerCallback

    import asr_lora.training.trainer as training
    from asr_lora.config import CONF_DIR

    samples: list[dict] = []

    class RssPerEpoch(TrainerCallback):
        def on_epoch_end(self, args_, state, control, **kw):
            samples.append({"epoch": round(state.epoch), "step": state.global_step, "rss_mb": round(rss_mb(), 1)})

    original = training.build_trainer

    def with_probe(*a, **kw):
        trainer = original(*a, **kw)
        trainer.add_callback(RssPerEpoch())
        return trainer

    training.build_trainer = with_probe  # the probe only observes; the loop is the real one
    import asr_lora.training.job as train_mod

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_tiny_whisper(tmp / "tiny")
        clips = tone_clips(args.clips, tmp / "audio")
        manifest = tmp / "manifest.jsonl"
        manifest.write_text("".join(json.dumps({
            "id": c["id"], "text": c["text"], "audio_filepath": c["audio_path"], "speaker": f"s{i % 4}",
            "split": "train" if i % 8 else "test"}) + "\n" for i, c in enumerate(clips)))
        n_train = sum(1 for i in range(args.clips) if i % 8)
        steps = args.epochs * -(-n_train // args.batch_size)  # ceil: the last partial batch is a step
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[
                f"model.name_or_path={model_dir}", "data=jsonl", f"data.path={manifest}", "logger=none",
                f"paths.cache_dir={tmp / 'cache'}", f"run_dir={tmp / 'run'}", "export.enabled=false",
                "lora.scope=[decoder_self,decoder_cross]", f"train.max_steps={steps}", "train.save_steps=100000",
                f"train.per_device_train_batch_size={args.batch_size}", "eval.before_training=false",
                "eval.max_new_tokens=4", "eval.n_bootstrap=10", "train.logging_steps=50",
            ])
        train_mod.train(cfg)
    rows = samples
    print(table(rows, ["epoch", "step", "rss_mb"]))
    growth = rows[-1]["rss_mb"] - rows[1]["rss_mb"] if len(rows) > 2 else None
    if growth is None:
        print(f"RSS growth: needs 3 or more epochs (ran {len(rows)}): the first is the allocator's warm-up")
    else:
        print(f"RSS growth from epoch {rows[1]['epoch']} to {rows[-1]['epoch']}: {growth:+.1f} MB")
    write_result("rss_epochs", {"machine": machine_info(), "args": vars(args), "per_epoch": rows,
                                "growth_mb_after_warmup": growth})


if __name__ == "__main__":
    main()
