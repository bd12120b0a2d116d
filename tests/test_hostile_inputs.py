"""The catalogue of bad inputs, pushed through the readers and the whole data pipeline: each gets a
clear error naming the item or a recorded skip, and rows in = kept + skipped."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from asr_lora.config import DataConfig
from asr_lora.data.readers import read
from asr_lora.data.records import Ledger
from asr_lora.data.splits import prepare_data


@pytest.fixture(scope="module")
def tokenizer(tiny_whisper_dir):
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(tiny_whisper_dir)


def tone(seconds, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 330 * t)).astype("float32")
    return np.stack([x] * channels, 1) if channels > 1 else x


def build_catalogue(root):
    a = root / "audio"
    a.mkdir(parents=True)
    sf.write(a / "ok.wav", tone(1.5), 16000)
    sf.write(a / "sr8k.wav", tone(1.5, 8000), 8000)
    sf.write(a / "sr48k.wav", tone(1.5, 48000), 48000)
    sf.write(a / "six_channels.wav", tone(1.5, 16000, 6), 16000)
    sf.write(a / "with space ünï.wav", tone(1.5), 16000)
    sf.write(a / "silence.wav", np.zeros(16000, "float32"), 16000)
    nan = tone(1.5)
    nan[100:200] = np.nan
    sf.write(a / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(a / "ten_minutes.wav", (0.01 * np.random.default_rng(0).standard_normal(600 * 16000)).astype("float32"),
             16000)
    (a / "zero.wav").write_bytes(b"")
    full = (a / "ok.wav").read_bytes()
    (a / "truncated.wav").write_bytes(full[: len(full) // 3])
    (a / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(2000))
    (a / "corrupt.mp3").write_bytes(b"ID3" + os.urandom(2000))
    rows = [
        ("ok", "ok.wav", "the kopi is hot", "kept"),
        ("sr8k", "sr8k.wav", "eight kilohertz audio", "kept"),
        ("sr48k", "sr48k.wav", "forty eight kilohertz", "kept"),
        ("six", "six_channels.wav", "six channels", "kept"),
        ("unicode", "with space ünï.wav", "paths with spaces", "kept"),
        ("missing", "nope.wav", "missing file", "missing_file"),
        ("zero", "zero.wav", "zero bytes", "empty_file"),
        ("trunc", "truncated.wav", "truncated wav", "truncated"),
        ("flac", "corrupt.flac", "corrupt flac", "unreadable"),
        ("mp3", "corrupt.mp3", "corrupt mp3", "unreadable"),
        ("nan", "nan.wav", "nan samples", "nan"),
        ("silent", "silence.wav", "all zero", "silent"),
        ("long", "ten_minutes.wav", "ten minutes", "too_long"),
        ("empty", "ok.wav", "", "empty_text"),
        ("space", "ok.wav", "   \t ", "empty_text"),
        ("emoji", "ok.wav", "😀😀 🎉", "empty_text"),
        ("verylong", "ok.wav", " ".join(["supercalifragilistic"] * 200), "label_too_long"),
        ("ok", "sr8k.wav", "duplicate id", "duplicate_id"),
    ]
    lines = [json.dumps({"id": i, "audio_filepath": f"audio/{f}", "text": t, "speaker": f"s{n % 3}",
                         "split": "train"}, ensure_ascii=False).encode() for n, (i, f, t, _) in enumerate(rows)]
    lines.insert(3, b'{"id": "badjson", "audio_filepath": ')  # broken JSON
    lines.insert(5, b'{"id": "latin1", "audio_filepath": "audio/ok.wav", "text": "caf\xe9"}')  # not UTF-8
    (root / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    expected = {i if r != "duplicate_id" else "ok#dup": r for i, _, _, r in rows}
    return root / "manifest.jsonl", expected


def test_catalogue_through_the_pipeline(tmp_path, tokenizer):
    manifest, expected = build_catalogue(tmp_path / "corpus")
    dcfg = OmegaConf.structured(DataConfig(name="hostile", source="jsonl", path=str(manifest)))
    splits, report = prepare_data(dcfg, tokenizer, tmp_path / "cache", progress=False)
    counts = report["counts"]
    n_rows = len(expected) + 2  # + broken JSON + non-UTF-8 line
    assert counts["seen"] == n_rows and counts["balanced"]
    assert counts["kept"] + counts["skipped"] == n_rows
    kept_ids = set(splits["train"]["id"])
    assert kept_ids == {i for i, r in expected.items() if r == "kept"}
    reasons = {}
    for s in counts["skips"]:
        reasons.setdefault(s["reason"], []).append(s)
    for item, reason in expected.items():
        if reason != "kept":
            assert reason in reasons, (item, reason, list(reasons))
    assert len(reasons["bad_line"]) == 2
    for s in counts["skips"]:  # every skip names where it came from
        assert "manifest.jsonl" in s["detail"] or "audio/" in s["detail"], s
    # resampled and downmixed clips really are 16 kHz mono of the right length
    row = splits["train"].filter(lambda i: i == "sr48k", input_columns="id")[0]
    assert abs(len(row["audio"]) - 1.5 * 16000) < 10


def test_csv_with_missing_column_is_a_clear_error(tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("path,sentence\na.wav,hello\n")
    with pytest.raises(ValueError, match=r"list.csv.*speaker"):
        list(read("csv", p, Ledger(), columns={"audio": "path", "text": "sentence", "speaker": "client_id"}))
