"""Score systems on a split: transcribe, WER/CER three ways, speaker-bootstrap intervals, paired
base-vs-adapted comparison, forgetting gate, error analysis; write eval.json, per_utterance.csv
and the report.

"Base" and "adapted" come from one loaded peft model (`disable_adapter()` gives the base), so the
base is exactly the one the adapter was trained on. "Adapted" decodes with the adapter merged into
the weights (`model.lora.merged_in_place`): the weights a merged export holds, whose digest eval.json
records (`adapted_weights`) so the export can show it ships exactly what was scored. The accented
set (subset "main") carries the headline; the general-English control set (subset "control") feeds
the forgetting gate.

Engine leakage (FIELD_NOTES 13): a synthetic test set whose voices include engines the adapter was
trained on rewards learning those engines' sound. When the test set has an *unseen-engine* part
(voices of TTS engines no train voice uses, `data/voices.py`), every utterance is tagged with its
part ("unseen_engine", "seen_engine", "real" for recorded speech) and the headline (`headline`,
`ev["lead_part"]`, `ev["paired"]`) is the unseen-engine part; the forgetting gate is decided on
unseen-engine control speech pooled with the real control clips, each part on its own row.
Without such a part (real corpora, older synthetic corpora) everything is scored as before.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.core.io import write_text
from asr_lora.core.logs import progress as progress_bar
from asr_lora.data.features import log_mel
from asr_lora.data.text import NORMALIZER_VERSION, normalize
from asr_lora.data.voices import REAL_PART, voice_parts
from asr_lora.evaluation.metrics import bootstrap_ci, corpus_cer, corpus_wer, error_analysis, group_breakdown
from asr_lora.evaluation.metrics import paired_bootstrap, particle_stats, per_utterance_errors, worst_utterances
from asr_lora.evaluation.report import write_report
from asr_lora.inference.decode import decode_ids, generate_features, generate_kwargs
from asr_lora.model.encoder_cache import EncoderCache
from asr_lora.model.lora import merged_in_place, merged_weights_digest

log = logging.getLogger("asr_lora")



VARIANTS = {
    "raw": lambda s: " ".join(s.lower().split()),
    "norm": lambda s: normalize(s, particles=True),
    "norm_no_particles": lambda s: normalize(s, particles=False),
}


META = ("id", "speaker", "accent", "subset", "voice", "engine", "part", "text")


LEAD_PART = "unseen_engine"  # the part the headline comes from, when the test set has it


PART_ORDER = (LEAD_PART, "seen_engine", REAL_PART)


GATE_PARTS = (LEAD_PART, REAL_PART)  # control speech the forgetting gate is decided on


def row_parts(meta: list[dict]) -> list[str | None]:
    """Each row's part: its own "part" column, else its voice's part in voices.json; rows with no
    engine are "real". All None unless some row is unseen-engine (no engine held out, no parts)."""
    table = voice_parts()
    parts = [m.get("part") or table.get(m.get("voice") or "") for m in meta]
    if LEAD_PART not in parts:
        return [None] * len(meta)
    return [p or (REAL_PART if not m.get("engine") else None) for p, m in zip(parts, meta)]


@torch.no_grad()
def transcribe_split(model, processor, ds, beam_size: int = 1, batch_size: int = 16, max_new_tokens: int = 128,
                     encoder_cache: EncoderCache | None = None, progress: bool = True, description: str = "decoding"):
    """Hypotheses for every row of `ds`, batched; reuses cached encoder outputs when given."""

    model.eval()
    param = next(model.parameters())
    hyps: list[str] = []
    with progress_bar(f"{description} ({len(ds)} clips)", len(ds), progress) as advance:
        for start in range(0, len(ds), batch_size):
            batch = ds[start : start + batch_size]
            if encoder_cache is not None:
                hidden = encoder_cache.get(batch["id"]).to(param.device, param.dtype)
                ids = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                                     **generate_kwargs(model, beam_size, max_new_tokens))
            else:
                feats = log_mel(processor, [np.asarray(a, dtype=np.float32) for a in batch["audio"]])
                ids = generate_features(model, processor, feats, beam_size, max_new_tokens)
            hyps.extend(decode_ids(processor, ids))
            advance(len(batch["id"]))
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
    present = {r.get("part") for r in norm}
    if LEAD_PART in present:
        system["parts"] = {p: _score_part(rows_by_variant, p, n_boot) for p in PART_ORDER if p in present}
        gate = [r for r in control if r.get("part") in GATE_PARTS]
        if gate:
            system["gate_control"] = {**_with_ci(corpus_wer([r["ref"] for r in gate], [r["hyp"] for r in gate]),
                                                 gate, n_boot), "parts": [p for p in GATE_PARTS if p in present]}
    return system


def _score_part(rows_by_variant: dict[str, list[dict]], part: str, n_boot: int) -> dict:
    """One part's figures: accented WER (norm, with CI; raw and no-particle WER) and control WER."""
    sel = {name: [r for r in rows if r.get("part") == part] for name, rows in rows_by_variant.items()}
    main = [r for r in sel["norm"] if r["subset"] != "control"]
    control = [r for r in sel["norm"] if r["subset"] == "control"]
    out: dict[str, Any] = {"n_main": len(main), "n_control": len(control),
                           "engines": sorted({r["engine"] for r in sel["norm"] if r.get("engine")}),
                           "voices": sorted({r["voice"] for r in sel["norm"] if r.get("voice")})}
    if main:
        out["wer"] = _with_ci(corpus_wer([r["ref"] for r in main], [r["hyp"] for r in main]), main, n_boot)
        for name in ("raw", "norm_no_particles"):
            rows = [r for r in sel[name] if r["subset"] != "control"]
            out[f"wer_{name}"] = corpus_wer([r["ref"] for r in rows], [r["hyp"] for r in rows])["wer"]
    if control:
        out["control"] = _with_ci(corpus_wer([r["ref"] for r in control], [r["hyp"] for r in control]),
                                  control, n_boot)
    return out


