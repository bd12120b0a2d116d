"""Compare training runs side by side: `python -m asr_lora.compare RUN_DIR... [--out DIR]`.

Arguments are run directories (holding `metrics.json`, written by `tracking.write_metrics`) or
any folder above them, e.g. a Hydra multirun directory: it is searched recursively. Each run
contributes one row built from `metrics.json` plus, when present, `.hydra/overrides.yaml` (what
was changed on the command line) and `.hydra/config.yaml` (fills settings metrics.json lacks).
A run whose metrics.json has no dev WER but which logged to wandb offline gets it from the run
file through `tracking.read_offline_run`.

Writes `compare.md`, `compare.csv`, `compare.json`, `compare_wer.png` (WER with 95% CI per run,
zero-shot base marked) and `compare_params.png` (WER against trainable parameters, log x) into
`--out`, and prints the markdown table. The WER is each run's scored split (its lead part when it
has parts), which the "scored on" column names.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas by default

from asr_lora.core.io import JsonFileError, read_json, write_bytes
from asr_lora.core.logs import setup_logging
from asr_lora.evaluation.report import number, pct, png_bytes, render_markdown_table

log = logging.getLogger(__name__)



COLUMNS = ["run", "overrides", "r", "alpha", "targets", "scope", "mode", "trainable params", "adapter size",
           "steps x batch", "train time", "dev WER", "scored on", "WER [95% CI]", "base WER", "control WER",
           "rel. reduction"]


CSV_FIELDS = ["run", "run_dir", "recipe", "overrides", "r", "alpha", "targets", "scope", "mode", "trainable_params",
              "total_params", "adapter_bytes", "train_seconds", "train_steps", "dev_wer", "scored_on", "test_wer",
              "test_ci_low",
              "test_ci_high", "base_wer", "base_ci_low", "base_ci_high", "control_wer", "base_control_wer",
              "relative_reduction"]


SORT_KEYS = {"wer": "test_wer", "params": "trainable_params", "time": "train_seconds", "run": "run",
             "reduction": "relative_reduction"}


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (those holding metrics.json) at or below each path, each once, in path order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run directory")
        if (p / "metrics.json").is_file():
            hits = [p]
        elif p.is_file() and p.name == "metrics.json":
            hits = [p.parent]
        else:
            hits = sorted({m.parent for m in p.rglob("metrics.json")}, key=_natural_key)
            if failed := sorted({h.parent for h in p.rglob(".hydra")} - set(hits), key=_natural_key):  # a sweep's
                log.warning("%s: %d runs left out, with no metrics.json (failed or unfinished): %s", p, len(failed),
                            ", ".join(str(f.relative_to(p)) for f in failed))
        if not hits:  # a run named on the command line is never left out without a word
            raise FileNotFoundError(f"{p}: no metrics.json there or below it (a run that has not finished?)")
        for h in hits:
            if h.resolve() not in {f.resolve() for f in found}:
                found.append(h)
    return found


def _natural_key(p: Path) -> list:
    # multirun job dirs are "0_...", "1_...", "10_...": order them numerically
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # a broken config must not hide the run's metrics
        log.warning("%s: unreadable (%s)", path, e)
        return None


def load_run(run_dir: Path) -> dict[str, Any]:
    """metrics.json + Hydra overrides/config of one run."""
    metrics = read_json(run_dir / "metrics.json", "run's metrics.json")
    return {
        "dir": run_dir,
        "metrics": metrics,
        "overrides": _read_yaml(run_dir / ".hydra" / "overrides.yaml") or [],
        "config": _read_yaml(run_dir / ".hydra" / "config.yaml") or {},
    }


def _dev_wer_from_wandb(run_dir: Path) -> float | None:
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    if not files:
        return None
    try:
        from asr_lora.core.tracking import read_offline_run

        logged = read_offline_run(files[-1])
    except Exception as e:  # wandb missing or a truncated file: the column stays empty
        log.warning("%s: cannot read wandb run (%s)", files[-1], e)
        return None
    wers = [number(row.get("eval/wer")) for row in logged["history"]]
    wers = [w for w in wers if w is not None]
    return min(wers) if wers else None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def run_row(run: dict[str, Any], label: str) -> dict[str, Any]:
    """One flat row (raw numbers, for csv/json) from a loaded run."""
    m, saved = run["metrics"], run["config"]
    params = m.get("params") or {}
    mode = params.get("mode") or _get(saved, "train", "mode")
    lora = m.get("lora") or (_get(saved, "lora") if mode != "full" else None) or {}
    if mode == "full" or not lora.get("enabled", True):
        lora = {}
    ev = m.get("eval") or {}
    adapted, base = ev.get("adapted") or {}, ev.get("base") or {}
    test_wer, base_wer = number(adapted.get("wer")), number(base.get("wer"))
    reduction = number(ev.get("relative_wer_reduction"))
    if reduction is None and test_wer is not None and base_wer:
        reduction = (base_wer - test_wer) / base_wer
    dev = number(_get(m, "train", "best_dev_wer"))
    if dev is None:
        dev = _dev_wer_from_wandb(run["dir"])
    overrides = [o for o in run["overrides"] if isinstance(o, str)]
    return {
        "run": label,
        "run_dir": str(run["dir"]),
        "recipe": m.get("recipe") or saved.get("recipe_name"),
        "overrides": " ".join(overrides),
        "r": lora.get("r"),
        # alpha: null in the config means the default 2r (lora.lora_alpha)
        "alpha": lora.get("alpha") if lora.get("alpha") is not None or lora.get("r") is None else 2 * lora["r"],
        "targets": ",".join(lora.get("target_modules") or []) or None,
        "scope": ",".join(lora.get("scope") or []) or None,
        "mode": mode,
        "trainable_params": _whole(params.get("trainable")),
        "total_params": _whole(params.get("total")),
        "adapter_bytes": _whole(m.get("adapter_bytes")),
        "train_seconds": number(_get(m, "train", "seconds")),
        "train_steps": _whole(_get(m, "train", "steps")),
        "batch": _get(saved, "train", "per_device_train_batch_size"),
        "dev_wer": dev,
        # The WER columns are the scored split's lead part when it has parts (metrics.json "eval"):
        # runs scored on different splits or parts are not comparable, and this column shows it.
        "scored_on": ", ".join(str(x).replace("_", " ") for x in (ev.get("split"), ev.get("part")) if x) or None,
        "test_wer": test_wer,
        "test_ci_low": number(adapted.get("ci_low")),
        "test_ci_high": number(adapted.get("ci_high")),
        "base_wer": base_wer,
        "base_ci_low": number(base.get("ci_low")),
        "base_ci_high": number(base.get("ci_high")),
        "control_wer": number(adapted.get("control_wer")),
        "base_control_wer": number(base.get("control_wer")),
        "relative_reduction": reduction,
    }


def run_labels(dirs: Sequence[Path]) -> list[str]:
    """Shortest distinguishing names: paths relative to the runs' common parent."""
    if len(dirs) == 1:
        return [_short(dirs[0].resolve().name)]
    resolved = [d.resolve() for d in dirs]
    parts = [p.parts for p in resolved]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    # Hydra names sweep jobs "<num>_<override_dirname>"; the overrides column already says the rest.
    return ["/".join(_short(x) for x in p[common:]) for p in parts]


