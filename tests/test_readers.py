"""Every reader on a small corpus in its real layout; every input row must be accounted for."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_build import (
    build_audiofolder,
    build_bad_jsonl,
    build_common_voice,
    build_csv,
    build_hf_parquet,
    build_jsonl,
    build_nsc,
    write_tone,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_lora.data.readers import READERS, read
from asr_lora.data.records import Ledger

CSV_COLUMNS = {"audio": "path", "text": "sentence", "speaker": "client_id", "duration": "dur"}


def run(kind, source, **options):
    ledger = Ledger()
    records = list(read(kind, source, ledger, **options))
    assert ledger.balanced(), ledger.dumps()
    assert ledger.kept == len(records)
    return records, ledger


def reasons_by_line(ledger: Ledger) -> dict[int, str]:
    return {int(s.source.rsplit(":", 1)[1]): s.reason for s in ledger.skips}


# ------------------------------------------------------------------------------------------ JSONL


def test_jsonl_clean(tmp_path):
    records, _ = run("jsonl", build_jsonl(tmp_path), split="train")
    assert [r.text for r in records] == ["hello lah", "can or not", "okay"]
    a, b, c = records
    assert Path(a.audio_path) == tmp_path / "audio" / "a.wav" and Path(a.audio_path).is_file()
    assert (a.speaker, a.accent, a.duration, a.split) == ("s1", "sg", 0.3, "train")
    assert (b.id, b.speaker, b.engine, b.voice, b.subset, b.extra) == (
        "b",
        "7",
        "piper",
        "joe",
        "control",
        {"lang": "en"},
    )
    assert Path(c.audio_path).is_file() and c.duration == 1.0 and c.subset == "main"
    assert a.source.endswith("manifest.jsonl:1")


def test_jsonl_segments_of_one_recording_are_rows_of_their_own(tmp_path):
    """NeMo segment manifests: `offset` + `duration` address part of a long recording."""
    from asr_lora.data.audio import load_audio

    write_tone(tmp_path / "long.wav", seconds=3.0)
    rows = [{"audio_filepath": "long.wav", "text": "first part", "offset": 0.0, "duration": 1.0},
            {"audio_filepath": "long.wav", "text": "second part", "offset": 1.5, "duration": 0.5},
            {"audio_filepath": "long.wav", "text": "no end", "offset": 1.0},
            {"audio_filepath": "long.wav", "text": "bad start", "offset": -1, "duration": 0.5}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, ledger = run("jsonl", tmp_path / "m.jsonl", split="train")
    assert [r.text for r in records] == ["first part", "second part"]
    assert len({r.id for r in records}) == 2 and "offset" not in records[0].extra
    assert [len(load_audio(r.audio_path)) for r in records] == [16000, 8000]
    assert reasons_by_line(ledger) == {3: "missing_field", 4: "bad_field"}
    assert "'offset' must be a non-negative number" in next(s.detail for s in ledger.skips if s.reason == "bad_field")


def test_jsonl_bad_manifest(tmp_path):
    manifest, expected = build_bad_jsonl(tmp_path)
    records, ledger = run("jsonl", manifest)
    assert reasons_by_line(ledger) == expected
    assert ledger.seen == 10  # the blank line is not a row
    for skip in ledger.skips:  # every skip names the manifest and its line
        assert re.search(r"bad manifest\.jsonl:\d+", skip.detail), skip.detail
    assert next(s for s in ledger.skips if s.reason == "missing_file").detail.count("gone.wav") >= 1
    kept = {r.id: r for r in records}
    assert set(kept) == {"u1", "u5"} and kept["u1"].text == "good one"  # first of the duplicate ids wins
    assert (
        Path(kept["u5"].audio_path).name == "my clip ünïcödé 新加坡.wav"
        and Path(kept["u5"].audio_path).is_file()
    )


def test_jsonl_bom_and_crlf(tmp_path):
    write_tone(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_bytes(b'\xef\xbb\xbf{"audio_filepath": "a.wav", "text": "bom"}\r\n')
    records, _ = run("jsonl", tmp_path / "m.jsonl")
    assert [r.text for r in records] == ["bom"]


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_ROWS = st.dictionaries(
    st.sampled_from(["audio_filepath", "text", "duration", "id", "speaker", "split", "x"])
    | st.text(max_size=8),
    _JSON_VALUES | st.sampled_from(["a.wav", "missing.wav", "", "  ", 10**400, -1, "a\x00b", "x" * 5000]),
    max_size=6,
).map(lambda d: json.dumps(d).encode())
_LINES = st.lists((st.binary(max_size=120) | _ROWS).map(lambda b: b.replace(b"\n", b"")), max_size=12)


@settings(max_examples=100, deadline=None)
@given(lines=_LINES)
def test_jsonl_fuzz_never_crashes(lines):
    with tempfile.TemporaryDirectory() as tmp:
        write_tone(Path(tmp) / "a.wav", seconds=0.05)
        manifest = Path(tmp) / "fuzz.jsonl"
        manifest.write_bytes(b"\n".join(lines))
        records, ledger = run("jsonl", manifest)
        assert ledger.seen == sum(1 for line in lines if line.strip())
        assert all(re.search(r"fuzz\.jsonl:\d+", s.detail) for s in ledger.skips)
        assert all(Path(r.audio_path).is_file() and r.text.strip() for r in records)


# -------------------------------------------------------------------------------------- CSV / TSV


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_csv_and_tsv(tmp_path, delimiter):
    table = build_csv(tmp_path, delimiter)
    records, ledger = run("csv", table, columns=CSV_COLUMNS, accent="sg")
    assert [r.speaker for r in records] == ["spk1", "spk2"]
    assert records[0].text.startswith("the MRT is crowded") and records[0].duration == 0.3
    assert all(Path(r.audio_path).is_file() and r.accent == "sg" for r in records)
    assert reasons_by_line(ledger) == {4: "missing_file"}


def test_csv_columns_named_as_record_fields_are_read_without_a_mapping(tmp_path):
    """A table's own split and speaker columns were ignored unless mapped: its test rows were split
    again by speaker and could land in train."""
    for name in ("a.wav", "b.wav", "c.wav"):
        write_tone(tmp_path / name)
    (tmp_path / "list.csv").write_text("audio_filepath,text,speaker,split,id\n"
                                       "a.wav,one clip here,s1,train,u1\nb.wav,two clip here,s1,test,u2\n"
                                       "c.wav,three clip here,s2,validation,u3\n")
    records, _ = run("csv", tmp_path / "list.csv")
    assert [(r.id, r.speaker, r.split) for r in records] == [("u1", "s1", "train"), ("u2", "s1", "test"),
                                                             ("u3", "s2", "dev")]
    mapped, _ = run("csv", tmp_path / "list.csv", columns={"speaker": "id"})  # a mapping still wins
    assert [r.speaker for r in mapped] == ["u1", "u2", "u3"]


def test_csv_missing_column_is_a_config_error(tmp_path):
    table = build_csv(tmp_path)
    with pytest.raises(ValueError, match=r"metadata\.csv.*'transcript'"):
        run("csv", table, columns={"audio": "path", "text": "transcript"})


def test_csv_malformed_rows(tmp_path):
    write_tone(tmp_path / "a.wav")
    (tmp_path / "t.csv").write_bytes(
        b"audio_filepath,text,duration\n"
        b"a.wav,fine,0.3\n"
        b"a.wav,too,many,fields\n"
        b"a.wav,caf\xe9,0.3\n"
        b"a.wav,bad duration,abc\n"
        b",no audio,0.3\n"
    )
    records, ledger = run("csv", tmp_path / "t.csv", columns={"duration": "duration"})
    assert [r.text for r in records] == ["fine"]
    assert reasons_by_line(ledger) == {3: "bad_line", 4: "bad_line", 5: "bad_field", 6: "missing_field"}


# ----------------------------------------------------------------------------------- Common Voice


def test_common_voice_filters(tmp_path):
    folder, expected = build_common_voice(tmp_path)
    records, ledger = run("common_voice", folder, accents="singapor", min_up_votes=2, min_vote_margin=1)
    assert {r.id + ".mp3" for r in records} == {clip for clip, why in expected.items() if why is None}
    assert ledger.skipped_by_reason == {"filtered_accent": 2, "filtered_votes": 2, "missing_file": 1}
    assert {s.id + ".mp3": s.reason for s in ledger.skips} == {c: w for c, w in expected.items() if w}
    two = next(r for r in records if r.id == "common_voice_en_2")
    assert two.text == 'He said "can" lor.'  # quotes survive: Common Voice TSVs are unquoted
    assert two.speaker == "c2" and two.accent == "Singaporean English|Malaysian English"
    assert two.duration == pytest.approx(0.3) and Path(two.audio_path).parent.name == "clips"


def test_common_voice_without_filters_and_list_of_accents(tmp_path):
    folder, _ = build_common_voice(tmp_path)
    _, ledger = run("common_voice", folder)
    assert (ledger.kept, ledger.skipped_by_reason) == (6, {"missing_file": 1})
    records, _ = run("common_voice", folder, accents=["united states", "malaysian"])
    assert {r.id for r in records} == {"common_voice_en_2", "common_voice_en_3"}


# ------------------------------------------------------------------------------------------- NSC


def test_nsc_parts_1_and_2(tmp_path):
    root, expected = build_nsc(tmp_path)
    records, ledger = run("nsc", root)
    assert {r.id for r in records} == {uid for uid, why in expected.items() if why is None}
    assert {s.id: s.reason for s in ledger.skips} == {"000010003": "missing_file"}
    assert "000010.TXT:5" in ledger.skips[0].detail
    first = next(r for r in records if r.id == "000010002")
    assert first.text == "<FIL/> I think (ppb) can one."  # raw transcript, markers intact
    assert first.extra["normalised"] == "i think can one"
    assert (first.speaker, first.accent) == ("PART1/SPEAKER0001", "sg")
    utf16 = next(r for r in records if r.id == "000021001")
    assert utf16.text == "Later we go makan [ah]." and utf16.speaker == "PART1/SPEAKER0002"
    assert all(Path(r.audio_path).is_file() for r in records)
    only_part2, _ = run("nsc", root, parts=["PART2"])
    assert [r.speaker for r in only_part2] == ["PART2/SPEAKER3001"]


def test_nsc_bad_lines_and_wrong_root(tmp_path):
    root, _ = build_nsc(tmp_path)
    script = root / "PART2" / "DATA" / "CHANNEL0" / "SCRIPT" / "030010.TXT"
    script.write_bytes(script.read_bytes() + b"030010002\tbad \xff byte\n\tbad byte\nnotab\n")
    _, ledger = run("nsc", root / "PART2")
    assert ledger.kept == 1 and [s.reason for s in ledger.skips] == ["bad_line", "bad_line"]
    with pytest.raises(FileNotFoundError):
        run("nsc", tmp_path / "nowhere")


# ------------------------------------------------------------------------------------ HF datasets


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_audiofolder(tmp_path, streaming):
    from datasets.features import Audio

    folder, encode = build_audiofolder(tmp_path), Audio.encode_example
    records, ledger = run("hf", folder, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    assert Audio.encode_example is encode  # the torchcodec-free stand-in is gone after reading
    assert sorted(r.text for r in records) == ["first clip", "second clip"]
    assert ledger.skipped_by_reason == {"empty_text": 1}
    # the skip names the metadata line a user edits (three.wav's is line 4), not datasets' row index
    assert [s.source for s in ledger.skips] == [f"{folder / 'metadata.csv'}:4"]
    assert all(Path(r.audio_path).is_file() for r in records)
    assert {r.speaker for r in records} == {"a", "b"}


def test_hf_audiofolder_rows_keep_their_own_split_column(tmp_path):
    """An audiofolder's metadata.csv `split` column places each row (its test rows were trained on,
    all landing in the Hub split's); a value no split name maps is skipped with the line; a field
    this reader does not read is refused by name."""
    for i in range(4):
        write_tone(tmp_path / "af" / f"c{i}.wav")
    (tmp_path / "af" / "metadata.csv").write_text(
        "file_name,transcription,speaker_id,split\nc0.wav,one,a,train\nc1.wav,two,b,test\n"
        "c2.wav,three,c,validation\nc3.wav,four,d,holdout\n")
    records, ledger = run("hf", tmp_path / "af", cache_dir=str(tmp_path / "cache"))
    assert sorted((r.text, r.split) for r in records) == [("one", "train"), ("three", "dev"), ("two", "test")]
    assert ledger.skipped_by_reason == {"bad_field": 1} and "'holdout'" in ledger.skips[0].detail
    with pytest.raises(ValueError, match=r"columns names \['duration'\], which this reader does not read"):
        run("hf", tmp_path / "af", cache_dir=str(tmp_path / "cache"), columns={"duration": "secs"})


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_bytes_are_decoded_with_soundfile(tmp_path, streaming):
    records, ledger = run(
        "hf",
        build_hf_parquet(tmp_path),
        streaming=streaming,
        cache_dir=str(tmp_path / "c"),
        columns={"text": "sentence"},
    )
    assert [(r.id, r.sampling_rate) for r in records] == [("h1", 22050), ("h3", 16000)]
    assert all(r.audio.dtype == np.float32 and r.audio.ndim == 1 and r.audio_path is None for r in records)
    assert [(s.id, s.reason) for s in ledger.skips] == [("h2", "unreadable")]


def test_hf_missing_column_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="'words'"):
        run("hf", build_audiofolder(tmp_path), columns={"text": "words"}, cache_dir=str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------- registry


def test_registry():
    assert set(READERS) == {"jsonl", "csv", "hf", "common_voice", "nsc"}
    with pytest.raises(ValueError, match="unknown reader"):
        read("tarball", "x", Ledger())


@settings(max_examples=50, deadline=None)
@given(lines=st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_csv_and_nsc_fuzz_never_crash(lines):
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "t.tsv"
        table.write_bytes(b"audio_filepath\ttext\n" + b"\n".join(lines))
        run("csv", table)
        script = Path(tmp) / "PART1" / "DATA" / "CHANNEL0" / "SCRIPT" / "000010.TXT"
        script.parent.mkdir(parents=True)
        script.write_bytes(b"\n".join(lines) + b"\n000010001\tfixed line\n")
        _, ledger = run("nsc", Path(tmp))
        assert ledger.seen >= 1