def compare_parts(base: dict, adapted: dict) -> dict:
    """{part: base vs adapted WER and control WER, relative reduction / change} for every part."""
    out = {}
    for part, b in base.get("parts", {}).items():
        a = adapted.get("parts", {}).get(part, {})
        row: dict[str, Any] = {"n_main": b["n_main"], "n_control": b["n_control"], "engines": b["engines"],
                               "voices": b["voices"]}
        if "wer" in b and "wer" in a:
            row.update(wer_base=b["wer"]["wer"], wer_adapted=a["wer"]["wer"],
                       relative_wer_reduction=relative_reduction(b["wer"]["wer"], a["wer"]["wer"]))
        if "control" in b and "control" in a:
            row.update(control_wer_base=b["control"]["wer"], control_wer_adapted=a["control"]["wer"],
                       relative_control_degradation=_rel_change(b["control"]["wer"], a["control"]["wer"]))
        out[part] = row
    return out


def paired(rows_a: list[dict], rows_b: list[dict], n_boot: int, part: str | None = None) -> dict:
    """Paired bootstrap of accented-set WER, adapted vs base; on one part only when `part` is given."""
    main_a = [r for r in rows_a if r["subset"] != "control" and (part is None or r.get("part") == part)]
    main_b = [r for r in rows_b if r["subset"] != "control" and (part is None or r.get("part") == part)]
    e = lambda rows: [r["sub"] + r["dele"] + r["ins"] for r in rows]  # noqa: E731
    res = paired_bootstrap(e(main_a), e(main_b), [r["n_ref"] for r in main_a], [r["speaker"] for r in main_a],
                           n_boot=n_boot)
    where = f", {part.replace('_', ' ')}" if part else ""
    return {"metric": f"wer (norm, accented set{where})", **({"part": part} if part else {}), **res}


def _rel_change(b: float, a: float) -> float:
    return (a - b) / b if b > 0 else (0.0 if a == 0 else float("inf"))


