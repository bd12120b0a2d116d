"""The main job: `python -m asr_lora.train +recipe=sg_english`.

`train(cfg)` is a short sequence of named steps, each callable alone: select the rows, build the
model, decode zero-shot (and with the term prompt), fit, score, export, summarise
(training/console.py). This module is where the config is read; the steps hand explicit values to
the library functions below them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from asr_lora.config import check_settings
from asr_lora.core import tracking
from asr_lora.core.io import write_json
from asr_lora.core.logs import setup_logging
from asr_lora.core.paths import use_cache_root
from asr_lora.core.runtime import (accelerator, init_distributed, is_main_process, main_process_first, run_dir_of,
                                   seed_everything, trains_on_cpu, use_bf16)
from asr_lora.data.overlap import record_train_texts
from asr_lora.data.scope import run_scope
from asr_lora.training.collate import collator_columns, make_collators
from asr_lora.training.console import print_summary, run_summary
from asr_lora.training.averaging import check_ema_decay
from asr_lora.training.checkpoints import check_resumable, record_config, resume_point, trained_batches
from asr_lora.training.distill import check_context_kl, check_replay_kl
from asr_lora.training.row_groups import check_split_setting
from asr_lora.training.seeds import check_seeds, fit_seeds
from asr_lora.training.sampling import check_sampling, train_sampler
from asr_lora.training.term_tokens import term_marker

log = logging.getLogger("asr_lora.train")


@dataclass
class Rows:
    """What a run trains and scores on: the prepared splits narrowed by the config."""

    splits: dict
    report: dict
    train: Any
    dev: Any
    test: Any
    n_train: int
    streaming: bool  # train is then a datasets.IterableDataset with no len()
    augmenter: Any = None


@dataclass
class Fitted:
    model: Any
    adapter_dir: Path
    trainer: Any
    result: Any
    seconds: float
    run: Any  # the wandb run, or None
    members: list | None = None  # train.seeds: each seed's steps, loss, seconds and adapter


def train(cfg: DictConfig) -> dict:
    t0 = time.perf_counter()
    check_settings(cfg, training=True)
    init_distributed(cfg.train.ddp_timeout)
    run_dir, main = run_dir_of(cfg.run_dir), is_main_process()
    check_resumable(cfg.train.resume, run_dir / cfg.train.output_subdir)  # before the data and zero-shot
    setup_logging(run_dir if main else None, quiet=cfg.quiet)  # only rank 0 writes into the run directory
    if main and cfg.run_dir:  # an earlier run's folder: from now on it holds this run's config
        record_config(cfg, run_dir, cfg.train.resume, run_dir / cfg.train.output_subdir)
    use_cache_root(cfg.paths.cache_dir)
    seed_everything(cfg.seed)
    report_to = tracking.setup(cfg.logger, run_dir, cfg.recipe_name) if main else []
    from asr_lora.model.whisper import load_whisper
    model, processor = load_whisper(cfg.model.name_or_path, dtype=getattr(torch, cfg.model.dtype))
    rows = select_rows(cfg, processor.tokenizer, run_dir, main)
    trainer_args(cfg, run_dir / cfg.train.output_subdir, [], rows.dev is not None and len(rows.dev) > 0, rows.streaming)
    # Every rank needs the terms when training rows are prompted with them or their tokens weighed.
    t = cfg.train
    terms = (domain_terms(cfg, rows, processor.tokenizer)
             if main or t.prompt_probability > 0 or t.term_loss_weight != 1 or t.context_kl else None)
    # Refused before the encoder pass when no training label spells a term, or context_kl has no words to free.
    term_marker(t.term_loss_weight, terms, processor.tokenizer, None if rows.streaming else rows.train["labels"])
    check_context_kl(t, terms, processor.tokenizer, rows.train, rows.streaming)
    model, params, cache = build_model(cfg, model, processor, rows)
    precomputed = zero_shot(cfg, model, processor, rows.test, cache, terms) if main else {}
    if seeds := check_seeds(t.seeds, t.mode, t.resume, cfg.lora):  # one adapter per seed, averaged (training/seeds.py)
        fitted = fit_seeds(
            seeds, model, lambda seed, m: fit_member(cfg, seed, m, processor, rows, cache, run_dir, report_to, params,
                                                     terms),
            run_dir / "adapter", lambda d, device: reload_trained(cfg, d, device),
            lambda members: wandb_run(cfg, run_dir, report_to, {"params": params, "members": members}))
    else:
        fitted = fit(cfg, model, processor, rows, cache, run_dir, report_to, params, terms)
    if not main:
        return {}
    ev = None if rows.test is None else score(cfg, fitted.model, processor, rows, cache, terms, precomputed, run_dir,
                                              fitted.adapter_dir)
    exported = export(cfg, run_dir, fitted.adapter_dir, ev, rows.splits, processor, cache)
    summary = run_summary(cfg.recipe_name, run_dir, cfg.model.name_or_path, params,
                          OmegaConf.to_container(cfg.lora) if t.mode == "lora" else None, fitted, rows.n_train,
                          rows.streaming, bool(cfg.data.synthetic), ev, cfg.eval.split, exported,
                          time.perf_counter() - t0)
    tracking.write_metrics(run_dir, summary)
    tracking.log_final(fitted.run, summary, ev, run_dir, {"report": run_dir / "eval", "adapter": fitted.adapter_dir},
                       cfg.logger.wandb.log_artifacts)
    print_summary(summary)
    return summary


def select_rows(cfg: DictConfig, tokenizer, run_dir: Path, main: bool = True) -> Rows:
    """Prepared splits narrowed to what this run uses: train (engines excluded, replay share,
    subsample, augmented takes), dev (its part, subsample) and the scored rows of `eval.split`."""
    from asr_lora.data.augment import training_augmentation
    from asr_lora.data.loading import load_data
    from asr_lora.data.selection import (check_scored_split, filter_engines, keep_part, scored_rows, set_replay_share,
                                         subsample)

    d = cfg.data
    splits, report = load_data(d, tokenizer, run_dir if main else None, scored=cfg.eval.split,
                               batch_size=cfg.train.per_device_train_batch_size, seed=cfg.seed,
                               skip_dir=run_dir / "load_skips", scope=train_scope(cfg))
    train_ds, dev_ds, test_ds = splits.get("train"), splits.get("dev"), splits.get(cfg.eval.split)
    streaming = "streaming" in report
    n_train = sum(report["kept_per_split"].get("train", {}).values()) if streaming else len(train_ds or [])
    if train_ds is None or not n_train:
        raise ValueError(f"no training data in split 'train'; see {run_dir}/data_report.json")
    train_ds = filter_engines(train_ds, d.exclude_train_engines, "data.exclude_train_engines")
    if d.replay_share is not None and streaming:
        raise ValueError("data.replay_share needs the in-memory train split; set data.streaming=false")
    train_ds = set_replay_share(train_ds, d.replay_share, cfg.seed)
    dev_ds = keep_part(dev_ds, cfg.train.dev_part, "train.dev_part") if evaluates_on_dev(cfg) else None
    if not streaming and not (n_train := len(train_ds)):
        raise ValueError(f"data.exclude_train_engines={list(d.exclude_train_engines)} leaves no training data")
    if streaming:
        train_ds = train_ds.take(d.max_train_samples) if d.max_train_samples else train_ds
    else:
        train_ds = subsample(train_ds, d.max_train_samples, cfg.seed)
    dev_ds = subsample(dev_ds, cfg.train.dev_eval_max_samples, cfg.seed)
    check_scored_split(test_ds, cfg.eval.split, report)
    test_ds = scored_rows(test_ds, cfg.eval.part, cfg.eval.engines, d.max_eval_samples, cfg.seed)
    if main and not streaming:
        record_train_texts(run_dir, train_ds["text"])  # what `evaluate adapter=` checks against
    # With augment.copies the waveform effects run once here; per step only SpecAugment is left.
    train_ds, augmenter = training_augmentation(cfg.augment, train_ds, cfg.seed, streaming)
    return Rows(splits, report, train_ds, dev_ds, test_ds, n_train, streaming, augmenter)


def evaluates_on_dev(cfg: DictConfig) -> bool:
    """train.dev_eval_max_samples=0: no dev evaluation (dev may then hold only the export's probe clips)."""
    return cfg.train.dev_eval_max_samples != 0


def train_scope(cfg: DictConfig):
    """The corpus splits and parts this run reads (data/scope.py), what `prepare` prepares for it."""
    return run_scope(cfg.eval.split, cfg.eval.part, cfg.train.dev_part, evaluates_on_dev(cfg), cfg.export.enabled)


def prepare_for_training(cfg: DictConfig, model):
    """LoRA on the frozen base (or every weight trainable, train.mode=full); (model, param counts)."""
    from asr_lora.training.trainer import prepare_model

    if cfg.lora.scale != 1 and cfg.train.mode != "lora":
        raise ValueError(f"lora.scale={cfg.lora.scale} rescales a LoRA update; train.mode={cfg.train.mode} has none")
    model, params = prepare_model(model, cfg.train.mode, cfg.lora, cfg.train.encoder_context, cfg.train.context_pad_s)
    if cfg.lora.scale != 1:  # fit() scales after training: refuse a scale it cannot apply now, not then
        from asr_lora.model.lora import scalable_layers

        scalable_layers(model, cfg.lora.scale)
    return model, params


def caches_encoder(cfg: DictConfig) -> bool:
    """Whether this run may cache the frozen encoder's outputs (train.cache_encoder_outputs)."""
    from asr_lora.model.encoder_cache import cache_enabled

    return cache_enabled(cfg.train.cache_encoder_outputs, cfg.train.mode, cfg.lora.scope, cfg.augment)


def build_model(cfg: DictConfig, model, processor, rows: Rows, lazy_train: bool = True):
    """The trainable model, its parameter counts, and the frozen encoder's outputs (or None); with
    `lazy_train=False` the train split is encoded here too (a benchmark counting it before step 1)."""
    from asr_lora.data.features import encoder_mask_settings
    from asr_lora.model.encoder_cache import build_encoder_cache

    # Refused before the encoder pass and any decoding when the run cannot honour it.
    encoder_mask_settings(cfg.train, caches_encoder(cfg) and not rows.streaming)
    cfg.train.replay_kl = check_replay_kl(cfg.train, rows.train, rows.streaming)  # as logged and saved
    check_sampling(cfg.train.sampling, rows.streaming, cfg.data.length_buckets)
    check_ema_decay(cfg.train.ema_decay)
    check_split_setting(cfg.train.split_prompted_rows)
    check_seeds(cfg.train.seeds, cfg.train.mode, cfg.train.resume, cfg.lora)
    if cfg.export.enabled:  # the export runs after hours of training
        from asr_lora.export.run import check_export_settings

        check_export_settings(cfg.export.formats, cfg.export.quantization)
    model, params = prepare_for_training(cfg, model)
    if torch.cuda.is_available() and cfg.device != "cpu":
        model.to(accelerator())  # so the encoder cache below is filled on the GPU, not the CPU
    t = cfg.train
    cache = None
    if caches_encoder(cfg):
        # Streaming: the train split is never held, so only dev/test outputs can be cached.
        held = {"dev": rows.dev, "test": rows.test} | ({} if rows.streaming else {"train": rows.train})
        # Under torchrun, rank 0 encodes and saves the clips encoded up front (dev/test; train too
        # unless it is encoded lazily); the other ranks then load its files instead of encoding them
        # again and writing the same files. Without a file to share, every rank encodes at once.
        with main_process_first() if t.encoder_cache_on_disk else contextlib.nullcontext():
            cache = build_encoder_cache(model, processor, held, auto=str(t.cache_encoder_outputs).lower() == "auto",
                                        budget_gb=t.encoder_cache_budget_gb, on_disk=t.encoder_cache_on_disk,
                                        base=cfg.model.name_or_path, dtype=cfg.model.dtype,
                                        batch_size=cfg.eval.batch_size,
                                        lazy=train_encoded_lazily(cfg, rows) if lazy_train else (),
                                        train_bf16=trains_bf16(cfg))
    encoder_mask_settings(t, cache is not None and not rows.streaming)  # an auto cache may be over its budget
    return model, params, cache


def trains_bf16(cfg: DictConfig) -> bool:
    """Whether the Trainer will run its steps under bf16 autocast (train.bf16 on this device)."""
    return use_bf16(cfg.train.bf16, on_cpu=trains_on_cpu(cfg.device))


def train_encoded_lazily(cfg: DictConfig, rows: Rows) -> tuple[str, ...]:
    """("train",) when the training collator runs in this process: it encodes each training clip the
    first time a batch draws it, so a run that stops within its first epoch never encodes the rest
    (a DataLoader worker's fills would stay in its own copy of the cache)."""
    return () if rows.streaming or cfg.train.dataloader_num_workers > 0 else ("train",)


def domain_terms(cfg: DictConfig, rows: Rows, tokenizer):
    from asr_lora.evaluation.terms import terms_file, terms_for_split

    return terms_for_split(rows.splits.get("train"), tokenizer, terms_file(cfg.eval.terms, rows.report))


def zero_shot(cfg: DictConfig, model, processor, test_ds, cache, terms) -> dict[str, list[str]]:
    """The base model's hypotheses ("base", and "prompt" with the domain terms as Whisper's prompt)
    before training changes anything; reused from the cache when this exact pass was made before."""
    if not cfg.eval.before_training or test_ds is None:
        return {}
    from asr_lora.core.paths import cache_root
    from asr_lora.evaluation.zero_shot import zero_shot_passes
    from asr_lora.model.whisper import resolve_model_dir

    systems = ("base", "prompt") if terms is not None and cfg.eval.prompt_baseline else ("base",)
    keep = cache_root() if cfg.eval.reuse_zero_shot else None
    return zero_shot_passes(model, processor, test_ds, cfg.eval, systems, terms, cache,
                            resolve_model_dir(cfg.model.name_or_path), keep)


def trainer_args(cfg: DictConfig, output_dir: Path, report_to: list[str], has_dev: bool, streaming: bool = False):
    from asr_lora.training.trainer import training_args

    return training_args(cfg.train, output_dir, report_to, has_dev, streaming, seed=cfg.seed,
                         generation_max_length=cfg.eval.max_new_tokens, length_buckets=cfg.data.length_buckets,
                         device=cfg.device)


def fit(cfg: DictConfig, model, processor, rows: Rows, cache, run_dir: Path, report_to: list[str],
        params: dict, terms=None) -> Fitted:
    """Train with the Trainer (resuming if asked), save the adapter (or full model) portable and
    pickle-free, and return the trained model ready to score."""
    from asr_lora.data.features import add_features, use_feature_cache
    from asr_lora.training.trainer import build_trainer, reads_per_clip

    train_ds, dev_ds, streaming, t = rows.train, rows.dev, rows.streaming, cfg.train
    held_cache = None if streaming else cache
    start = model.config.decoder_start_token_id
    # Streaming: the collator (run in the DataLoader workers) computes every log-mel on the fly.
    collator, eval_collator = make_collators(t, cfg.seed, processor, start, rows.augmenter, held_cache, terms)
    augmented = rows.augmenter is not None and rows.augmenter.touches_waveform()
    if not streaming and cache is None and use_feature_cache(cfg.data, len(train_ds) + len(dev_ds or []),
                                                             reads_per_clip(t, len(train_ds)), augmented):
        train_ds = add_features(train_ds, processor)
        dev_ds = add_features(dev_ds, processor) if dev_ds is not None else None
    keep = collator_columns(held_cache, train_ds.column_names, t.timestamp_probability, t.encoder_time_mask,
                            t.replay_kl > 0 or t.context_kl > 0)
    if cfg.data.length_buckets and not streaming:
        # The Trainer's group_by_length reads this column (and groups dev batches the same way).
        train_ds, dev_ds = (d.map(lambda r: {"n_labels": len(r["labels"])}, desc="label lengths")
                            if d is not None else None for d in (train_ds, dev_ds))
        keep.append("n_labels")
    ckpt_dir = run_dir / t.output_subdir
    args = trainer_args(cfg, ckpt_dir, report_to, dev_ds is not None and len(dev_ds) > 0, streaming)
    run = wandb_run(cfg, run_dir, report_to, {"params": params}) if is_main_process() else None
    sampler = None if streaming else train_sampler(t.sampling, train_ds, cfg.seed)  # checked in build_model
    trainer = build_trainer(model, args, train_ds.select_columns(keep),
                            dev_ds.select_columns(keep) if dev_ds is not None else None, collator, processor,
                            eval_collator, early_stopping_patience=t.early_stopping_patience,
                            replay_kl=t.replay_kl, term_loss_weight=t.term_loss_weight, train_sampler=sampler,
                            context_kl=t.context_kl, ema_decay=t.ema_decay, split_prompted_rows=t.split_prompted_rows)
    t_train = time.perf_counter()
    start = resume_point(t.resume, ckpt_dir)
    collator.continue_after(trained_batches(start, t.gradient_accumulation_steps))  # a resume draws on
    result = trainer.train(resume_from_checkpoint=start)
    seconds = time.perf_counter() - t_train
    # A bf16 run leaves Accelerate's autocast wrapper on the model's forward; what is scored, checked
    # and exported is the fp32 model with the trained adapter, so it comes off.
    model = trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    adapter_dir = run_dir / ("adapter" if t.mode == "lora" else "model")
    if cfg.lora.scale != 1:  # before scoring and saving, so report, adapter and export agree
        from asr_lora.model.lora import scale_adapter

        log.info("adapter update scaled by lora.scale=%g (%d LoRA layers)", cfg.lora.scale,
                 scale_adapter(model, cfg.lora.scale))
    trainer.save_model(str(adapter_dir))  # every rank: sharded (FSDP/DeepSpeed) saves gather across ranks
    if not is_main_process():
        return Fitted(model, adapter_dir, trainer, result, seconds, run)
    if held_cache is not None:
        held_cache.save_lazy()  # the training clips encoded on first use, for the next run
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # The trained weights are sharded over the ranks, and rank 0 alone cannot run a sharded
        # forward; it scores the full copy `save_model` just gathered to disk instead.
        model = reload_trained(cfg, adapter_dir, next(model.parameters()).device)
    if streaming:  # decode-level rejects found by the workers join the run's data report
        from asr_lora.data.streaming import collect_load_skips

        rows.report["load_time"] = collect_load_skips(run_dir / "load_skips")
        write_json(run_dir / "data_report.json", rows.report)
    # The Trainer drops its pickled TrainingArguments next to the weights; a deployable adapter
    # directory must load without pickle (model.adapters.check_adapter_dir refuses it), so it goes.
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)
    if t.mode == "full":
        processor.save_pretrained(adapter_dir)
    else:  # peft recorded the converted cache path as the base; record `bundled:tiny.en` instead
        from asr_lora.model.adapters import make_adapter_portable

        make_adapter_portable(adapter_dir, cfg.model.name_or_path)
    return Fitted(model, adapter_dir, trainer, result, seconds, run)


