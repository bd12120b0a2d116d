"""A training run SIGKILLed at various moments resumes from its last complete checkpoint and ends
with the same adapter, bit for bit, as a run that was never interrupted (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_e2e import make_corpus

from asr_lora.training.checkpoints import COMPLETE, last_complete_checkpoint

RUNNER = """
import sys
from hydra import compose, initialize_config_dir
from asr_lora.config import CONF_DIR
from asr_lora.training.job import train
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[1:])
train(cfg)
"""


def overrides(tmp, model_dir, manifest, run, *extra):
    return [f"model.name_or_path={model_dir}", "data=jsonl", f"data.path={manifest}",
            f"paths.cache_dir={tmp / 'cache'}", f"run_dir={run}", "logger=none", "export.enabled=false",
            "lora.scope=[decoder_self,decoder_cross]", "lora.r=4", "lora.alpha=8", "train.max_steps=8",
            "train.save_steps=2", "train.eval_steps=2", "train.logging_steps=1", "train.save_total_limit=10",
            "train.per_device_train_batch_size=2", "train.warmup_steps=0", "eval.before_training=false",
            "eval.n_bootstrap=20", "eval.max_new_tokens=6", "train.early_stopping_patience=null", *extra]


def start(tmp, args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen([sys.executable, "-c", RUNNER, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(pred, proc, timeout=300):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early (rc={proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def adapter(run):
    return load_file(run / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, tiny_whisper_dir):
    manifest = make_corpus(tmp_path / "corpus")
    ref_run = tmp_path / "ref"
    ref = start(tmp_path, overrides(tmp_path, tiny_whisper_dir, manifest, ref_run))
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-3000:]
    expected = adapter(ref_run)

    run = tmp_path / "killed"
    ckpts = run / "checkpoints"
    kill_points = [
        # mid-checkpoint-write: the directory exists, its completion marker does not yet
        lambda: (ckpts / "checkpoint-2").is_dir(),
        # mid-step, right after a complete checkpoint
        lambda: (ckpts / "checkpoint-4" / COMPLETE).is_file(),
        # mid-evaluation/save of step 6 onwards
        lambda: (ckpts / "checkpoint-6").is_dir(),
    ]
    args = overrides(tmp_path, tiny_whisper_dir, manifest, run)
    killed_at = []
    for i, point in enumerate(kill_points):
        # a requeued job: the same command every time, from step 0 while no checkpoint is complete
        proc = start(tmp_path, args + ["train.resume=auto"])
        wait_for(point, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(last_complete_checkpoint(ckpts))
    # whatever was half written, resume only trusts complete checkpoints
    for c in ckpts.glob("checkpoint-*"):
        if str(c) != killed_at[-1] and not (c / COMPLETE).exists():
            assert last_complete_checkpoint(ckpts) != str(c)
    final = start(tmp_path, args + ["train.resume=true"])
    assert final.wait(timeout=600) == 0, final.stderr.read()[-3000:]
    got = adapter(run)
    assert set(got) == set(expected)
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    # The final adapter is the best checkpoint by dev WER; the last step's weights match too.
    last = "checkpoints/checkpoint-8/adapter_model.safetensors"
    want, got = load_file(ref_run / last), load_file(run / last)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert json.loads((ckpts / "last_checkpoint.json").read_text())["step"] == 8


def test_half_written_checkpoint_is_never_picked(tmp_path):
    good = tmp_path / "checkpoint-2"
    good.mkdir()
    (good / "adapter_model.safetensors").write_bytes(b"x" * 10)
    (good / COMPLETE).write_text(json.dumps({"step": 2, "files": {"adapter_model.safetensors": 10}}))
    half = tmp_path / "checkpoint-4"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"x" * 3)
    assert last_complete_checkpoint(tmp_path) == str(good)
    # a marker whose files were later damaged is not trusted either
    (half / COMPLETE).write_text(json.dumps({"step": 4, "files": {"adapter_model.safetensors": 10}}))
    assert last_complete_checkpoint(tmp_path) == str(good)


def _complete(ckpt, step: int):
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"x" * 10)
    (ckpt / COMPLETE).write_text(json.dumps({"step": step, "files": {"adapter_model.safetensors": 10}}))
    return ckpt


def test_resume_continues_the_checkpoint_the_last_training_wrote_not_the_highest_step(tmp_path):
    from asr_lora.training.checkpoints import resume_point

    _complete(tmp_path / "checkpoint-4", 4)  # an earlier training's
    latest = _complete(tmp_path / "checkpoint-2", 2)
    (tmp_path / "last_checkpoint.json").write_text(json.dumps({"checkpoint": "checkpoint-2", "step": 2}))
    assert resume_point("true", tmp_path) == str(latest)
    (tmp_path / "last_checkpoint.json").write_text(json.dumps({"checkpoint": "../elsewhere", "step": 9}))
    assert resume_point("true", tmp_path) == str(tmp_path / "checkpoint-4")  # a name outside the folder: by step


def test_a_run_from_step_0_clears_an_earlier_trainings_checkpoints(tmp_path, caplog):
    from asr_lora.training.checkpoints import resume_point

    _complete(tmp_path / "checkpoint-4", 4)
    (tmp_path / "checkpoint-6").mkdir()  # half-written
    (tmp_path / "last_checkpoint.json").write_text(json.dumps({"checkpoint": "checkpoint-4", "step": 4}))
    with caplog.at_level("WARNING", logger="asr_lora"):
        assert resume_point("false", tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert any("removing 2 checkpoints of an earlier training" in m for m in caplog.messages)
    (tmp_path / "checkpoint-3").mkdir()  # auto with nothing complete to continue: also from step 0
    assert resume_point("auto", tmp_path) is None and not (tmp_path / "checkpoint-3").exists()


def test_a_run_into_an_old_run_dir_records_its_config_and_names_what_a_resume_changed(tmp_path, caplog):
    from omegaconf import OmegaConf

    from asr_lora.training.checkpoints import record_config

    old = OmegaConf.create({"seed": 1, "lora": {"alpha": 8, "r": 4}, "train": {"max_steps": 2, "resume": False},
                            "eval": {"beam_size": 1}})
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(old, tmp_path / ".hydra" / "config.yaml")
    _complete(tmp_path / "checkpoints" / "checkpoint-2", 2)
    new = OmegaConf.merge(old, {"seed": 7, "lora": {"alpha": 64}, "train": {"max_steps": 4, "resume": True},
                                "eval": {"beam_size": 5}})
    with caplog.at_level("WARNING", logger="asr_lora"):
        record_config(new, tmp_path, "true", tmp_path / "checkpoints")
    (warning,) = [m for m in caplog.messages if "settings changed" in m]
    assert "2 settings changed" in warning and "lora.alpha: 8 -> 64" in warning and "seed: 1 -> 7" in warning
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml") == new  # what export reads: beam 5
    caplog.clear()
    with caplog.at_level("WARNING", logger="asr_lora"):
        record_config(old, tmp_path, "false", tmp_path / "checkpoints")  # from step 0: nothing continues
    assert not caplog.messages and OmegaConf.load(tmp_path / ".hydra" / "config.yaml") == old