def forgetting_gate(base: dict, adapted: dict, max_rel: float) -> dict | None:
    """Control WER may rise by at most `max_rel` (relative). With parts, decided on unseen-engine
    control pooled with real control clips (`GATE_PARTS`); every part gets a row in "rows"."""
    key = "gate_control" if "gate_control" in base and "gate_control" in adapted else "control"
    if key not in base or key not in adapted:
        return None
    b, a = base[key]["wer"], adapted[key]["wer"]
    rel = _rel_change(b, a)
    gate = {"control_wer_base": b, "control_wer_adapted": a, "relative_degradation": rel,
            "max_relative_degradation": max_rel, "passed": bool(rel <= max_rel),
            "decided_on": base[key].get("parts", ["all"])}
    rows = {}
    for part, pb in base.get("parts", {}).items():
        pa = adapted.get("parts", {}).get(part, {})
        if "control" in pb and "control" in pa:
            r = _rel_change(pb["control"]["wer"], pa["control"]["wer"])
            rows[part] = {"control_wer_base": pb["control"]["wer"], "control_wer_adapted": pa["control"]["wer"],
                          "relative_degradation": r, "n_utts": pb["n_control"], "decides": part in gate["decided_on"],
                          "within_limit": bool(r <= max_rel)}
    if rows:
        gate["rows"] = rows
    return gate


def manifest_hash(ds) -> str:
    h = hashlib.sha256()
    for i, t in zip(ds["id"], ds["text"]):
        h.update(f"{i}\t{t}\n".encode())
    return h.hexdigest()[:16]


