"""bench/study_unseen.py's tables: WER per part / engine / subset summed from per_utterance.csv,
zero-shot -> adapted, and the part of a row taken from voices.json when scoring left it empty."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import study_unseen  # noqa: E402

HEADER = ["system", "id", "speaker", "accent", "subset", "voice", "ref", "hyp", "sub", "del", "ins", "n_ref",
          "engine", "part"]


def write_run(d: Path, rows: list[list]) -> None:
    (d / "eval").mkdir(parents=True)
    with open(d / "eval" / "per_utterance.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    (d / "metrics.json").write_text(json.dumps({"train": {"seconds": 12.0, "best_dev_wer": 0.2, "steps": 4},
                                                "params": {"trainable": 1}}))


def test_groups_sum_errors_over_words_per_part_engine_subset(tmp_path):
    d = tmp_path / "study" / "encdec"
    write_run(d, [
        # system, id, spk, acc, subset, voice, ref, hyp, sub, del, ins, n_ref, engine, part
        ["base", "a", "s", "x", "main", "pico-en-us", "r", "h", 2, 0, 0, 10, "pico", "unseen_engine"],
        ["base", "b", "s", "x", "main", "mbrola-us2", "r", "h", 1, 1, 0, 10, "mbrola", "unseen_engine"],
        ["adapted", "a", "s", "x", "main", "pico-en-us", "r", "h", 1, 0, 0, 10, "pico", "unseen_engine"],
        ["adapted", "b", "s", "x", "main", "mbrola-us2", "r", "h", 0, 0, 1, 10, "mbrola", "unseen_engine"],
        # scoring leaves "part" empty when a set has no unseen rows: voices.json fills it in
        ["adapted", "c", "s", "x", "control", "flite-kal16", "r", "h", 3, 0, 0, 6, "flite", ""],
    ])
    g = study_unseen.wer_groups(d)
    assert study_unseen.wer(g, "base", "unseen_engine", "*", "main") == 4 / 20
    assert study_unseen.wer(g, "adapted", "unseen_engine", "*", "main") == 2 / 20
    assert study_unseen.wer(g, "adapted", "unseen_engine", "pico", "main") == 1 / 10
    assert study_unseen.wer(g, "adapted", "seen_engine", "flite", "control") == 3 / 6
    md = study_unseen.table(tmp_path / "study")
    assert "| encdec | (recipe) |" in md and "20.00 -> 10.00% (-50%)" in md
    summary = json.loads((tmp_path / "study" / "study.json").read_text())
    assert summary["encdec"]["wer"]["adapted/unseen_engine/main"] == 0.1


def test_table_leaves_out_an_evaluate_directory_kept_with_the_runs(tmp_path):
    # `loo --with-all` scores the every-engine adapter with evaluate, under the same --out: it has
    # per_utterance.csv but no training metrics.json, and the table used to crash on it.
    row = ["adapted", "a", "s", "x", "main", "pico-en-us", "r", "h", 1, 0, 0, 10, "pico", "unseen_engine"]
    write_run(tmp_path / "study" / "encdec", [row])
    write_run(tmp_path / "study" / "all_eval", [row])
    (tmp_path / "study" / "all_eval" / "metrics.json").unlink()
    study_unseen.table(tmp_path / "study")
    assert set(json.loads((tmp_path / "study" / "study.json").read_text())) == {"encdec"}
