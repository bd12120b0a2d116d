"""Singapore English text normaliser, applied identically to references and hypotheses.

WER is only comparable between runs that used the same normaliser, so every eval output records
`NORMALIZER_VERSION`; change the version string whenever a rule below changes.

Pipeline (`normalize`), in this order:

1. Curly and modifier apostrophes (‘ ’ ʼ) become ``'``, so "it’s" reads "it is" as "it's" does.
   NSC transcription markers (IMDA National Speech Corpus) are resolved *before* Whisper's
   normaliser, because Whisper deletes anything in brackets: NSC's ``[lah]`` would vanish from the
   reference while a model that says "lah" gets charged an insertion.

   ==========================  ====================================================
   ``[lah]`` / any ``[word]``   particle: the bare word (``particles=True``) or dropped
   ``(uh)`` ``(ppb)`` ``(..)``  fillers / noise: dropped
   ``<malay>w:g</malay>``       NSC Part 4 Mother Tongue words (mandarin, malay, tamil, dialects):
                                the spoken word kept, the gloss after/before ':' dropped
                                (Tamil spans are written "gloss:word", the others "word:gloss")
   ``<FIL/>`` ``<UNK>`` ``<..>``  tags (any case, with or without slash): dropped
   ``#words#``                  other-language words: kept, hashes dropped
   ``!wah!``                    interjection: kept, ``!`` dropped
   ``abbrev~``                  kept, tilde dropped
   ``N_A_F_A``, ``N.A.F.A.``    letters joined into one lowercase word ("nafa"), which is
                                how Whisper writes an acronym it hears ("NAFA")
   ``**``                       unclear/redacted marker: dropped (neighbouring words kept)
   ==========================  ====================================================

   Brackets left unmatched after this are replaced by spaces, so Whisper's own bracket deletion
   can never swallow a span of real words.

2. Money: ``S$`` and ``SGD`` become ``$`` and "singapore dollars" becomes "dollars", so
   "S$5.50", "$5.50", "5 dollars 50 cents" and "five dollars fifty" all end up as ``$5.50``
   (after Whisper, ``$N MM`` with exactly two trailing digits is read as dollars and cents).

3. Drinks: "kopi-o" / "kopi o" / "teh-o" are joined ("kopio", "teho"), otherwise Whisper reads the
   lone "o" as the digit zero. Other Singlish words (kopi, shiok, alamak, ...) are untouched.
   Clock times: "o'clock" becomes one word "oclock" (the lone "o" again), and "9:30", "10:05" and
   Singapore's "6.30pm" become 930, 1005 and 630 pm, which is what Whisper's number rules make of
   "nine thirty", "ten oh five" and "six thirty pm"; "8:00" is "8 oclock", as "eight o'clock" reads.

4. Whisper's `EnglishTextNormalizer` with the spelling map from openai-whisper
   (``data/english.json``): lowercase, contractions, numbers to digits, British to American
   spelling, punctuation and diacritics removed.

5. Token filter: filler words (`FILLERS`) are always dropped; particle words (`PARTICLES`) are
   dropped when ``particles=False``. The filter works on the same tokens on both sides, so a
   hypothesis "can lah" and a reference "can [lah]" are treated alike in both modes.

   Which bare words are particles: lah, leh, lor, meh, hor, mah, sia, ah, and the spellings la,
   loh and ar that Whisper writes for them. "ah" is also an English interjection; it is counted as
   a particle anyway, because in Singapore English speech it is far more often the particle, and
   the rule is symmetric so no side gains from it. A bracketed word that is no particle ("[what]",
   "[one]") stays a word in both modes: a hypothesis cannot bracket, so dropping it from the
   reference alone would count a correct "what" as an insertion.

The whole pipeline is iterated to a fixed point (it converges in one or two passes), which is what
makes ``normalize(normalize(x)) == normalize(x)`` hold even where Whisper's number rules are not
idempotent on their own.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

NORMALIZER_VERSION = "sg-5"  # sg-2: NSC Part 4 Mother Tongue spans; sg-3: curly apostrophes as "'";
# sg-4: more apostrophe and hyphen look-alikes, soft hyphens join; particle spellings la/loh/ar; "[what]"
# kept without particles; sg-5: clock times ("9:30" as "nine thirty" reads, "o'clock" one word)


PARTICLES: frozenset[str] = frozenset({"lah", "la", "leh", "lor", "loh", "meh", "hor", "mah", "sia", "ah", "ar"})


# Whisper already drops hmm/mm/mhm/mmm/uh/um; "er" family added because NSC transcribers use it.
FILLERS: frozenset[str] = frozenset({"uh", "um", "er", "erm", "uhm", "hmm", "mm", "mhm", "mmm"})


SPELLING_MAP_PATH = Path(__file__).resolve().parents[2] / "data" / "english.json"


_MAX_PASSES = 8


_TAG = re.compile(r"<\s*/?\s*[A-Za-z]+\s*/?\s*>")


MOTHER_TONGUES = ("mandarin", "malay", "tamil", "hokkien", "cantonese", "teochew", "hakka", "hainanese", "dialect")


_MOTHER_TONGUE = re.compile(r"<\s*(" + "|".join(MOTHER_TONGUES) + r")\s*>(.*?)<\s*/\s*\1\s*>", re.IGNORECASE)


def _spoken_word(m: re.Match) -> str:
    lang, span = m.group(1).lower(), m.group(2)
    if ":" in span:
        word, gloss = span.split(":", 1)
        span = gloss if lang == "tamil" else word
    return f" {span} "


# Typographic apostrophes and hyphens read as the plain ones (text pasted from a word processor or
# the web holds them; Whisper writes ASCII); the synthetic source's typography table builds on these.
APOSTROPHES = {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201b": "'", "\u00b4": "'", "`": "'",
               "\u2032": "'", "\uff07": "'"}
HYPHENS = {"\u2010": "-", "\u2011": "-"}
_TYPOGRAPHY = str.maketrans({**APOSTROPHES, **HYPHENS})


_PAREN = re.compile(r"\([^()]*\)")


_SQUARE = re.compile(r"\[([^\[\]]*)\]")


_HASHED = re.compile(r"#([^#]*)#")


_BANGED = re.compile(r"!([^!\s][^!]*?)!")


_UNDERSCORE_ACRONYM = re.compile(r"(?<![^\W_])[A-Za-z](?:_[A-Za-z])+(?![^\W_])")


_DOTTED_ACRONYM = re.compile(r"(?<!\w)[A-Za-z](?:\.[A-Za-z])+\.?(?![A-Za-z])")


_LEFTOVER_BRACKETS = re.compile(r"[<>\[\]()]")


_SGD_PREFIX = re.compile(r"\b(?:s\$\s*|sgd\s*\$?\s*)(?=\d)", re.IGNORECASE)


_SGD_SUFFIX = re.compile(r"(\d)\s*sgd\b", re.IGNORECASE)


_SG_DOLLARS = re.compile(r"\bsingapore\s+dollars?\b", re.IGNORECASE)


_DRINK_O = re.compile(r"\b(kopi|teh)[\s-]*o\b", re.IGNORECASE)


_DOLLARS_CENTS = re.compile(r"\$(\d+) (\d{2})\b(?![.\d%])")


_OCLOCK = re.compile(r"\bo\s*'?\s*clock\b", re.IGNORECASE)


# "9:30", "10:05", and Singapore's "6.30pm": the clock time Whisper's number rules make of "nine
# thirty", "ten oh five", "six thirty pm" (930, 1005, 630 pm); "8:00" is "8 oclock".
_CLOCK = re.compile(r"(?<![\d:.])\b([01]?\d|2[0-4])(?::([0-5]\d)\b(?!:\d)|\.([0-5]\d)(?=\s*[ap]\.?m\b))", re.IGNORECASE)


@lru_cache(maxsize=1)
def _whisper() -> EnglishTextNormalizer:
    if not SPELLING_MAP_PATH.is_file():
        raise FileNotFoundError(
            f"Whisper spelling map not found at {SPELLING_MAP_PATH}; it ships with the repo as "
            "data/english.json (see data/README_english_json.md)"
        )
    with SPELLING_MAP_PATH.open(encoding="utf-8") as f:
        return EnglishTextNormalizer(json.load(f))


def _resolve_markers(s: str) -> str:
    # Control/format/unassigned code points are never words; Whisper would keep them as tokens.
    # A soft hyphen or word joiner sits inside a word ("Singa\u00adpore"): it joins, it does not split.
    s = "".join("" if c in "\u00ad\u2060" else " " if unicodedata.category(c)[0] == "C" else c for c in s)
    # Whisper expands "it's" but splits "it’s" into "it s": one apostrophe, so both read "it is".
    s = s.translate(_TYPOGRAPHY)
    s = _MOTHER_TONGUE.sub(_spoken_word, s)
    s = _TAG.sub(" ", s)
    s = _PAREN.sub(" ", s)
    # A bracketed word stays a word in both modes; the token filter drops particles when asked, on
    # both sides alike (a hypothesis cannot bracket, so "[what]" dropped here alone would make a
    # correct "what" an insertion).
    s = _SQUARE.sub(r" \1 ", s)
    s = _HASHED.sub(r" \1 ", s)
    s = _BANGED.sub(r" \1 ", s)
    s = s.replace("**", " ").replace("~", " ")
    s = _UNDERSCORE_ACRONYM.sub(lambda m: m.group(0).replace("_", ""), s)
    s = _DOTTED_ACRONYM.sub(lambda m: m.group(0).replace(".", "") + " ", s)
    return _LEFTOVER_BRACKETS.sub(" ", s)


def _clock(m: re.Match) -> str:
    minutes = m.group(2) or m.group(3)
    return f"{int(m.group(1))} oclock" if minutes == "00" else f"{int(m.group(1))}{minutes}"


def _singapore_rules(s: str) -> str:
    s = _OCLOCK.sub(" oclock", s)  # Whisper reads the lone "o" of "o'clock" as a zero ("90 clock")
    s = _CLOCK.sub(_clock, s)
    s = _SGD_PREFIX.sub("$", s)
    s = _SGD_SUFFIX.sub(r"\1 dollars", s)
    s = _SG_DOLLARS.sub("dollars", s)
    return _DRINK_O.sub(lambda m: m.group(1) + "o", s)


def _one_pass(s: str, particles: bool) -> str:
    s = _singapore_rules(_resolve_markers(s))
    s = _whisper()(s)
    s = _DOLLARS_CENTS.sub(r"$\1.\2", s)
    drop = FILLERS if particles else FILLERS | PARTICLES
    return " ".join(w for w in s.split() if w not in drop)


def normalize(text: str, particles: bool = True) -> str:
    """Normalise one reference or hypothesis; see the module docstring for the rules."""
    s = text
    for _ in range(_MAX_PASSES):
        nxt = _one_pass(s, particles)
        if nxt == s:
            return s
        s = nxt
    return s


class SgNormalizer:
    """`normalize` with the particle mode bound, for use as a plain callable (e.g. in `map`)."""

    version = NORMALIZER_VERSION

    def __init__(self, particles: bool = True):
        self.particles = particles

    def __call__(self, text: str) -> str:
        return normalize(text, particles=self.particles)

    def __repr__(self) -> str:
        return f"SgNormalizer(particles={self.particles}, version={NORMALIZER_VERSION!r})"
