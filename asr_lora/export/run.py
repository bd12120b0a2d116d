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

The whole export (every format directory and ``export_summary.json``) is built in one temporary
sibling of ``out_root`` and switched in by renames only after all formats, checks and cards are
complete: an export that fails or is interrupted leaves the previous one whole or, in the instant of
the switch, set aside whole, never one model's ``hf/`` beside another's ``ct2-int8/``. Format
directories of a previous export that this one does not write go with it; anything else a user kept
in ``out_root`` is carried over.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_lora.core.io import publish_dir, stage_dir, write_json
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
from asr_lora.model.adapters import EXPORT_SUMMARY, PROMPT_FILE, adapter_sha256, check_adapter_dir, other_base
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
               max_new_tokens: int = 128, gate_failures: Sequence[str] = (),
               adapter_digest: str | None = None) -> dict[str, Any]:
    """Merge, verify, gate, then write every requested format and the summary (returned, and written
    as ``export_summary.json``) into ``out_root`` in one switch.

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
    `adapter_digest`: the adapter file's sha256 when the caller has it already (hashed here if not).
    """
    # Every refusal that needs no merge comes first: the merge and its verification take minutes on big bases.
    ct2_quantizations = check_export_settings(formats, ct2_quantizations)
    adapter_dir, out_root = Path(adapter_dir), Path(out_root)
    check_same_base(base, adapter_dir)
    if gate_failures and not force:
        raise ExportRefused(list(gate_failures))
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

    targets = []
    if "hf" in formats:
        targets.append("hf")
    if "adapter" in formats:
        targets.append("adapter")
    if "ct2" in formats:
        targets += [f"ct2-{q}" for q in ct2_quantizations]
    root = stage_dir(out_root)
    staged = {name: root / name for name in targets}
    try:
        hf_dir = staged.get("hf") or root / ".hf-scratch"  # ct2 converts from a transformers checkpoint
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
            for d in staged.values():
                (d / PROMPT_FILE).write_text(prompt + "\n", encoding="utf-8")
        for name, d in staged.items():
            write_model_card(d, {**info, "this": name, "exports": targets})
        sizes = {"adapter": (adapter_dir / "adapter_model.safetensors").stat().st_size,
                 "merged": (hf_dir / "model.safetensors").stat().st_size}
        sizes.update({f"ct2-{q}": (staged[f"ct2-{q}"] / "model.bin").stat().st_size
                      for q in ct2_quantizations if "ct2" in formats})
        if "hf" not in staged:
            shutil.rmtree(hf_dir)
        summary = {"paths": {k: str(out_root / k) for k in targets}, "sizes_bytes": sizes,
                   "verification": verification, "wer": export_wer or None, "beam_size": beam_size,
                   "forced": bool(failures), "gate_failures": failures,
                   "forgetting_unchecked": info.get("forgetting_unchecked")}
        if adapter_hash := adapter_digest or adapter_sha256(adapter_dir):  # which adapter this export holds
            summary["adapter_sha256"] = adapter_hash
        write_json(root / EXPORT_SUMMARY, summary, default=str)
        switch_in(root, out_root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise

    if failures:
        log.warning("EXPORTED WITH force=True over failed gates: %s", "; ".join(failures))
    return summary


def switch_in(root: Path, out_root: Path) -> None:
    """Replace `out_root` by the staged export `root` in one switch (`publish_dir`), first moving into
    `root` what the previous export folder holds that no export writes (a user's notes): an earlier
    export's formats and summary go with the folder they describe."""
    carried = [e.name for e in (out_root.iterdir() if out_root.is_dir() else ())
               if not (is_export_entry(e.name) or (root / e.name).exists())]
    try:
        for name in carried:
            os.replace(out_root / name, root / name)
        publish_dir(root, out_root)
    except BaseException:  # the caller removes `root`: the user's entries go back first
        for name in carried:
            if (root / name).exists():
                os.replace(root / name, out_root / name)
        raise


def is_export_entry(name: str) -> bool:
    return name in ("hf", "adapter", EXPORT_SUMMARY) or name.startswith("ct2-")


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
    if named := other_base(check_adapter_dir(adapter_dir), base):
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
