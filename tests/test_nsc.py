"""The IMDA National Speech Corpus read as distributed: speaker zips, TextGrids in several encodings
and Praat's binary form, the corpus's bad intervals, speaker spreadsheets, both data paths, and a
tiny prepare -> train -> evaluate run on a fixture tree."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lora.data.audio import AudioError, load_audio
from asr_lora.data.readers import read
from asr_lora.data.readers.nsc import NSC_PARTS, ROOT_1_3, ROOT_4_6
from asr_lora.data.readers.textgrid import TextGridError, read_textgrid
from asr_lora.data.records import Ledger

SR = 16000


def tone(seconds: float, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(seconds: float, freq: float = 300.0) -> bytes:
    import io

    b = io.BytesIO()
    sf.write(b, tone(seconds, freq), SR, format="WAV", subtype="PCM_16")
    return b.getvalue()


def long_text_grid(tier: str, intervals: list[tuple[float, float, str]], xmax: float) -> str:
    """Praat's long text form, as Praat writes it ('"' doubled inside labels)."""
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {xmax}",
           "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
           f'        name = "{tier}"', "        xmin = 0", f"        xmax = {xmax}",
           f"        intervals: size = {len(intervals)}"]
    for i, (a, b, text) in enumerate(intervals, 1):
        label = text.replace('"', '""')
        out += [f"        intervals [{i}]:", f"            xmin = {a}", f"            xmax = {b}",
                f'            text = "{label}"']
    return "\r\n".join(out) + "\r\n"


def short_text_grid(tier: str, intervals: list[tuple[float, float, str]], xmax: float) -> str:
    out = ['File type = "ooTextFile short"', '"TextGrid"', "", "0", str(xmax), "<exists>", "1",
           '"IntervalTier"', f'"{tier}"', "0", str(xmax), str(len(intervals))]
    for a, b, text in intervals:
        out += [str(a), str(b), f'"{text}"']
    return "\n".join(out) + "\n"


def binary_text_grid(tier: str, intervals: list[tuple[float, float, str]], xmax: float) -> bytes:
    """Praat's binary TextGrid, written here byte by byte (independently of the reader)."""

    def s(text: str) -> bytes:
        if text.isascii():
            return struct.pack(">H", len(text)) + text.encode("ascii")
        return struct.pack(">HH", 0xFFFF, len(text)) + text.encode("utf-16-be")

    out = b"ooBinaryFile\x08TextGrid" + struct.pack(">2d", 0.0, xmax) + b"\x01" + struct.pack(">i", 1)
    out += bytes([12]) + b"IntervalTier" + s(tier) + struct.pack(">2d", 0.0, xmax) + struct.pack(">i", len(intervals))
    for a, b, text in intervals:
        out += struct.pack(">2d", a, b) + s(text)
    return out


