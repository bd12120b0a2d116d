"""The sg_english voice inventory (`data/sg_english/voices.json`) and its split rules.

Every voice belongs to one split, and every human (or formant variant) behind a voice to one
split. Dev and test voices also belong to one *part* (engine leakage):

* ``seen_engine``: a new voice of an engine that train also uses (espeak, flite, festival,
  piper). Gains measured here partly reward learning the engine's sound, not the accent;
* ``unseen_engine``: a voice of an engine that NO train voice uses (SVOX Pico, MBROLA);
* ``neural``: a natural-sounding neural voice (piper) that shares neither its engine nor its base
  voice with any train voice; one base voice becomes several speakers through pitch and formant
  changes (praat's "Change gender", `neural.change_speaker`), all of them kept out of train.
  The figures the project quotes and the forgetting gate come from the first held-out part the
  test set has (`HELD_OUT_PARTS`: neural, then unseen_engine).

`load_voices` refuses an inventory that breaks either rule, so a voice added to train on an
unseen engine (or a dev/test voice mislabelled as unseen) fails loudly instead of leaking.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

from asr_lora.data.records import SPLITS
from asr_lora.data.synthetic.engines import Voice

VOICES = Path(__file__).resolve().parents[3] / "data" / "sg_english" / "voices.json"


PARTS = ("seen_engine", "unseen_engine", "neural")
HELD_OUT_PARTS = ("neural", "unseen_engine")  # parts no train voice shares an engine with; lead first


# Part of real recorded speech (pocketsphinx-testdata control clips): no TTS engine at all.
REAL_PART = "real"

PART_ORDER = (*HELD_OUT_PARTS, "seen_engine", REAL_PART)  # report order
PART_LABELS = {"neural": "unseen neural voice", "unseen_engine": "unseen TTS engine",
               "seen_engine": "training TTS engines (new voices)", REAL_PART: "real recorded speech"}


def lead_part(present) -> str | None:
    """The part the headline and the forgetting gate come from: the first held-out part present."""
    return next((p for p in HELD_OUT_PARTS if p in present), None)


def gate_parts(present) -> tuple[str, ...]:
    """Control speech the forgetting gate is decided on: the lead part's, and real recorded clips."""
    lead = lead_part(present)
    return (lead, REAL_PART) if lead else ()


def part_of(voice: Voice) -> str | None:
    """The part of a dev/test voice ("seen_engine" unless voices.json says otherwise); None in train."""
    if voice.split == "train":
        return None
    return voice.part or "seen_engine"


def check_parts(voices: list[Voice], where: str = "voices") -> None:
    """Raise ValueError unless held-out voices (neural, unseen_engine) sit in dev/test only, on
    engines no train voice uses (so no base voice is shared either), each of dev and test has some
    of every held-out part present, and every seen-engine voice's engine is in train."""
    if bad := [v.id for v in voices if v.part and v.part not in PARTS]:
        raise ValueError(f"{where}: voices {bad} have a part outside {list(PARTS)}")
    if bad := [v.id for v in voices if v.split == "train" and v.part]:
        raise ValueError(f"{where}: train voices {bad} carry a part; parts are for dev/test voices only")
    train_engines = {v.engine for v in voices if v.split == "train"}
    for part in HELD_OUT_PARTS:
        held = [v for v in voices if part_of(v) == part]
        if leaks := sorted({f"{v.id} ({v.engine})" for v in held if v.engine in train_engines}):
            raise ValueError(f"{where}: {part} voices {leaks} use an engine that train also uses "
                             f"(train engines: {sorted(train_engines)})")
        if held and (missing := [s for s in ("dev", "test") if not any(v.split == s for v in held)]):
            raise ValueError(f"{where}: no {part} voice in {missing}; dev and test each need one")
    if bad := [v.id for v in voices if v.reads_all and part_of(v) not in HELD_OUT_PARTS]:
        raise ValueError(f"{where}: voices {bad} set reads_all outside a held-out dev/test part {list(HELD_OUT_PARTS)}")
    if bad := sorted(v.id for v in voices if part_of(v) == "seen_engine" and v.engine not in train_engines):
        raise ValueError(f"{where}: voices {bad} are marked seen_engine but no train voice uses their engine")


def load_voices(path: Path = VOICES) -> list[Voice]:
    """Voices from voices.json; raises ValueError unless ids are unique, splits are known, every
    speaker sits in exactly one split and the parts obey `check_parts`."""
    voices = [_voice(d, path, i) for i, d in enumerate(_entries(path))]
    if bad := [v.id for v in voices if not isinstance(v.reads_all, bool)]:
        raise ValueError(f"{path}: voices {bad} give reads_all as something other than true or false")
    ids = Counter(v.id for v in voices)
    if dup := [i for i, c in ids.items() if c > 1]:
        raise ValueError(f"{path}: duplicate voice ids {dup}")
    if bad := [v.id for v in voices if v.split not in SPLITS]:
        raise ValueError(f"{path}: voices {bad} have no split in {list(SPLITS)}")
    splits_of = defaultdict(set)
    for v in voices:
        splits_of[v.speaker].add(v.split)
    if leaks := {s: sorted(sp) for s, sp in splits_of.items() if len(sp) > 1}:
        raise ValueError(f"{path}: speakers in more than one split: {leaks}")
    check_parts(voices, str(path))
    return voices


def _entries(path: Path) -> list:
    """The "voices" list of a voices file; ValueError naming the file (and line) when it is none."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON voices file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("voices"), list):
        raise ValueError(f'{path}: want {{"voices": [...]}} at the top level, as data/sg_english/voices.json has')
    return doc["voices"]


def _voice(entry, path: Path, index: int) -> Voice:
    if not isinstance(entry, dict) or (missing := [k for k in ("id", "engine", "voice") if k not in entry]):
        what = "not an object" if not isinstance(entry, dict) else f"no {', '.join(missing)}"
        raise ValueError(f"{path}: voice {index + 1} ({str(entry)[:80]}): {what}; each voice needs id, engine and "
                         "voice")
    return Voice.from_dict(entry)


@lru_cache(maxsize=4)
def voice_parts(path: Path = VOICES) -> dict[str, str]:
    """{voice id: part} for the dev/test voices of the inventory ({} when it cannot be read)."""
    try:
        voices = load_voices(path)
    except (OSError, ValueError, KeyError):
        return {}
    return {v.id: p for v in voices if (p := part_of(v))}


def parts_of_rows(parts, voices, engines) -> list[str | None]:
    """Each row's part: the one its record carries (the inventory it was built from, `data.voices`
    included), else its voice's part in the shipped voices.json; a row with no TTS engine is "real".
    All None when no row is in a part (real speech, a user's manifest)."""
    table = voice_parts()
    out = [p or table.get(v or "") for p, v in zip(parts, voices)]
    if not any(out):
        return [None] * len(out)
    return [p or (REAL_PART if not e else None) for p, e in zip(out, engines)]