def _short(part: str) -> str:
    num, _, rest = part.partition("_")
    return num if num.isdigit() and "=" in rest else part


def sort_rows(rows: list[dict], key: str = "wer") -> list[dict]:
    """Ascending by the chosen column; runs missing it go last, ties keep discovery order."""
    field = SORT_KEYS.get(key, key)

    def k(r: dict):
        v = r.get(field)
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        return (missing, 0 if missing else (-v if field == "relative_reduction" else v))

    return sorted(rows, key=k)


def collect(paths: Iterable[str | Path], sort: str = "wer") -> list[dict]:
    dirs = find_runs(paths)
    if not dirs:
        raise FileNotFoundError(f"no metrics.json under {list(map(str, paths))}")
    return sort_rows([run_row(load_run(d), lab) for d, lab in zip(dirs, run_labels(dirs))], sort)


def _whole(x: Any) -> int | None:
    # counts as numbers: a hand-edited "1.2M" is a blank cell, not a failed sort
    v = number(x)
    return None if v is None else int(v)


def _count(n: Any) -> str:
    return "" if n is None else f"{int(n):,}"


def _size(b: Any) -> str:
    if b is None:
        return ""
    return f"{b / 1e6:.2f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


def _secs(s: Any) -> str:
    return "" if s is None else f"{s:.1f} s"


def _wer_ci(r: dict) -> str:
    if r.get("test_wer") is None:
        return "n/a"
    lo, hi = r.get("test_ci_low"), r.get("test_ci_high")
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return pct(r["test_wer"]) + ci


def display_row(r: dict) -> dict[str, Any]:
    red = r.get("relative_reduction")
    return {
        "run": r["run"], "overrides": r["overrides"], "r": r["r"], "alpha": r["alpha"], "targets": r["targets"],
        "scope": r["scope"], "mode": r["mode"], "trainable params": _count(r["trainable_params"]),
        "adapter size": _size(r["adapter_bytes"]), "train time": _secs(r["train_seconds"]),
        "steps x batch": f"{r['train_steps']} x {r.get('batch')}" if r.get("train_steps") is not None else "",
        "dev WER": pct(r["dev_wer"]) if r["dev_wer"] is not None else "", "scored on": r.get("scored_on") or "",
        "WER [95% CI]": _wer_ci(r),
        "base WER": pct(r["base_wer"]) if r["base_wer"] is not None else "",
        "control WER": pct(r["control_wer"]) if r["control_wer"] is not None else "",
        "rel. reduction": "" if red is None else f"{100 * red:+.1f}%",
    }


