"""NSC Parts 3-6: long recordings cut into utterances by Praat TextGrids, without copying audio.

Each kept interval becomes a Record whose `audio_path` addresses its span of the recording
(`audio.segment_address`, "<wav>#t=<start>,<end>"), which both data paths decode with a seek.

Which TextGrid belongs to which recording (from lhotse's recipe and public NSC loaders):
  PART3 Same CloseMic, Separate StandingMic, Parts 4-6: `<stem>.TextGrid` (in the room's script
      folder, or beside the audio);
  PART3 Separate IVR: the audio sits in a folder per conference, the TextGrid is
      `<folder>_<stem>.TextGrid`;
  PART3 Same BoundaryMic: one recording `<conversation>.wav` holds both speakers, each with his
      own `<conversation>-<n>.TextGrid` (lhotse's recipe leaves this room out).
The tier used is the one named like the TextGrid's stem, else the file's first interval tier (the
tier key is read from the file: NSC tier names change from file to file).

Rows and skip reasons: a recording without a TextGrid is one row ("missing_textgrid"), so is a
recording whose header cannot be read ("unreadable") and a TextGrid that cannot be decoded or
parsed ("undecodable_textgrid"); a TextGrid whose recording is absent is one "missing_file" row.
Every interval of a used tier is a row: "silence" (<S>, <Z>, or blank), "bad_segment" (zero or
negative length, NaN), "segment_past_end", "segment_too_long" (see `read_nsc`), or a Record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf

from asr_lora.data.audio import segment_address
from asr_lora.data.readers.base import Reject, Rows
from asr_lora.data.readers.speakers import lookup
from asr_lora.data.readers.textgrid import TextGridError, Tier, read_textgrid
from asr_lora.data.records import Record

SILENCE = {"", "<S>", "<Z>"}

AUDIO_SUFFIXES = (".wav", ".flac")


def _script_index(*folders: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in folders:
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() == ".textgrid":
                    out.setdefault(p.stem.upper(), p)
    return out


def _scripts_for(name: str, audio: Path, index: dict[str, Path]) -> list[Path]:
    if name == "PART3_SeparateIVR":
        keys = [f"{audio.parent.name}_{audio.stem}".upper(), audio.stem.upper()]
    else:
        keys = [audio.stem.upper()]
    for k in keys:
        if k in index:
            return [index[k]]
    if name == "PART3_SameBoundaryMic":
        prefix = re.compile(re.escape(audio.stem.upper()) + r"[-_]\d+$")
        return [p for k, p in sorted(index.items()) if prefix.match(k)]
    return []


def _tier(tiers: list[Tier], stem: str) -> Tier:
    intervals = [t for t in tiers if t.kind == "IntervalTier"]
    if not intervals:
        raise TextGridError("no interval tier")
    return next((t for t in intervals if t.name.strip().upper() == stem.upper()), intervals[0])


def _speaker_candidates(stem: str) -> list[str]:
    """Keys to look the speaker up by: the stem ("3000-1"), what follows "conf_<a>_" in Separate
    Room names ("<a>_<speaker>"), then the number groups, last first."""
    tail = stem.split("_", 2)[-1] if stem.lower().startswith("conf_") else stem
    return [stem, tail, *reversed(re.findall(r"\d+", stem))]


def read_room(
    name: str, script_dir: Path, audio_dir: Path, rows: Rows, speakers: dict, subset: str,
    max_segment_s: float, tolerance_s: float,
) -> Iterator[Record]:
    part = name.split("_")[0]
    audios = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if audio_dir.is_dir() else []
    index = _script_index(script_dir, audio_dir)
    if not audios and not index:
        raise FileNotFoundError(f"NSC {name}: no recordings in {audio_dir} and no TextGrids in {script_dir}")
    used: set[Path] = set()
    for audio in audios:
        scripts = _scripts_for(name, audio, index)
        used.update(scripts)
        where = str(audio)
        if not scripts:
            rows.take(where, _reject, Reject("missing_textgrid", f"no TextGrid for this recording in {script_dir}",
                                             f"{name}_{audio.stem}"))
            continue
        try:
            info = sf.info(str(audio))
            seconds = info.frames / info.samplerate
        except Exception as e:  # noqa: BLE001 - libsndfile raises several types
            rows.take(where, _reject, Reject("unreadable", f"cannot read the recording's header: {e}",
                                             f"{name}_{audio.stem}"))
            continue
        for script in scripts:
            yield from _segments(name, part, audio, seconds, script, rows, speakers, subset, max_segment_s,
                                 tolerance_s)
    for key, script in sorted(index.items()):
        if script not in used:
            rows.take(str(script), _reject, Reject("missing_file", f"no recording for this TextGrid in {audio_dir}",
                                                   f"{name}_{script.stem}"))


def _reject(e: Reject) -> Record:
    raise e


def _segments(
    name: str, part: str, audio: Path, seconds: float, script: Path, rows: Rows, speakers: dict, subset: str,
    max_segment_s: float, tolerance_s: float,
) -> Iterator[Record]:
    try:
        tiers = read_textgrid(script.read_bytes())
        tier = _tier(tiers, script.stem)
    except (TextGridError, OSError) as e:
        rows.take(str(script), _reject, Reject("undecodable_textgrid", str(e), f"{name}_{script.stem}"))
        return
    meta = lookup(speakers, _speaker_candidates(script.stem))

    def make(i: int, start: float, end: float, label: str) -> Record:
        uid = f"{name}_{script.stem}-{i:05d}"
        text = " ".join(label.split())
        if text.upper() in SILENCE:
            raise Reject("silence", f"silence interval {text or '(blank)'!r}", uid)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise Reject("bad_segment", f"interval {start:.3f}-{end:.3f} s has no positive length", uid)
        extra = {"recording": str(audio), "textgrid": str(script), "tier": tier.name, "start": start, "end": end}
        if start >= seconds or end > seconds + tolerance_s:
            raise Reject("segment_past_end", f"interval {start:.3f}-{end:.3f} s runs past the recording's end "
                         f"({seconds:.3f} s, tolerance {tolerance_s} s)", uid)
        if end > seconds:
            extra["clipped_end"] = end
            end = seconds
        if end - start > max_segment_s:
            raise Reject("segment_too_long", f"interval {start:.3f}-{end:.3f} s is {end - start:.1f} s "
                         f"> {max_segment_s} s and has no word timings to split it at", uid)
        return Record(
            id=uid,
            text=text,
            audio_path=segment_address(audio, start, end),
            speaker=f"{part}/{script.stem}",
            accent="sg",
            duration=round(end - start, 3),
            split=rows.split,
            subset=subset,
            source=f"{script}:{tier.name}[{i}]",
            extra=extra,
            meta=meta,
        )

    for i, (start, end, label) in enumerate(tier.intervals, 1):
        where = f"{script}: tier {tier.name!r} interval {i}"
        if (rec := rows.take(where, make, i, start, end, label)) is not None:
            yield rec
    # The recording's speaker is one tier; speech on the others (a debate's second speaker) is
    # not this speaker's and is counted as skipped, not left out unsaid.
    for other in (t for t in tiers if t is not tier and t.kind == "IntervalTier"):
        for i, (start, end, label) in enumerate(other.intervals, 1):
            if " ".join(label.split()).upper() not in SILENCE:
                rows.take(f"{script}: tier {other.name!r} interval {i}", _reject, Reject(
                    "unused_tier", f"speech on tier {other.name!r}; the recording is read from tier {tier.name!r}",
                    f"{name}_{script.stem}-{other.name}-{i:05d}"))
