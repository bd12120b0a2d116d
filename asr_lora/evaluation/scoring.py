"""Score systems on a split: transcribe, WER/CER three ways, speaker-bootstrap intervals, paired
base-vs-adapted comparison, forgetting gate, error analysis; write eval.json, per_utterance.csv
and the report.

"Base" and "adapted" come from one loaded peft model (`disable_adapter()` gives the base), so the
base is exactly the one the adapter was trained on. "Adapted" decodes with the adapter merged into
the weights (`model.lora.merged_in_place`): the weights a merged export holds, whose digest eval.json
records (`adapted_weights`) so the export can show it ships exactly what was scored. The accented
set (subset "main") carries the headline; the general-English control set (subset "control") feeds
the forgetting gate.

Engine leakage: a synthetic test set whose voices include engines the adapter was trained on
rewards learning those engines' sound. When the test set has held-out parts (voices no train voice
shares an engine with, `data/synthetic/voices.py`), every utterance is tagged with its part
("neural", "unseen_engine", "seen_engine", "real" for recorded speech) and the headline
(`headline`, `ev["lead_part"]`, `ev["paired"]`) is the first held-out part present, neural before
unseen-engine; the forgetting gate is decided on that part's control speech pooled with the real
control clips, each part on its own row. Without parts (real corpora) everything is scored as one set.
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

from asr_lora.core.io import write_json, write_text
from asr_lora.core.logs import progress as progress_bar
from asr_lora.data.features import log_mel
from asr_lora.data.text import NORMALIZER_VERSION, normalize
from asr_lora.data.synthetic.voices import PART_ORDER, gate_parts, lead_part, parts_of_rows
from asr_lora.evaluation.metrics import bootstrap_ci, corpus_cer, corpus_wer, error_analysis, group_breakdown
from asr_lora.evaluation.metrics import paired_bootstrap, particle_stats, per_utterance_errors, worst_utterances
from asr_lora.evaluation.report import write_report
from asr_lora.evaluation.terms import Terms, paired_recall, term_recall
from asr_lora.inference.decode import DecodeOptions, decode_ids, generate_ids
from asr_lora.model.encoder_cache import EncoderCache
from asr_lora.model.lora import merged_in_place, merged_weights_digest

log = logging.getLogger("asr_lora")



VARIANTS = {
    "raw": lambda s: " ".join(s.lower().split()),
    "norm": lambda s: normalize(s, particles=True),
    "norm_no_particles": lambda s: normalize(s, particles=False),
}


META = ("id", "speaker", "accent", "subset", "voice", "engine", "part", "text")




def row_parts(meta: list[dict]) -> list[str | None]:
    """Each row's part (`voices.parts_of_rows`); all None unless some row is in a held-out part (no
    engine held out, no parts)."""
    parts = parts_of_rows([m.get("part") for m in meta], [m.get("voice") for m in meta],
                          [m.get("engine") for m in meta])
    return parts if lead_part(parts) else [None] * len(meta)


@torch.no_grad()
def transcribe_split(model, processor, ds, beam_size: int = 1, batch_size: int = 16, max_new_tokens: int = 128,
                     encoder_cache: EncoderCache | None = None, progress: bool = True, description: str = "decoding",
                     prompt: str | None = None):
    """Hypotheses for every row of `ds`, batched; reuses cached encoder outputs when given."""
    opts = DecodeOptions(beam_size=beam_size, max_new_tokens=max_new_tokens, prompt=prompt)
    hyps: list[str] = []
    with progress_bar(f"{description} ({len(ds)} clips)", len(ds), progress) as advance:
        for start in range(0, len(ds), batch_size):
            batch = ds[start : start + batch_size]
            if encoder_cache is not None:
                ids = generate_ids(model, processor, options=opts, encoder_hidden=encoder_cache.get(batch["id"]))
            else:
                feats = log_mel(processor, [np.asarray(a, dtype=np.float32) for a in batch["audio"]])
                ids = generate_ids(model, processor, feats, opts)
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


def score_system(rows_by_variant: dict[str, list[dict]], n_boot: int = 1000, worst_n: int = 15,
                 terms: Terms | None = None) -> dict:
    """SYSTEM block of the eval dict (see report.py) for the accented subset, plus control WER and,
    with `terms`, domain-term recall."""
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
    if terms is not None:
        system["terms"] = term_recall([r["ref"] for r in main], [r["hyp"] for r in main], terms)
    present = {r.get("part") for r in norm}
    if lead_part(present):
        system["parts"] = {p: _score_part(rows_by_variant, p, n_boot, terms) for p in PART_ORDER if p in present}
        gating = gate_parts(present)
        gate = [r for r in control if r.get("part") in gating]
        if gate:
            system["gate_control"] = {**_with_ci(corpus_wer([r["ref"] for r in gate], [r["hyp"] for r in gate]),
                                                 gate, n_boot), "parts": [p for p in gating if p in present]}
    return system


def _score_part(rows_by_variant: dict[str, list[dict]], part: str, n_boot: int, terms: Terms | None = None) -> dict:
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
    if terms is not None and main:
        out["terms"] = term_recall([r["ref"] for r in main], [r["hyp"] for r in main], terms)
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


def _accented(rows: list[dict], part: str | None) -> list[dict]:
    """The accented (non-control) rows, of one part only when `part` is given."""
    return [r for r in rows if r["subset"] != "control" and (part is None or r.get("part") == part)]


def paired(rows_a: list[dict], rows_b: list[dict], n_boot: int, part: str | None = None) -> dict:
    """Paired bootstrap of accented-set WER, adapted vs base; on one part only when `part` is given."""
    main_a, main_b = _accented(rows_a, part), _accented(rows_b, part)
    e = lambda rows: [r["sub"] + r["dele"] + r["ins"] for r in rows]  # noqa: E731
    res = paired_bootstrap(e(main_a), e(main_b), [r["n_ref"] for r in main_a], [r["speaker"] for r in main_a],
                           n_boot=n_boot)
    where = f", {part.replace('_', ' ')}" if part else ""
    return {"metric": f"wer (norm, accented set{where})", **({"part": part} if part else {}), **res}


def paired_terms(rows_by_system: dict[str, dict[str, list[dict]]], terms: Terms, part: str | None) -> dict:
    """Each adapted system's term recall against the prompt baseline's, occurrence by occurrence,
    on the accented rows of `part` (all rows when None)."""
    base = _accented(rows_by_system["prompt"]["norm"], part)
    refs = [r["ref"] for r in base]
    return {"part": part, "against": "prompt",
            "systems": {s: paired_recall(refs, [r["hyp"] for r in _accented(rows_by_system[s]["norm"], part)],
                                         [r["hyp"] for r in base], terms)
                        for s in ("adapted", "adapted_prompt") if s in rows_by_system}}


def _rel_change(b: float, a: float) -> float:
    return (a - b) / b if b > 0 else (0.0 if a == 0 else float("inf"))


def _within(rel: float, max_rel: float) -> bool:
    # WERs are ratios of word counts: 42/1000 against 40/1000 is exactly +5%, which floats put at
    # 0.050000000000000044; a change at the limit is within it.
    return rel <= max_rel + 1e-9


def forgetting_gate(base: dict, adapted: dict, max_rel: float) -> dict | None:
    """Control WER may rise by at most `max_rel` (relative). With parts, decided on unseen-engine
    control pooled with real control clips (`voices.gate_parts`); every part gets a row in "rows"."""
    key = "gate_control" if "gate_control" in base and "gate_control" in adapted else "control"
    if key not in base or key not in adapted:
        return None
    b, a = base[key]["wer"], adapted[key]["wer"]
    rel = _rel_change(b, a)
    gate = {"control_wer_base": b, "control_wer_adapted": a, "relative_degradation": rel,
            "max_relative_degradation": max_rel, "passed": _within(rel, max_rel),
            "decided_on": base[key].get("parts", ["all"])}
    rows = {}
    for part, pb in base.get("parts", {}).items():
        pa = adapted.get("parts", {}).get(part, {})
        if "control" in pb and "control" in pa:
            r = _rel_change(pb["control"]["wer"], pa["control"]["wer"])
            rows[part] = {"control_wer_base": pb["control"]["wer"], "control_wer_adapted": pa["control"]["wer"],
                          "relative_degradation": r, "n_utts": pb["n_control"],
                          "decides": gate["decided_on"] == ["all"] or part in gate["decided_on"],
                          "within_limit": _within(r, max_rel)}
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


SYSTEMS = {  # name -> (adapter on, decoded with the domain-term prompt)
    "base": (False, False), "prompt": (False, True), "adapted": (True, False), "adapted_prompt": (True, True)}


def eval_systems(ecfg, have_terms: bool, adapted: bool) -> tuple[str, ...]:
    """The systems an evaluation decodes: zero-shot, the term-prompt baseline when there are terms,
    and the adapted model (with the prompt too when `eval.adapted_prompt`)."""
    out = ["base"]
    if have_terms and ecfg.prompt_baseline:
        out.append("prompt")
    if adapted:
        out.append("adapted")
        if have_terms and ecfg.adapted_prompt:
            out.append("adapted_prompt")
    return tuple(out)


def decode_system(model, processor, ds, ecfg, system: str, terms: Terms | None = None,
                  encoder_cache: EncoderCache | None = None, progress: bool = True) -> tuple[list[str], str | None]:
    """(hypotheses, merged-weights digest or None) of one system: "base" and "prompt" with the
    adapters disabled, "adapted" and "adapted_prompt" with them merged in (`merged_in_place`);
    the "*prompt" systems take the domain terms as Whisper's prompt."""
    adapter_on, prompted = SYSTEMS[system]
    if prompted and (terms is None or not terms.prompt):
        raise ValueError(f"system {system!r} needs domain terms for its prompt (eval.terms or training text)")
    if not adapter_on:
        ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    else:
        ctx = merged_in_place(model)
    digest = None
    with ctx as merged:
        hyps = transcribe_split(model, processor, ds, ecfg.beam_size, ecfg.batch_size, ecfg.max_new_tokens,
                                encoder_cache, progress, f"decoding ({system.replace('_', ' + ')})",
                                prompt=terms.prompt if prompted else None)
        if adapter_on and merged:
            digest = merged_weights_digest(model)
    return hyps, digest


