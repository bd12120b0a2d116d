"""Checkpoints a run can trust: marked complete once the Trainer has written them, found again by
`last_checkpoint.json`, and the earlier training's cleared when a run starts from step 0."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from asr_lora.core.io import write_json, write_text
from asr_lora.core.runtime import resume_mode

log = logging.getLogger(__name__)


COMPLETE = "checkpoint_complete.json"


class MarkCompleteCheckpoints(TrainerCallback):
    """The Trainer writes `checkpoint-N/` in place, so a kill mid-write leaves a directory that looks
    like a checkpoint. Once the Trainer reports the save done, flush it to disk and drop a marker
    listing its files; resume only ever trusts marked checkpoints, and `last_checkpoint.json` in
    the checkpoint folder names the newest one."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not ckpt.is_dir():
            return
        files = {}
        for f in sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != COMPLETE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[str(f.relative_to(ckpt))] = f.stat().st_size
        write_json(ckpt / COMPLETE, {"step": state.global_step, "files": files})
        write_json(Path(args.output_dir) / "last_checkpoint.json", {"checkpoint": ckpt.name,
                                                                       "step": state.global_step})


def checkpoint_is_complete(ckpt: Path) -> bool:
    marker = ckpt / COMPLETE
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((ckpt / f).is_file() and (ckpt / f).stat().st_size == n for f, n in files.items())


def last_complete_checkpoint(d: Path) -> str | None:
    """The checkpoint `last_checkpoint.json` names when it is intact, else the newest `checkpoint-N`
    whose marker and files are; half-written ones are ignored."""
    d = Path(d)
    if not d.is_dir():
        return None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        named = d / json.loads((d / "last_checkpoint.json").read_text())["checkpoint"]
        if named.parent == d and checkpoint_is_complete(named):
            return str(named)
    found = []
    for c in d.glob("checkpoint-*"):
        step = c.name.split("-")[-1]
        if c.is_dir() and step.isdigit() and checkpoint_is_complete(c):
            found.append((int(step), c))
    return str(max(found)[1]) if found else None


def trained_batches(ckpt: str | Path | None, accumulation_steps: int) -> int:
    """The training batches each process drew before a complete checkpoint (its marker's step count
    times the batches a step accumulates); 0 for a run from step 0."""
    return int(json.loads((Path(ckpt) / COMPLETE).read_text())["step"]) * accumulation_steps if ckpt else 0


def continued_checkpoint(resume, ckpt_dir: Path) -> str | None:
    """The checkpoint `train.resume` continues from in `ckpt_dir`, or None for a run from step 0
    (what `resume_point` starts and `record_config` compares settings against)."""
    return last_complete_checkpoint(ckpt_dir) if resume_mode(resume) != "false" else None


def check_resumable(resume, ckpt_dir: Path) -> None:
    """train.resume=true with no complete checkpoint to continue is refused (at a run's start too,
    not only after its data and zero-shot passes)."""
    if resume_mode(resume) == "true" and continued_checkpoint(resume, ckpt_dir) is None:
        raise FileNotFoundError(f"train.resume=true but no complete checkpoint under {ckpt_dir}; "
                                "pass run_dir=<old run>, or train.resume=auto to start when there is none")


def resume_point(resume, ckpt_dir: Path) -> str | None:
    """The checkpoint to continue from (train.resume), or None to train from step 0, clearing the
    folder's earlier checkpoints then."""
    if last := continued_checkpoint(resume, ckpt_dir):
        log.info("resuming from %s", last)
        return last
    check_resumable(resume, ckpt_dir)
    if resume_mode(resume) == "auto":
        log.info("train.resume=auto: no complete checkpoint under %s yet; training from step 0", ckpt_dir)
    _retire_checkpoints(ckpt_dir)
    return None


def _retire_checkpoints(ckpt_dir: Path) -> None:
    """A run that starts from step 0 in a folder holding an earlier training's checkpoints removes
    them: a later resume would continue that training, and the Trainer's rotation
    (save_total_limit) would delete this run's lower-numbered checkpoints before them."""
    import shutil

    from asr_lora.core.runtime import is_main_process

    old = sorted(Path(ckpt_dir).glob("checkpoint-*")) if Path(ckpt_dir).is_dir() else []
    if not old or not is_main_process():
        return
    log.warning("training from step 0: removing %d checkpoints of an earlier training in %s (%s)", len(old),
                ckpt_dir, ", ".join(p.name for p in old))
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    (Path(ckpt_dir) / "last_checkpoint.json").unlink(missing_ok=True)


# Settings a resume may change without changing what the checkpoints trained: where and how long
# it runs, and how it is scored and exported.
_RESUME_FREE = ("run_dir", "train.resume", "train.max_steps", "train.num_train_epochs", "paths.", "logger.",
                "quiet", "eval.", "export.", "hydra.")


def record_config(config, run_dir: Path, resume, ckpt_dir: Path) -> None:
    """Write the run's whole `config` as `run_dir/.hydra/config.yaml`, which `export` and `compare`
    read: Hydra writes it only into its own output folder, so a run given `run_dir=` (a resume, a
    retraining into an old run) would leave the earlier run's there. When the run will continue a
    checkpoint in `ckpt_dir`, the settings that differ from the ones it was trained under are logged."""
    from omegaconf import OmegaConf

    saved = Path(run_dir) / ".hydra" / "config.yaml"
    if continued_checkpoint(resume, ckpt_dir) and saved.is_file():
        before, now = _flat(OmegaConf.to_container(OmegaConf.load(saved))), _flat(OmegaConf.to_container(config))
        changed = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(before.keys() | now.keys())
                   if before.get(k) != now.get(k) and not k.startswith(_RESUME_FREE)]
        if changed:
            log.warning("resuming %s with %d settings changed since its checkpoints were trained (the rest of "
                        "training runs under the new ones): %s", run_dir, len(changed), "; ".join(changed))
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_text(saved, OmegaConf.to_yaml(config))


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