def write_xlsx(path: Path, sheets: dict[str, list[list]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


def build_nsc_tree(root: Path) -> Path:
    """A miniature NSC distribution in its real layout, every oddity the reader must record included."""
    p13, p46 = root / ROOT_1_3, root / ROOT_4_6
    # ---- Part 1, channel 0: speaker zips, scripts UTF-8 with BOM and UTF-16, one speaker unzipped-less.
    ch0 = p13 / "PART1" / "DATA" / "CHANNEL0"
    (ch0 / "SCRIPT").mkdir(parents=True)
    (ch0 / "WAVE").mkdir(parents=True)
    scripts = {
        ("0001", "0"): ([("001", "Wah, the queue at the hawker centre [lah] very long."),
                         ("002", "<FIL/> I think (ppb) can one."), ("003", "This one not in the zip.")], "utf-8-sig"),
        ("0002", "1"): ([("001", "Later we go makan [ah]."), ("002", "Don't play play.")], "utf-16"),
        ("0003", "0"): ([("001", "Speaker without a zip.")], "utf-8-sig"),
    }
    for (spk, sess), (utts, enc) in scripts.items():
        lines = []
        for n, raw in utts:
            lines += [f"0{spk}{sess}{n}\t{raw}", f"\t{raw.lower()}"]
        (ch0 / "SCRIPT" / f"0{spk}{sess}.TXT").write_bytes(("\r\n".join(lines) + "\r\n").encode(enc))
        if spk == "0003":
            continue
        with zipfile.ZipFile(ch0 / "WAVE" / f"SPEAKER{spk}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for i, (n, _) in enumerate(utts):
                if n != "003":
                    zf.writestr(f"SPEAKER{spk}/SESSION{sess}/0{spk}{sess}{n}.WAV", wav_bytes(0.8, 250 + 30 * i))
    write_xlsx(p13 / "PART1" / "DOC" / "Speaker Information (Part 1).XLSX", {
        "Speakers": [["Speaker information, Part 1"], ["SCD/PART1", "SEX", "AGE", "FIRST LANGUAGE"],
                     [1, "F", "21-30", "English"], ["0002", "M", "31-40", "Mandarin"]]})
    # ---- Part 3 same room: close mic (UTF-16 TextGrid with the bad intervals), boundary mic, binary grid.
    same = p13 / "PART3" / "Scripts Same"
    same.mkdir(parents=True)
    close = p13 / "PART3" / "Audio Same CloseMic"
    close.mkdir(parents=True)
    sf.write(close / "3000-1.wav", tone(8.0), SR)
    sf.write(close / "3000-2.wav", tone(8.0, 350), SR)
    spk1 = [(0, 1, "<S>"), (1, 2.5, "[lah] okay can"), (2.5, 3, "<Z>"), (3, 3, "zero length"),
            (4.5, 4.0, "negative length"), (3, 5.5, '<FIL/> then (ppb) we go "there"'), (5.5, 7.9, "<UNK> okay")]
    spk1_last = (7.9, 10.0, "runs past the end")
    (same / "3000-1.TextGrid").write_bytes(long_text_grid("3000-1", spk1 + [spk1_last], 10.0).encode("utf-16"))
    spk2 = [(0, 2, "ho [lor] see you"), (2, 4, ""), (4, 6, "#pasar malam# got")]
    (same / "3000-2.TextGrid").write_bytes(binary_text_grid("3000-2", spk2, 8.0))
    boundary = p13 / "PART3" / "Audio Same BoundaryMic"
    boundary.mkdir(parents=True)
    sf.write(boundary / "3000.wav", tone(8.0, 400), SR)
    # ---- Part 3 separate rooms: IVR in a folder per conference, UTF-8 short-form grid; a broken grid.
    sep = p13 / "PART3" / "Scripts Separate"
    sep.mkdir(parents=True)
    ivr = p13 / "PART3" / "Audio Separate IVR" / "conf_2501_2501"
    ivr.mkdir(parents=True)
    sf.write(ivr / "25010001.wav", tone(40.0), SR)
    (sep / "conf_2501_2501_25010001.TextGrid").write_text(
        short_text_grid("conf_2501_2501_25010001", [(0, 2, "hello can hear me"), (2, 37, "a very long monologue")],
                        40.0), encoding="utf-8")
    sf.write(ivr / "25010002.wav", tone(3.0), SR)
    (sep / "conf_2501_2501_25010002.TextGrid").write_bytes(b"\x81\x00garbage\xff\xfe\x00")
    sf.write(ivr / "25010003.wav", tone(3.0), SR)  # no TextGrid at all
    write_xlsx(p13 / "PART3" / "Documents" / "Speakers (Part 3).XLSX", {
        "Same Room": [["SCD", "AGE", "SEX"], ["3000-1", "21-30", "F"], ["3000-2", "41-50", "M"]],
        "Separate Room": [["Conference ID", "Speaker ID", "Age", "Gender"], ["2501", "25010001", "31-40", "M"]]})
    # ---- Part 4 code-switching (UTF-8 with BOM, Mother Tongue spans), Part 5 grid beside its audio,
    # Part 6 in a legacy code page, and CSV speaker metadata.
    cs_audio = p46 / "PART4" / "Codeswitching" / "Same Room Audio"
    cs_audio.mkdir(parents=True)
    sf.write(cs_audio / "sur_0001_0002_phns_cs-mly.wav", tone(4.0), SR)
    cs_scripts = p46 / "PART4" / "Codeswitching" / "Same Room Scripts"
    cs_scripts.mkdir(parents=True)
    (cs_scripts / "sur_0001_0002_phns_cs-mly.TextGrid").write_bytes(long_text_grid(
        "speaker 0002", [(0, 2, "we go <malay>makan:eat</malay> now"), (2, 4, "<S>")], 4.0).encode("utf-8-sig"))
    (p46 / "PART4" / "Speaker Metadata.csv").write_text(
        "Speaker ID,Gender,Ethnic Group,First Language\n0002,F,MALAY,Malay\n", encoding="utf-8")
    debate = p46 / "PART5" / "Debate Audio"
    debate.mkdir(parents=True)
    sf.write(debate / "debate_01.wav", tone(3.0), SR)
    (debate / "debate_01.TextGrid").write_text(long_text_grid("x", [(0, 2.5, "I disagree [leh]")], 3.0))
    cc = p46 / "PART6" / "Call Centre Design 1"
    (cc / "Audio").mkdir(parents=True)
    (cc / "Scripts").mkdir(parents=True)
    sf.write(cc / "Audio" / "call_01.wav", tone(3.0), SR)
    (cc / "Scripts" / "call_01.TextGrid").write_bytes(
        long_text_grid("call_01", [(0, 2, "café booking for two")], 3.0).encode("cp1252"))
    return root


def run(root, **options):
    ledger = Ledger()
    records = list(read("nsc", root, ledger, **options))
    assert ledger.balanced(), ledger.dumps()
    assert ledger.kept == len(records)
    return records, ledger


def test_every_part_and_room_is_named_like_lhotse():
    assert len(NSC_PARTS) == 17
    assert {"PART1_CHANNEL0", "PART2_CHANNEL2", "PART3_SameBoundaryMic", "PART3_SeparateIVR",
            "PART4_CodeswitchingDiffRoom", "PART5_FinanceEmotion", "PART6_CallCentreDesign3"} <= set(NSC_PARTS)


def test_part1_speaker_zips_read_in_place(tmp_path):
    root = build_nsc_tree(tmp_path)
    records, ledger = run(root, parts=["PART1_CHANNEL0"])
    assert sorted(r.id for r in records) == ["000010001", "000010002", "000021001", "000021002"]
    assert {s.id: s.reason for s in ledger.skips} == {"000010003": "missing_zip_member", "000030001": "missing_file"}
    assert all("000010.TXT" in s.detail or "000030.TXT" in s.detail for s in ledger.skips)
    r = next(r for r in records if r.id == "000010002")
    assert r.text == "<FIL/> I think (ppb) can one." and r.extra["normalised"] == "<fil/> i think (ppb) can one."
    assert r.audio_path.endswith("SPEAKER0001.zip#SPEAKER0001/SESSION0/000010002.WAV")
    assert r.duration == pytest.approx(0.8) and r.speaker == "PART1/SPEAKER0001"
    x = load_audio(r.audio_path)  # the member, decoded from the zip in memory
    assert x.shape == (int(0.8 * SR),) and np.abs(x).max() > 0.1
    utf16 = next(r for r in records if r.id == "000021001")
    assert utf16.text == "Later we go makan [ah]." and utf16.extra["session"] == "SESSION1"
    # speaker spreadsheet (xlsx, title row above the header, ids as 1 and "0002")
    assert r.meta == {"gender": "F", "age_group": "21-30", "first_language": "English"}
    assert utf16.meta["first_language"] == "Mandarin"
    assert not list((root / ROOT_1_3 / "PART1" / "DATA" / "CHANNEL0" / "WAVE").rglob("*.WAV"))  # nothing extracted
    with pytest.raises(AudioError) as e:
        load_audio(r.audio_path.replace("000010002.WAV", "000010009.WAV"))
    assert e.value.reason == "missing_file"


def test_part3_textgrids_cut_into_segments_with_every_oddity_recorded(tmp_path):
    root = build_nsc_tree(tmp_path)
    records, ledger = run(root, parts=["PART3_SameCloseMic"])
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == [f"PART3_SameCloseMic_3000-1-{i:05d}" for i in (2, 6, 7)] + [
        f"PART3_SameCloseMic_3000-2-{i:05d}" for i in (1, 3)]
    reasons = {s.id.rsplit("-", 1)[1] + "/" + s.id.split("_")[2][:6]: s.reason for s in ledger.skips}
    assert reasons == {"00001/3000-1": "silence", "00003/3000-1": "silence", "00004/3000-1": "bad_segment",
                       "00005/3000-1": "bad_segment", "00008/3000-1": "segment_past_end",
                       "00002/3000-2": "silence"}
    past = next(s for s in ledger.skips if s.reason == "segment_past_end")
    assert "3000-1.TextGrid" in past.detail and "interval 8" in past.detail
    seg = by_id["PART3_SameCloseMic_3000-1-00006"]
    assert seg.text == '<FIL/> then (ppb) we go "there"'  # UTF-16 grid, doubled quotes undone
    assert seg.audio_path.endswith("3000-1.wav#t=3.000,5.500") and seg.duration == pytest.approx(2.5)
    assert seg.speaker == "PART3/3000-1" and seg.meta == {"gender": "F", "age_group": "21-30"}
    assert len(load_audio(seg.audio_path)) == int(2.5 * SR)  # only the segment is decoded
    binary = by_id["PART3_SameCloseMic_3000-2-00003"]
    assert binary.text == "#pasar malam# got" and binary.meta["gender"] == "M"
    assert not [p for p in (root / ROOT_1_3 / "PART3").rglob("*.wav") if "#" in p.name]  # no segment copies


def test_boundary_mic_ivr_and_parts_4_to_6(tmp_path):
    root = build_nsc_tree(tmp_path)
    records, ledger = run(root, parts=["PART3_SameBoundaryMic", "PART3_SeparateIVR", "PART4", "PART5", "PART6"])
    texts = {r.id: r.text for r in records}
    # both speakers' grids cut the one boundary-mic recording
    assert {r.audio_path.split("#")[0].endswith("3000.wav") for r in records if "Boundary" in r.id} == {True}
    assert {r.speaker for r in records if "Boundary" in r.id} == {"PART3/3000-1", "PART3/3000-2"}
    assert texts["PART3_SeparateIVR_conf_2501_2501_25010001-00001"] == "hello can hear me"
    ivr = next(r for r in records if "IVR" in r.id)
    assert ivr.meta == {"gender": "M", "age_group": "31-40"}
    assert texts["PART4_CodeswitchingSameRoom_sur_0001_0002_phns_cs-mly-00001"] == \
        "we go <malay>makan:eat</malay> now"
    assert next(r for r in records if r.id.startswith("PART4")).meta["ethnic_group"] == "MALAY"
    assert texts["PART5_Debate_debate_01-00001"] == "I disagree [leh]"  # grid beside the audio, tier "x"
    assert texts["PART6_CallCentreDesign1_call_01-00001"] == "café booking for two"  # cp1252 grid
    got = ledger.skipped_by_reason
    assert got == {"silence": 4, "bad_segment": 2, "segment_past_end": 1, "segment_too_long": 1,
                   "undecodable_textgrid": 1, "missing_textgrid": 1}
    long = next(s for s in ledger.skips if s.reason == "segment_too_long")
    assert "35.0 s > 30.0 s" in long.detail
    assert next(s for s in ledger.skips if s.reason == "missing_textgrid").id.endswith("25010003")


def test_textgrid_parser_formats_and_failures():
    rows = [(0.0, 1.0, "a"), (1.0, 2.0, "tiếng việt")]
    for data in (long_text_grid("t", rows, 2).encode("utf-16-le"),  # UTF-16 without a BOM
                 long_text_grid("t", rows, 2).encode("utf-16-be"),
                 short_text_grid("t", rows, 2).encode("utf-8"),
                 binary_text_grid("tiếng", rows, 2)):
        (tier,) = read_textgrid(data)
        assert tier.intervals == rows
    with pytest.raises(TextGridError):
        read_textgrid(binary_text_grid("t", rows, 2)[:-3])  # cut short
    with pytest.raises(TextGridError):
        read_textgrid(b"just some text, no grid")


def test_normaliser_resolves_nsc_markers_in_segment_texts(tmp_path):
    from asr_lora.data.text import normalize

    root = build_nsc_tree(tmp_path)
    records, _ = run(root)
    norm = {r.id.rsplit("_", 1)[-1] if "_" in r.id else r.id: normalize(r.text) for r in records}
    assert norm["000010002"] == "i think can one"  # <FIL/> and (ppb) dropped
    assert norm["000010001"] == "wah the queue at the hawker center lah very long"  # [lah] kept as a word
    assert norm["3000-1-00007"] == "okay"  # <UNK> dropped
    assert norm["cs-mly-00001"] == "we go makan now"  # Mother Tongue word kept, gloss dropped


@pytest.mark.parametrize("streaming", ["false", "true"])
def test_both_data_paths_decode_segments_and_zip_members(tmp_path, tiny_whisper_dir, streaming):
    from hydra import compose, initialize_config_dir
    from transformers import WhisperTokenizer

    from asr_lora.config import CONF_DIR
    from asr_lora.data.loading import load_data

    root = build_nsc_tree(tmp_path / "nsc")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data=nsc", f"data.path={root}", "data.options.parts=[PART1_CHANNEL0,PART3_SameCloseMic]",
            f"data.streaming={streaming}", "data.split_fractions=[1,0,0]", f"paths.cache_dir={tmp_path / 'cache'}",
            f"model.name_or_path={tiny_whisper_dir}"])
    tok = WhisperTokenizer.from_pretrained(tiny_whisper_dir)
    splits, report = load_data(cfg.data, tok, tmp_path / "run")
    assert report["counts"]["balanced"] and report["counts"]["kept"] == 9
    saved = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert saved["counts"]["skipped_by_reason"] == {"missing_zip_member": 1, "missing_file": 1, "silence": 3,
                                                   "bad_segment": 2, "segment_past_end": 1}
    rows = list(splits["train"])
    assert len(rows) == 9
    lengths = sorted(len(r["audio"]) for r in rows)
    assert lengths == sorted([int(0.8 * SR)] * 4 + [int(s * SR) for s in (1.5, 2.5, 2.4, 2.0, 2.0)])


def test_prepare_train_evaluate_on_a_fixture_nsc_tree(tmp_path, tiny_whisper_dir):
    """`data=nsc` end to end: prepare (data report), a few training steps on the tiny random model,
    then evaluate the saved adapter, all from the fixture tree (zips and TextGrid segments)."""
    from hydra import compose, initialize_config_dir
    from transformers import WhisperTokenizer

    from asr_lora.config import CONF_DIR
    from asr_lora.data.loading import load_data
    from asr_lora.evaluation.job import evaluate
    from asr_lora.training.job import train

    root = build_nsc_tree(tmp_path / "nsc")
    overrides = [
        f"model.name_or_path={tiny_whisper_dir}", "data=nsc", f"data.path={root}",
        "data.options.parts=[PART1_CHANNEL0,PART3_SameCloseMic,PART3_SameBoundaryMic]",
        "data.split_fractions=[0.6,0.2,0.2]", f"paths.cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}", "logger=none", "lora.scope=[decoder_self,decoder_cross]", "lora.r=4",
        "lora.alpha=8", "train.max_steps=2", "train.eval_steps=2", "train.save_steps=2", "train.logging_steps=1",
        "train.per_device_train_batch_size=4", "train.warmup_steps=0", "eval.n_bootstrap=20",
        "eval.max_new_tokens=4", "export.enabled=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    splits, report = load_data(cfg.data, WhisperTokenizer.from_pretrained(tiny_whisper_dir), tmp_path / "prep")
    assert report["counts"]["balanced"] and set(splits) == {"train", "dev", "test"}, report["kept_per_split"]
    summary = train(cfg)
    assert summary["train"]["steps"] == 2
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "data_report.json").read_text())["counts"]["skipped_by_reason"]["silence"] == 6
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        ecfg = compose("config", overrides=overrides + [f"+adapter={run / 'adapter'}", f"run_dir={tmp_path / 'ev'}"])
    ev = evaluate(ecfg)
    assert set(ev["systems"]) == {"base", "prompt", "adapted"}  # terms derived from the NSC train text
    assert ev["terms"]["n_terms"] > 0 and np.isfinite(ev["systems"]["adapted"]["wer"]["norm"]["wer"])


