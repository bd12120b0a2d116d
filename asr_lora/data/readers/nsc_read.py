"""NSC Parts 1-2 (prompted read speech): SCRIPT/*.TXT plus one zip of WAVs per speaker.

Speaker zips are read in place rather than extracted: Part 1 alone is ~1000 h per channel (over
100 GB of 16 kHz WAV), so an extracted copy would double the disk it takes, while a zip's central
directory gives each member directly (`audio.load_part` opens the zip and reads one member, a few
milliseconds). A WAVE folder that already holds extracted speakers (SPEAKERxxxx/SESSIONn/*.WAV,
or lhotse's WAVE/extracted/...) is used as it is, and wins over the zip for the same utterance.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf

from asr_lora.data.audio import zip_address
from asr_lora.data.readers.base import Reject, Rows, snip
from asr_lora.data.readers.speakers import lookup
from asr_lora.data.records import Record


def decode_script(data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:200]:  # UTF-16 without a BOM: ASCII text full of NULs, after (LE) or before (BE) each letter
        return data.decode("utf-16-le" if data[1:2] == b"\x00" else "utf-16-be", errors="replace")
    return data.decode("utf-8-sig", errors="surrogateescape")


class SpeakerZips:
    """The WAVE folder's speaker zips, opened one at a time (scripts are sorted by speaker)."""

    def __init__(self, wave: Path):
        self.zips = {p.stem.upper(): p for p in wave.glob("*") if p.suffix.lower() == ".zip"} if wave.is_dir() else {}
        self.name: str | None = None
        self.members: dict[str, str] | str = {}

    def members_of(self, speaker: str) -> dict[str, str] | str | None:
        """{utterance id: member} of SPEAKER<speaker>.zip, an error message, or None (no zip)."""
        key = f"SPEAKER{speaker}".upper()
        if key not in self.zips:
            return None
        if self.name != key:
            self.name = key
            try:
                with zipfile.ZipFile(self.zips[key]) as zf:
                    self.members = {Path(m).stem.upper(): m for m in zf.namelist() if m.upper().endswith(".WAV")}
            except (zipfile.BadZipFile, OSError) as e:
                self.members = f"{self.zips[key]}: not a readable zip ({e})"
        return self.members


def _member_seconds(archive: Path, member: str) -> float | None:
    """Duration from the member's WAV header (only the first bytes are decompressed)."""
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as f:
            info = sf.info(f)
        return info.frames / info.samplerate
    except Exception:  # an unreadable member is rejected when decoded, with the decoder's reason
        return None


def read_channel(
    name: str, script_dir: Path, wave: Path, rows: Rows, speakers: dict, subset: str
) -> Iterator[Record]:
    part = name.split("_")[0]
    scripts = sorted(p for p in script_dir.glob("*") if p.suffix.upper() == ".TXT") if script_dir.is_dir() else []
    if not scripts:
        raise FileNotFoundError(f"NSC {name}: no script .TXT files in {script_dir}")
    extracted = {p.stem.upper(): p for p in wave.rglob("*") if p.suffix.upper() == ".WAV"} if wave.is_dir() else {}
    zips = SpeakerZips(wave)
    for script in scripts:
        yield from _script(script, part, extracted, zips, rows, speakers, subset)


def _script(script: Path, part: str, extracted: dict[str, Path], zips: SpeakerZips, rows: Rows,
            speakers: dict, subset: str) -> Iterator[Record]:
    speaker = script.stem[1:-1]  # <channel digit><speaker><session digit>

    def make(line: str, where: str) -> Record:
        m = re.match(r"(\S+)\s+(.*)$", line)
        if "\ufffd" in line or any("\udc80" <= ch <= "\udcff" for ch in line):
            raise Reject("bad_line", f"undecodable bytes: {snip(line)!a}")
        if m is None:
            raise Reject("bad_line", f"expected '<utterance id>\\t<transcript>': {snip(line)!a}")
        uid = m.group(1)
        extra: dict = {}
        if (wav := extracted.get(uid.upper())) is not None:
            audio, seconds = str(wav), None
            spk_dir = wav.parent.parent if wav.parent.name.upper().startswith("SESSION") else wav.parent
            spk_name, extra["session"] = spk_dir.name, wav.parent.name
            if not spk_name.upper().startswith("SPEAKER"):  # WAVs extracted flat (unzip -j): the script names him
                spk_name = f"SPEAKER{speaker}"
        else:
            members = zips.members_of(speaker)
            if members is None:
                raise Reject("missing_file", f"no {uid}.WAV under {script.parents[1] / 'WAVE'} and no "
                             f"SPEAKER{speaker}.zip there", uid)
            if isinstance(members, str):
                raise Reject("bad_zip", members, uid)
            if uid.upper() not in members:
                raise Reject("missing_zip_member", f"{zips.zips[zips.name]} has no {uid}.WAV", uid)
            member = members[uid.upper()]
            archive = zips.zips[zips.name]
            audio, seconds = zip_address(archive, member), _member_seconds(archive, member)
            spk_name = archive.stem
            extra["session"] = Path(member).parent.name
        return Record(
            id=uid,
            text=m.group(2).strip(),
            audio_path=audio,
            speaker=f"{part}/{spk_name}",
            accent="sg",
            duration=seconds,
            split=rows.split,
            subset=subset,
            source=where,
            extra=extra,
            meta=lookup(speakers, [speaker, spk_name.upper().removeprefix("SPEAKER")]),
        )

    def orphan(line: str, where: str) -> Record:
        raise Reject("bad_line", f"indented line with no utterance line before it: {snip(line.strip())}")

    pending: Record | None = None  # kept, but waits for its normalised line
    follows_utterance = False  # an indented line is the normalised text of the utterance line before it
    for lineno, line in enumerate(decode_script(script.read_bytes()).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{script}:{lineno}"
        if line[0] in " \t":
            if follows_utterance:
                if pending is not None:
                    pending.extra["normalised"] = line.strip()
                follows_utterance = False  # a normalised line after a skipped utterance belongs to that skip
            else:  # counted, not dropped: a script whose utterance lines are all indented reads as all skips
                rows.take(where, orphan, line, where, line=line)
            continue
        if pending is not None:
            yield pending
        pending = rows.take(where, make, line, where, line=line)
        follows_utterance = True
    if pending is not None:
        yield pending
