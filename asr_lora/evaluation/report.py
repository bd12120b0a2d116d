"""Render an evaluation as report.md, a self-contained report.html and PNG plots.

The ``eval`` dict (JSON-serialisable; rates are fractions, 0.12 = 12 %; missing numbers may be
None or nan and print as "n/a"; every section except ``systems.base`` is optional)::

    {
      "synthetic": bool,                    # True: a visible "Synthetic corpus" banner
      "corpus": {"name": str, "description": str},
      "normalizer_version": "sg-1",         # asr_lora.data.text.NORMALIZER_VERSION
      "model": {"base": str, "adapter": str | None, ...},   # any further str fields are listed
      "headline": "norm",                   # which variant the summary leads with (default "norm")
      "systems": {"base": SYSTEM, "adapted": SYSTEM},
      "lead_part": "neural" | "unseen_engine" | None,  # the part the headline comes from (voices.lead_part)
      "parts": {PART: {"n_main", "n_control", "engines", "voices", "wer_base", "wer_adapted",
                       "relative_wer_reduction", "control_wer_base", "control_wer_adapted",
                       "relative_control_degradation"}},   # PART = neural | unseen_engine | seen_engine | real
      "paired": {"metric": str, "delta": f, "low": f, "high": f,       # delta = adapted - base
                 "prob_improvement": f, "p_value": f},      # on the lead part when there is one
      "forgetting": {"control_wer_base": f, "control_wer_adapted": f,
                     "relative_degradation": f, "max_relative_degradation": f, "passed": bool,
                     "decided_on": [PART] | ["all"],
                     "rows": {PART: {"control_wer_base", "control_wer_adapted", "relative_degradation",
                                     "n_utts", "decides", "within_limit"}}},
      "data": {"kept": {split: int}, "dropped": {reason: int}, "hours": {split: float}},
    }
    SYSTEM = {
      "wer": {VARIANT: {"wer", "sub", "del", "ins", "hits", "n_ref_words", "ci_low", "ci_high"}},
      "cer": {VARIANT: {"cer", "sub", "del", "ins", "hits", "n_ref_chars", "ci_low", "ci_high"}},
      "breakdowns": {"speaker" | "accent" | "voice" | "subset":
                     {group: {"wer", "n_utts", "n_words", "ci_low", "ci_high"}}},
      "errors": {"substitutions": [[ref, hyp, n]], "deletions": [[word, n]], "insertions": [[word, n]]},
      "particles": {"recall", "precision", "n_ref", "n_hyp", "matched"},
      "worst": [{"id", "speaker", "ref", "hyp", "errors", "n_ref", "wer"}],
      "parts": {PART: {"n_main", "n_control", "engines", "voices", "wer": {...norm, CI}, "wer_raw",
                       "wer_norm_no_particles", "control": {"wer", "ci_low", "ci_high", ...}}},
    }
    VARIANT = "raw" (unnormalised) | "norm" (sg normaliser, particles kept) | "norm_no_particles"

The ``wer``/``cer`` entries are what `asr_lora.evaluation.metrics.corpus_wer` / `corpus_cer` return plus an
interval; breakdowns are `group_breakdown` output; errors, particles and worst come from
`error_analysis`, `particle_stats` and `worst_utterances`.

Both documents are rendered from one list of blocks so the markdown and HTML cannot disagree.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas by default

from asr_lora.core.io import write_bytes
from asr_lora.data.synthetic.voices import PART_LABELS
from asr_lora.evaluation.summary import SYSTEM_LABELS, number, pct, terms_blocks

SYSTEMS = ("base", "adapted")


VARIANTS = {"raw": "raw text", "norm": "normalised", "norm_no_particles": "normalised, particles removed"}


COLORS = {"base": "#8c8c8c", "adapted": "#1f77b4", "sub": "#d62728", "del": "#ff7f0e", "ins": "#9467bd"}


def pct_ci(d: dict, key: str = "wer") -> str:
    lo, hi = number(d.get("ci_low")), number(d.get("ci_high"))
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return pct(d.get(key)) + ci


def render_markdown_table(rows: Sequence[dict | Sequence], columns: Sequence[str]) -> str:
    """GitHub markdown table; rows are dicts keyed by column name or sequences in column order."""

    def cell(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        vals = [r.get(c) for c in columns] if isinstance(r, dict) else list(r)
        lines.append("| " + " | ".join(cell(v) for v in vals) + " |")
    return "\n".join(lines)


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


MAX_PLOT_GROUPS = 40


def _plot_groups(key: str, per_sys: dict[str, dict]) -> bytes:
    groups = sorted({g for b in per_sys.values() for g in b})
    title = f"WER by {key} (95% bootstrap CI)"
    if len(groups) > MAX_PLOT_GROUPS:  # hundreds of speakers make an unreadable plot; the table has all
        words = {g: max(b.get(g, {}).get("n_words") or 0 for b in per_sys.values()) for g in groups}
        groups = sorted(sorted(groups, key=lambda g: -words[g])[:MAX_PLOT_GROUPS])
        title = f"WER by {key}, {MAX_PLOT_GROUPS} largest (95% bootstrap CI)"
    fig = Figure(figsize=(max(5.0, 0.55 * len(groups) * len(per_sys) + 1.5), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(per_sys)
    for i, (name, b) in enumerate(per_sys.items()):
        xs = [j + (i - (len(per_sys) - 1) / 2) * width for j in range(len(groups))]
        ys, lo_err, hi_err = [], [], []
        for g in groups:
            d = b.get(g, {})
            y, lo, hi = number(d.get("wer")), number(d.get("ci_low")), number(d.get("ci_high"))
            y = 100 * (y or 0.0)
            ys.append(y)
            lo_err.append(max(0.0, y - 100 * lo) if lo is not None else 0.0)
            hi_err.append(max(0.0, 100 * hi - y) if hi is not None else 0.0)
        ax.bar(xs, ys, width, yerr=[lo_err, hi_err], capsize=3, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(groups)), groups, rotation=45 if len(groups) > 6 else 0, ha="right"
                  if len(groups) > 6 else "center")
    ax.set_ylabel("WER (%)")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def _plot_error_types(systems: dict[str, dict], variant: str) -> bytes:
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    names = list(systems)
    bottom = [0.0] * len(names)
    for kind, label in (("sub", "substitutions"), ("del", "deletions"), ("ins", "insertions")):
        vals = []
        for n in names:
            w = systems[n].get("wer", {}).get(variant, {})
            vals.append(100 * w.get(kind, 0) / w["n_ref_words"] if w.get("n_ref_words") else 0.0)
        ax.bar(names, vals, 0.5, bottom=bottom, label=label, color=COLORS[kind])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("errors per 100 reference words")
    ax.set_title(f"Error types ({VARIANTS.get(variant, variant)})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def _blocks(ev: dict, images: dict[str, bytes]) -> list[tuple]:
    systems = {n: ev["systems"][n] for n in SYSTEMS if n in ev.get("systems", {})}
    head = ev.get("headline", "norm")
    corpus = ev.get("corpus", {})
    b: list[tuple] = [("h", 1, f"ASR evaluation: {corpus.get('title') or corpus.get('name', 'unnamed corpus')}")]
    if ev.get("synthetic"):
        b.append(("banner", ("Synthetic corpus: TTS speech, not real speakers. These numbers show the "
                             "pipeline works; they are not a measure of real-world accuracy.")))
    if corpus.get("description"):
        b.append(("p", corpus["description"]))
    model = ev.get("model", {})
    ident = [(k, ", ".join(f"{name}={value}" for name, value in v.items()) if isinstance(v, dict) else v)
             for k, v in model.items()]
    ident += [("normaliser", ev.get("normalizer_version", "n/a")), ("synthetic", bool(ev.get("synthetic")))]
    b.append(("table", ["field", "value"], ident))

    b += terms_blocks(ev)
    b += _part_blocks(ev, systems)

    b.append(("h", 2, "Summary" + (" (all test speech pooled)" if ev.get("lead_part") else "")))
    cols = ["metric"] + [SYSTEM_LABELS.get(n, n) for n in systems] + (["delta"] if len(systems) == 2 else [])
    rows = []
    for kind in ("wer", "cer"):
        for v, label in VARIANTS.items():
            cells = [systems[n].get(kind, {}).get(v) for n in systems]
            if not any(cells):
                continue
            row = [f"{kind.upper()} ({label})"] + [pct_ci(c, kind) if c else "n/a" for c in cells]
            if len(cells) == 2:
                a, z = (number(c.get(kind)) if c else None for c in cells)
                row.append(f"{100 * (z - a):+.2f} pts" if a is not None and z is not None else "n/a")
            rows.append(row)
    b.append(("table", cols, rows))
    b.append(("p", ("Intervals are 95% percentile bootstrap intervals over speakers (a clip that names no speaker "
                    "counts as one of its own). Headline variant: "
                    f"{VARIANTS.get(head, head)}.")))

    if p := ev.get("paired"):
        hi, lo = number(p.get("high")), number(p.get("low"))
        verdict = ("adapted is better (interval below 0)" if hi is not None and hi < 0 else
                   "adapted is worse (interval above 0)" if lo is not None and lo > 0 else
                   "no clear difference (interval includes 0 or is unavailable)")
        b.append(("h", 2, "Adapted vs base (paired)"))
        b.append(("p", (f"Delta WER ({p.get('metric', head)}) = {_pts(p.get('delta'))} "
                        f"[{_pts(p.get('low'))}, {_pts(p.get('high'))}]: {verdict}. "
                        f"P(improvement) = {_fmt(p.get('prob_improvement'))}, "
                        f"bootstrap p = {_fmt(p.get('p_value'))}.")))

    if f := ev.get("forgetting"):
        verdict = "PASS" if f.get("passed") else "FAIL"
        b.append(("h", 2, f"Forgetting gate: {verdict}"))
        decided = [PART_LABELS.get(p, p) for p in f.get("decided_on", ["all"])]
        rows = [["decision: " + " + ".join(decided), pct(f.get("control_wer_base")),
                 pct(f.get("control_wer_adapted")), pct(f.get("relative_degradation"), 1),
                 pct(f.get("max_relative_degradation"), 1), verdict]]
        for part, r in f.get("rows", {}).items():
            role = "decides" if r.get("decides") else "not counted"
            rows.append([f"{PART_LABELS.get(part, part)} ({r.get('n_utts')} utts, {role})",
                         pct(r.get("control_wer_base")), pct(r.get("control_wer_adapted")),
                         pct(r.get("relative_degradation"), 1), pct(f.get("max_relative_degradation"), 1),
                         "within" if r.get("within_limit") else "over"])
        b.append(("table", ["control speech", "control WER base", "control WER adapted", "relative change",
                            "allowed", "result"], rows))

    b.append(("h", 2, "Error types"))
    b.append(("table", ["system", "substitutions", "deletions", "insertions", "hits", "reference words"],
              [[n, *(s.get("wer", {}).get(head, {}).get(k, "n/a") for k in ("sub", "del", "ins", "hits",
                                                                          "n_ref_words"))]
               for n, s in systems.items()]))
    b.append(("img", "error_types.png", images["error_types.png"]))

    keys = sorted({k for s in systems.values() for k in s.get("breakdowns", {})},
                  key=lambda k: (["subset", "accent", "voice", "speaker"] + [k]).index(k))
    for key in keys:
        per = {n: s.get("breakdowns", {}).get(key, {}) for n, s in systems.items()}
        groups = sorted({g for d in per.values() for g in d})
        b.append(("h", 2, f"WER by {key}"))
        rows = []
        for g in groups:
            first = next(d[g] for d in per.values() if g in d)
            rows.append([g, first.get("n_utts"), first.get("n_words")] +
                        [pct_ci(per[n][g]) if g in per[n] else "n/a" for n in systems])
        b.append(("table", [key, "utterances", "words"] + [SYSTEM_LABELS.get(n, n) for n in systems], rows))
        b.append(("img", f"wer_by_{key}.png", images[f"wer_by_{key}.png"]))

    if any("particles" in s for s in systems.values()):
        b.append(("h", 2, "Discourse particles (lah, lor, ...)"))
        b.append(("table", ["system", "recall", "precision", "in reference", "in hypothesis", "matched"],
                  [[n, pct(p.get("recall"), 1), pct(p.get("precision"), 1), p.get("n_ref"), p.get("n_hyp"),
                    p.get("matched")] for n, s in systems.items() if (p := s.get("particles"))]))

    for n, s in systems.items():
        e = s.get("errors")
        if not e:
            continue
        b.append(("h", 2, f"Most frequent errors: {n}"))
        b.append(("table", ["reference", "hypothesis", "count"], e.get("substitutions", [])[:15]))
        b.append(("table", ["deleted word", "count"], e.get("deletions", [])[:10]))
        b.append(("table", ["inserted word", "count"], e.get("insertions", [])[:10]))

    for n, s in systems.items():
        if s.get("worst"):
            b.append(("h", 2, f"Worst utterances: {n}"))
            b.append(("table", ["id", "speaker", "errors", "WER", "reference", "hypothesis"],
                      [[w.get("id"), w.get("speaker"), w.get("errors"), pct(w.get("wer"), 0), w.get("ref"),
                        w.get("hyp")] for w in s["worst"]]))

    if d := ev.get("data"):
        b.append(("h", 2, "Data"))
        splits = sorted(set(d.get("kept", {})) | set(d.get("hours", {})))
        b.append(("table", ["split", "utterances kept", "hours"],
                  [[sp, d.get("kept", {}).get(sp, 0), f"{d.get('hours', {}).get(sp, 0):.2f}"] for sp in splits]))
        if d.get("dropped"):
            b.append(("table", ["dropped because", "count"], sorted(d["dropped"].items())))
    return b


def _part_blocks(ev: dict, systems: dict[str, dict]) -> list[tuple]:
    """The lead table: WER per part (unseen engine first), Singapore English and control speech."""
    parts = [p for p in PART_LABELS if any(p in s.get("parts", {}) for s in systems.values())]
    if not parts:
        return []
    b: list[tuple] = [("h", 2, "Headline: speech from TTS engines held out of training")]
    cols = ["part", "speech", "utterances"] + list(systems) + (["relative reduction"] if len(systems) == 2 else [])
    rows = []
    for part in parts:
        blocks = [s.get("parts", {}).get(part, {}) for s in systems.values()]
        engines = ", ".join(blocks[0].get("engines", [])) or "none"
        for key, speech, n in (("wer", "Singapore English", "n_main"), ("control", "control (general English)",
                                                                        "n_control")):
            cells = [blk.get(key) for blk in blocks]
            if not any(cells):
                continue
            row = [f"{PART_LABELS[part]} ({engines})", speech, blocks[0].get(n)]
            row += [pct_ci(c) if c else "n/a" for c in cells]
            if len(cells) == 2:
                a, z = (number(c.get("wer")) if c else None for c in cells)
                row.append(f"{100 * (a - z) / a:.1f}%" if a and z is not None else "n/a")
            rows.append(row)
    b.append(("table", cols, rows))
    if ev.get("lead_part"):
        b.append(("p", ("The headline is the first row: voices of TTS engines no training voice uses, so a gain "
                        "there is adaptation to the accent, not to the training engines' sound (engine leakage). "
                        "Rows on the training engines are secondary; the forgetting gate is decided on unseen-engine "
                        "control speech plus real recorded speech.")))
    return b


def _pts(x: Any) -> str:
    v = number(x)
    return "n/a" if v is None else f"{100 * v:+.2f} pts"


def _fmt(x: Any) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:.3f}"


def _markdown(blocks: list[tuple]) -> str:
    out = []
    for blk in blocks:
        if blk[0] == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif blk[0] == "banner":
            out.append(f"> **{blk[1]}**")
        elif blk[0] == "p":
            out.append(blk[1])
        elif blk[0] == "table":
            if blk[2]:
                out.append(render_markdown_table(blk[2], blk[1]))
        elif blk[0] == "img":
            out.append(f"![{blk[1]}]({blk[1]})")
    return "\n\n".join(out) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
td{max-width:420px;overflow-wrap:anywhere}
img{max-width:100%;display:block;margin:.6em 0}
.banner{background:#fff3cd;border:2px solid #e0a800;color:#664d03;padding:.8em 1em;font-weight:600;
border-radius:6px}
.fail{color:#b00020}
"""


