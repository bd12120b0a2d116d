"""Averaging adapters: the averaged adapter's merged weights are the mean of theirs."""

import json
from pathlib import Path

import pytest
import torch

from asr_lora.model.adapters import average_adapters, load_adapter
from asr_lora.model.whisper import load_whisper
from test_export import make_random_adapter


def merged_state(base_dir, adapter):
    model, _ = load_whisper(str(base_dir))
    return load_adapter(model, adapter).merge_and_unload().state_dict()


def test_average_is_the_mean_update_and_loads_as_an_adapter(tiny_whisper_dir, tmp_path):
    a = make_random_adapter(tiny_whisper_dir, tmp_path / "a", seed=1)
    b = make_random_adapter(tiny_whisper_dir, tmp_path / "b", seed=2)
    c = make_random_adapter(tiny_whisper_dir, tmp_path / "c", seed=3)
    out = average_adapters([a, b, c], tmp_path / "soup", weights=[0.5, 0.25, 0.25])
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["r"] == 12 and conf["lora_alpha"] == 12  # stacked factors: exact, not an SVD fit
    assert json.loads((out / "averaged_from.json").read_text())["weights"] == [0.5, 0.25, 0.25]
    sa, sb, sc, soup = (merged_state(tiny_whisper_dir, p) for p in (a, b, c, out))
    base = load_whisper(str(tiny_whisper_dir))[0].state_dict()
    changed = [k for k in soup if not torch.equal(soup[k], base[k])]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)
    for k in soup:
        torch.testing.assert_close(soup[k], 0.5 * sa[k] + 0.25 * sb[k] + 0.25 * sc[k], atol=1e-6, rtol=0)


def test_weights_are_those_of_a_weighted_mean_however_written(tiny_whisper_dir, tmp_path):
    a = make_random_adapter(tiny_whisper_dir, tmp_path / "a", seed=1)
    b = make_random_adapter(tiny_whisper_dir, tmp_path / "b", seed=2)
    out = average_adapters([a, b], tmp_path / "soup", weights=[3, 1])  # 0.75 and 0.25, not 3A + B
    assert json.loads((out / "averaged_from.json").read_text())["weights"] == [0.75, 0.25]
    sa, sb, soup = (merged_state(tiny_whisper_dir, p) for p in (a, b, out))
    for k in soup:
        torch.testing.assert_close(soup[k], 0.75 * sa[k] + 0.25 * sb[k], atol=1e-6, rtol=0)
    for bad in ([1, -1], [0, 0]):
        with pytest.raises(ValueError, match="a weighted mean needs weights >= 0"):
            average_adapters([a, b], tmp_path / "bad", weights=bad)


def test_rslora_adapters_average_to_their_mean_update_and_dora_is_refused(tiny_whisper_dir, tmp_path):
    a = make_random_adapter(tiny_whisper_dir, tmp_path / "a", seed=1, use_rslora=True)
    b = make_random_adapter(tiny_whisper_dir, tmp_path / "b", seed=2, use_rslora=True)
    out = average_adapters([a, b], tmp_path / "soup")
    sa, sb, soup = (merged_state(tiny_whisper_dir, p) for p in (a, b, out))
    for k in soup:
        torch.testing.assert_close(soup[k], 0.5 * sa[k] + 0.5 * sb[k], atol=1e-6, rtol=0)
    d = make_random_adapter(tiny_whisper_dir, tmp_path / "d", seed=3, use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        average_adapters([a, d], tmp_path / "soup2")


def test_the_script_writes_the_average(tiny_whisper_dir, tmp_path):
    import subprocess
    import sys

    a = make_random_adapter(tiny_whisper_dir, tmp_path / "a", seed=1)
    b = make_random_adapter(tiny_whisper_dir, tmp_path / "b", seed=2)
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_adapters.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "soup"), str(a), str(b)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "the mean update of 2 adapters" in done.stdout
    assert json.loads((tmp_path / "soup" / "averaged_from.json").read_text())["weights"] == [0.5, 0.5]
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), str(a)], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip() == "average_adapters: averaging needs at least two adapters, got 1"
    # OUT forgotten: the first adapter would be the output and be replaced by the others' mean
    before = (a / "adapter_model.safetensors").read_bytes()
    slip = subprocess.run([sys.executable, str(script), str(a), str(b), str(tmp_path / "soup")],
                          capture_output=True, text=True)
    assert slip.returncode != 0 and f"{a} already holds an adapter" in slip.stderr
    assert (a / "adapter_model.safetensors").read_bytes() == before
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "soup"), str(a), str(b), "--force"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    # OUT a run folder: replaced whole, it would lose its evaluation and checkpoints, --force or not
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    for extra in ([], ["--force"]):
        kept = subprocess.run([sys.executable, str(script), str(run), str(a), str(b), *extra],
                              capture_output=True, text=True)
        assert kept.returncode != 0 and f"{run} is a folder that holds no adapter (e.g. eval)" in kept.stderr
    assert sorted(p.name for p in run.iterdir()) == ["eval", "metrics.json"]