def test_whole_tree_without_parts_reads_every_room_on_disk(tmp_path):
    root = build_nsc_tree(tmp_path)
    records, ledger = run(root)
    assert {r.id.split("_")[0] + "_" + r.id.split("_")[1] for r in records if r.id.startswith("PART")} == {
        "PART3_SameBoundaryMic", "PART3_SameCloseMic", "PART3_SeparateIVR", "PART4_CodeswitchingSameRoom",
        "PART5_Debate", "PART6_CallCentreDesign1"}  # no StandingMic audio in the tree: that room is not read
    assert ledger.skipped_by_reason == {"missing_zip_member": 1, "missing_file": 1, "silence": 7, "bad_segment": 4,
                                        "segment_past_end": 2, "segment_too_long": 1, "undecodable_textgrid": 1,
                                        "missing_textgrid": 1}
    with pytest.raises(ValueError, match="unknown NSC part"):
        run(root, parts=["PART7_Radio"])
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "nowhere")


def test_part1_wavs_extracted_flat_keep_each_speaker(tmp_path):
    """WAVs unzipped flat into WAVE/ (`unzip -j`): each is its script's speaker, not one speaker
    named after the folder (who would then take every clip into one split)."""
    from fixtures_build import write_tone
    from test_readers import run

    ch0 = tmp_path / "IMDA - National Speech Corpus" / "PART1" / "DATA" / "CHANNEL0"
    (ch0 / "SCRIPT").mkdir(parents=True)
    for spk in ("0001", "0002"):
        lines = []
        for n in range(1, 3):
            uid = f"0{spk}0{n:03d}"
            lines += [f"{uid}\thello number {n}", f"\thello number {n}"]
            write_tone(ch0 / "WAVE" / f"{uid}.WAV")
        (ch0 / "SCRIPT" / f"0{spk}0.TXT").write_text("\r\n".join(lines) + "\r\n")
    records, _ = run("nsc", tmp_path, parts=["PART1_CHANNEL0"])
    assert sorted({r.speaker for r in records}) == ["PART1/SPEAKER0001", "PART1/SPEAKER0002"]
    assert len(records) == 4


