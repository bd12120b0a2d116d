"""Every row lands in train, dev or test, or is skipped with its reason: split names other tools use
are mapped, a row without a speaker is split on its own, and a stated duration is checked alike
by every reader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures_build import write_tone
from omegaconf import OmegaConf

from asr_lora.config import DataConfig
from asr_lora.data.readers import read
from asr_lora.data.records import Ledger
from asr_lora.data.sources import iter_records
from asr_lora.data.streaming import ShardWriter

NAMES = ["train", "validation", "val", "Test", "TESTING", "training", "dev", "eval", "/abs/path", None]
MAPPED = ["train", "dev", "dev", "test", "test", "train", "dev", None, None, None]


def run(kind, source, **options):
    ledger = Ledger()
    records = list(read(kind, source, ledger, **options))
    assert ledger.balanced() and ledger.kept == len(records), ledger.dumps()
    return records, ledger


def write_jsonl(root: Path, rows: list[dict]) -> Path:
    write_tone(root / "a.wav")
    manifest = root / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": "a.wav", **r}) + "\n" for r in rows))
    return manifest


def _kept_and_skipped(records, ledger):
    kept = {r.id: r.split for r in records}
    skipped = {s.id: (s.reason, s.detail) for s in ledger.skips}
    return kept, skipped


def test_jsonl_split_names_are_mapped_or_skipped(tmp_path):
    rows = [{"id": f"r{i}", "text": "hello", **({"split": s} if s else {})} for i, s in enumerate(NAMES)]
    kept, skipped = _kept_and_skipped(*run("jsonl", write_jsonl(tmp_path, rows)))
    assert kept == {f"r{i}": m for i, m in enumerate(MAPPED) if f"r{i}" not in ("r7", "r8")}
    assert {k: reason for k, (reason, _) in skipped.items()} == {"r7": "bad_field", "r8": "bad_field"}
    assert "m.jsonl:8" in skipped["r7"][1] and "'eval'" in skipped["r7"][1]
    assert "m.jsonl:9" in skipped["r8"][1]


def test_csv_split_names_are_mapped_or_skipped(tmp_path):
    write_tone(tmp_path / "a.wav")
    lines = [f"r{i},a.wav,hello,{s or ''}" for i, s in enumerate(NAMES)]
    (tmp_path / "t.csv").write_text("id,audio_filepath,text,split\n" + "\n".join(lines) + "\n")
    kept, skipped = _kept_and_skipped(*run("csv", tmp_path / "t.csv", columns={"id": "id", "split": "split"}))
    assert kept == {f"r{i}": m for i, m in enumerate(MAPPED) if f"r{i}" not in ("r7", "r8")}
    assert {k: reason for k, (reason, _) in skipped.items()} == {"r7": "bad_field", "r8": "bad_field"}
    assert "t.csv:9" in skipped["r7"][1]


def test_split_option_is_mapped_or_refused(tmp_path):
    manifest = write_jsonl(tmp_path, [{"text": "hello"}])
    assert [r.split for r in run("jsonl", manifest, split="Validation")[0]] == ["dev"]
    with pytest.raises(ValueError, match="'holdout'"):
        run("jsonl", manifest, split="holdout")


def test_hf_split_name_is_mapped(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"audio": [str(write_tone(tmp_path / "a.wav"))], "text": ["hello"]})
    assert [r.split for r in run("hf", ds, split="validation")[0]] == ["dev"]
    assert [r.split for r in run("hf", ds, split="train[:1]")[0]] == ["train"]
    with pytest.raises(ValueError, match="'invalidated'"):
        run("hf", ds, split="invalidated")


def test_shard_folder_is_a_split_name(tmp_path):
    with pytest.raises(ValueError, match="not one of"):
        ShardWriter(tmp_path, 10).write({"id": "x", "split": str(tmp_path.parent / "elsewhere")})


def test_rows_without_speaker_are_split_by_row(tmp_path):
    rows = [{"id": f"n{i}", "text": "hello"} for i in range(40)]
    rows += [{"id": f"s{i}", "text": "hello", "speaker": "s1"} for i in range(10)]
    cfg = OmegaConf.structured(DataConfig(name="t", source="jsonl", path=str(write_jsonl(tmp_path, rows))))
    records, info = iter_records(cfg, Ledger(), progress=False)
    by_split = {r.id: r.split for r in records}
    no_speaker = Counter(s for k, s in by_split.items() if k.startswith("n"))
    assert set(no_speaker) == {"train", "dev", "test"}, no_speaker  # not all in train
    assert len({s for k, s in by_split.items() if k.startswith("s")}) == 1  # a named speaker stays whole
    assert info["rows_split_by_row"] == 40


def test_too_few_speakers_for_a_split_by_speaker_is_said(tmp_path, caplog):
    """Three speakers and no split column: the fractions can leave dev or test without a speaker, which
    is said in the log and in the data report (and a training run then stops before training)."""
    rows = [{"id": f"{k}{i}", "text": "hello", "speaker": k} for k in ("ann", "bob", "cy") for i in range(5)]
    cfg = OmegaConf.structured(DataConfig(name="t", source="jsonl", path=str(write_jsonl(tmp_path, rows))))
    records, info = iter_records(cfg, Ledger(), progress=False)
    records = list(records)
    used = {r.split for r in records}
    assert used != {"train", "dev", "test"}  # these three names hash into fewer splits
    assert info["empty_splits"] == [s for s in ("train", "dev", "test") if s not in used]
    assert "too few speakers to split by speaker" in caplog.text


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "abc"])
def test_csv_duration_is_checked_like_jsonl(tmp_path, value):
    write_tone(tmp_path / "a.wav")
    (tmp_path / "t.csv").write_text(f"audio_filepath,text,duration\na.wav,hello,{value}\n")
    _, ledger = run("csv", tmp_path / "t.csv", columns={"duration": "duration"})
    jsonl = {"nan": "NaN", "-5": "-5", "inf": "Infinity", "abc": '"abc"'}[value]
    (tmp_path / "m.jsonl").write_text(f'{{"audio_filepath": "a.wav", "text": "hello", "duration": {jsonl}}}\n')
    _, jsonl_ledger = run("jsonl", tmp_path / "m.jsonl")
    assert [s.reason for s in ledger.skips] == [s.reason for s in jsonl_ledger.skips] == ["bad_field"]
    assert "t.csv:2" in ledger.skips[0].detail and "non-negative number" in ledger.skips[0].detail
