"""Export for a training run: `python -m asr_lora.export run_dir=DIR [export.formats=[hf,ct2]]
[export.quantization=[int8]] [export.force=true]`, also called at the end of training. DIR may also
be an `evaluate` run of an adapter (`adapter=PATH`, say an average of several runs' adapters): its
evaluation is then the one the export's gate and WER check rest on.

Feeds `export.export_run` what only a run knows: a probe batch from the dev split, the test split's
accented utterances for the export WER, and the eval dict (WER table, forgetting gate).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from asr_lora.config import CONF_DIR, check_recipe_applied
from asr_lora.core.io import read_json
from asr_lora.model.adapters import EXPORT_SUMMARY, adapter_sha256

log = logging.getLogger("asr_lora.export")


def export_from_run(cfg, run_dir: Path, adapter_dir: Path, ev: dict | None, splits: dict, processor=None,
                    encoder_cache=None) -> dict:
    from asr_lora.data.features import log_mel
    from asr_lora.evaluation.scoring import transcribe_split
    from asr_lora.export.run import export_run
    from asr_lora.model.whisper import load_whisper

    if processor is None:
        _, processor = load_whisper(cfg.model.name_or_path)
    dev = splits.get("dev")
    probe = None
    if dev is not None and len(dev):
        rows = dev.select(range(min(cfg.export.probe_size, len(dev))))
        probe = log_mel(processor, [np.asarray(a, dtype=np.float32) for a in rows["audio"]])
    # The same test rows the run's evaluation scored (eval.part / eval.engines), so the exported
    # model's WER check is on what the report shows and costs no more than that evaluation.
    from asr_lora.data.selection import eval_rows, subsample

    test = eval_rows(splits.get(cfg.eval.split), cfg.eval.part, cfg.eval.engines)
    audios = refs = transcriber = reuse = prompted = None
    evaluated = evaluated_hypotheses(run_dir, ev, cfg.eval.beam_size)
    # The term prompt ships with the export when the evaluation scored the adapter with it.
    scored_prompted = "adapted_prompt" in (ev or {}).get("systems", {})
    prompt = ((ev or {}).get("terms") or {}).get("prompt") if scored_prompted else None
    if cfg.export.ct2_eval and test is not None:
        main = test.filter(lambda s: s != "control", input_columns="subset")
        if evaluated:  # exactly the accented rows the evaluation scored (its max_eval_samples draw too)
            main = main.filter(lambda i: i in evaluated[1], input_columns="id")
            reuse = (evaluated[0], [evaluated[1][i] for i in main["id"]])
            with_prompt = evaluated_hypotheses(run_dir, ev, cfg.eval.beam_size, "adapted_prompt")
            prompted = [with_prompt[1][i] for i in main["id"]] if prompt and with_prompt else None
        elif ev and ev.get("n_utterances") and cfg.data.max_eval_samples:
            # the evaluation's own draw of max_eval_samples rows (control included), its accented ones
            drawn = subsample(test, cfg.data.max_eval_samples, cfg.seed)
            main = drawn.filter(lambda s: s != "control", input_columns="subset")
        audios = [np.asarray(a, dtype=np.float32) for a in main["audio"]]
        refs = list(main["text"])
        if encoder_cache is not None and all(i in encoder_cache.store for i in main["id"]):
            # The merge only touched the decoder, so the cached encoder outputs are still exact.
            def transcriber(merged):
                return transcribe_split(merged, processor, main, cfg.eval.beam_size, cfg.eval.batch_size,
                                        cfg.eval.max_new_tokens, encoder_cache, description="decoding (merged)")
    info = dict(ev or {})
    info["lora"] = {"scope": list(cfg.lora.scope)}
    adapter_digest = adapter_sha256(adapter_dir)
    from asr_lora.export.merge import ExportRefused

    try:
        summary = export_run(
            cfg.model.name_or_path, adapter_dir, run_dir / "export", formats=list(cfg.export.formats),
            ct2_quantizations=list(cfg.export.quantization), probe_features=probe, test_audios=audios,
            test_refs=refs, info=info, force=cfg.export.force, merged_transcriber=transcriber, evaluated=reuse,
            beam_size=cfg.eval.beam_size, prompt=prompt, evaluated_prompted=prompted,
            max_new_tokens=cfg.eval.max_new_tokens,
            gate_failures=unevaluated(run_dir, ev) + changed_since_scored(adapter_dir, adapter_digest, ev),
            adapter_digest=adapter_digest,
        )
    except ExportRefused as e:  # a command-line user overrides with the config key, not the keyword
        retire_stale_export(run_dir / "export", adapter_digest)
        raise ExportRefused(e.failures, "export.force=true") from None
    log.info("export: %s", json.dumps({k: summary[k] for k in ("paths", "sizes_bytes", "wer")}, default=str))
    return summary


def retire_stale_export(out_root: Path, adapter_digest: str | None) -> None:
    """A refused export leaves no export of an earlier adapter (another `adapter_digest`) beside the
    run's new one (a second training into the same run folder), where it would pass for this
    adapter's; an export of this same adapter stays."""
    if not out_root.is_dir() or adapter_digest is None:
        return
    summary = out_root / EXPORT_SUMMARY
    exported = (read_json(summary, EXPORT_SUMMARY).get("adapter_sha256") if summary.is_file()
                else adapter_sha256(out_root / "adapter"))
    if exported is None or exported == adapter_digest:  # None: nothing tells which adapter it was
        return
    log.warning("removing %s: it exported an earlier adapter than this run's, whose export was refused", out_root)
    shutil.rmtree(out_root)