def wandb_run(cfg: DictConfig, run_dir: Path, report_to: list[str], extra: dict):
    """The run's wandb run (None unless logged to wandb), named after the recipe and run directory,
    with the resolved config and `extra` as its config."""
    return tracking.init_run(cfg.logger.wandb, run_dir, f"{cfg.recipe_name}-{run_dir.name}",
                             OmegaConf.to_container(cfg, resolve=True) | extra, report_to)


def fit_member(cfg: DictConfig, seed: int, model, processor, rows: Rows, cache, run_dir: Path,
               report_to: list[str], params: dict, terms) -> Fitted:
    """One member of a train.seeds run: the run under `seed=seed` on a fresh LoRA (the previous
    member's unloaded from the base), as a run with that seed on the run's rows, into `run_dir/seed<N>`."""
    from omegaconf import open_dict

    member = cfg.copy()
    with open_dict(member):
        member.seed = seed
    seed_everything(seed)
    model, _ = prepare_for_training(member, model.unload())
    return fit(member, model, processor, rows, cache, run_dir / f"seed{seed}", report_to, params, terms)


def score(cfg: DictConfig, model, processor, rows: Rows, cache, terms, precomputed: dict, run_dir: Path,
          adapter_dir: Path) -> dict:
    """Zero-shot, prompt baseline and adapted on `rows.test` (not None): report, tables, eval.json."""
    from asr_lora.evaluation.scoring import eval_systems, evaluate_systems
    from asr_lora.evaluation.summary import eval_info

    from asr_lora.model.lora import adapter_strength

    info = eval_info(cfg.data, cfg.model.name_or_path, rows.report, str(adapter_dir), cfg.eval.split,
                     cfg.lora.scale, adapter_strength(model))
    systems = eval_systems(cfg.eval, terms is not None, adapted=True)
    return evaluate_systems(model, processor, rows.test, cfg.eval, run_dir / "eval", info, systems, cache,
                            precomputed=precomputed, terms=terms)