def _html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    out = [(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body>")]
    for blk in blocks:
        if blk[0] == "h":
            tag = f"h{blk[1]}"
            cls = ' class="fail"' if blk[2].endswith("FAIL") else ""
            out.append(f"<{tag}{cls}>{e(blk[2])}</{tag}>")
        elif blk[0] == "banner":
            out.append(f'<div class="banner">{e(blk[1])}</div>')
        elif blk[0] == "p":
            out.append(f"<p>{e(blk[1])}</p>")
        elif blk[0] == "table" and blk[2]:
            head = "".join(f"<th>{e(str(c))}</th>" for c in blk[1])
            body = "".join("<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in r) + "</tr>"
                           for r in blk[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif blk[0] == "img":
            data = base64.b64encode(blk[2]).decode("ascii")
            out.append(f'<img alt="{e(blk[1])}" src="data:image/png;base64,{data}">')
    out.append("</body></html>")
    return "\n".join(out)


def write_report(eval: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.html and the plots into ``out_dir``; returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    systems = {n: eval["systems"][n] for n in SYSTEMS if n in eval.get("systems", {})}
    if not systems:
        raise ValueError("eval['systems'] needs at least a 'base' entry")
    images = {"error_types.png": _plot_error_types(systems, eval.get("headline", "norm"))}
    for key in sorted({k for s in systems.values() for k in s.get("breakdowns", {})}):
        per = {n: s.get("breakdowns", {}).get(key, {}) for n, s in systems.items()}
        images[f"wer_by_{key}.png"] = _plot_groups(key, per)

    blocks = _blocks(eval, images)
    corpus = eval.get("corpus", {})
    title = f"ASR evaluation: {corpus.get('title') or corpus.get('name', '')}"
    written = {name: write_bytes(out_dir / name, data) for name, data in images.items()}
    written["report.md"] = write_bytes(out_dir / "report.md", _markdown(blocks).encode("utf-8"))
    written["report.html"] = write_bytes(out_dir / "report.html", _html(blocks, title).encode("utf-8"))
    return written
