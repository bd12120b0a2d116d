"""Common Voice as a release lays it out: validated/train/dev/test.tsv, clips/*.mp3, and the free-text
`accents` column (several accents joined by '|'), filtered to Singapore English however it is written."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asr_lora.data.audio import load_audio
from asr_lora.data.readers import read
from asr_lora.data.readers.common_voice import SG_ACCENT
from asr_lora.data.records import Ledger

HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
          "gender", "accents", "variant", "locale", "segment"]

ROWS = {  # clip -> (client, sentence, accents, table)
    "common_voice_en_1.mp3": ("c1", "The kopi here very nice.", "Singaporean English", "train"),
    "common_voice_en_2.mp3": ("c2", "Can or not?", "United States English|singapore english", "train"),
    "common_voice_en_3.mp3": ("c3", "Howdy partner.", "United States English", "train"),
    "common_voice_en_4.mp3": ("c4", "Take the MRT.", "Singlish", "dev"),
    "common_voice_en_5.mp3": ("c5", "Chope the table.", "English (Singapore)|Malaysian English", "test"),
    "common_voice_en_6.mp3": ("c6", "Wah so hot.", "S'porean accent", "test"),
    "common_voice_en_7.mp3": ("c7", "Not Singapore at all.", "", "test"),
}


def build_release(root):
    folder = root / "cv-corpus-21.0-2025-03-14" / "en"
    (folder / "clips").mkdir(parents=True)
    t = np.arange(8000) / 16000
    tables = {"validated": [], "train": [], "dev": [], "test": []}
    for i, (clip, (client, sentence, accents, table)) in enumerate(ROWS.items()):
        x = (0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t)).astype(np.float32)
        sf.write(folder / "clips" / clip, x, 16000, format="MP3")  # a real MPEG layer III file
        row = [client, clip, f"s{i}", sentence, "", "3", "0", "twenties", "female_feminine", accents, "", "en", ""]
        tables["validated"].append(row)
        tables[table].append(row)
    for name, rows in tables.items():
        (folder / f"{name}.tsv").write_text("\n".join("\t".join(r) for r in [HEADER, *rows]) + "\n", encoding="utf-8")
    (folder / "clip_durations.tsv").write_text("clip\tduration[ms]\n" + "".join(
        f"{c}\t500\n" for c in ROWS), encoding="utf-8")
    return folder


def run(folder, **options):
    ledger = Ledger()
    records = list(read("common_voice", folder, ledger, **options))
    assert ledger.balanced() and ledger.kept == len(records)
    return records, ledger


@pytest.mark.parametrize("written", ["Singaporean English", "singapore english", "English (Singapore)",
                                     "Singlish", "S'porean accent", "SG English", "singaporean"])
def test_sg_accent_preset_matches_however_written(written):
    import re

    assert re.search(SG_ACCENT, written, re.IGNORECASE)


@pytest.mark.parametrize("other", ["United States English", "Malaysian English", "Singh family accent", ""])
def test_sg_accent_preset_rejects_others(other):
    import re

    assert not re.search(SG_ACCENT, other, re.IGNORECASE)


def test_official_splits_mp3_clips_and_multi_accent_field(tmp_path):
    folder = build_release(tmp_path)
    records, ledger = run(folder, tsv="official", accents="sg")
    by_id = {r.id: r for r in records}
    assert {k: r.split for k, r in by_id.items()} == {
        "common_voice_en_1": "train", "common_voice_en_2": "train", "common_voice_en_4": "dev",
        "common_voice_en_5": "test", "common_voice_en_6": "test"}
    assert ledger.skipped_by_reason == {"filtered_accent": 2}
    two = by_id["common_voice_en_2"]
    assert two.accent == "United States English|singapore english"
    assert two.extra["accents"] == ["United States English", "singapore english"]
    assert two.meta == {"age": "twenties", "gender": "female_feminine", "accent": "singapore english"}
    assert two.duration == pytest.approx(0.5)
    x = load_audio(two.audio_path)
    assert two.audio_path.endswith("clips/common_voice_en_2.mp3") and abs(len(x) - 8000) < 2000


def test_validated_and_train_tables_together_keep_each_clip_once(tmp_path):
    folder = build_release(tmp_path)
    records, ledger = run(folder, tsv=["validated.tsv", "train.tsv"], accents="sg")
    assert len(records) == 5 and ledger.skipped_by_reason == {"filtered_accent": 2 + 1, "duplicate_id": 2}
