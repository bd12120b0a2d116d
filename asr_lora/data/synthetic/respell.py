"""Respelled takes: train clips in which an espeak-ng voice says the domain's terms the way another
language's letter-to-sound rules read them, under the same transcript.

The adapter learns a term from how the training engines pronounce it, and they mostly agree (12 of
the 17 shipped train voices take their phonemes from espeak-ng's English rules). A speaker or an
engine that says the word otherwise ("johor" the Malay way, with a full o and a rolled r) is then
heard as the nearest English word. Takes in which one label is heard under several pronunciations
teach the decoder the spelling across them rather than one engine's reading.

espeak-ng reads a word by any of its languages' rules (`-x -v ms`) and speaks phoneme mnemonics
inline (`[[...]]`) in any voice, so the train speaker stays the same voice and only the term's
sounds change. flite and festival take no phoneme input, so only espeak train voices make these
takes. Nothing here touches dev or test: the takes are train rows of train sentences.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from asr_lora.data.records import Record
from asr_lora.data.synthetic.spec import SynthError, Voice

# Malay and Indonesian read the Malay place and food names as Singaporeans mostly say them; Italian
# reads every letter with open vowels, a third reading of the Hokkien and English-looking words.
RESPELL_LANGUAGES = ("ms", "id", "it")


@lru_cache(maxsize=None)
def foreign_phonemes(term: str, language: str) -> str:
    """espeak-ng's phoneme mnemonics for `term` read by `language`'s rules, one clause."""
    try:
        proc = subprocess.run(["espeak-ng", "-q", "-x", "-v", language, term], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SynthError(f"espeak-ng could not read {term!r} as {language!r}: {e}") from e
    phonemes = " ".join(proc.stdout.split())
    if proc.returncode != 0 or not phonemes:
        raise SynthError(f"espeak-ng gave no phonemes for {term!r} as {language!r}: {proc.stderr.strip()[-200:]}")
    return phonemes


def _pattern(terms: Sequence[str]) -> re.Pattern | None:
    # Longest first, so "pulau ubin" is one term rather than "pulau" and a leftover.
    words = sorted({" ".join(t.lower().split()) for t in terms if t.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    return re.compile(rf"(?<![A-Za-z'])({alternatives})(?![A-Za-z'])", re.IGNORECASE)


def respell(text: str, pattern: re.Pattern, language: str) -> str:
    """`text` with each term spoken as `language` reads it (espeak-ng inline phonemes)."""
    return pattern.sub(lambda m: f"[[{foreign_phonemes(' '.join(m.group(1).lower().split()), language)}]]", text)


def respelled_takes(records: Sequence[Record], terms: Sequence[str], voices: Sequence[Voice], takes: int, seed: int,
                    languages: Sequence[str] = RESPELL_LANGUAGES) -> list[Record]:
    """`takes` more train clips of every train domain sentence that holds a term, each by an espeak
    train voice the sentence does not already have, reading the terms in one of `languages` (taken in
    turn); the label is the sentence as written. Empty when `takes` is 0."""
    if takes <= 0:
        return []
    pattern = _pattern(terms)
    if pattern is None:
        raise ValueError("data.respell_takes needs domain terms (data.terms): the words whose pronunciation the "
                         "takes vary")
    pool = [v for v in voices if v.split == "train" and v.engine == "espeak" and not v.part]
    if not pool:
        raise ValueError("respelled takes need espeak-ng train voices; the inventory has none")
    rng = random.Random(f"respell-{seed}")
    by_sentence: dict[str, list[Record]] = {}
    for r in records:
        if r.split == "train" and r.subset == "main" and r.engine and pattern.search(r.text):
            by_sentence.setdefault(r.id.removesuffix(f"-{r.voice}"), []).append(r)
    out, turn = [], 0
    for sentence_id, takes_of in by_sentence.items():
        had = {r.voice for r in takes_of}
        free = [v for v in pool if v.id not in had] or pool
        first = takes_of[0]
        for j, v in enumerate(rng.sample(free, min(takes, len(free)))):
            language = languages[turn % len(languages)]
            turn += 1
            spoken = respell(first.text, pattern, language)
            key = hashlib.sha1(json.dumps([spoken, v.spec()], sort_keys=True).encode()).hexdigest()[:16]
            out.append(replace(first, id=f"{sentence_id}-rs{j}-{v.id}", audio_path=f"audio/{v.id}/{key}.wav",
                               speaker=v.speaker, accent=v.accent, engine=v.engine, voice=v.id,
                               extra={"spoken": spoken, "respelled_as": language}))
    return out
