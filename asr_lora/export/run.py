"""Turn a trained LoRA adapter into deployable checkpoints, refusing any that would mislead.

Outputs under ``out_root`` (each directory carries a README.md model card):

- ``hf/``            merged fp32 Whisper; plain transformers loads it, no peft needed
- ``adapter/``       the peft adapter alone (safetensors), to stack on the base at load time
- ``ct2-<quant>/``   CTranslate2 conversion of ``hf/`` for faster-whisper (``int8``, ``float16``, ...)

Refusals (all `ExportError`): an adapter trained on another base, an unknown CTranslate2
quantization, a quantised base (merging into rounded weights shifts outputs well beyond peft's
~1e-4 guarantee), non-finite adapter or merged weights, a merged model whose logits or greedy
tokens differ from the unmerged adapter model, a failed forgetting gate, and the caller's own
`gate_failures` (an export job with no evaluation). ``force=True`` overrides the last three only,
and every model card then says so. A forgetting gate the evaluation could not decide (no control
clips) does not refuse; the log and every card say it was not checked.

Every directory is built in a temporary sibling and moved into place with `os.replace` only
after all formats, checks and cards are complete, so a failed export never leaves a
half-written directory where a deployable one is expected. Format directories a previous export
left in `out_root` that this one does not write are removed then, so none outlives the model it
described.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_lora.core.io import publish_dir, stage_dir
from asr_lora.evaluation.deployed import same_base
from asr_lora.evaluation.metrics import normalized_wer
from asr_lora.evaluation.report import pct
from asr_lora.export.formats import export_adapter, export_hf, write_model_card
from asr_lora.export.merge import (
    ExportError,
    ExportRefused,
    load_adapter_model,
    merge_loaded,
    synthetic_probe,
    verify_merge,
)
from asr_lora.inference.ct2 import check_quantizations, convert_ct2, transcribe_ct2, warn_cpu_compute_type
from asr_lora.inference.decode import transcribe_arrays
from asr_lora.model.adapters import PROMPT_FILE, adapter_base, check_adapter_dir, portable_base
from asr_lora.model.lora import merged_weights_digest
from asr_lora.model.whisper import resolve_model_dir

log = logging.getLogger(__name__)



def check_export_settings(formats, quantizations) -> list[str]:
    """The ct2 quantizations to write, or a refusal of settings that would export nothing, or nothing
    of a format named (an export replaces the last one's files: an empty one would only delete them)."""
    formats = list(formats)
    if not formats:
        raise ValueError("export.formats is empty: the export would write nothing and retire the last export's "
                         "files; name hf, adapter and/or ct2 (or set export.enabled=false)")
    unknown = set(formats) - {"hf", "adapter", "ct2"}
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from hf, adapter, ct2")
    if "ct2" not in formats:
        return []
    if not list(quantizations):
        raise ValueError("export.formats has ct2 but export.quantization is empty; name one or more, e.g. [int8]")
    return check_quantizations(list(quantizations))


def export_run(base: str, adapter_dir: Path, out_root: Path, formats: Sequence[str] = ("hf", "adapter", "ct2"),
               ct2_quantizations: Sequence[str] = ("int8",), probe_features: torch.Tensor | None = None,
               test_audios: Sequence[np.ndarray] | None = None, test_refs: Sequence[str] | None = None,
               info: dict | None = None, force: bool = False, atol: float = 1e-4,
               verify_max_new_tokens: int = 128,
               merged_transcriber: Callable[[Any], list[str]] | None = None,
               evaluated: tuple[str, Sequence[str]] | None = None, beam_size: int = 1,
               prompt: str | None = None, evaluated_prompted: Sequence[str] | None = None,
               max_new_tokens: int = 128, gate_failures: Sequence[str] = ()) -> dict[str, Any]:
    """Merge, verify, gate, then write every requested format atomically; returns a summary.

    `merged_transcriber(merged_model) -> hypotheses for test_audios` lets the caller reuse work it
    already has (e.g. cached encoder outputs when the adapter never touched the encoder).
    `evaluated = (sha256, hypotheses for test_audios)`: what the run's evaluation decoded with the
    adapter merged in (`model.lora.merged_in_place`). When the merged model here has that digest, it
    is bit for bit the model the evaluation scored, so its hypotheses are the merged model's and the
    export does not decode the test audio a second time; otherwise it decodes. Every check decodes
    with `beam_size` beams (the run's eval.beam_size), and the model card says so; every decode of
    the test audio, transformers and faster-whisper, stops at `max_new_tokens` (eval.max_new_tokens).

    `prompt`: the term prompt the evaluation also scored the adapter with. Every directory then
    ships it (`prompt.txt`, and in the model card), and the test audio is decoded with it too;
    `evaluated_prompted` are the evaluation's hypotheses with it, which stand for the merged model's
    when the weights are the evaluated ones, as `evaluated`'s do.

    `gate_failures`: gates the caller found failed (no evaluation at all); refused before the merge
    unless `force`, and then carried into every card like the gates checked here.
    """
    # Every refusal that needs no merge comes first: the merge and its verification take minutes on big bases.
    ct2_quantizations = check_export_settings(formats, ct2_quantizations)
    adapter_dir, out_root = Path(adapter_dir), Path(out_root)
    check_same_base(base, adapter_dir)
    if gate_failures and not force:
        raise ExportRefused(list(gate_failures))
    out_root.mkdir(parents=True, exist_ok=True)
    info = copy.deepcopy(info or {})
    info.setdefault("model", {}).setdefault("base", base)
    info["beam_size"] = beam_size
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    # The adapter's own config is the truth for r/alpha/targets; the caller adds e.g. scope.
    info["lora"] = {**info.get("lora", {}), "r": adapter_cfg.get("r"), "alpha": adapter_cfg.get("lora_alpha"),
                    "target_modules": sorted(adapter_cfg.get("target_modules") or [])}

    adapter_model, processor = load_adapter_model(base, adapter_dir)
    merged = merge_loaded(copy.deepcopy(adapter_model))
    probe = "dev"
    if probe_features is None:
        probe_features, probe = synthetic_probe(processor), "synthetic tones; no dev features given"
    verification = {**verify_merge(adapter_model, merged, probe_features, atol=atol,
                                    max_new_tokens=verify_max_new_tokens), "probe": probe}
    info["verification"] = verification
    del adapter_model

    failures = [*gate_failures, *failed_gates(verification, info.get("forgetting"), atol)]
    if failures and not force:
        raise ExportRefused(failures)
    info["forced"] = failures  # empty unless force overrode something
    if unchecked := forgetting_unchecked(info):
        log.warning("forgetting gate not checked: %s", unchecked)
        info["forgetting_unchecked"] = unchecked

    targets = {}
    if "hf" in formats:
        targets["hf"] = out_root / "hf"
    if "adapter" in formats:
        targets["adapter"] = out_root / "adapter"
    if "ct2" in formats:
        targets.update({f"ct2-{q}": out_root / f"ct2-{q}" for q in ct2_quantizations})
    staged = {name: stage_dir(t) for name, t in targets.items()}
    scratch = None
    try:
        hf_dir = staged.get("hf") or (scratch := Path(tempfile.mkdtemp(prefix=".hf-scratch-", dir=out_root)))
        export_hf(merged, processor, resolve_model_dir(base), hf_dir)
        if language := getattr(merged.generation_config, "language", None):
            info["language"] = language  # what a multilingual model was scored in; the cards pass it on
        if "adapter" in staged:
            export_adapter(adapter_dir, staged["adapter"])
        for q in ct2_quantizations if "ct2" in formats else ():
            convert_ct2(hf_dir, staged[f"ct2-{q}"], q)

        export_wer = {}
        if test_audios is not None and test_refs is not None:
            digest = merged_weights_digest(merged)
            same = evaluated is not None and evaluated[0] == digest and len(evaluated[1]) == len(test_audios)
            verification["evaluated_weights"] = {"sha256": digest, "identical": same}
            if same:
                log.info("merged weights are bit-identical to the evaluated model (sha256 %s): its %d "
                         "hypotheses stand for the merged export", digest[:12], len(test_audios))
                merged_hyps = list(evaluated[1])
            else:
                merged_hyps = (merged_transcriber(merged) if merged_transcriber
                               else transcribe_arrays(merged, processor, test_audios, beam_size,
                                                      max_new_tokens=max_new_tokens))
            export_wer["merged_hf"] = normalized_wer(test_refs, merged_hyps)
            if prompt:
                reuse = same and evaluated_prompted is not None and len(evaluated_prompted) == len(test_audios)
                export_wer["merged_hf + prompt"] = normalized_wer(test_refs, list(evaluated_prompted) if reuse else
                                                                  transcribe_arrays(merged, processor, test_audios,
                                                                                    beam_size, prompt=prompt,
                                                                                    max_new_tokens=max_new_tokens))
            for q in ct2_quantizations if "ct2" in formats else ():
                label = ct2_label(staged[f"ct2-{q}"], q)
                for p in (None, prompt) if prompt else (None,):
                    name = label + (" + prompt" if p else "")
                    export_wer[name] = normalized_wer(test_refs, transcribe_ct2(
                        staged[f"ct2-{q}"], test_audios, beam_size=beam_size, description=f"decoding ({name} export)",
                        prompt=p, max_new_tokens=max_new_tokens))
            info["export_wer"] = export_wer
        if prompt:  # the prompted system the evaluation scored ships with every format
            info["prompt"] = prompt
            for tmp in staged.values():
                (tmp / PROMPT_FILE).write_text(prompt + "\n", encoding="utf-8")
        for name, tmp in staged.items():
            write_model_card(tmp, {**info, "this": name, "exports": list(targets)})
        sizes = {"adapter": (adapter_dir / "adapter_model.safetensors").stat().st_size,
                 "merged": (hf_dir / "model.safetensors").stat().st_size}
        sizes.update({f"ct2-{q}": (staged[f"ct2-{q}"] / "model.bin").stat().st_size
                      for q in ct2_quantizations if "ct2" in formats})
        retire_stale_formats(out_root, set(targets))
        for name, tmp in staged.items():
            publish_dir(tmp, targets[name])
    except BaseException:
        for tmp in staged.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    if failures:
        log.warning("EXPORTED WITH force=True over failed gates: %s", "; ".join(failures))
    return {"paths": {k: str(v) for k, v in targets.items()}, "sizes_bytes": sizes,
            "verification": verification, "wer": export_wer or None, "beam_size": beam_size, "forced": bool(failures),
            "gate_failures": failures, "forgetting_unchecked": info.get("forgetting_unchecked")}


def failed_gates(verification: dict, forgetting: dict | None, atol: float) -> list[str]:
    failures = []
    if not verification["passed"]:
        failures.append(f"merge verification failed: max |logit diff| {verification['max_abs_logit_diff']:.2e} "
                        f"(atol {atol}), tokens identical: {verification['tokens_identical']}")
    if (forgetting or {}).get("passed") is False:
        change = pct(forgetting.get("relative_degradation"), 1)
        allowed = pct(forgetting.get("max_relative_degradation"), 1)
        failures.append(f"forgetting gate failed: control WER relative change {change} > allowed {allowed}")
    return failures


def check_same_base(base: str, adapter_dir: Path) -> None:
    """Refuse to merge an adapter into another base than the one it was trained on: `hf/` would hold
    a model nobody trained or scored, and `adapter/` would name a different base than `hf/` holds."""
    named = adapter_base(check_adapter_dir(adapter_dir))
    if named and not same_base(named, portable_base(base)):
        raise ExportError(f"{adapter_dir}: adapter trained on base {named!r}, but the export merges it into "
                          f"{base!r}; export it with its own base ({named})")


def forgetting_unchecked(info: dict) -> str | None:
    """Why no forgetting gate was decided (None when it was): an export then ships unguarded against
    forgetting, which its card must say."""
    if (info.get("forgetting") or {}).get("passed") is not None:
        return None
    systems = info.get("systems")
    if not systems:
        return "no evaluation was given for this export"
    if not {"base", "adapted"} <= set(systems):
        return "the evaluation did not score both the base and the adapted model"
    return ("the evaluation scored no control clips (general English held out from training, data.control), "
            "so nothing measured what the adapter costs outside its domain")


def ct2_label(ct2_dir: Path, quantization: str) -> str:
    """`ct2-<q>`, saying what the WER was decoded in where this CPU cannot run `q` (float16 here runs as float32)."""
    ran = warn_cpu_compute_type(ct2_dir, quantization)
    return f"ct2-{quantization}" + (f" (scored as {ran} on this CPU)" if ran != quantization else "")


def retire_stale_formats(out_root: Path, keep: set[str]) -> None:
    """Remove the format directories (hf, adapter, ct2-*) of an earlier export that this one does not
    write: left beside the new ones they would be served or scored as this export. Each leaves by one
    rename, so a crash leaves it whole or gone."""
    stale = [d for d in out_root.iterdir() if d.is_dir() and d.name not in keep
             and (d.name in ("hf", "adapter") or d.name.startswith("ct2-"))]
    if not stale:
        return
    trash = Path(tempfile.mkdtemp(prefix=".stale-", dir=out_root))
    for d in stale:
        log.info("removing %s: an earlier export's, not written by this one", d)
        os.replace(d, trash / d.name)
    shutil.rmtree(trash)