def test_average_refuses_other_layouts_and_a_single_adapter(tiny_whisper_dir, tmp_path):
    a = make_random_adapter(tiny_whisper_dir, tmp_path / "a", seed=1)
    other = make_random_adapter(tiny_whisper_dir, tmp_path / "other", seed=2)
    conf = json.loads((other / "adapter_config.json").read_text())
    conf["target_modules"] = ["q_proj"]
    (other / "adapter_config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="target modules"):
        average_adapters([a, other], tmp_path / "soup")
    with pytest.raises(ValueError, match="at least two"):
        average_adapters([a], tmp_path / "soup")
    with pytest.raises(ValueError, match="2 weights for 3"):
        average_adapters([a, a, a], tmp_path / "soup", weights=[1, 0])
    with pytest.raises(ValueError, match="the output is one of the adapters averaged"):
        average_adapters([a, other], a)
    (tmp_path / "run" / "eval").mkdir(parents=True)  # a run folder, replaced whole, would lose its evaluation
    with pytest.raises(ValueError, match=r"run is a folder that holds no adapter \(e\.g\. eval\)"):
        average_adapters([a, a], tmp_path / "run")
    assert (tmp_path / "run" / "eval").is_dir()
    assert not (tmp_path / "soup").exists()


def test_two_seeds_averaged_are_evaluated_and_exported_as_the_model_scored(tmp_path, tiny_whisper_dir):
    """The documented path: train under two seeds, average the adapters, evaluate the average, and
    export from that evaluation's run directory: the export holds bit for bit the weights scored."""
    from omegaconf import OmegaConf

    from asr_lora.evaluation.job import evaluate
    from asr_lora.export.job import main as export_main
    from asr_lora.training.job import train
    from test_train_e2e import tiny_cfg

    runs = []
    for seed in (1, 2):
        cfg = tiny_cfg(tmp_path / f"seed{seed}", tiny_whisper_dir, "logger=none", f"seed={seed}")
        train(cfg)
        runs.append(Path(cfg.run_dir) / "adapter")
    soup = average_adapters(runs, tmp_path / "soup")
    ev_dir = tmp_path / "eval_run"
    cfg = tiny_cfg(tmp_path / "ev", tiny_whisper_dir, "logger=none", f"adapter={soup}", f"run_dir={ev_dir}",
                   "export.formats=[adapter]", "export.force=true", "export.probe_size=2")
    evaluate(cfg)
    scored = json.loads((ev_dir / "eval" / "eval.json").read_text())["adapted_weights"]["sha256"]
    (ev_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, ev_dir / ".hydra" / "config.yaml")  # what Hydra writes for `python -m asr_lora.evaluate`
    summary = export_main(cfg)
    assert summary["verification"]["evaluated_weights"] == {"sha256": scored, "identical": True}
    from safetensors.torch import load_file

    shipped = load_file(ev_dir / "export" / "adapter" / "adapter_model.safetensors")
    assert shipped.keys() == (want := load_file(soup / "adapter_model.safetensors")).keys()
    assert all(torch.equal(shipped[k], want[k]) for k in want)


def test_export_refuses_an_evaluation_scored_at_another_strength(tmp_path, tiny_whisper_dir):
    from omegaconf import OmegaConf

    from asr_lora.export.job import run_adapter

    cfg = OmegaConf.create({"adapter": str(tmp_path / "soup"), "lora": {"scale": 0.5}})
    with pytest.raises(SystemExit, match="lora.scale=0.5"):
        run_adapter(tmp_path, cfg)
    with pytest.raises(FileNotFoundError, match="nothing to export"):
        run_adapter(tmp_path, OmegaConf.create({"adapter": None, "lora": {"scale": 1}}))
