"""The main job: `python -m asr_lora.train +recipe=sg_english`.

prepare data -> load Whisper -> zero-shot eval -> LoRA (or full) training -> adapted eval ->
report (base vs adapted) -> export. Everything lands in the Hydra run directory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from asr_lora.core.io import write_json
from asr_lora.core.logs import setup_logging
from asr_lora.core.runtime import init_distributed, is_main_process, run_dir_of, seed_everything
from asr_lora.data.loading import load_data
from asr_lora.evaluation.summary import eval_info
from asr_lora.model.encoder_cache import build_encoder_cache

log = logging.getLogger("asr_lora.train")



def train(cfg: DictConfig) -> dict:
    t0 = time.perf_counter()
    init_distributed()
    run_dir = run_dir_of(cfg)
    main = is_main_process()
    setup_logging(run_dir if main else None, quiet=cfg.quiet)  # only rank 0 writes into the run directory
    seed_everything(cfg.seed)
    import asr_lora.core.tracking as tracking
    from asr_lora.data.features import SpeechCollator
    from asr_lora.evaluation.scoring import evaluate_systems, transcribe_split
    from asr_lora.model.whisper import load_whisper
    from asr_lora.training.trainer import build_trainer, prepare_model, training_args

    report_to = tracking.setup(cfg, run_dir) if main else []
    model, processor = load_whisper(cfg.model.name_or_path, dtype=getattr(torch, cfg.model.dtype))
    splits, data_report = load_data(cfg, processor.tokenizer, run_dir if main else None,
                                    skip_dir=run_dir / "load_skips")
    train_ds, dev_ds, test_ds = (splits.get(cfg.data.train_split), splits.get(cfg.data.dev_split),
                                 splits.get(cfg.eval.split))
    streaming = "streaming" in data_report  # train_ds is then an IterableDataset with no len()
    n_train = (sum(data_report["kept_per_split"].get(cfg.data.train_split, {}).values()) if streaming
               else len(train_ds or []))
    if train_ds is None or not n_train:
        raise ValueError(f"no training data in split {cfg.data.train_split!r}; see {run_dir}/data_report.json")
    from asr_lora.data.splits import (add_features, eval_rows, filter_engines, keep_part, set_replay_share,
                                      subsample, use_feature_cache)

    train_ds = filter_engines(train_ds, cfg.data.exclude_train_engines, "data.exclude_train_engines")
    if cfg.data.replay_share is not None and streaming:
        raise ValueError("data.replay_share needs the in-memory train split; set data.streaming=false")
    train_ds = set_replay_share(train_ds, cfg.data.replay_share, cfg.seed)
    dev_ds = keep_part(dev_ds, cfg.train.dev_part, "train.dev_part")
    if not streaming and not (n_train := len(train_ds)):
        raise ValueError(f"data.exclude_train_engines={list(cfg.data.exclude_train_engines)} leaves no training data")

    if streaming:
        train_ds = train_ds.take(cfg.data.max_train_samples) if cfg.data.max_train_samples else train_ds
    else:
        train_ds = subsample(train_ds, cfg.data.max_train_samples, cfg.seed)
    dev_ds = subsample(dev_ds, cfg.train.dev_eval_max_samples, cfg.seed)
    if dev_ds is not None and not len(dev_ds):  # train.dev_eval_max_samples=0: no dev evaluation
        dev_ds = None
    test_ds = eval_rows(test_ds, cfg.eval)
    test_ds = subsample(test_ds, cfg.data.max_eval_samples, cfg.seed)

    from asr_lora.data.augment import training_augmentation

    # With augment.copies the waveform effects run once here; per step only SpecAugment is left.
    train_ds, augmenter = training_augmentation(cfg.augment, train_ds, cfg.seed, streaming)

    model, params = prepare_model(model, cfg)
    if torch.cuda.is_available() and cfg.get("device") != "cpu":
        model.to("cuda")  # so the encoder cache below is filled on the GPU, not the CPU
    # Streaming: the train split is never held, so only dev/test outputs can be cached.
    cache = build_encoder_cache(cfg, model, processor,
                                {"dev": dev_ds, "test": test_ds} | ({} if streaming else {"train": train_ds}))

    from asr_lora.evaluation.terms import terms_for_split

    terms = terms_for_split(splits.get(cfg.data.train_split), processor.tokenizer, cfg.eval.terms) if main else None
    # Zero-shot first (and the term-prompt baseline): in full fine-tuning the base weights are about to change.
    precomputed: dict[str, list[str]] = {}
    if cfg.eval.before_training and test_ds is not None and main:
        from asr_lora.core.paths import cache_root
        from asr_lora.evaluation.zero_shot import zero_shot_hypotheses
        from asr_lora.model.whisper import resolve_model_dir

        def decode(prompt=None):
            ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
            with ctx:
                return transcribe_split(model, processor, test_ds, cfg.eval.beam_size, cfg.eval.batch_size,
                                        cfg.eval.max_new_tokens, cache,
                                        description="zero-shot + term prompt" if prompt else "zero-shot decoding",
                                        prompt=prompt)

        keep_dir = Path(cfg.paths.cache_dir or cache_root()) if cfg.eval.reuse_zero_shot else None
        where = (resolve_model_dir(cfg.model.name_or_path), next(model.parameters()).device, test_ds, cfg.eval)
        precomputed["base"] = zero_shot_hypotheses(decode, *where, keep_dir)
        if terms is not None and cfg.eval.prompt_baseline:
            precomputed["prompt"] = zero_shot_hypotheses(lambda: decode(terms.prompt), *where, keep_dir,
                                                         prompt=terms.prompt)

    # Streaming: the collator (run in the DataLoader workers) computes every log-mel on the fly.
    collator = SpeechCollator(processor, model.config.decoder_start_token_id, augmenter,
                              None if streaming else cache, cfg.seed, cfg.train.timestamp_probability)
    # Dev batches: clean audio, <|notimestamps|> targets (only training gets augmentation/timestamps).
    eval_collator = (SpeechCollator(processor, model.config.decoder_start_token_id, None,
                                    None if streaming else cache, cfg.seed)
                     if augmenter is not None or cfg.train.timestamp_probability > 0 else None)
    if not streaming and cache is None and use_feature_cache(cfg.data, len(train_ds) + len(dev_ds or []),
                                                             reads_per_clip(cfg.train, len(train_ds))):
        train_ds = add_features(train_ds, processor)
        dev_ds = add_features(dev_ds, processor) if dev_ds is not None else None
    keep = ["id", "labels"] if cache is not None and not streaming else ["id", "labels", "audio"]
    keep += ["input_features"] if "input_features" in (train_ds.column_names or []) else []
    keep += ["duration"] if cfg.train.timestamp_probability > 0 else []  # the timestamp targets' clip end
    if cfg.data.length_buckets and not streaming:
        # The Trainer's group_by_length reads this column (and groups dev batches the same way).
        train_ds, dev_ds = (d.map(lambda r: {"n_labels": len(r["labels"])}, desc="label lengths")
                            if d is not None else None for d in (train_ds, dev_ds))
        keep.append("n_labels")
    ckpt_dir = run_dir / cfg.train.output_subdir
    args = training_args(cfg, ckpt_dir, report_to, dev_ds is not None and len(dev_ds) > 0, streaming)
    run = tracking.init_run(cfg, run_dir, OmegaConf.to_container(cfg, resolve=True) | {"params": params},
                            report_to) if main else None
    trainer = build_trainer(model, cfg, args, train_ds.select_columns(keep),
                            dev_ds.select_columns(keep) if dev_ds is not None else None, collator, processor,
                            eval_collator)
    resume = _resume_point(cfg, ckpt_dir)
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - t_train
    adapter_dir = run_dir / ("adapter" if cfg.train.mode == "lora" else "model")
    trainer.save_model(str(adapter_dir))  # every rank: sharded (FSDP/DeepSpeed) saves gather across ranks
    if not main:
        return {}
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # The trained weights are sharded over the ranks, and rank 0 alone cannot run a sharded
        # forward; it scores the full copy `save_model` just gathered to disk instead.
        model = reload_trained(cfg, adapter_dir, next(model.parameters()).device)
    if streaming:  # decode-level rejects found by the workers join the run's data report
        from asr_lora.data.streaming import collect_load_skips

        data_report["load_time"] = collect_load_skips(run_dir / "load_skips")
        write_json(run_dir / "data_report.json", data_report)
    # The Trainer drops its pickled TrainingArguments next to the weights; a deployable adapter
    # directory must load without pickle (model.adapters.check_adapter_dir refuses it), so it goes.
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)
    if cfg.train.mode == "full":
        processor.save_pretrained(adapter_dir)
    else:  # peft recorded the converted cache path as the base; record `bundled:tiny.en` instead
        from asr_lora.model.adapters import make_adapter_portable

        make_adapter_portable(adapter_dir, cfg.model.name_or_path)
    summary: dict = {
        "recipe": cfg.recipe_name, "run_dir": str(run_dir), "model": cfg.model.name_or_path, "params": params,
        "lora": OmegaConf.to_container(cfg.lora) if cfg.train.mode == "lora" else None,
        "train": {"steps": result.global_step, "train_loss": result.training_loss, "seconds": round(train_seconds, 1),
                  "train_utterances": n_train, "streaming": streaming,
                  "best_checkpoint": trainer.state.best_model_checkpoint,
                  "best_dev_wer": trainer.state.best_metric},
        "adapter_bytes": _dir_bytes(adapter_dir), "synthetic_data": bool(cfg.data.synthetic),
        # What the Trainer actually ran (not only what was asked): process count and sharding engine.
        "distributed": {"world_size": args.world_size, "fsdp": bool(trainer.is_fsdp_enabled),
                        "deepspeed": bool(trainer.is_deepspeed_enabled)},
    }
    ev = None
    if test_ds is not None:
        info = eval_info(cfg, data_report, adapter=str(adapter_dir), split=cfg.eval.split)
        from asr_lora.evaluation.scoring import eval_systems

        systems = eval_systems(cfg.eval, terms is not None, adapted=True)
        ev = evaluate_systems(model, processor, test_ds, cfg.eval, run_dir / "eval", info, systems, cache,
                              precomputed=precomputed, terms=terms)
        summary["eval"] = eval_summary(ev, cfg.eval.split)
    summary["export"] = _export(cfg, run_dir, adapter_dir, ev, splits, processor, cache)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    tracking.write_metrics(run_dir, summary)
    tracking.log_final(run, summary, ev, run_dir, {"report": run_dir / "eval", "adapter": adapter_dir},
                       cfg.logger.wandb.log_artifacts)
    print_summary(summary)
    return summary


def reads_per_clip(tcfg, n_train: int) -> float | None:
    """How many times one rank reads each train clip on average (micro-batches counted). Per rank,
    because every rank would build the whole log-mel cache for itself."""
    if n_train <= 0:
        return None
    if (tcfg.max_steps or -1) <= 0:
        return float(tcfg.num_train_epochs)
    return tcfg.max_steps * tcfg.per_device_train_batch_size * tcfg.gradient_accumulation_steps / n_train


def reload_trained(cfg, saved_dir: Path, device=None):
    """The trained model as saved in the run (adapter on the base, or full weights), unwrapped."""
    from asr_lora.model.whisper import load_whisper

    if cfg.train.mode == "full":
        model, _ = load_whisper(str(saved_dir), dtype=getattr(torch, cfg.model.dtype))
    else:
        from asr_lora.model.adapters import load_adapter

        base, _ = load_whisper(cfg.model.name_or_path, dtype=getattr(torch, cfg.model.dtype))
        model = load_adapter(base, saved_dir)
    return model.to(device).eval() if device is not None else model.eval()


def _export(cfg, run_dir: Path, adapter_dir: Path, ev: dict | None, splits, processor, cache) -> dict | None:
    if not cfg.export.enabled or cfg.train.mode != "lora":
        return None
    from asr_lora.export.job import export_from_run

    try:
        return export_from_run(cfg, run_dir, adapter_dir, ev, splits, processor, cache)
    except Exception as e:  # the trained adapter and report stay; the refusal is reported, not hidden
        log.error("export refused or failed: %s", e)
        return {"error": f"{type(e).__name__}: {e}"}


def _resume_point(cfg, ckpt_dir: Path) -> str | bool | None:
    if not cfg.train.resume:
        return None
    from asr_lora.training.trainer import last_complete_checkpoint

    last = last_complete_checkpoint(ckpt_dir)
    if last is None:
        raise FileNotFoundError(f"train.resume=true but no complete checkpoint under {ckpt_dir}; "
                                "pass run_dir=<old run>")
    log.info("resuming from %s", last)
    return last


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0


def eval_summary(ev: dict, split: str) -> dict:
    """metrics.json's "eval": "base"/"adapted"/"relative_wer_reduction" are the lead part's (unseen
    TTS engine) when the test set has one (FIELD_NOTES 13), else the whole set's; "part" says
    which; "parts" has every part (base vs adapted), "base"/"adapted" carry "by_part" and "pooled"."""
    from asr_lora.evaluation.scoring import relative_reduction
    from asr_lora.evaluation.summary import headline

    from asr_lora.evaluation.summary import systems_table

    b, a = headline(ev, "base"), headline(ev, "adapted")
    return {"split": split, "part": ev.get("lead_part"), "base": b, "adapted": a,
            "relative_wer_reduction": relative_reduction(b["wer"], a["wer"]), "parts": ev.get("parts"),
            "paired": ev.get("paired"), "forgetting": ev.get("forgetting"),
            "systems": systems_table(ev["systems"]), "terms": ev.get("terms")}


PART_ROWS = {"unseen_engine": "unseen engine", "seen_engine": "training engines", "real": "real speech"}


def _summary_rows(ev: dict) -> list[tuple[str, str]]:
    """(label, value) rows of the eval: unseen-engine figures first, then the other parts."""
    rows = []
    parts = ev.get("parts") or {}
    if ev.get("part") and parts:
        for part in [p for p in PART_ROWS if p in parts]:
            r, name = parts[part], PART_ROWS[part]
            for system in ("base", "adapted"):
                h = ev[system].get("by_part", {}).get(part, {})
                if "wer" in h:
                    ci = f"[{100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"
                    rows.append((f"{system} WER ({name}, norm)", f"{100 * h['wer']:.2f}% {ci}"))
            if "relative_wer_reduction" in r:
                rows.append((f"relative WER reduction ({name})", f"{100 * r['relative_wer_reduction']:.1f}%"))
            for system in ("base", "adapted"):
                h = ev[system].get("by_part", {}).get(part, {})
                if "control_wer" in h:
                    rows.append((f"{system} control WER ({name})", f"{100 * h['control_wer']:.2f}%"))
        return rows
    for system in ("base", "adapted"):
        h = ev[system]
        ci = f"[{100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"
        rows.append((f"{system} WER (test, norm)", f"{100 * h['wer']:.2f}% {ci}"))
        if "control_wer" in h:
            rows.append((f"{system} control WER", f"{100 * h['control_wer']:.2f}%"))
    rows.append(("relative WER reduction", f"{100 * ev['relative_wer_reduction']:.1f}%"))
    return rows


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"asr-lora: {summary.get('recipe')} ({summary.get('run_dir')})")
    t.add_column("")
    t.add_column("value", justify="right")
    p = summary.get("params", {})
    t.add_row("trainable params", f"{p.get('trainable', 0):,} / {p.get('total', 0):,}")
    saved = "adapter size" if summary.get("lora") else "saved model size"
    t.add_row(saved, f"{summary.get('adapter_bytes', 0) / 1e6:.2f} MB")
    tr = summary.get("train", {})
    t.add_row("train steps / time", f"{tr.get('steps')} / {tr.get('seconds')} s")
    ev = summary.get("eval")
    if ev and ev.get("terms"):
        from asr_lora.evaluation.summary import systems_rows

        cols, rows = systems_rows(ev["systems"])
        st = Table(title="zero-shot, term-prompt baseline and adapted (norm WER, term recall)")
        for c in cols:
            st.add_column(c, justify="left" if c in ("part", "system") else "right")
        for r in rows:
            st.add_row(*r)
        Console().print(st)
    if ev:
        for label, value in _summary_rows(ev):
            t.add_row(label, value)
        if ev.get("forgetting"):
            f = ev["forgetting"]
            verdict = "PASS" if f["passed"] else "FAIL"
            on = "+".join(PART_ROWS.get(x, x) for x in f.get("decided_on", []))
            t.add_row(f"forgetting gate{f' ({on})' if on and on != 'all' else ''}",
                      f"{verdict} ({100 * f['relative_degradation']:+.1f}%)")
    if summary.get("synthetic_data"):
        t.add_row("data", "SYNTHETIC (TTS) corpus")
    t.add_row("wall time", f"{summary.get('wall_seconds')} s")
    Console().print(t)
