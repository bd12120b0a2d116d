"""IMDA National Speech Corpus (NSC), all six parts, read as distributed.

Layout (the one lhotse's `recipes/nsc.py` prepares; part/room names are lhotse's):

    <root>/IMDA - National Speech Corpus/PART1/DATA/CHANNEL0/SCRIPT/000010.TXT
    <root>/IMDA - National Speech Corpus/PART1/DATA/CHANNEL0/WAVE/SPEAKER0001.zip
           (holding SPEAKER0001/SESSION0/000010001.WAV, ...)
    <root>/IMDA - National Speech Corpus/PART1/DOC/Speaker Information (Part 1).XLSX
    <root>/IMDA - National Speech Corpus/PART3/Audio Same CloseMic/3000-1.wav
    <root>/IMDA - National Speech Corpus/PART3/Scripts Same/3000-1.TextGrid
    <root>/IMDA - National Speech Corpus - Additional/IMDA - National Speech Corpus (Additional)/PART4/...

Parts 1-2 (read speech, `nsc_read`): one script per channel, speaker and session, named
`<channel><speaker><session>.TXT`, lines "<id>\\t<raw transcript>" each followed by "\\t<normalised>".
Parts 3-6 (conversation, code-switching, debate, call centre, `nsc_conversation`): long recordings
cut into utterance segments by their Praat TextGrids.

`source` may be the distribution root, the `IMDA - National Speech Corpus` folder, the Additional
folder, or one PART folder. `parts` names parts/rooms (`NSC_PARTS`); a bare "PART3" means every room
of that part that is on disk, and for Parts 1-2 a bare "PART1" means `PART1_<channel>`. Without
`parts`, every room on disk is read (Parts 1-2 only in `channel`).

The raw transcript becomes `text`, markers intact: the project normaliser resolves them (NSC's
[lah], (ppb), <FIL/>, <UNK>, Part 4's <malay>...</malay>, ...) identically for reference and
hypothesis. Speaker spreadsheets (xlsx or csv) found in a part's folder, or given as `speakers`,
fill `Record.meta` (gender, age_group, first_language, ethnic_group).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from asr_lora.data.readers.base import Rows
from asr_lora.data.readers.nsc_conversation import read_room
from asr_lora.data.readers.nsc_read import read_channel
from asr_lora.data.readers.speakers import find_speaker_files, load_speakers
from asr_lora.data.records import Ledger, Record

ROOT_1_3 = Path("IMDA - National Speech Corpus")
ROOT_4_6 = Path("IMDA - National Speech Corpus - Additional") / "IMDA - National Speech Corpus (Additional)"

# name -> (script folder, audio folder), relative to ROOT_1_3 (Parts 1-3) or ROOT_4_6 (Parts 4-6).
NSC_PARTS: dict[str, tuple[str, str]] = {
    **{f"PART{p}_CHANNEL{c}": (f"PART{p}/DATA/CHANNEL{c}/SCRIPT", f"PART{p}/DATA/CHANNEL{c}/WAVE")
       for p in (1, 2) for c in (0, 1, 2)},
    "PART3_SameBoundaryMic": ("PART3/Scripts Same", "PART3/Audio Same BoundaryMic"),
    "PART3_SameCloseMic": ("PART3/Scripts Same", "PART3/Audio Same CloseMic"),
    "PART3_SeparateIVR": ("PART3/Scripts Separate", "PART3/Audio Separate IVR"),
    "PART3_SeparateStandingMic": ("PART3/Scripts Separate", "PART3/Audio Separate StandingMic"),
    "PART4_CodeswitchingDiffRoom": ("PART4/Codeswitching/Diff Room Scripts", "PART4/Codeswitching/Diff Room Audio"),
    "PART4_CodeswitchingSameRoom": ("PART4/Codeswitching/Same Room Scripts", "PART4/Codeswitching/Same Room Audio"),
    "PART5_Debate": ("PART5/Debate Scripts", "PART5/Debate Audio"),
    "PART5_FinanceEmotion": ("PART5/Finance + Emotion Scripts", "PART5/Finance + Emotions Audio"),
    **{f"PART6_CallCentreDesign{d}": (f"PART6/Call Centre Design {d}/Scripts", f"PART6/Call Centre Design {d}/Audio")
       for d in (1, 2, 3)},
}


def _bases(root: Path, part: str) -> list[Path]:
    """Folders that may hold `PARTn/...`, most specific layout first."""
    rooted = ROOT_1_3 if int(part[4]) <= 3 else ROOT_4_6
    return [root / rooted, root / rooted.name, root, root.parent]


def _locate(root: Path, name: str) -> tuple[Path, Path] | None:
    """(script dir, audio dir) of one part/room on disk, or None when it is not there."""
    script_rel, audio_rel = NSC_PARTS[name]
    part_folder = audio_rel.split("/")[0]
    for base in _bases(root, name):
        if base == root.parent and root.name.upper() != part_folder:
            continue  # `source` is one PART folder: only its own rooms
        if (base / audio_rel).is_dir() or (base / script_rel).is_dir():
            return base / script_rel, base / audio_rel
    return None


def _present(root: Path, name: str) -> bool:
    """On disk, for picking rooms automatically: rooms of Parts 3-6 share script folders (Same Room
    close and boundary mic), so a room counts only when its audio folder is there."""
    where = _locate(root, name)
    return where is not None and (name.startswith(("PART1_", "PART2_")) or where[1].is_dir())


def select_parts(root: Path, parts: Iterable[str] | None, channel: str) -> list[str]:
    known = {n.upper(): n for n in NSC_PARTS}
    if parts is None:
        wanted = [n for n in NSC_PARTS if not n.startswith(("PART1_", "PART2_")) or n.endswith(channel.upper())]
        return [n for n in wanted if _present(root, n)]
    out: list[str] = []
    for p in [parts] if isinstance(parts, str) else parts:
        key = str(p).strip().upper()
        if key in known:
            out.append(known[key])
        elif key in ("PART1", "PART2"):
            out.append(known[f"{key}_{channel.upper()}"])
        elif key in {n.split("_")[0] for n in known}:
            out += [n for n in NSC_PARTS if n.upper().startswith(key + "_") and _present(root, n)]
        else:
            raise ValueError(f"unknown NSC part {p!r}; known: {sorted(NSC_PARTS)} (or PART1 ... PART6)")
    return list(dict.fromkeys(out))


def read_nsc(
    source: str | os.PathLike,
    ledger: Ledger,
    *,
    parts: Iterable[str] | str | None = None,
    channel: str = "CHANNEL0",
    speakers: str | Iterable[str] | None = None,
    max_segment_s: float = 30.0,
    past_end_tolerance_s: float = 0.25,
    split: str | None = None,
    subset: str = "main",
) -> Iterator[Record]:
    """Records of the selected NSC parts/rooms; see the module docstring for the layout and rules.

    TextGrid segments longer than `max_segment_s` are skipped as "segment_too_long" (an interval
    carries no word timings, so it cannot be split without guessing where its words fall); a final
    interval that overruns the recording by at most `past_end_tolerance_s` is cut at the
    recording's end (Praat rounding; noted in `extra["clipped_end"]`), one that overruns further
    is skipped as "segment_past_end"."""
    root = Path(source)
    names = select_parts(root, parts, channel)
    if not names:
        raise FileNotFoundError(f"no NSC parts under {root} (looked for {ROOT_1_3}/PART1/DATA/..., "
                                f"{ROOT_4_6}/PART4/..., or PART*/ folders directly)")
    given = [speakers] if isinstance(speakers, (str, os.PathLike)) else list(speakers or [])
    rows = Rows(ledger, split, check_files=False)  # each part checks its own audio
    for name in names:
        where = _locate(root, name)
        if where is None:
            raise FileNotFoundError(f"NSC {name}: neither {NSC_PARTS[name][0]!r} nor {NSC_PARTS[name][1]!r} "
                                    f"found under {root}")
        script_dir, audio_dir = where
        part_dir = audio_dir.parents[len(Path(NSC_PARTS[name][1]).parts) - 2]
        table = load_speakers(given or find_speaker_files(part_dir))
        if name.startswith(("PART1_", "PART2_")):
            yield from read_channel(name, script_dir, audio_dir, rows, table, subset)
        else:
            yield from read_room(name, script_dir, audio_dir, rows, table, subset, max_segment_s,
                                 past_end_tolerance_s)


__all__ = ["NSC_PARTS", "read_nsc", "select_parts"]
