"""What a run quotes from its eval dict: the headline figures of a system, the side-by-side table
of every system per part (WER, control WER, term recall), and the corpus description the report
and model card carry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from asr_lora.data.synthetic.voices import PART_LABELS, PART_ORDER
from asr_lora.model.adapters import adapter_sha256

SYSTEM_ORDER = ("base", "prompt", "adapted", "adapted_prompt")
SYSTEM_LABELS = {"base": "zero-shot", "prompt": "zero-shot + term prompt", "adapted": "adapted",
                 "adapted_prompt": "adapted + term prompt"}


def _recall(block: dict, key: str | None = None) -> float | None:
    t = block.get("terms") or {}
    return (t.get(key) or {}).get("recall") if key else t.get("recall")


def systems_table(scored: dict) -> dict:
    """{part or "all": {system: {wer, control_wer, term_recall, term_recall_seen, term_recall_unseen}}}
    for every scored system, parts in report order, "all" last."""
    def row(block: dict) -> dict:
        return {"wer": (block.get("wer") or {}).get("wer"), "control_wer": (block.get("control") or {}).get("wer"),
                "term_recall": _recall(block), "term_recall_seen": _recall(block, "seen"),
                "term_recall_unseen": _recall(block, "unseen")}

    systems = [s for s in SYSTEM_ORDER if s in scored] + [s for s in scored if s not in SYSTEM_ORDER]
    out: dict[str, dict] = {}
    parts = [p for p in PART_ORDER if any(p in scored[s].get("parts", {}) for s in systems)]
    for p in parts:
        out[p] = {s: row(scored[s]["parts"][p]) for s in systems if p in scored[s].get("parts", {})}
    out["all"] = {s: row({"wer": scored[s]["wer"]["norm"], **{k: scored[s][k] for k in ("control", "terms")
                                                                  if k in scored[s]}}) for s in systems}
    return out


def number(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def pct(x: Any, digits: int = 2) -> str:
    v = number(x)
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def systems_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of `systems_table` for the report and the console: one row per part and system."""
    cols = ["part", "system", "WER", "control WER", "term recall", "seen terms", "unseen terms"]
    rows = []
    for part, by_system in table.items():
        label = "all test speech" if part == "all" else PART_LABELS.get(part, part)
        for system, r in by_system.items():
            rows.append([label, SYSTEM_LABELS.get(system, system), pct(r["wer"]), pct(r["control_wer"]),
                         pct(r["term_recall"]), pct(r["term_recall_seen"]), pct(r["term_recall_unseen"])])
    return cols, rows


def terms_blocks(ev: dict) -> list[tuple]:
    """The lead table when domain terms are known: zero-shot, the term-prompt baseline and the
    adapted model side by side per part, with WER and term recall; then the most-missed terms."""
    terms = ev.get("terms")
    if not terms:
        return []
    cols, rows = systems_rows(systems_table(ev["systems"]))
    b: list[tuple] = [("h", 2, "Zero-shot, term-prompt baseline and adapted"), ("table", cols, rows)]
    b.append(("p", (f"Term recall: share of the {terms['n_terms']} domain terms' occurrences ({terms['source']}; "
                    f"{terms['n_seen_in_training']} occur in the training text, "
                    f"{terms['n_unseen_in_training']} do not) that the hypothesis of the same utterance contains. "
                    f"The prompt baseline is zero-shot Whisper given {terms['n_prompt_terms']} of the terms as its "
                    "prompt: no training at all, the alternative an adapter has to beat.")))
    b += [("p", line) for line in paired_terms_lines(ev)]
    for system in SYSTEM_ORDER:
        missed = ((ev["systems"].get(system) or {}).get("terms") or {}).get("most_missed")
        if missed:
            b.append(("p", f"Most-missed terms ({SYSTEM_LABELS[system]}): " + ", ".join(
                f"{m['term']} ({m['missed']}/{m['n']})" for m in missed)))
    return b


def paired_terms_lines(ev: dict) -> list[str]:
    """One sentence per adapted system: its term recall against the prompt baseline's, occurrence by
    occurrence (eval.json "terms_paired")."""
    tp = ev.get("terms_paired") or {}
    where = f" ({PART_LABELS.get(tp['part'], tp['part'])})" if tp.get("part") else ""
    out = []
    for system, r in (tp.get("systems") or {}).items():
        if not r.get("n"):
            continue
        out.append(f"{SYSTEM_LABELS.get(system, system)} against the prompt baseline{where}: "
                   f"{r['hits_a']} against {r['hits_b']} of {r['n']} term occurrences "
                   f"({100 * r['delta']:+.1f} points); it recalls {r['gained']} that the baseline misses and "
                   f"misses {r['lost']} that the baseline recalls (exact sign test p = {r['p_value']:.2g}).")
    return out


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


def describe_corpus(title: str, data_report: dict, synthetic: bool, where: str) -> str:
    """What the scored speech is, in one sentence, from the engines the data report counted."""
    if not synthetic:
        return f"{title}: {where}"
    engines = data_report.get("engines_per_split") or {}
    train = sorted(e for e in engines.get("train", {}) if e)
    held_out = sorted({e for s in ("dev", "test") for e in engines.get(s, {}) if e} - set(train))
    real = any(engines.get(s, {}).get("") for s in ("dev", "test"))
    text = f"SYNTHETIC speech: {title} sentences rendered offline by TTS voices"
    if train:
        text += f" (train: {', '.join(train)}"
        text += (f"; dev/test also {', '.join(held_out)}, engines no train voice uses)" if held_out else ")")
    return text + ("; real recorded speech only in the control set." if real else ".")


def eval_info(data, base: str, data_report: dict, adapter: str | None, split: str, scale: float = 1.0,
              lora: dict | None = None) -> dict:
    """The report's description of what was scored; `data` is the data config section, `scale` the
    multiplier this run applied to the adapter's update (lora.scale), `lora` the adapter's rank and
    alpha as scored (model/lora.adapter_strength), which hold any earlier scale too."""
    corpus = data_report.get("corpus") or {}
    synthetic = bool(data.synthetic or corpus.get("synthetic"))
    # A synthetic corpus of the user's text is named after its sentence file.
    title = data.title or (Path(data.sentences).stem if data.get("sentences") else data.name)
    description = describe_corpus(title, data_report, synthetic, f"{data.source} corpus at {data.path}")
    counts = data_report.get("counts", {})
    return {
        "synthetic": synthetic,
        "corpus": {"name": data.name, "title": title, "description": description},
        "model": ({"base": base, "adapter": adapter} | ({"scale": scale} if scale != 1 else {})
                  | ({"lora": lora} if lora else {})
                  # what the export checks the adapter it merges against: the file, not the run's word
                  | ({"adapter_sha256": digest} if adapter and (digest := adapter_sha256(adapter)) else {})),
        "split": split,
        "data": {"kept": {s: sum(v.values()) for s, v in data_report.get("kept_per_split", {}).items()},
                 "dropped": counts.get("skipped_by_reason", {}),
                 "hours": data_report.get("hours_per_split", {})},
    }
