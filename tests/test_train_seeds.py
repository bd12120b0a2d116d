"""train.seeds: one run trains the recipe under each seed, scores, saves and exports the average."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from asr_lora.model.adapters import average_adapters
from asr_lora.training.job import train
from asr_lora.training.seeds import check_seeds
from test_train_e2e import tiny_cfg


def tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(adapter_dir) / "adapter_model.safetensors")


def test_seeds_are_trained_as_their_own_runs_and_the_average_is_scored_and_exported(tmp_path, tiny_whisper_dir):
    cfg = tiny_cfg(tmp_path / "soup", tiny_whisper_dir, "logger=none", "train.seeds=[1,2]", "export.enabled=true",
                   "export.formats=[adapter]", "export.force=true", "export.probe_size=2")
    summary = train(cfg)
    run = Path(cfg.run_dir)
    members = [run / "seed1" / "adapter", run / "seed2" / "adapter"]
    assert [m["seed"] for m in summary["train"]["seeds"]] == [1, 2]
    assert all(m["steps"] == 4 for m in summary["train"]["seeds"]) and summary["train"]["steps"] == 8
    assert json.loads((run / "adapter" / "averaged_from.json").read_text())["adapters"] == [str(m) for m in members]

    # Each member is the adapter a run with that seed trains, bit for bit.
    alone = tiny_cfg(tmp_path / "alone", tiny_whisper_dir, "logger=none", "seed=2")
    train(alone)
    want, got = tensors(Path(alone.run_dir) / "adapter"), tensors(members[1])
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert not torch.equal(*(tensors(m)[next(iter(want))] for m in members))  # two seeds, two adapters

    # What the run scored and exported is the average of its members.
    soup = tensors(average_adapters(members, tmp_path / "again"))
    scored = tensors(run / "adapter")
    assert soup.keys() == scored.keys() and all(torch.equal(soup[k], scored[k]) for k in soup)
    assert json.loads((run / "eval" / "eval.json").read_text())["model"]["adapter"] == str(run / "adapter")
    shipped = tensors(run / "export" / "adapter")
    assert all(torch.equal(shipped[k], scored[k]) for k in scored)
    assert summary["export"]["verification"]["evaluated_weights"]["identical"]


def test_seeds_setting_is_checked():
    assert check_seeds([], "lora", False) == []
    assert check_seeds(OmegaConf.create([42, 1, 2]), "lora", False) == [42, 1, 2]
    for seeds in ([7], [1, 1], [1, "a"]):
        with pytest.raises(ValueError, match="two or more distinct integer seeds"):
            check_seeds(seeds, "lora", False)
    with pytest.raises(ValueError, match="train.mode=full"):
        check_seeds([1, 2], "full", False)
    for resume in (True, "auto"):
        with pytest.raises(ValueError, match="cannot be resumed"):
            check_seeds([1, 2], "lora", resume)
    assert check_seeds([1, 2], "lora", "false", OmegaConf.create({"use_dora": False})) == [1, 2]
    with pytest.raises(ValueError, match="use_dora"):
        check_seeds([1, 2], "lora", False, OmegaConf.create({"use_dora": True}))
