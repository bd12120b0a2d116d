"""`python -m asr_lora.compare`: rows, sorting, csv/json and plots from fake run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from asr_lora.evaluation.comparison import collect, find_runs, main, markdown_table, sort_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, name: str, *, r: int | None, wer: float, trainable: int, seconds: float,
             mode: str = "lora", overrides: list[str] | None = None, base: float = 0.30,
             dev: float | None = 0.2) -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    lora = None if mode == "full" else {
        "enabled": True, "r": r, "alpha": 2 * r, "target_modules": ["q_proj", "v_proj"],
        "scope": ["decoder_self", "decoder_cross"]}
    metrics = {
        "recipe": "sg_english", "run_dir": str(d), "model": "bundled:tiny.en",
        "params": {"mode": mode, "trainable": trainable, "total": 37_858_560},
        "lora": lora,
        "train": {"steps": 10, "seconds": seconds, "best_dev_wer": dev},
        "adapter_bytes": 8 * trainable if mode == "lora" else 151_000_000,
        "eval": {"split": "test", "part": "neural",
                 "base": {"wer": base, "ci_low": base - 0.05, "ci_high": base + 0.05, "control_wer": 0.08},
                 "adapted": {"wer": wer, "ci_low": wer - 0.04, "ci_high": wer + 0.06, "control_wer": 0.09},
                 "relative_wer_reduction": (base - wer) / base},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    ov = overrides if overrides is not None else ["+recipe=sg_english", f"lora.r={r}"]
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
    (d / ".hydra" / "config.yaml").write_text(f"recipe_name: sg_english\ntrain:\n  mode: {mode}\n")
    return d


@pytest.fixture()
def multirun(tmp_path: Path) -> Path:
    root = tmp_path / "multirun_2026"
    fake_run(root, "0_lora.r=4", r=4, wer=0.25, trainable=49_152, seconds=60.0)
    fake_run(root, "1_lora.r=16", r=16, wer=0.20, trainable=196_608, seconds=75.5)
    fake_run(root, "2_lora=none,train=full", r=None, wer=0.22, trainable=37_858_560, seconds=300.0, mode="full",
             overrides=["+recipe=sg_english", "lora=none", "train=full"], dev=None)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    (root / "2_lora=none,train=full" / "wandb").mkdir()  # no run file: dev WER stays empty
    return root


def test_find_runs_recurses_into_multirun_and_dedupes(multirun):
    runs = find_runs([multirun, multirun / "0_lora.r=4"])
    assert [r.name for r in runs] == ["0_lora.r=4", "1_lora.r=16", "2_lora=none,train=full"]
    with pytest.raises(FileNotFoundError):
        find_runs([multirun / "nope"])


def test_a_sweep_job_that_crashed_is_named_not_left_out_silently(multirun, caplog):
    (multirun / "3_lora.r=64" / ".hydra").mkdir(parents=True)  # its config written, no metrics.json
    with caplog.at_level("WARNING"):
        runs = find_runs([multirun])
    assert len(runs) == 3
    assert "1 runs left out, with no metrics.json (failed or unfinished): 3_lora.r=64" in caplog.text


def test_rows_carry_every_column_and_sort_by_test_wer(multirun):
    rows = collect([multirun])
    assert [r["run"] for r in rows] == ["1", "2", "0"]  # 20% < 22% < 25%
    best = rows[0]
    assert best["r"] == 16 and best["alpha"] == 32 and best["targets"] == "q_proj,v_proj"
    assert best["scope"] == "decoder_self,decoder_cross" and best["mode"] == "lora"
    assert best["trainable_params"] == 196_608 and best["adapter_bytes"] == 8 * 196_608
    assert best["train_seconds"] == 75.5 and best["dev_wer"] == 0.2
    assert best["test_wer"] == 0.20 and best["test_ci_low"] == pytest.approx(0.16)
    assert best["control_wer"] == 0.09 and best["base_wer"] == 0.30
    assert best["relative_reduction"] == pytest.approx(1 / 3)
    assert best["overrides"] == "+recipe=sg_english lora.r=16"
    full = rows[1]
    assert full["mode"] == "full" and full["r"] is None and full["targets"] is None and full["dev_wer"] is None

    by_params = sort_rows(rows, "params")
    assert [r["trainable_params"] for r in by_params] == [49_152, 196_608, 37_858_560]
    by_red = sort_rows(rows, "reduction")
    assert by_red[0]["run"] == "1"  # biggest reduction first

    md = markdown_table(rows).splitlines()
    assert md[0].startswith("| run | overrides | r | alpha | targets | scope | mode | trainable params")
    assert len(md) == 2 + 3
    assert "| 196,608 |" in md[2] and "20.00% [16.0, 26.0]" in md[2] and "+33.3%" in md[2]
    assert "| test, neural | 20.00%" in md[2] and best["scored_on"] == "test, neural"  # what the WER columns score


def test_cli_writes_md_csv_json_and_valid_pngs(multirun, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([str(multirun), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 1 |" in printed and "3 runs" in printed
    for name in ("compare.md", "compare.csv", "compare.json", "compare_wer.png", "compare_params.png"):
        assert (out / name).is_file(), name
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["1", "2", "0"]
    assert float(rows[0]["test_wer"]) == 0.20 and rows[1]["r"] == "" and rows[2]["trainable_params"] == "49152"
    data = json.loads((out / "compare.json").read_text())
    assert len(data) == 3 and data[0]["test_ci_high"] == pytest.approx(0.26)
    for png in ("compare_wer.png", "compare_params.png"):
        blob = (out / png).read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 2000
        from PIL import Image

        with Image.open(out / png) as im:
            im.verify()
            assert im.size[0] > 200 and im.size[1] > 150


def test_cli_single_run_dir_defaults_out_to_it_and_missing_runs_fail(multirun, tmp_path):
    run = multirun / "0_lora.r=4"
    assert main([str(run)]) == 0
    assert (run / "compare.md").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2


def test_table_shows_only_the_overrides_that_differ(multirun):
    from asr_lora.evaluation.comparison import collect, markdown_table

    rows = collect([multirun])
    for r in rows:
        r["overrides"] = "+recipe=sg_english logger.wandb.group=g " + r["overrides"]
    table = markdown_table(rows)
    assert "+recipe=sg_english" not in table and "logger.wandb.group" not in table
    assert all(r["overrides"].startswith("+recipe=sg_english") for r in rows)  # raw rows keep everything


def test_plot_labels_say_what_each_run_trained():
    from asr_lora.evaluation.comparison import describe

    lora = {"mode": "lora", "r": 8, "targets": "q_proj,v_proj", "scope": "encoder,decoder_self,decoder_cross",
            "train_steps": 64, "batch": 8}
    assert describe(lora) == "r8 qv enc+dec+x 64x8"
    assert describe({"mode": "full", "train_steps": 64, "batch": 8}) == "full FT 64x8"


def test_a_named_run_without_metrics_or_with_broken_metrics_is_an_error_not_left_out(multirun, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / ".hydra").mkdir(parents=True)
    assert main([str(multirun / "0_lora.r=4"), str(unfinished), "--out", str(tmp_path / "o1")]) == 2
    assert f"{unfinished}: no metrics.json there or below it" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()  # nothing written for a partial comparison

    broken = fake_run(tmp_path, "broken", r=4, wer=0.2, trainable=1, seconds=1.0)
    (broken / "metrics.json").write_text('{"eval": ')
    assert main([str(broken), "--out", str(tmp_path / "o2")]) == 2
    assert f"{broken / 'metrics.json'}:1:10: not valid JSON" in capsys.readouterr().err
    (broken / "metrics.json").write_text("[1]")
    assert main([str(broken), "--out", str(tmp_path / "o2")]) == 2
    assert "a run's metrics.json must hold a JSON object, not array" in capsys.readouterr().err


def test_an_out_path_that_is_a_file_is_an_error_line(multirun, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main([str(multirun), "--out", str(taken)]) == 2
    assert str(taken) in capsys.readouterr().err


def test_counts_that_are_not_numbers_are_blank_cells_not_a_failed_sort(multirun, tmp_path, capsys):
    odd = fake_run(tmp_path / "runs", "odd", r=4, wer=0.2, trainable=1, seconds=1.0)
    m = json.loads((odd / "metrics.json").read_text())
    m["params"]["trainable"] = "1.2M"  # hand-edited
    (odd / "metrics.json").write_text(json.dumps(m))
    assert main([str(multirun), str(odd), "--sort", "params", "--out", str(tmp_path / "o")]) == 0
    rows = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert rows[-1]["run"].endswith("odd") and rows[-1]["trainable_params"] is None
