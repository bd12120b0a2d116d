"""The text a synthetic corpus is rendered from: sentence files and a terms file.

One sentence a line, UTF-8; blank lines and `#` comments are ignored. Each other line is kept
(normalised to what a TTS voice reads as written) or skipped with its reason and `file:line`, so
`data_report.json` accounts for every line. A file that cannot be read at all (missing, empty,
not UTF-8) stops the run with an error naming the file (and line)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from num2words import num2words

from asr_lora.core.io import numbered_lines
from asr_lora.data.text import APOSTROPHES, HYPHENS, normalize
from asr_lora.data.synthetic.voices import VOICES

# The shipped Singapore English text: the synthetic source's default inputs.
DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "sg_english"
SENTENCES = DATA_DIR / "sg_sentences.txt"
CONTROL = DATA_DIR / "control_sentences.txt"
# More control sentences for the dev split only, opt-in (data.dev_control=...): a third of CONTROL
# alone is 55 sentences, where the forgetting limit (5% of zero-shot's control errors) is less than
# one word, so recipes chosen on dev could not tell forgetting from noise. Dev only, so the test split
# stays as it is; opt-in, so runs that never score dev (`make demo`) do not render ~850 more clips.
DEV_CONTROL = DATA_DIR / "dev_control_sentences.txt"
GENERAL = DATA_DIR / "general_sentences.txt"
# More Singapore English sentences for training only (each term in at least six sentences), never in
# dev or test; opt-in (data.train_sentences=data/sg_english/sg_train_sentences.txt): on the dev
# neural part they raised the adapter's term recall but not its WER (recipes/RESULTS_sg_english.md).
TRAIN_SENTENCES = DATA_DIR / "sg_train_sentences.txt"

# A clip per sentence: under 3 words the voices' leading and trailing silence dominates; past 40
# a clip nears Whisper's 30 s window at the slower voices (data.max_seconds drops it later anyway).
MIN_WORDS, MAX_WORDS = 3, 40

_URL = re.compile(r"\b(?:https?://|www\.)\S+|\b\S+\.(?:com|org|net|edu|gov|io|sg|co|uk)\b(?:/\S*)?", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
# What the voices read the way the transcript writes it: letters, apostrophes, hyphens, punctuation.
_SPEAKABLE = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ' \-.,?!;:\"]*")
# Typographic punctuation, as editors and word processors write it, in the plain form the rules and
# the scoring normaliser know.
# Invisible characters inside a word (soft hyphen, zero-width space and joiners, word joiner, a stray
# BOM) join it: the voices cannot say them, and the reference is the joined word (the scoring
# normaliser joins a soft hyphen and a word joiner too).
_TYPOGRAPHY = str.maketrans({**APOSTROPHES, **HYPHENS, "\u201c": '"', "\u201d": '"', "\u2026": "...",
                             **dict.fromkeys("\u00ad\u200b\u200c\u200d\u2060\ufeff", "")})
# A range between short numbers ("10\u201320", "2-3 tablets") is read "to"; a longer hyphenated number
# ("555-0199") is a code with no rule, left for the speakable check to refuse.
_RANGE = re.compile(r"(?<=\d)\s?[\u2013\u2014]\s?(?=\d)")
_HYPHEN_RANGE = re.compile(r"(?<![\w.-])(\d{1,3})-(\d{1,3})(?![\w.-])")
# A minus sign: a hyphen before a number that does not join it to a word ("-5", "-$20").
_MINUS = re.compile(r"(?<![\w-])-(?=(?:S|US)?\$?\d)")
# Brackets and dashes are pauses: the voices read a bracketed aside, and the label must hold it too,
# where the normaliser (text.py) deletes anything in round brackets as a transcriber's noise tag. A
# hyphen with a space on both sides is a dash.
_PAUSE = re.compile(r"[()\[\]\u2013\u2014]|(?<=\s)-+(?=\s)")
_COMMA_NUMBER = re.compile(r"\d+(?:,\d+)+")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")


@dataclass
class Line:
    text: str  # as the voices say it and the transcript writes it
    source: str  # file:line
    original: str = ""  # the line as written, when `text` spells out its digits or symbols


@dataclass
class TextSkip:
    source: str  # file:line
    reason: str  # duplicate | url | email | unspeakable | too_short | too_long | term_not_in_sentences
    detail: str


@dataclass
class TextFile:
    path: Path
    lines: list[Line] = field(default_factory=list)
    skips: list[TextSkip] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [x.text for x in self.lines]

    @property
    def sources(self) -> list[str]:
        return [x.source for x in self.lines]

    @property
    def normalised(self) -> list[Line]:
        """Kept lines whose digits or symbols were written out in words."""
        return [x for x in self.lines if x.original]


def _decimal(whole: str, frac: str) -> str:
    # Digit by digit from the string: num2words(2.50) drops the zero that the text shows.
    return f"{num2words(int(whole))} point " + " ".join(num2words(int(d)) for d in frac)


_SCALE = {"k": "thousand", "m": "million", "bn": "billion"}


def _money(m: re.Match) -> str:
    whole, frac, scale = m.group(1).replace(",", ""), m.group(2), (m.group(3) or "").lower()
    if scale or (frac is not None and len(frac) != 2):  # "$2.5 million", "$1.999": an amount, not cents
        amount = _decimal(whole, frac) if frac else num2words(int(whole))
        return " ".join(filter(None, (amount, _SCALE.get(scale, scale), "dollars")))
    dollars, cents = int(whole), int(frac or 0)
    out = [f"{num2words(dollars)} dollar{'s' * (dollars != 1)}"] if dollars or not cents else []
    return " ".join(out + ([f"{num2words(cents)} cent{'s' * (cents != 1)}"] if cents else []))


def _clock(m: re.Match) -> str:
    hour, minute = num2words(int(m.group(1))), int(m.group(2))
    if minute == 0:
        return f"{hour} o'clock" + (f" {m.group(3)}" if m.group(3) else "")
    return f"{hour} {'oh ' * (minute < 10)}{num2words(minute)}" + (f" {m.group(3)}" if m.group(3) else "")


def _digits(m: re.Match) -> str:
    """A number with a leading zero ("007", "0199") is a code, read digit by digit."""
    return " ".join(num2words(int(d)) for d in m.group(0))


# (pattern, replacement) in order: a unit split from its number and a letter from its digits ("A4",
# "MP3"), clock times, money and percentages before bare numbers, thousands commas before ordinals
# ("1,000th"), dotted versions ("1.2.3") before decimals.
_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"\b(1\d|20)(\d)0s\b"),  # decades: "1990s" is "nineteen nineties"
     lambda m: re.sub(r"y$", "ie", num2words(int(m.group(0)[:4]), to="year")) + "s"),
    (re.compile(r"\b(\d+(?:[.,]\d+)*)(?!(?:st|nd|rd|th)\b)([A-Za-z]+)\b", re.I), r"\1 \2"),
    (re.compile(r"\b([A-Za-z]+)(\d+)\b"), r"\1 \2"),
    (re.compile(r"(?<![\d:])\b([01]?\d|2[0-4]):([0-5]\d)()\b(?!:\d)"), _clock),
    # "6.30pm", as Singapore writes the time: a clock time, not a decimal
    (re.compile(r"\b(1[0-2]|0?\d)\.([0-5]\d)\s?([ap]m)\b", re.I), _clock),
    (re.compile(r"(?<![\d:])\b(\d+):(\d+)\b(?!:\d)"), r"\1 to \2"),  # a ratio or a score
    (re.compile(r"(?<![A-Za-z])(?:S|US)?\$\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\b"
                r"(?:\s?(thousand|million|billion|trillion|k|m|bn)\b)?", re.I), _money),
    (re.compile(r"(\d+(?:\.\d+)?)\s?%"), lambda m: f"{m.group(1)} percent"),
    (re.compile(r"\b\d{1,3}(?:,\d{3})+(?!\d)"), lambda m: m.group(0).replace(",", "")),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.I), lambda m: num2words(int(m.group(1)), to="ordinal")),
    (re.compile(r"\b\d+(?:\.\d+){2,}\b"), lambda m: " point ".join(num2words(int(p)) for p in m.group(0).split("."))),
    (re.compile(r"\b(\d+)\.(\d+)\b"), lambda m: _decimal(m.group(1), m.group(2))),
    (re.compile(r"(?<![\w.])\.(\d+)\b"), lambda m: "point " + " ".join(num2words(int(d)) for d in m.group(1))),
    (re.compile(r"\b0\d+\b"), _digits),
    (re.compile(r"\b\d+\b"), lambda m: num2words(int(m.group(0)))),
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"\s*\+\s*"), " plus "),
    (re.compile(r"\s*=\s*"), " equals "),
    (re.compile(r"\s@\s"), " at "),
]


def _plain_punctuation(text: str) -> str:
    text = _RANGE.sub(" to ", text.translate(_TYPOGRAPHY))  # "10\u201320" is read "10 to 20"
    text = _HYPHEN_RANGE.sub(r"\1 to \2", text)
    text = _MINUS.sub("minus ", text)
    if not _PAUSE.search(text):
        return text
    text = re.sub(r"\s*,[\s,]*", ", ", _PAUSE.sub(",", text))
    return re.sub(r",\s*(?=[.?!;:]|$)", "", text).lstrip(", ")


def speakable(text: str) -> tuple[str | None, str]:
    """(text as the voices read it, "") or (None, reason): digits, money, percentages and a few
    symbols are written out in words, brackets and dashes read as commas, typographic quotes as plain
    ones; URLs, e-mail addresses and other symbols have no rule."""
    if _EMAIL.search(text):
        return None, "email"
    if _URL.search(text):
        return None, "url"
    out = _plain_punctuation(text)
    # A comma inside a number that is not a thousands separator ("$1,00", "1,5") could be a decimal
    # comma or a list: no rule says which, so the line is not guessed at.
    for m in _COMMA_NUMBER.finditer(out):
        if not _THOUSANDS.fullmatch(m.group(0)):
            return None, f"unspeakable: number {m.group(0)!r}"
    if code := re.search(r"\d+(?:[-:]\d+){2,}|\d{4,}-\d+|\d+-\d{4,}", out):  # a phone number, a code
        return None, f"unspeakable: number {code.group(0)!r}"
    try:
        for pattern, repl in _RULES:
            out = pattern.sub(repl, out)
    except OverflowError:  # num2words has no words past 10**27 or so
        return None, "unspeakable: a number too large to read"
    out = " ".join(out.replace("-", " - ").split()).replace(" - ", "-")  # num2words writes "twenty-three"
    if left := re.search(r"[\w:.-]*\d[\w:.-]*", out):  # a number no rule reads
        return None, f"unspeakable: number {left.group(0)!r}"
    if bad := sorted(set(_SPEAKABLE.sub("", out))):
        return None, "unspeakable: " + " ".join(repr(c) for c in bad)
    return out, ""


def sentence_key(s: str) -> str:
    """What makes two sentences the same: their letters (any script), case-folded, word by word."""
    return " ".join(re.findall(r"[^\W\d_]+", s.casefold()))


def sentence_keys(s: str) -> tuple[str, str]:
    """Two sentences are one when either key matches: their letters (`sentence_key`), or what the
    scorer compares (`normalize`: "colour" and "color", "kopi-o" and "kopio", "don't" and "do not"),
    so a sentence cannot be trained on and scored in another spelling."""
    return sentence_key(s), "=" + normalize(s)


def read_sentences(path: str | Path, role: str = "sentences", shown: str | None = None) -> TextFile:
    """Every line of a sentence file, kept or skipped with a reason (`shown` is how sources name the
    file). Raises FileNotFoundError or ValueError (naming file and line) when the file is missing,
    not UTF-8, or has no usable line."""
    path = Path(path)
    out = TextFile(path)
    seen: dict[str, int] = {}
    for n, raw in numbered_lines(path, f"data.{role}"):
        if not raw or raw.startswith("#"):
            continue
        where = f"{shown or path}:{n}"
        text, why = speakable(raw)
        if text is None:
            kind = why.split(":")[0]
            detail = {"url": "a web address: no rule writes it in words",
                      "email": "an e-mail address: no rule writes it in words"}.get(
                kind, f"characters no voice reads as written ({why.split(': ', 1)[-1]})")
            out.skips.append(TextSkip(where, kind, f"{where}: {detail}: {raw!r}"))
            continue
        words = len(text.split())
        if words < MIN_WORDS or words > MAX_WORDS:
            reason = "too_short" if words < MIN_WORDS else "too_long"
            out.skips.append(TextSkip(where, reason, f"{where}: {words} words, want {MIN_WORDS}-{MAX_WORDS}: {raw!r}"))
            continue
        keys = sentence_keys(text)
        if first := next((seen[k] for k in keys if k in seen), None):
            out.skips.append(TextSkip(where, "duplicate", f"{where}: repeats line {first}: {raw!r}"))
            continue
        seen.update(dict.fromkeys(keys, n))
        out.lines.append(Line(text, where, raw if text != raw else ""))
    if not out.lines:
        why = "; ".join(s.detail for s in out.skips[:3]) or "only blank lines and # comments"
        raise ValueError(f"data.{role}={path}: no usable sentence ({why})")
    return out


def check_terms(path: str | Path, sentences: list[str], shown: str | None = None) -> TextFile:
    """The terms of a terms file (one a line) that occur in `sentences`; the others are skipped as
    term_not_in_sentences (an adapter cannot learn a word it never hears). Raises like
    `read_sentences` for an unreadable file, and when no term occurs."""
    path = Path(path)
    out = TextFile(path)
    # A term may be written as the sentences have it or as the scoring normaliser spells it ("kopio"
    # for "kopi-o"): that is how the terms a run derives, and writes to eval/terms.txt, are spelt.
    haystack = [f" {sentence_key(s)} " for s in sentences] + [f" {normalize(s)} " for s in sentences]
    seen: dict[str, int] = {}
    for n, raw in numbered_lines(path, "data.terms"):
        if not raw or raw.startswith("#"):
            continue
        # A term with digits is matched, and written to the run's terms, as the voices say it
        # ("A4" is "A four"), which is what the references hold.
        where, (spoken, _) = f"{shown or path}:{n}", speakable(raw)
        term = spoken if spoken is not None and re.search(r"\d", raw) else raw
        keys = sentence_keys(term)
        if spoken is None or not keys[0]:
            out.skips.append(TextSkip(where, "unspeakable", f"{where}: no voice reads {raw!r} as written"))
        elif first := next((seen[k] for k in keys if k in seen), None):  # one word to the scorer, too
            out.skips.append(TextSkip(where, "duplicate", f"{where}: repeats line {first}: {raw!r}"))
        elif not any(needle in h for needle in (f" {keys[0]} ", f" {keys[1][1:]} ") for h in haystack):
            out.skips.append(TextSkip(where, "term_not_in_sentences",
                                      f"{where}: {raw!r} occurs in no sentence of data.sentences"))
        else:
            seen.update(dict.fromkeys(keys, n))
            out.lines.append(Line(term, where, raw if term != raw else ""))
    if not out.lines:
        why = "; ".join(s.detail for s in out.skips[:3]) or "only blank lines and # comments"
        raise ValueError(f"data.terms={path}: no usable term ({why})")
    return out


def load_sentences(path: Path = SENTENCES) -> list[str]:
    """The sentences of a file that must be clean (the shipped ones): raises ValueError naming
    file:line on any line `read_sentences` would skip (duplicate, unspeakable, bad length)."""
    text = read_sentences(path)
    if text.skips:
        raise ValueError(f"{text.skips[0].detail} ({len(text.skips)} lines would be skipped)")
    if text.normalised:
        x = text.normalised[0]
        raise ValueError(f"{x.source}: write numbers and symbols in words: {x.original!r}")
    return text.texts


@dataclass(frozen=True)
class CorpusInputs:
    """What a synthetic corpus is rendered from (data.sentences / control / general / voices /
    terms / train_sentences / dev_control); the defaults are the shipped Singapore English files.
    `dev_control` (dev-only control sentences, e.g. `DEV_CONTROL`) is opt-in."""
    name: str = "sg_english"
    sentences: Path = SENTENCES
    control: Path = CONTROL
    general: Path = GENERAL
    voices: Path = VOICES
    terms: Path | None = None
    train_sentences: Path | None = None
    dev_control: Path | None = None

    @classmethod
    def of(cls, name: str | None = None, sentences=None, control=None, general=None, voices=None, terms=None,
           train_sentences=None, dev_control=None):
        d = cls()
        train = Path(train_sentences).expanduser() if train_sentences else None
        dev = Path(dev_control).expanduser() if dev_control else None
        return cls(name or d.name, *(Path(p).expanduser() if p else q for p, q in (
            (sentences, d.sentences), (control, d.control), (general, d.general), (voices, d.voices))),
            Path(terms).expanduser() if terms else None, train, dev)

    def shown(self, path: Path) -> str:
        """A path as records and reports name it: repo-relative for the shipped files."""
        try:
            return str(path.resolve().relative_to(DATA_DIR.parent.parent))
        except ValueError:
            return str(path)