def markdown_table(rows: Sequence[dict]) -> str:
    """The overrides column shows only what differs between the runs shown (the rest is common)."""
    shown = [display_row(r) for r in rows]
    if len(rows) > 1:
        sets = [set(r["overrides"].split()) for r in rows]
        common = set.intersection(*sets)
        for d, r in zip(shown, rows):
            d["overrides"] = " ".join(o for o in r["overrides"].split() if o not in common)
    return render_markdown_table(shown, COLUMNS)


def csv_text(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def _errs(rows: Sequence[dict]) -> tuple[list[float], list[list[float]]]:
    ys, lo, hi = [], [], []
    for r in rows:
        y = 100 * r["test_wer"]
        ys.append(y)
        lo.append(max(0.0, y - 100 * r["test_ci_low"]) if r.get("test_ci_low") is not None else 0.0)
        hi.append(max(0.0, 100 * r["test_ci_high"] - y) if r.get("test_ci_high") is not None else 0.0)
    return ys, [lo, hi]


def _base_line(ax, rows: Sequence[dict], xs: Sequence[float]) -> None:
    bases = [r.get("base_wer") for r in rows]
    known = [b for b in bases if b is not None]
    if not known:
        return
    if len({round(b, 9) for b in known}) == 1:  # one shared test set: one line
        ax.axhline(100 * known[0], color="#8c8c8c", ls="--", lw=1.2, label=f"base (zero-shot) {pct(known[0])}")
    else:
        pts = [(x, 100 * b) for x, b in zip(xs, bases) if b is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="_", s=400, color="#8c8c8c", zorder=3,
                   label="base (zero-shot)")


_SHORT = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "o", "encoder": "enc", "decoder_self": "dec",
          "decoder_cross": "x"}


def describe(r: dict) -> str:
    """A plot label that says what the run trained: "full 64x8" or "r8 qv enc+dec+x 64x8"."""
    steps = f" {r['train_steps']}x{r.get('batch')}" if r.get("train_steps") is not None else ""
    if r.get("mode") == "full":
        return "full FT" + steps
    targets = "".join(_SHORT.get(t, t) for t in (r.get("targets") or "").split(",") if t)
    scope = "+".join(_SHORT.get(t, t) for t in (r.get("scope") or "").split(",") if t)
    return f"r{r.get('r')} {targets} {scope}{steps}"


def plot_wer(rows: Sequence[dict]) -> bytes:
    rows = [r for r in rows if r.get("test_wer") is not None]
    fig = Figure(figsize=(max(5.0, 0.7 * len(rows) + 2.0), 3.8))
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    ys, err = _errs(rows)
    colors = ["#ff7f0e" if r.get("mode") == "full" else "#1f77b4" for r in rows]
    ax.bar(xs, ys, 0.6, yerr=err, capsize=3, color=colors)
    _base_line(ax, rows, xs)
    ax.set_xticks(xs, [describe(r) for r in rows], rotation=30 if len(rows) > 3 else 0, ha="right" if len(rows) > 3
                  else "center", fontsize=8)
    ax.set_ylabel("WER (%), scored split")
    scored = sorted({str(r["scored_on"]).split(",")[0] for r in rows if r.get("scored_on")}) or ["test"]
    ax.set_title(f"WER per run, {' / '.join(scored)} split (95% speaker-bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_params(rows: Sequence[dict]) -> bytes:
    rows = [r for r in rows if r.get("test_wer") is not None and r.get("trainable_params")]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    if rows:
        xs = [float(r["trainable_params"]) for r in rows]
        ys, err = _errs(rows)
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, color="#1f77b4")
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(describe(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        _base_line(ax, rows, xs)
        ax.set_xscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("WER (%), scored split")
    ax.set_title("WER vs trainable parameters")
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def write_outputs(rows: Sequence[dict], out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = "# Run comparison\n\n" + markdown_table(rows) + "\n"
    paths = {
        "md": write_bytes(out_dir / "compare.md", md.encode()),
        "csv": write_bytes(out_dir / "compare.csv", csv_text(rows).encode()),
        "json": write_bytes(out_dir / "compare.json", (json.dumps(list(rows), indent=2) + "\n").encode()),
        "wer_png": write_bytes(out_dir / "compare_wer.png", plot_wer(rows)),
        "params_png": write_bytes(out_dir / "compare_params.png", plot_params(rows)),
    }
    return paths


def default_out(paths: Sequence[str]) -> Path:
    """A single multirun/run directory gets the comparison inside it; several go to ./compare."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0])
    return Path("compare")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m asr_lora.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories or folders above them (e.g. a Hydra multirun dir)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: the single dir given, else ./compare)")
    ap.add_argument("--sort", default="wer", choices=sorted(SORT_KEYS), help="sort column (default: WER)")
    args = ap.parse_args(argv)
    setup_logging(None)
    try:
        rows = collect(args.runs, args.sort)
        out = args.out or default_out(args.runs)
        paths = write_outputs(rows, out)
    except (OSError, JsonFileError) as e:  # FileNotFoundError, and an --out that is a file or read-only
        print(f"compare: {e}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    print(f"\n{len(rows)} runs; wrote {', '.join(str(p) for p in paths.values())}")
    return 0
