"""Build tiny corpora in a temp folder, in the exact on-disk layouts of the real ones.

Audio is a short sine (or noise) written at test time, so git holds no binary fixtures. Each
builder returns the path a reader takes plus what a test should expect from it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(
    seconds: float = 0.3, sr: int = 16000, freq: float = 440.0, channels: int = 1, amp: float = 0.3
) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def write_tone(
    path: Path, seconds: float = 0.3, sr: int = 16000, freq: float = 440.0, channels: int = 1, **sf_kwargs
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, freq, channels), sr, **sf_kwargs)
    return path


def wav_bytes(seconds: float = 0.3, sr: int = 16000, freq: float = 440.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, freq), sr, format="WAV")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ JSONL


def build_jsonl(root: Path) -> Path:
    """A clean NeMo manifest: relative, nested-relative and absolute paths, optional fields."""
    a = write_tone(root / "audio" / "a.wav")
    write_tone(root / "audio" / "sub" / "b.flac", format="FLAC")
    c = write_tone(root / "elsewhere" / "c.wav")
    rows = [
        {
            "audio_filepath": "audio/a.wav",
            "text": "hello lah",
            "duration": 0.3,
            "speaker": "s1",
            "accent": "sg",
            "split": "train",
        },
        {
            "audio_filepath": "audio/sub/b.flac",
            "text": "can or not",
            "id": "b",
            "speaker": 7,
            "engine": "piper",
            "voice": "joe",
            "subset": "control",
            "lang": "en",
        },
        {"audio_filepath": str(c.resolve()), "text": "okay", "duration": 1},
    ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert a.exists()
    return manifest


def build_bad_jsonl(root: Path) -> tuple[Path, dict[int, str]]:
    """A manifest with one of each fault. Returns it and {line number: expected reason};
    lines absent from the dict are expected to be kept."""
    write_tone(root / "clips" / "good.wav")
    write_tone(root / "clips" / "my clip ünïcödé 新加坡.wav")
    def dumps(d):
        return json.dumps(d, ensure_ascii=False).encode("utf-8")

    lines: list[tuple[bytes, str | None]] = [
        (dumps({"audio_filepath": "clips/good.wav", "text": "good one", "id": "u1"}), None),
        (dumps({"audio_filepath": "clips/gone.wav", "text": "missing file", "id": "u2"}), "missing_file"),
        (dumps({"audio_filepath": "clips/good.wav", "text": "  ", "id": "u3"}), "empty_text"),
        (b'{"audio_filepath": "clips/good.wav", "text": "caf\xe9 latin-1", "id": "u4"}', "bad_line"),
        (b'{"audio_filepath": "clips/good.wav", "text": "broken', "bad_line"),
        (dumps({"audio_filepath": "clips/good.wav", "text": "again", "id": "u1"}), "duplicate_id"),
        (
            dumps(
                {
                    "audio_filepath": "clips/my clip ünïcödé 新加坡.wav",
                    "text": "spaces and unicode",
                    "id": "u5",
                }
            ),
            None,
        ),
        (dumps({"text": "no path", "id": "u6"}), "missing_field"),
        (
            dumps(
                {"audio_filepath": "clips/good.wav", "text": "bad duration", "id": "u7", "duration": "abc"}
            ),
            "bad_field",
        ),
        (b"[1, 2, 3]", "bad_line"),
        (b"", None),  # a blank line is not a row
    ]
    manifest = root / "bad manifest.jsonl"
    manifest.write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    return manifest, {i: reason for i, (_, reason) in enumerate(lines, 1) if reason}


# -------------------------------------------------------------------------------------- CSV / TSV


def build_csv(root: Path, delimiter: str = ",") -> Path:
    ext = "tsv" if delimiter == "\t" else "csv"
    for name in ("x.wav", "y.wav"):
        write_tone(root / "wavs" / name)
    table = root / f"metadata.{ext}"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if ext == "tsv" else csv.QUOTE_MINIMAL)
        w.writerow(["path", "sentence", "client_id", "dur"])
        w.writerow(
            [
                "wavs/x.wav",
                "the MRT is crowded, lah" if ext == "csv" else "the MRT is crowded lah",
                "spk1",
                "0.3",
            ]
        )
        w.writerow(["wavs/y.wav", "where you going", "spk2", "0.3"])
        w.writerow(["wavs/z.wav", "not there", "spk2", "0.3"])
    return table


# ----------------------------------------------------------------------------------- Common Voice

CV_HEADER = [
    "client_id",
    "path",
    "sentence_id",
    "sentence",
    "sentence_domain",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
]


def build_common_voice(root: Path) -> tuple[Path, dict[str, str | None]]:
    """`cv-corpus-x/en` with validated.tsv, clip_durations.tsv and clips/*.mp3. Returns the release
    folder and {clip: expected reason} for accents="singapor", min_up_votes=2, min_vote_margin=1."""
    folder = root / "cv-corpus-17.0-2024-03-15" / "en"
    rows = [
        # client, clip, sentence, up, down, accents, expected
        ("c1", "common_voice_en_1.mp3", "The weather is very hot today.", 2, 0, "Singaporean English", None),
        (
            "c2",
            "common_voice_en_2.mp3",
            'He said "can" lor.',
            3,
            1,
            "Singaporean English|Malaysian English",
            None,
        ),
        ("c3", "common_voice_en_3.mp3", "Howdy partner.", 5, 0, "United States English", "filtered_accent"),
        ("c4", "common_voice_en_4.mp3", "No accent given.", 4, 0, "", "filtered_accent"),
        ("c1", "common_voice_en_5.mp3", "Only one vote.", 1, 0, "singaporean english", "filtered_votes"),
        (
            "c5",
            "common_voice_en_6.mp3",
            "Contested clip.",
            3,
            3,
            "Singapore English, Chinese",
            "filtered_votes",
        ),
        ("c6", "common_voice_en_7.mp3", "Clip is missing.", 2, 0, "Singaporean English", "missing_file"),
    ]
    folder.mkdir(parents=True)
    with open(folder / "validated.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(CV_HEADER) + "\n")
        f.writelines(
            "\t".join(
                [
                    client,
                    clip,
                    f"s{i}",
                    sentence,
                    "",
                    str(up),
                    str(down),
                    "twenties",
                    "male_masculine",
                    accents,
                    "",
                    "en",
                    "",
                ]
            )
            + "\n"
            for i, (client, clip, sentence, up, down, accents, _) in enumerate(rows)
        )
    with open(folder / "clip_durations.tsv", "w", encoding="utf-8") as f:
        f.write("clip\tduration[ms]\n" + "".join(f"{r[1]}\t300\n" for r in rows))
    for _, clip, *_rest, expected in rows:
        if expected != "missing_file":
            _write_mp3(folder / "clips" / clip)
    return folder, {clip: expected for _, clip, *_rest, expected in rows}


def _write_mp3(path: Path) -> None:
    # Readers only check that clips exist, but a real MP3 keeps the fixture honest where
    # libsndfile can encode one (>= 1.1); otherwise WAV bytes stand in.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sf.write(str(path), tone(), 16000, format="MP3")
    except (sf.LibsndfileError, ValueError, TypeError):
        path.write_bytes(wav_bytes())


# ------------------------------------------------------------------------------------ HF datasets


def build_audiofolder(root: Path) -> Path:
    """`datasets` audiofolder: audio files next to metadata.csv with file_name,transcription."""
    folder = root / "audiofolder"
    write_tone(folder / "one.wav")
    write_tone(folder / "two.flac", format="FLAC")
    write_tone(folder / "three.wav", sr=8000)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "transcription", "speaker_id"])
        w.writerows(
            [["one.wav", "first clip", "a"], ["two.flac", "second clip", "b"], ["three.wav", "", "a"]]
        )
    return folder


def build_hf_parquet(root: Path) -> Path:
    """A Hub-style parquet shard whose audio column holds encoded bytes, plus one corrupt row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "hub_like" / "data"
    folder.mkdir(parents=True)
    audio = [
        {"bytes": wav_bytes(sr=22050), "path": "a.wav"},
        {"bytes": b"not audio at all", "path": "b.wav"},
        {"bytes": wav_bytes(), "path": "c.wav"},
    ]
    table = pa.table(
        {"id": ["h1", "h2", "h3"], "audio": audio, "sentence": ["bytes clip", "corrupt", "third"]}
    )
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    return folder.parent


# ------------------------------------------------------------------------------------------- NSC


def build_nsc(root: Path) -> tuple[Path, dict[str, str | None]]:
    """IMDA NSC Parts 1-2 layout. Script files: one UTF-8 with BOM, one UTF-16 (with BOM), as
    both occur in the wild. Returns the corpus root and {utterance id: expected reason}."""
    expected: dict[str, str | None] = {}

    def script(
        part: str, speaker5: str, session: str, utts: list[tuple[str, str, str, bool]], encoding: str
    ) -> None:
        data = root / part / "DATA" / "CHANNEL0"
        lines = []
        for n, raw, normalised, has_wav in utts:
            uid = f"{speaker5}{session}{n}"
            lines += [f"{uid}\t{raw}", f"\t{normalised}"]
            if has_wav:
                write_tone(data / "WAVE" / f"SPEAKER{speaker5[1:]}" / f"SESSION{session}" / f"{uid}.WAV")
            expected[uid] = None if has_wav else "missing_file"
        path = data / "SCRIPT" / f"{speaker5}{session}.TXT"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))

    script(
        "PART1",
        "00001",
        "0",
        [
            (
                "001",
                "Wah, the queue at the hawker centre [lah] very long.",
                "wah the queue at the hawker centre lah very long",
                True,
            ),
            ("002", "<FIL/> I think (ppb) can one.", "i think can one", True),
            ("003", "This one no recording.", "this one no recording", False),
        ],
        "utf-8-sig",
    )
    script(
        "PART1",
        "00002",
        "1",
        [
            ("001", "Later we go makan [ah].", "later we go makan ah", True),
            ("002", "Don't play play.", "don't play play", True),
        ],
        "utf-16",
    )
    script("PART2", "03001", "0", [("001", "Part two speaker.", "part two speaker", True)], "utf-8")
    return root, expected