def evaluate_systems(model, processor, ds, ecfg, out_dir: Path, info: dict, systems=("base", "adapted"),
                     encoder_cache: EncoderCache | None = None, progress: bool = True,
                     precomputed: dict[str, list[str]] | None = None, terms: Terms | None = None) -> dict:
    """Transcribe `ds` with each system (`SYSTEMS`) and write eval.json, per_utterance.csv,
    report.md/html. `precomputed` maps a system to hypotheses already made (e.g. the zero-shot pass
    before training). With `terms`, every system gets domain-term recall beside WER.
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
            hyps, digest = decode_system(model, processor, ds, ecfg, system, terms, encoder_cache, progress)
            if system == "adapted" and digest:
                adapted_weights = {"merged": True, "sha256": digest}
        hyps_by_system[system] = hyps
        rows_by_system[system] = utterance_rows(meta, hyps)
        scored[system] = score_system(rows_by_system[system], ecfg.n_bootstrap, ecfg.worst_n, terms)
        recall = (scored[system].get("terms") or {}).get("recall")
        log.info("%s: WER %.2f%% (norm, accented)%s", system, 100 * scored[system]["wer"]["norm"]["wer"],
                 f", term recall {100 * recall:.1f}%" if recall is not None else "")

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
        "terms": terms.summary() if terms is not None else None,
    }
    # The first held-out part leads when it has accented speech (its control alone still gates).
    base_parts = scored.get("base", {}).get("parts", {})
    lead = lead_part([p for p, s in base_parts.items() if s.get("n_main")])
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
    if terms is not None and "prompt" in scored:
        ev["terms_paired"] = paired_terms(rows_by_system, terms, lead)
    write_json(out_dir / "eval.json", ev, default=float)
    if terms is not None:  # the scored terms, one a line: a data.terms / eval.terms file for the next run
        write_text(out_dir / "terms.txt", "".join(name + "\n" for name in terms.names))
    write_per_utterance(out_dir / "per_utterance.csv", rows_by_system)
    # {"ids": row ids, system: hypotheses in that order}: the export reuses the adapted ones by id.
    write_text(out_dir / "hypotheses.json", json.dumps({"ids": [m["id"] for m in meta]} | hyps_by_system, indent=1,
                                                       ensure_ascii=False))
    write_report(ev, out_dir)
    return ev


def relative_reduction(before: float, after: float) -> float:
    return float((before - after) / before) if before > 0 else float("nan")