def export(cfg: DictConfig, run_dir: Path, adapter_dir: Path, ev: dict | None, splits, processor, cache) -> dict | None:
    if not cfg.export.enabled or cfg.train.mode != "lora":
        return None
    from asr_lora.export.job import export_from_run

    from asr_lora.export.merge import ExportRefused

    try:
        return export_from_run(cfg, run_dir, adapter_dir, ev, splits, processor, cache)
    except Exception as e:  # the trained adapter and report stay; the refusal is reported, not hidden
        log.error("no export: %s", e)
        return {"error": f"{type(e).__name__}: {e}"} | ({"refused": e.failures} if isinstance(e, ExportRefused) else {})


def reload_trained(cfg: DictConfig, saved_dir: Path, device=None):
    """The trained model as saved in the run (adapter on the base, or full weights), unwrapped."""
    from asr_lora.model.whisper import load_whisper

    if cfg.train.mode == "full":
        model, _ = load_whisper(str(saved_dir), dtype=getattr(torch, cfg.model.dtype))
    else:
        from asr_lora.model.adapters import load_adapter

        base, _ = load_whisper(cfg.model.name_or_path, dtype=getattr(torch, cfg.model.dtype))
        model = load_adapter(base, saved_dir)
    return model.to(device).eval() if device is not None else model.eval()