def write_per_utterance(path: Path, rows_by_system: dict[str, dict[str, list[dict]]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["system", "id", "speaker", "accent", "subset", "voice", "ref", "hyp", "sub", "del", "ins", "n_ref",
                "engine", "part"])
    for system, rows in rows_by_system.items():
        for r in rows["norm"]:
            w.writerow([system, r["id"], r["speaker"], r["accent"], r["subset"], r["voice"], r["ref"], r["hyp"],
                        r["sub"], r["dele"], r["ins"], r["n_ref"], r.get("engine") or "", r.get("part") or ""])
    write_text(path, buf.getvalue())


def evaluate_systems(model, processor, ds, ecfg, out_dir: Path, info: dict, systems=("base", "adapted"),
                     encoder_cache: EncoderCache | None = None, progress: bool = True,
                     precomputed: dict[str, list[str]] | None = None) -> dict:
    """Transcribe `ds` with each system and write eval.json, per_utterance.csv, report.md/html.

    `systems`: "base" runs with adapters disabled (on a peft model) and "adapted" with them on.
    `precomputed` maps a system to hypotheses already made (e.g. the zero-shot pass before training).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = {k: ds[k] for k in META if k in ds.column_names}
    meta = [{k: (cols[k][i] if k in cols else None) for k in META} for i in range(len(ds))]
    for m, part in zip(meta, row_parts(meta)):
        m["part"] = part
    hyps_by_system, rows_by_system, scored, adapted_weights = {}, {}, {}, None
    for system in systems:
        if precomputed and system in precomputed:
            hyps = precomputed[system]
        else:
            if system == "base":
                ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
            else:
                ctx = merged_in_place(model)
            with ctx as merged:
                hyps = transcribe_split(model, processor, ds, ecfg.beam_size, ecfg.batch_size, ecfg.max_new_tokens,
                                        encoder_cache, progress, f"decoding ({system})")
                if system == "adapted" and merged:
                    adapted_weights = {"merged": True, "sha256": merged_weights_digest(model)}
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
        "adapted_weights": adapted_weights,
        "systems": scored,
        "data": info.get("data", {}),
    }
    # The unseen-engine part leads when it has accented speech (its control alone still gates).
    lead = LEAD_PART if scored.get("base", {}).get("parts", {}).get(LEAD_PART, {}).get("n_main") else None
    ev["lead_part"] = lead
    if "base" in scored and "adapted" in scored:
        rb, ra = rows_by_system["base"]["norm"], rows_by_system["adapted"]["norm"]
        if scored["base"].get("parts"):
            ev["parts"] = compare_parts(scored["base"], scored["adapted"])
        if lead:
            ev["lead"] = {"part": lead, **ev["parts"][lead]}
            ev["paired"] = paired(rb, ra, ecfg.n_bootstrap, part=lead)
            ev["paired_all"] = paired(rb, ra, ecfg.n_bootstrap)
        else:
            ev["paired"] = paired(rb, ra, ecfg.n_bootstrap)
        gate = forgetting_gate(scored["base"], scored["adapted"], ecfg.max_control_degradation)
        if gate:
            ev["forgetting"] = gate
    write_text(out_dir / "eval.json", json.dumps(ev, indent=2, default=float))
    write_per_utterance(out_dir / "per_utterance.csv", rows_by_system)
    # {"ids": row ids, system: hypotheses in that order}: the export reuses the adapted ones by id.
    write_text(out_dir / "hypotheses.json", json.dumps({"ids": [m["id"] for m in meta]} | hyps_by_system, indent=1,
                                                       ensure_ascii=False))
    write_report(ev, out_dir)
    return ev


def _figures(block: dict, wer_no_particles: float | None, wer_raw: float | None) -> dict:
    out: dict[str, Any] = {}
    if "wer" in block:
        w = block["wer"]
        out.update(wer=w["wer"], ci_low=w["ci_low"], ci_high=w["ci_high"], wer_no_particles=wer_no_particles,
                   wer_raw=wer_raw)
    if "control" in block:
        out["control_wer"] = block["control"]["wer"]
        out["control_ci"] = [block["control"]["ci_low"], block["control"]["ci_high"]]
    return out


def headline(ev: dict, system: str) -> dict:
    """The figures a run quotes for `system`: the lead (unseen-engine) part's accented WER with CI
    and control WER when the test set has one ("part" says which), else the whole set's. With
    parts, "by_part" holds every part's figures and "pooled" the whole set's."""
    s = ev["systems"][system]
    pooled = _figures({"wer": s["wer"]["norm"], **({"control": s["control"]} if "control" in s else {})},
                      s["wer"]["norm_no_particles"]["wer"], s["wer"]["raw"]["wer"])
    lead = ev.get("lead_part")
    if not lead or lead not in s.get("parts", {}):
        return pooled
    by_part = {p: _figures(b, b.get("wer_norm_no_particles"), b.get("wer_raw")) for p, b in s["parts"].items()}
    return {"part": lead, **by_part[lead], "by_part": by_part, "pooled": pooled}


def relative_reduction(before: float, after: float) -> float:
    return float((before - after) / before) if before > 0 else float("nan")


def eval_info(cfg, data_report: dict, adapter: str | None, split: str) -> dict:
    corpus = data_report.get("corpus") or {}
    synthetic = bool(cfg.data.synthetic or corpus.get("synthetic"))
    description = (
        "SYNTHETIC speech: Singapore English sentences written for this project, rendered offline by TTS "
        "voices (train: espeak-ng, flite, festival, piper; dev/test also SVOX Pico and MBROLA, engines no "
        "train voice uses, which the headline figures come from); real recorded speech only in the control "
        "set where pocketsphinx-testdata is installed." if synthetic else f"{cfg.data.source} corpus at {cfg.data.path}"
    )
    counts = data_report.get("counts", {})
    return {
        "synthetic": synthetic,
        "corpus": {"name": cfg.data.name, "description": description},
        "model": {"base": cfg.model.name_or_path, "adapter": adapter},
        "split": split,
        "data": {"kept": {s: sum(v.values()) for s, v in data_report.get("kept_per_split", {}).items()},
                 "dropped": counts.get("skipped_by_reason", {}),
                 "hours": data_report.get("hours_per_split", {})},
    }
