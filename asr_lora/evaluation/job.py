"""`evaluate(cfg)`: score a model (and an adapter on it) on a prepared split, for
`python -m asr_lora.evaluate`.

With an adapter, base and adapted are scored from one loaded peft model (`disable_adapter()` gives
the base), with a paired comparison and the forgetting gate; without one, the model alone. With
eval.backend=ct2, faster-whisper decodes every system from CTranslate2 files instead (`adapter=` an
export's ct2-<q>/, evaluation/deployed.py) and the same scoring follows.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig

from asr_lora.config import check_settings
from asr_lora.core.logs import setup_logging
from asr_lora.core.paths import use_cache_root
from asr_lora.core.runtime import accelerator, run_dir_of, seed_everything
from asr_lora.data.loading import load_data
from asr_lora.data.scope import run_scope
from asr_lora.evaluation.summary import eval_info
from asr_lora.model.encoder_cache import encoder_batch_size

log = logging.getLogger("asr_lora.evaluate")


def evaluate(cfg: DictConfig) -> dict:
    check_settings(cfg)
    run_dir = run_dir_of(cfg.run_dir)
    setup_logging(run_dir, quiet=cfg.quiet)
    use_cache_root(cfg.paths.cache_dir)
    seed_everything(cfg.seed)
    from asr_lora.data.selection import scored_rows
    from asr_lora.evaluation.deployed import check_backend, check_export_base, resolve_ct2_adapter
    from asr_lora.evaluation.scoring import evaluate_systems
    from asr_lora.evaluation.summary import headline
    from asr_lora.model.encoder_cache import EncoderCache
    from asr_lora.model.whisper import load_whisper

    ct2 = check_backend(cfg.eval.backend, cfg.eval.ct2_decoding) == "ct2"
    if ct2:  # faster-whisper decodes every system from CTranslate2 files (evaluation/deployed.py)
        from asr_lora.model.whisper import load_processor

        if cfg.lora.scale != 1:
            raise ValueError("lora.scale scales a peft adapter; eval.backend=ct2 scores exported (merged) files")
        model, processor = None, load_processor(cfg.model.name_or_path)
        adapted_ct2 = resolve_ct2_adapter(cfg.adapter) if cfg.adapter else None
        if adapted_ct2 is not None:
            check_export_base(adapted_ct2, cfg.model.name_or_path)
    else:
        from asr_lora.model.adapters import load_adapter, other_base

        if cfg.adapter and (named := other_base(cfg.adapter, cfg.model.name_or_path)):
            raise ValueError(f"adapter={cfg.adapter}: trained on base {named!r}, but model.name_or_path is "
                             f"{cfg.model.name_or_path!r}; pass model.name_or_path={named}")
        model, processor = load_whisper(cfg.model.name_or_path, dtype=getattr(torch, cfg.model.dtype))
        if cfg.adapter:
            model = load_adapter(model, cfg.adapter)
            if cfg.lora.scale != 1:
                from asr_lora.model.lora import scale_adapter

                scale_adapter(model, cfg.lora.scale)
                log.info("adapter %s scored at lora.scale=%g", cfg.adapter, cfg.lora.scale)
        model.eval()
        if torch.cuda.is_available() and cfg.device != "cpu":
            model.to(accelerator())  # scored where training scores it; device="cpu" keeps the CPU
    splits, report = load_data(cfg.data, processor.tokenizer, run_dir, scored=cfg.eval.split,
                               scope=run_scope(cfg.eval.split, cfg.eval.part))
    from asr_lora.evaluation.scoring import eval_systems
    from asr_lora.evaluation.terms import terms_file, terms_for_split

    terms = terms_for_split(splits.get("train"), processor.tokenizer, terms_file(cfg.eval.terms, report))
    systems = eval_systems(cfg.eval, terms is not None, adapted=bool(cfg.adapter))
    split = cfg.eval.split
    if split not in splits:
        raise ValueError(f"split {split!r} is empty or missing; have {sorted(splits)} (see data_report.json)")
    ds = scored_rows(splits[split], cfg.eval.part, cfg.eval.engines, cfg.data.max_eval_samples, cfg.seed)
    if cfg.adapter:  # refused before any decoding: a score of the adapter's own training text
        from datasets import Dataset

        from asr_lora.data.overlap import check_not_trained_on

        train = splits.get("train")  # a streamed train split is not read through for this
        overlap = check_not_trained_on(cfg.adapter, ds["text"], ds["id"], cfg.eval.allow_train_overlap,
                                       train["text"] if isinstance(train, Dataset) else ())

    from asr_lora.model.lora import adapter_strength
    from asr_lora.model.whisper import local_model_dir, resolve_model_dir

    info = eval_info(cfg.data, cfg.model.name_or_path, report, cfg.adapter, split,
                     cfg.lora.scale if cfg.adapter else 1.0, adapter_strength(model) if model is not None else None)
    if cfg.adapter:
        info["train_overlap"] = overlap
        if overlap.get("n_trained_on"):
            log.warning("scoring %s on %d clips of sentences it was trained on (eval.allow_train_overlap=true)",
                        cfg.adapter, overlap["n_trained_on"])
    cache = None
    if ct2:
        from asr_lora.evaluation.deployed import ct2_hypotheses, export_quantization

        q = export_quantization(adapted_ct2, cfg.eval.ct2_quantization)
        info["model"]["backend"] = (f"faster-whisper (CTranslate2: {adapted_ct2.name}, base converted at {q})"
                                    if adapted_ct2 else f"faster-whisper (CTranslate2: base converted at {q})")
        precomputed = ct2_hypotheses(local_model_dir(cfg.model.name_or_path), adapted_ct2, ds, systems, cfg.eval,
                                     q, terms, run_dir)
    else:
        if not any(".encoder." in n and "lora_A" in n for n, _ in model.named_parameters()):
            # The encoder is the same for every system here: run it once per clip.
            cache = EncoderCache(model, processor, encoder_batch_size(model, cfg.eval.batch_size))
            cache.fill(ds["id"], [np.asarray(a, dtype=np.float32) for a in ds["audio"]], True, f"encoding {split}")
        from asr_lora.core.paths import cache_root
        from asr_lora.evaluation.zero_shot import zero_shot_passes

        # Base and prompt: the zero-shot passes a training run (or evaluation) of these rows has made.
        precomputed = zero_shot_passes(model, processor, ds, cfg.eval, systems, terms, cache,
                                       resolve_model_dir(cfg.model.name_or_path),
                                       cache_root() if cfg.eval.reuse_zero_shot else None)
    ev = evaluate_systems(model, processor, ds, cfg.eval, run_dir / "eval", info, systems, cache, terms=terms,
                          precomputed=precomputed)
    for s in (s for s in systems if s in ("base", "adapted")):
        h = headline(ev, s)
        log.info("%s WER %.2f%% [%.2f, %.2f] (norm), %.2f%% particles removed%s", s, 100 * h["wer"],
                 100 * h["ci_low"], 100 * h["ci_high"], 100 * h["wer_no_particles"],
                 f"; control {100 * h['control_wer']:.2f}%" if "control_wer" in h else "")
    log.info("report: %s", run_dir / "eval" / "report.html")
    return ev
