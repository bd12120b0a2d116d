"""The main job's summary: `metrics.json` and the table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from asr_lora.core.io import dir_bytes
from asr_lora.data.synthetic.voices import PART_LABELS, PART_ORDER


def run_summary(recipe: str, run_dir: Path, model: str, params: dict, lora: dict | None, fitted, n_train: int,
                streaming: bool, synthetic: bool, ev: dict | None, split: str, exported: dict | None,
                wall_seconds: float) -> dict:
    """metrics.json: recipe, parameter counts, training (`fitted`: the job's trained run), evaluation
    of `split`, export, wall time."""
    trainer, args = fitted.trainer, fitted.trainer.args
    summary: dict = {
        "recipe": recipe, "run_dir": str(run_dir), "model": model, "params": params, "lora": lora,
        "train": {"steps": fitted.result.global_step, "train_loss": fitted.result.training_loss,
                  "seconds": round(fitted.seconds, 1), "train_utterances": n_train,
                  "streaming": streaming, "best_checkpoint": trainer.state.best_model_checkpoint,
                  "best_dev_wer": trainer.state.best_metric}
                 | ({"seeds": fitted.members} if fitted.members else {}),
        "adapter_bytes": dir_bytes(fitted.adapter_dir), "synthetic_data": synthetic,
        # What the Trainer actually ran (not only what was asked): process count and sharding engine.
        "distributed": {"world_size": args.world_size, "fsdp": bool(trainer.is_fsdp_enabled),
                        "deepspeed": bool(trainer.is_deepspeed_enabled)},
    }
    if ev is not None:
        summary["eval"] = eval_summary(ev, split)
    summary["export"] = exported
    summary["wall_seconds"] = round(wall_seconds, 1)
    return summary


def eval_summary(ev: dict, split: str) -> dict:
    """metrics.json's "eval": "base"/"adapted"/"relative_wer_reduction" are the lead part's (unseen
    TTS engine) when the test set has one, else the whole set's; "part" says which; "parts" has
    every part (base vs adapted), "base"/"adapted" carry "by_part" and "pooled"; "systems" and
    "terms" hold zero-shot, prompt baseline and adapted side by side."""
    from asr_lora.evaluation.scoring import relative_reduction
    from asr_lora.evaluation.summary import headline, systems_table

    b, a = headline(ev, "base"), headline(ev, "adapted")
    return {"split": split, "part": ev.get("lead_part"), "base": b, "adapted": a,
            "relative_wer_reduction": relative_reduction(b["wer"], a["wer"]), "parts": ev.get("parts"),
            "paired": ev.get("paired"), "forgetting": ev.get("forgetting"),
            "systems": systems_table(ev["systems"]), "terms": ev.get("terms"),
            "terms_paired": ev.get("terms_paired")}


def _ci(h: dict) -> str:
    return f"{100 * h['wer']:.2f}% [{100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"


def _summary_rows(ev: dict) -> list[tuple[str, str]]:
    """(label, value) rows of the eval: the lead part's figures first, then the other parts."""
    rows = []
    parts = ev.get("parts") or {}
    if ev.get("part") and parts:
        for part in [p for p in PART_ORDER if p in parts]:
            r, name = parts[part], PART_LABELS[part]
            for system in ("base", "adapted"):
                h = ev[system].get("by_part", {}).get(part, {})
                if "wer" in h:
                    rows.append((f"{system} WER ({name}, norm)", _ci(h)))
            if "relative_wer_reduction" in r:
                rows.append((f"relative WER reduction ({name})", f"{100 * r['relative_wer_reduction']:.1f}%"))
            for system in ("base", "adapted"):
                h = ev[system].get("by_part", {}).get(part, {})
                if "control_wer" in h:
                    rows.append((f"{system} control WER ({name})", f"{100 * h['control_wer']:.2f}%"))
        return rows
    for system in ("base", "adapted"):
        h = ev[system]
        rows.append((f"{system} WER ({ev.get('split') or 'test'}, norm)", _ci(h)))
        if "control_wer" in h:
            rows.append((f"{system} control WER", f"{100 * h['control_wer']:.2f}%"))
    rows.append(("relative WER reduction", f"{100 * ev['relative_wer_reduction']:.1f}%"))
    return rows


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"asr-lora: {summary.get('recipe')} ({summary.get('run_dir')})")
    t.add_column("")
    t.add_column("value", justify="right")
    p = summary.get("params", {})
    t.add_row("trainable params", f"{p.get('trainable', 0):,} / {p.get('total', 0):,}")
    saved = "adapter size" if summary.get("lora") else "saved model size"
    t.add_row(saved, f"{summary.get('adapter_bytes', 0) / 1e6:.2f} MB")
    tr = summary.get("train", {})
    t.add_row("train steps / time", f"{tr.get('steps')} / {tr.get('seconds')} s")
    ev = summary.get("eval")
    if ev and ev.get("terms"):
        from asr_lora.evaluation.summary import paired_terms_lines, systems_rows

        cols, rows = systems_rows(ev["systems"])
        st = Table(title="zero-shot, term-prompt baseline and adapted (norm WER, term recall)")
        for c in cols:
            st.add_column(c, justify="left" if c in ("part", "system") else "right")
        for r in rows:
            st.add_row(*r)
        Console().print(st)
        for line in paired_terms_lines(ev):
            Console().print(line)
    if ev:
        for label, value in _summary_rows(ev):
            t.add_row(label, value)
        if ev.get("forgetting"):
            f = ev["forgetting"]
            verdict = "PASS" if f["passed"] else "FAIL"
            on = "+".join(PART_LABELS.get(x, x) for x in f.get("decided_on", []))
            t.add_row(f"forgetting gate{f' ({on})' if on and on != 'all' else ''}",
                      f"{verdict} ({100 * f['relative_degradation']:+.1f}%)")
    exported = summary.get("export")
    if exported:
        t.add_row("export", "refused (export.force=true overrides)" if "refused" in exported
                  else f"failed ({exported['error'].split(':')[0]})" if "error" in exported
                  else str(Path(summary["run_dir"]) / "export"))
    if summary.get("synthetic_data"):
        t.add_row("data", "SYNTHETIC (TTS) corpus")
    t.add_row("wall time", f"{summary.get('wall_seconds')} s")
    Console().print(t)
    if any("forgetting gate" in f for f in (exported or {}).get("refused", [])):
        # One seed's control errors move by several words: the average of a few runs' adapters
        # holds control better than any one of them (recipes/RESULTS_sg_english.md).
        hint = ("" if (summary.get("train") or {}).get("seeds") else
                "Averaging the adapters of a few seeds (train.seeds=[42,1,2]) holds control speech better than "
                "one run. ")
        Console().print(f"The forgetting gate refused the export (see the report's control rows). {hint}"
                        "export.force=true exports anyway.")