def unevaluated(run_dir: Path, ev: dict | None) -> list[str]:
    """The gate a run with no evaluation fails: nothing shows the export is a scored model, or that
    it passed the forgetting gate."""
    return [] if ev else [f"no evaluation: {Path(run_dir) / 'eval' / 'eval.json'} missing, so no WER or "
                          "forgetting gate vouches for the exported model"]


def changed_since_scored(adapter_dir: Path, adapter_digest: str | None, ev: dict | None) -> list[str]:
    """The gate an adapter fails when its weights (`adapter_digest`) are no longer the file the
    evaluation scored (an average rewritten with --force, a retraining): the report, cards and gate
    would vouch for another model."""
    scored = ((ev or {}).get("model") or {}).get("adapter_sha256")
    if not scored or adapter_digest is None or adapter_digest == scored:
        return []
    return [f"{Path(adapter_dir) / 'adapter_model.safetensors'} changed since it was scored (sha256 "
            f"{adapter_digest[:12]}, evaluated {scored[:12]}): evaluate it again, then export"]


def evaluated_hypotheses(run_dir: Path, ev: dict | None, beam_size: int = 1,
                         system: str = "adapted") -> tuple[str, dict[str, str]] | None:
    """(sha256 of the merged weights the run's evaluation decoded, {row id: that `system`'s
    hypothesis}: "adapted", or "adapted_prompt" with the term prompt), or None when it recorded none
    (full fine-tuning, runs evaluated before the digest existed) or decoded with another beam size
    than the export checks with."""
    digest = ((ev or {}).get("adapted_weights") or {}).get("sha256")
    path = Path(run_dir) / "eval" / "hypotheses.json"
    if not digest or not path.is_file() or (ev or {}).get("beam_size", 1) != beam_size:
        return None
    h = read_json(path, "run's eval/hypotheses.json")
    if "ids" not in h or len(h.get(system) or []) != len(h["ids"]):
        return None
    return digest, dict(zip(h["ids"], h[system]))


def run_config(cfg: DictConfig) -> DictConfig:
    """The run's own resolved config, with this command's `export.*` settings on top."""
    run_dir = Path(cfg.run_dir)
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: run_dir must be a training or evaluation run directory")
    base = OmegaConf.load(saved)
    base.export = cfg.export
    base.run_dir = str(run_dir)
    return base


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict:
    check_recipe_applied(cfg)
    from asr_lora.core.logs import setup_logging
    from asr_lora.core.paths import use_cache_root
    from asr_lora.data.loading import load_data
    from asr_lora.data.scope import run_scope

    if not cfg.run_dir:
        raise SystemExit("usage: python -m asr_lora.export run_dir=outputs/<recipe>/<timestamp> [export.*=...]")
    if cfg.lora.scale != 1:  # the run's adapter and its evaluation already hold the strength it trained with
        raise SystemExit(f"lora.scale={cfg.lora.scale}: export ships the run's adapter at the strength its "
                         "evaluation scored; train with lora.scale=S to export another")
    run_cfg = run_config(cfg)
    run_dir = Path(run_cfg.run_dir)
    setup_logging(run_dir, quiet=cfg.quiet)
    ev_path = run_dir / "eval" / "eval.json"
    try:  # a broken file is a one-line refusal naming it, before the model and data are loaded
        ev = read_json(ev_path, "run's eval.json") if ev_path.is_file() else None
        refuse_early(cfg.export, run_dir, ev)
    except ValueError as e:  # core.io.JsonFileError is one
        raise SystemExit(f"export: {e}") from None
    use_cache_root(cfg.paths.cache_dir)
    from asr_lora.model.whisper import load_whisper

    _, processor = load_whisper(run_cfg.model.name_or_path)
    splits, _ = load_data(run_cfg.data, processor.tokenizer, None, scored=run_cfg.eval.split,
                          scope=run_scope(run_cfg.eval.split, run_cfg.eval.part, probe=True))
    return export_from_run(run_cfg, run_dir, run_adapter(run_dir, run_cfg), ev, splits, processor)


def refuse_early(ecfg: DictConfig, run_dir: Path, ev: dict | None) -> None:
    """The refusals that need neither the data nor the merge, before either is paid for."""
    from asr_lora.export.merge import ExportRefused
    from asr_lora.export.run import check_export_settings

    if (missing := unevaluated(run_dir, ev)) and not ecfg.force:
        raise ExportRefused(missing, "export.force=true")
    check_export_settings(ecfg.formats, ecfg.quantization)


def run_adapter(run_dir: Path, run_cfg: DictConfig) -> Path:
    """The adapter a run scored: a training run's own `adapter/`, or the `adapter=` an evaluation
    run was given."""
    if (run_dir / "adapter").is_dir():
        return run_dir / "adapter"
    if run_cfg.get("adapter"):
        if run_cfg.lora.scale != 1:  # the adapter's file holds strength 1, not what was scored
            raise SystemExit(f"{run_dir}: scored {run_cfg.adapter} at lora.scale={run_cfg.lora.scale}; "
                             "export ships an adapter at the strength its evaluation scored")
        return Path(run_cfg.adapter)
    raise FileNotFoundError(f"{run_dir}: no adapter/ and no adapter= in its config; nothing to export")
