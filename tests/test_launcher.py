"""Hydra launcher presets: `hydra/launcher=slurm` composes to submitit's SLURM launcher, and a real
multirun through `hydra/launcher=local` (submitit on this machine, one subprocess per sweep point)
finishes with one complete run dir per value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_lora.config import CONF_DIR, REPO_ROOT

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")


def _hydra_cfg(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    out = subprocess.run([sys.executable, "-m", "asr_lora.train", "+recipe=sg_english", *overrides, "--cfg", "hydra"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return OmegaConf.to_container(OmegaConf.create(out.stdout))


def test_launcher_presets_exist():
    assert {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")} >= {"slurm", "local"}


@pytest.mark.parametrize("preset,target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_launcher_preset_composes_onto_submitit(preset, target):
    launcher = _hydra_cfg(f"hydra/launcher={preset}", "hydra.launcher.timeout_min=5")["hydra"]["launcher"]
    assert launcher["_target_"].endswith(target)
    assert launcher["timeout_min"] == 5 and launcher["tasks_per_node"] == 1
    if preset == "slurm":
        assert launcher["gpus_per_node"] == 1 and launcher["max_num_timeout"] >= 1


def _prepare(manifest: Path, model_dir: Path, cache: Path) -> None:
    # Sweep jobs start at the same moment; preparing the data once first keeps them from racing to
    # write the same prepared-data cache entry (see docs/SCALING.md).
    from hydra import compose, initialize_config_dir

    from asr_lora.data.splits import prepare_data
    from asr_lora.model.whisper import load_whisper

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=jsonl", f"data.path={manifest}"])
    _, processor = load_whisper(str(model_dir))
    prepare_data(cfg.data, processor.tokenizer, cache, progress=False)


# `python -m asr_lora.train` makes the Hydra task function live in `__main__`, which cloudpickle
# serialises by value (with train.py's globals) and submitit then fails with "cannot pickle
# 'ConfigModuleInstance'". Calling the same function imported from its module pickles it by reference.
BY_IMPORT = ["-c", "from asr_lora.train import main; main()"]
AS_MODULE = ["-m", "asr_lora.train"]


def _sweep(tmp_path: Path, model_dir: Path, entry: list[str]):
    from test_train_e2e import make_corpus

    manifest = make_corpus(tmp_path / "corpus")
    cache = tmp_path / "cache"
    _prepare(manifest, model_dir, cache)
    sweep = tmp_path / "sweep"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    tiny_whisper_dir = model_dir
    out = subprocess.run([
        sys.executable, *entry, "-m", "+recipe=sg_english", "hydra/launcher=local",
        # conf/config.yaml names sweep subdirs by override_dirname, which nests directories when an
        # override value is a path; number them instead.
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}", "hydra.launcher.timeout_min=15",
        f"model.name_or_path={tiny_whisper_dir}", "data=jsonl", f"data.path={manifest}", f"paths.cache_dir={cache}",
        "lora.r=2,4", "lora.alpha=8", "train.max_steps=2", "train.save_steps=2", "train.eval_steps=2",
        "train.logging_steps=1", "train.per_device_train_batch_size=4", "train.warmup_steps=0",
        "eval.before_training=false", "eval.n_bootstrap=20", "eval.max_new_tokens=4", "logger=none",
        "export.enabled=false",
    ], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return sweep, out


@pytest.mark.slow
def test_local_launcher_multirun_gives_one_run_dir_per_value(tmp_path, tiny_whisper_dir):
    sweep, out = _sweep(tmp_path, tiny_whisper_dir, BY_IMPORT)
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2, (sorted(p.name for p in sweep.iterdir()), out.stderr[-3000:])
    ranks = []
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        assert m["train"]["steps"] == 2 and (run / "adapter" / "adapter_model.safetensors").is_file()
        assert (run / ".hydra" / "overrides.yaml").is_file()
        ranks.append(m["lora"]["r"])
    assert sorted(ranks) == [2, 4]
    assert list((sweep / ".submitit").iterdir()), "submitit wrote no job folders"


def test_local_launcher_with_the_exact_module_command(tmp_path, tiny_whisper_dir):
    sweep, _ = _sweep(tmp_path, tiny_whisper_dir, AS_MODULE)
    assert len(list(sweep.glob("*/metrics.json"))) == 2