def test_an_unreadable_speaker_sheet_is_a_warning_and_a_cp1252_one_is_read(tmp_path, caplog):
    """The speaker spreadsheets are optional metadata: a truncated .XLSX download used to stop the
    whole read with a BadZipFile naming no file, and a CSV saved in cp1252 with a UnicodeDecodeError."""
    from asr_lora.data.readers.speakers import load_speakers

    (tmp_path / "Speaker Information (Part 1).XLSX").write_bytes(b"PK\x03\x04 truncated download")
    sheet = "SCD/PART1,SEX,FIRST LANGUAGE\n1,F,Fran\u00e7ais\n"
    (tmp_path / "Speaker Information.csv").write_bytes(sheet.encode("cp1252"))
    table = load_speakers([tmp_path / "Speaker Information (Part 1).XLSX", tmp_path / "Speaker Information.csv"])
    assert "Speaker Information (Part 1).XLSX: speaker information not read (BadZipFile" in caplog.text
    assert list(table.values()) == [{"gender": "F", "first_language": "Fran\u00e7ais"}]


def test_speech_on_a_textgrids_other_tiers_is_a_recorded_skip(tmp_path):
    """A debate TextGrid with one interval tier per speaker: the recording is read from one tier, and
    the other tiers' speech is counted as `unused_tier` skips instead of vanishing from the ledger."""
    from fixtures_build import write_tone
    from test_readers import run

    nsc = "IMDA - National Speech Corpus"
    deb = tmp_path / f"{nsc} - Additional" / f"{nsc} (Additional)" / "PART5"
    write_tone(deb / "Debate Audio" / "debate_01.wav", seconds=6.0)
    grid = long_text_grid("speaker A", [(0, 2, "I propose we go"), (2, 6, "<S>")], 6)
    grid = grid.replace("size = 1", "size = 2")
    grid += "\r\n".join(['    item [2]:', '        class = "IntervalTier"', '        name = "speaker B"',
                         '        xmin = 0', '        xmax = 6', '        intervals: size = 2',
                         '        intervals [1]:',
                         '            xmin = 0', '            xmax = 2', '            text = "<S>"',
                         '        intervals [2]:', '            xmin = 2', '            xmax = 5',
                         '            text = "I disagree leh"']) + "\r\n"
    (deb / "Debate Scripts").mkdir(parents=True)
    (deb / "Debate Scripts" / "debate_01.TextGrid").write_text(grid)
    records, ledger = run("nsc", tmp_path, parts=["PART5_Debate"])
    assert [r.text for r in records] == ["I propose we go"]
    assert ledger.skipped_by_reason == {"silence": 1, "unused_tier": 1}
    assert "tier 'speaker B' interval 2" in next(s.source for s in ledger.skips if s.reason == "unused_tier")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_part1_script_in_utf16_without_a_bom_is_read_in_either_byte_order(encoding):
    from asr_lora.data.readers.nsc_read import decode_script

    text = "000010001\thello there lah\r\n\thello there lah\r\n"
    assert decode_script(text.encode(encoding)) == text
