"""Hand-made tables and manifests a user's own data arrives as, each with a fault that used to lose
rows unsaid or crash: every row must still be kept, or skipped with its file:line and reason."""

from __future__ import annotations

import json
import os
import time
import zipfile

import pytest
from fixtures_build import wav_bytes, write_tone
from omegaconf import OmegaConf
from test_readers import run  # every row kept or skipped, the ledger balanced

from asr_lora.data.readers.nsc import ROOT_1_3
from asr_lora.data.records import Ledger
from asr_lora.data.sources import iter_records, manifest_signature


def test_an_unclosed_quote_costs_its_own_row_only(tmp_path):
    for n in "abcde":
        write_tone(tmp_path / f"{n}.wav")
    (tmp_path / "list.csv").write_text(
        "path,text,speaker\n"
        'a.wav,"Okay lah she said,s1\n'  # the quote is never closed
        "b.wav,second clip,s2\n"
        "c.wav,third clip,s3\n"
        'd.wav,fourth "quoted" clip,s4\n'
        "e.wav,fifth clip,s5\n", encoding="utf-8")
    records, ledger = run("csv", tmp_path / "list.csv", columns={"audio": "path", "speaker": "speaker"})
    assert [(r.text, r.speaker, r.source.rsplit(":", 1)[1]) for r in records] == [
        ("second clip", "s2", "3"), ("third clip", "s3", "4"), ('fourth "quoted" clip', "s4", "5"),
        ("fifth clip", "s5", "6")]
    (skip,) = ledger.skips
    assert skip.reason == "bad_line" and skip.source.endswith("list.csv:2")
    assert "quote opened in it is not closed" in skip.detail


def test_a_row_of_empty_fields_is_counted(tmp_path):
    write_tone(tmp_path / "clips" / "c1.wav")
    (tmp_path / "list.tsv").write_text("path\ttext\n\t\nclips/c1.wav\thello\n", encoding="utf-8")
    records, ledger = run("csv", tmp_path / "list.tsv", columns={"audio": "path"})
    assert [r.text for r in records] == ["hello"]
    assert [(s.reason, s.source.rsplit(":", 1)[1]) for s in ledger.skips] == [("bad_line", "2")]
    assert ledger.seen == 2


def test_shards_in_two_folders_may_name_the_same_relative_clip(tmp_path):
    for day in ("day1", "day2"):
        write_tone(tmp_path / day / "clips" / "001.wav")
        rows = [{"audio_filepath": "clips/001.wav", "text": f"hello from {day}", "speaker": f" {day} "}]
        (tmp_path / day / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, ledger = run("jsonl", str(tmp_path / "*" / "train.jsonl"))
    assert not ledger.skips
    assert [(r.id, r.speaker) for r in records] == [("day1/clips/001.wav", "day1"), ("day2/clips/001.wav", "day2")]
    # One folder of shards, as before: the id is the path as written.
    (single,), _ = run("jsonl", tmp_path / "day1")
    assert single.id == "clips/001.wav"


def test_a_speaker_in_two_splits_is_reported(tmp_path):
    rows = [("a1", "ahmad", "test"), ("a2", "ahmad", ""), ("a3", "ahmad", ""), ("b1", "bee", "")]
    for clip, _, _ in rows:
        write_tone(tmp_path / f"{clip}.wav")
    (tmp_path / "list.csv").write_text("path,text,speaker,split\n" + "".join(
        f"{c}.wav,clip {c},{s},{sp}\n" for c, s, sp in rows), encoding="utf-8")
    cfg = OmegaConf.create({"source": "csv", "path": str(tmp_path / "list.csv"), "synthetic": False,
                            "split_fractions": [0.8, 0.1, 0.1],
                            "options": {"columns": {"audio": "path", "speaker": "speaker", "split": "split"}}})
    records, info = iter_records(cfg, Ledger(), progress=False)
    splits = {r.id: r.split for r in records}
    assert splits["a1.wav"] == "test" and splits["a2.wav"] == splits["a3.wav"] == "train"  # ahmad hashes to train
    assert info["speakers_in_several_splits"] == {"ahmad": ["test", "train"]}


def test_official_common_voice_splits_refuse_a_split_option(tmp_path):
    with pytest.raises(ValueError, match="tsv=official takes each row's split from its file"):
        run("common_voice", tmp_path, tsv="official", split="train")


def test_an_edited_common_voice_table_changes_the_streaming_key(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "validated.tsv").write_text("client_id\tpath\tsentence\ns1\tc1.mp3\thello\n", encoding="utf-8")
    before = manifest_signature(tmp_path)
    folder_mtime = os.stat(tmp_path).st_mtime_ns
    time.sleep(0.01)
    with open(tmp_path / "validated.tsv", "a", encoding="utf-8") as f:  # edited in place: the folder is unchanged
        f.write("s2\tc2.mp3\tnew row\n")
    assert os.stat(tmp_path).st_mtime_ns == folder_mtime
    assert manifest_signature(tmp_path) != before


def test_nsc_script_lines_indented_before_any_utterance_are_counted(tmp_path):
    ch0 = tmp_path / ROOT_1_3 / "PART1" / "DATA" / "CHANNEL0"
    (ch0 / "SCRIPT").mkdir(parents=True)
    (ch0 / "WAVE").mkdir(parents=True)
    (ch0 / "SCRIPT" / "000010.TXT").write_text(
        " 000010001\tHello there.\r\n\thello there\r\n"  # indented: nothing before it to belong to
        "000010002\tSecond one.\r\n\tsecond one\r\n", encoding="utf-8")
    with zipfile.ZipFile(ch0 / "WAVE" / "SPEAKER0001.zip", "w") as zf:
        for n in ("001", "002"):
            zf.writestr(f"SPEAKER0001/SESSION0/000010{n}.WAV", wav_bytes(0.5))
    records, ledger = run("nsc", tmp_path, parts=["PART1"])
    assert [(r.text, r.extra.get("normalised")) for r in records] == [("Second one.", "second one")]
    assert [(s.reason, s.source.rsplit(":", 1)[1]) for s in ledger.skips] == [("bad_line", "1"), ("bad_line", "2")]


def test_data_csv_reads_the_documented_columns_and_maps_any_field(tmp_path):
    """`data=csv` as Hydra composes it: a table with the documented audio_filepath/text columns and
    no speaker reads as is (the shipped config once required columns `path` and `speaker`), and any
    field maps to another column by a plain override."""
    from hydra import compose, initialize_config_dir

    from asr_lora.config import CONF_DIR

    write_tone(tmp_path / "a.wav")
    (tmp_path / "plain.csv").write_text("audio_filepath,text\na.wav,hello there\n")
    (tmp_path / "cv.tsv").write_text("path\tsentence\tclient_id\na.wav\thello there\tabc\n")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = compose("config", overrides=["data=csv", f"data.path={tmp_path / 'plain.csv'}"])
        mapped = compose("config", overrides=["data=csv", f"data.path={tmp_path / 'cv.tsv'}",
                                              "data.options.columns.audio=path", "data.options.columns.text=sentence",
                                              "data.options.columns.speaker=client_id"])
    for cfg, speaker in ((plain, "unknown"), (mapped, "abc")):
        ledger = Ledger()
        records, _ = iter_records(cfg.data, ledger, progress=False)
        (rec,) = list(records)
        assert (rec.text, rec.speaker) == ("hello there", speaker) and ledger.balanced()
