"""Run tracking: wandb (offline unless the user logs in) through the Trainer's own integration,
plus the end-of-run summary, tables and artefacts the Trainer does not log. `metrics.json` in the
run directory carries the same summary for users without wandb.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from asr_lora.core.io import write_json

log = logging.getLogger(__name__)



def setup(logger, run_dir: Path, default_group: str) -> list[str]:
    """Configure wandb (`logger`: the logger config section) through its environment variables;
    returns the Trainer's `report_to`."""
    if logger.name == "none" or logger.wandb.mode == "disabled":
        os.environ["WANDB_DISABLED"] = "true"
        return []
    try:
        import wandb  # noqa: F401
    except ImportError:
        log.warning("wandb is not installed; logging to metrics.json only")
        return []
    w = logger.wandb
    os.environ.setdefault("WANDB_MODE", w.mode)
    os.environ["WANDB_DIR"] = str(run_dir)
    os.environ["WANDB_PROJECT"] = w.project
    os.environ.setdefault("WANDB_SILENT", "true")
    # Runs of one sweep share a group: the multirun directory, or the recipe for single runs.
    group = w.group or os.environ.get("ASR_LORA_WANDB_GROUP") or default_group
    os.environ["WANDB_RUN_GROUP"] = group
    os.environ["WANDB_LOG_MODEL"] = "false"  # the adapter goes up as our own artefact instead
    return ["wandb"]


def init_run(wandb_cfg, run_dir: Path, name: str, config: dict, report_to: list[str]):
    if "wandb" not in report_to:
        return None
    import wandb

    return wandb.init(
        project=wandb_cfg.project, group=os.environ.get("WANDB_RUN_GROUP"), dir=str(run_dir),
        name=name, config=config, tags=list(wandb_cfg.tags),
        mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous",
    )


def log_final(run, summary: dict[str, Any], ev: dict | None, run_dir: Path, artifacts: dict[str, Path],
              log_artifacts: bool = True) -> None:
    """Summary numbers, the base/adapted WER table, the worst utterances, report + adapter artefacts."""
    if run is None:
        return
    import wandb

    flat = {k: v for k, v in _flatten(summary).items() if isinstance(v, (int, float, str, bool))}
    run.summary.update(flat)
    run.log({f"final/{k}": v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if ev:
        table = wandb.Table(columns=["system", "wer", "ci_low", "ci_high", "wer_no_particles", "control_wer"])
        for name, s in ev["systems"].items():
            w = s["wer"]["norm"]
            table.add_data(name, w["wer"], w["ci_low"], w["ci_high"], s["wer"]["norm_no_particles"]["wer"],
                           s.get("control", {}).get("wer"))
        run.log({"wer_table": table})
        worst = ev["systems"].get("adapted", ev["systems"]["base"]).get("worst", [])
        wt = wandb.Table(columns=["id", "speaker", "ref", "hyp", "errors"])
        for r in worst:
            wt.add_data(r.get("id"), r.get("speaker"), r.get("ref"), r.get("hyp"), r.get("errors"))
        run.log({"worst_utterances": wt})
    if log_artifacts:
        for name, path in artifacts.items():
            if path and Path(path).exists():
                art = wandb.Artifact(name=artifact_name(run.name, name), type=name)
                (art.add_dir if Path(path).is_dir() else art.add_file)(str(path))
                run.log_artifact(art)
    run.finish()


def artifact_name(run_name: str, kind: str) -> str:
    """wandb accepts only [A-Za-z0-9_.-] in artefact names, but Hydra names sweep jobs after their
    overrides ("3_lora.scope=[encoder],lora.r=8"); keep the readable part, hash the rest."""
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{run_name}-{kind}")
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}-{kind}"
    return name


def write_metrics(run_dir: Path, summary: dict) -> Path:
    path = run_dir / "metrics.json"
    return write_json(path, summary, default=float)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def read_offline_run(run_file: str | Path) -> dict[str, Any]:
    """History rows and final summary of an offline `run-*.wandb` file, without syncing.

    wandb 0.2x+ writes no `wandb-summary.json` offline and ships no Python reader for its log
    (a LevelDB-style log of protobuf records), so this small reader is hand-written; tests and
    `compare` use it to check what a run logged.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{run_file}: not a wandb run file")
    block, off, buf = 32768, 7, b""
    history: list[dict] = []
    summary: dict[str, Any] = {}

    def value(item) -> Any:
        return json.loads(item.value_json)

    while off + 7 <= len(data):
        if block - off % block < 7:  # a block's tail too short for a header is padding
            off += block - off % block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, off)
        off += 7
        chunk, off = data[off : off + length], off + length
        if kind in (1, 2):  # full / first fragment
            buf = chunk
        elif kind in (3, 4):  # middle / last fragment
            buf += chunk
        else:
            continue
        if kind in (2, 3):
            continue
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(buf)
        which = rec.WhichOneof("record_type")
        if which == "history":
            history.append({(i.key or "/".join(i.nested_key)): value(i) for i in rec.history.item})
        elif which == "summary":
            for i in rec.summary.update:
                summary[i.key or "/".join(i.nested_key)] = value(i)
    return {"history": history, "summary": summary}
