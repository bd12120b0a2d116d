"""Score systems on a split: transcribe, WER/CER three ways, speaker-bootstrap intervals, paired
base-vs-adapted comparison, forgetting gate, error analysis; write eval.json, per_utterance.csv
and the report.

"Base" and "adapted" come from one loaded peft model (`disable_adapter()` gives the base), so the
base is exactly the one the adapter was trained on. The accented set (subset "main") carries the
headline; the general-English control set (subset "control") feeds the forgetting gate.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from .features import EncoderCache, log_mel
from .inference import decode_ids
from .metrics import (
    bootstrap_ci, corpus_cer, corpus_wer, error_analysis, group_breakdown, paired_bootstrap, particle_stats,
    per_utterance_errors, worst_utterances,
)
from .report import write_report
from .text import NORMALIZER_VERSION, normalize

log = logging.getLogger(__name__)
VARIANTS = {
    "raw": lambda s: " ".join(s.lower().split()),
    "norm": lambda s: normalize(s, particles=True),
    "norm_no_particles": lambda s: normalize(s, particles=False),
}
META = ("id", "speaker", "accent", "subset", "voice", "engine", "text")


@torch.no_grad()
def transcribe_split(model, processor, ds, beam_size: int = 1, batch_size: int = 16, max_new_tokens: int = 128,
                     encoder_cache: EncoderCache | None = None, progress: bool = True, description: str = "decoding"):
    """Hypotheses for every row of `ds`, batched; reuses cached encoder outputs when given."""
    from rich.progress import Progress

    model.eval()
    param = next(model.parameters())
    kwargs: dict[str, Any] = dict(num_beams=beam_size, max_new_tokens=max_new_tokens, do_sample=False)
    if getattr(model.generation_config, "is_multilingual", False):
        kwargs.update(language="en", task="transcribe")
    hyps: list[str] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(ds))
        for start in range(0, len(ds), batch_size):
            batch = ds[start : start + batch_size]
            if encoder_cache is not None:
                hidden = encoder_cache.get(batch["id"]).to(param.device, param.dtype)
                ids = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), **kwargs)
            else:
                feats = log_mel(processor, [np.asarray(a, dtype=np.float32) for a in batch["audio"]])
                ids = model.generate(input_features=feats.to(param.device, param.dtype), **kwargs)
            hyps.extend(decode_ids(processor, ids))
            bar.advance(task, len(batch["id"]))
    return hyps


def utterance_rows(meta: list[dict], hyps: list[str]) -> dict[str, list[dict]]:
    """Per-variant per-utterance rows: metadata, normalised ref/hyp and their error counts."""
    out = {}
    for name, fn in VARIANTS.items():
        refs = [fn(m["text"]) for m in meta]
        hs = [fn(h) for h in hyps]
        errs = per_utterance_errors(refs, hs)
        out[name] = [{**m, "ref": r, "hyp": h, **e} for m, r, h, e in zip(meta, refs, hs, errs)]
    return out


def _with_ci(stats: dict, rows: list[dict], n_boot: int) -> dict:
    errs = [r["sub"] + r["dele"] + r["ins"] for r in rows]
    lo, hi = bootstrap_ci(errs, [r["n_ref"] for r in rows], [r["speaker"] for r in rows], n_boot)
    return {**stats, "ci_low": lo, "ci_high": hi}


def score_system(rows_by_variant: dict[str, list[dict]], n_boot: int = 1000, worst_n: int = 15) -> dict:
    """SYSTEM block of the eval dict (see report.py) for the accented subset, plus control WER."""
    system: dict[str, Any] = {"wer": {}, "cer": {}}
    for name, rows in rows_by_variant.items():
        main = [r for r in rows if r["subset"] != "control"]
        if not main:
            continue
        refs, hyps = [r["ref"] for r in main], [r["hyp"] for r in main]
        system["wer"][name] = _with_ci(corpus_wer(refs, hyps), main, n_boot)
        chars = per_utterance_errors(refs, hyps, unit="char")
        char_rows = [{**m, **c} for m, c in zip(main, chars)]
        system["cer"][name] = _with_ci(corpus_cer(refs, hyps), char_rows, n_boot)
    norm = rows_by_variant["norm"]
    main = [r for r in norm if r["subset"] != "control"]
    control = [r for r in norm if r["subset"] == "control"]
    system["breakdowns"] = {k: group_breakdown(main if k != "subset" else norm, k, n_boot=n_boot)
                            for k in ("speaker", "accent", "voice", "subset")}
    system["errors"] = error_analysis([r["ref"] for r in main], [r["hyp"] for r in main])
    system["particles"] = particle_stats([r["ref"] for r in main], [r["hyp"] for r in main])
    system["worst"] = worst_utterances(main, worst_n)
    if control:
        system["control"] = _with_ci(corpus_wer([r["ref"] for r in control], [r["hyp"] for r in control]),
                                     control, n_boot)
    return system


def paired(rows_a: list[dict], rows_b: list[dict], n_boot: int) -> dict:
    main_a = [r for r in rows_a if r["subset"] != "control"]
    main_b = [r for r in rows_b if r["subset"] != "control"]
    e = lambda rows: [r["sub"] + r["dele"] + r["ins"] for r in rows]  # noqa: E731
    res = paired_bootstrap(e(main_a), e(main_b), [r["n_ref"] for r in main_a], [r["speaker"] for r in main_a],
                           n_boot=n_boot)
    return {"metric": "wer (norm, accented set)", **res}


def forgetting_gate(base: dict, adapted: dict, max_rel: float) -> dict | None:
    if "control" not in base or "control" not in adapted:
        return None
    b, a = base["control"]["wer"], adapted["control"]["wer"]
    rel = (a - b) / b if b > 0 else (0.0 if a == 0 else float("inf"))
    return {"control_wer_base": b, "control_wer_adapted": a, "relative_degradation": rel,
            "max_relative_degradation": max_rel, "passed": bool(rel <= max_rel)}


def manifest_hash(ds) -> str:
    h = hashlib.sha256()
    for i, t in zip(ds["id"], ds["text"]):
        h.update(f"{i}\t{t}\n".encode())
    return h.hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_per_utterance(path: Path, rows_by_system: dict[str, dict[str, list[dict]]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["system", "id", "speaker", "accent", "subset", "voice", "ref", "hyp", "sub", "del", "ins", "n_ref"])
    for system, rows in rows_by_system.items():
        for r in rows["norm"]:
            w.writerow([system, r["id"], r["speaker"], r["accent"], r["subset"], r["voice"], r["ref"], r["hyp"],
                        r["sub"], r["dele"], r["ins"], r["n_ref"]])
    atomic_write_text(path, buf.getvalue())


def evaluate_systems(model, processor, ds, ecfg, out_dir: Path, info: dict, systems=("base", "adapted"),
                     encoder_cache: EncoderCache | None = None, progress: bool = True,
                     precomputed: dict[str, list[str]] | None = None) -> dict:
    """Transcribe `ds` with each system and write eval.json, per_utterance.csv, report.md/html.

    `systems`: "base" runs with adapters disabled (on a peft model) and "adapted" with them on.
    `precomputed` maps a system to hypotheses already made (e.g. the zero-shot pass before training).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = [{k: (ds[k][i] if k in ds.column_names else None) for k in META} for i in range(len(ds))]
    hyps_by_system, rows_by_system, scored = {}, {}, {}
    for system in systems:
        if precomputed and system in precomputed:
            hyps = precomputed[system]
        else:
            base = system == "base" and hasattr(model, "disable_adapter")
            with model.disable_adapter() if base else contextlib.nullcontext():
                hyps = transcribe_split(model, processor, ds, ecfg.beam_size, ecfg.batch_size, ecfg.max_new_tokens,
                                        encoder_cache, progress, f"decoding ({system})")
        hyps_by_system[system] = hyps
        rows_by_system[system] = utterance_rows(meta, hyps)
        scored[system] = score_system(rows_by_system[system], ecfg.n_bootstrap, ecfg.worst_n)
        log.info("%s: WER %.2f%% (norm, accented)", system, 100 * scored[system]["wer"]["norm"]["wer"])

    ev: dict[str, Any] = {
        "synthetic": bool(info.get("synthetic")),
        "corpus": info.get("corpus", {}),
        "normalizer_version": NORMALIZER_VERSION,
        "model": info.get("model", {}),
        "headline": "norm",
        "split": info.get("split"),
        "beam_size": ecfg.beam_size,
        "manifest_hash": manifest_hash(ds),
        "n_utterances": len(ds),
        "systems": scored,
        "data": info.get("data", {}),
    }
    if "base" in scored and "adapted" in scored:
        ev["paired"] = paired(rows_by_system["base"]["norm"], rows_by_system["adapted"]["norm"], ecfg.n_bootstrap)
        gate = forgetting_gate(scored["base"], scored["adapted"], ecfg.max_control_degradation)
        if gate:
            ev["forgetting"] = gate
    atomic_write_text(out_dir / "eval.json", json.dumps(ev, indent=2, default=float))
    write_per_utterance(out_dir / "per_utterance.csv", rows_by_system)
    atomic_write_text(out_dir / "hypotheses.json", json.dumps(hyps_by_system, indent=1, ensure_ascii=False))
    write_report(ev, out_dir)
    return ev


def headline(ev: dict, system: str) -> dict:
    s = ev["systems"][system]
    w = s["wer"]["norm"]
    out = {"wer": w["wer"], "ci_low": w["ci_low"], "ci_high": w["ci_high"],
           "wer_no_particles": s["wer"]["norm_no_particles"]["wer"], "wer_raw": s["wer"]["raw"]["wer"]}
    if "control" in s:
        out["control_wer"] = s["control"]["wer"]
        out["control_ci"] = [s["control"]["ci_low"], s["control"]["ci_high"]]
    return out


def relative_reduction(before: float, after: float) -> float:
    return float((before - after) / before) if before > 0 else float("nan")

