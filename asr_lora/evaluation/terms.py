"""Domain terms: which words carry a domain's meaning, how many of them a system gets right, and the
prompt that lists them (the free alternative an adapter has to beat).

Terms come from a file (one per line, `eval.terms=PATH`) or are derived from the training text:
words of the domain sentences that Whisper's tokenizer splits into two or more pieces and that the
general-English sentences never use. They are never taken from evaluation sentences.

Term recall is the share of term occurrences in the references that the hypothesis of the same
utterance also contains (min of the two counts per utterance), on normalised text, so "Bukit
Timah," and "bukit timah" match. It is reported per part, split into terms the training text
contains ("seen") and terms it does not ("unseen"), with the terms missed most often, and compared
occurrence by occurrence between two systems (`paired_recall`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asr_lora.core.io import numbered_lines
from asr_lora.data.text import normalize

log = logging.getLogger(__name__)

PROMPT_TOKEN_BUDGET = 200  # Whisper's prompt shares the 448-token window with the transcript


class TermsError(ValueError):
    """A terms file that cannot be used; the message names the file and line."""


@dataclass
class Terms:
    """Normalised terms (each a tuple of words), where they came from, and the training text's
    term counts (a term with count 0 is "unseen")."""

    terms: list[tuple[str, ...]]
    source: str
    train_counts: dict[str, int] = field(default_factory=dict)
    prompt: str = ""
    n_prompt_terms: int = 0
    # Every alphabetic word of 3+ letters in the training domain text that the general-English text
    # never uses, however the tokenizer splits it: the domain's own words, which train.context_kl
    # leaves free.
    own_words: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [" ".join(t) for t in self.terms]

    def summary(self) -> dict:
        seen = sum(1 for n in self.names if self.train_counts.get(n, 0))
        return {"source": self.source, "n_terms": len(self.terms), "n_seen_in_training": seen,
                "n_unseen_in_training": len(self.terms) - seen, "prompt": self.prompt,
                "n_prompt_terms": self.n_prompt_terms}


def _count(words: Sequence[str], term: tuple[str, ...]) -> int:
    n = len(term)
    return sum(1 for i in range(len(words) - n + 1) if tuple(words[i:i + n]) == term)


def _spoken(words: Sequence[str], longest_first: Sequence[tuple[str, ...]]) -> Counter:
    """Occurrences of each term in `words`, longer terms first, each word in at most one of them:
    "mee siam" said once is one "mee siam", not also a "mee" (a terms file may hold both)."""
    taken, found = [False] * len(words), Counter()
    for t in longest_first:
        n = len(t)
        for i in range(len(words) - n + 1):
            if tuple(words[i:i + n]) == t and not any(taken[i:i + n]):
                found[t] += 1
                taken[i:i + n] = [True] * n
    return found


def read_terms_file(path: str | Path) -> list[tuple[str, ...]]:
    """Terms from a UTF-8 file, one per line; blank lines and `#` comments are skipped. Raises
    TermsError naming the file and line for undecodable bytes, a term that normalises to nothing,
    or a duplicate."""
    try:
        lines = numbered_lines(path, "eval.terms")
    except (FileNotFoundError, ValueError) as e:
        raise TermsError(str(e)) from None
    out, where = [], {}
    for lineno, text in lines:
        if not text or text.startswith("#"):
            continue
        words = tuple(normalize(text).split())
        if not words:
            raise TermsError(f"{path}:{lineno}: {text!r} is empty after normalisation")
        if words in where:
            raise TermsError(f"{path}:{lineno}: {text!r} repeats line {where[words]}")
        where[words] = lineno
        out.append(words)
    if not out:
        raise TermsError(f"{path}: no terms in the file")
    return out


def derive_terms(domain_texts: Iterable[str], general_texts: Iterable[str], tokenizer,
                 min_pieces: int = 2) -> list[tuple[str, ...]]:
    """Words of `domain_texts` that `tokenizer` splits into `min_pieces` or more pieces (as a word
    after a space, lower-case and capitalised) and that `general_texts` never use."""
    return _derive([normalize(t).split() for t in domain_texts], general_texts, tokenizer, min_pieces)


def _derive(domain_words: Sequence[Sequence[str]], general_texts: Iterable[str], tokenizer,
            min_pieces: int = 2) -> list[tuple[str, ...]]:
    general = {w for t in general_texts for w in normalize(t).split()}
    counts = Counter(w for words in domain_words for w in words)
    terms = []
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if word in general or not word.isalpha() or len(word) < 3:
            continue
        # Both casings: " chinese" splits where " Chinese" (how English writes it) does not.
        if min(len(tokenizer.tokenize(" " + w)) for w in (word, word.capitalize())) >= min_pieces:
            terms.append((word,))
    return terms


def build_terms(train_domain_texts: Sequence[str], train_general_texts: Sequence[str], tokenizer,
                path: str | Path | None = None) -> Terms:
    """The run's terms: from `path` when given, else derived from the training text; with their
    training counts and the prompt listing the most frequent ones within `PROMPT_TOKEN_BUDGET`."""
    words = [normalize(t).split() for t in train_domain_texts]
    if path:
        terms, source = read_terms_file(path), str(path)
    else:
        terms, source = _derive(words, train_general_texts, tokenizer), "derived from training text"
    counts = {" ".join(t): sum(_count(w, t) for w in words) for t in terms}
    out = Terms(terms, source, counts, own_words=_derive(words, train_general_texts, tokenizer, min_pieces=1))
    # Most frequent first: the prompt holds what the training text says most often.
    ranked = sorted(out.names, key=lambda n: (-counts[n], n))
    chosen: list[str] = []
    for name in ranked:
        if len(tokenizer.tokenize(" " + ", ".join([*chosen, name]))) > PROMPT_TOKEN_BUDGET:
            break
        chosen.append(name)
    out.prompt, out.n_prompt_terms = ", ".join(chosen), len(chosen)
    if path and (never := [n for n in out.names if not counts[n]]):
        log.warning("%d of %d terms in %s never occur in the training text (scored as unseen): %s",
                    len(never), len(out.names), path, ", ".join(never[:10]) + (" ..." if len(never) > 10 else ""))
    return out


def _occurrences(refs: Sequence[str], hyps: Sequence[str], terms: Terms) -> Iterator[tuple[str, int, int]]:
    """(term, hits, occurrences) for each (utterance, term) the reference holds, utterance by
    utterance in term order: a hit is an occurrence the same utterance's hypothesis also holds."""
    named = list(zip(terms.terms, terms.names))
    longest_first = sorted(terms.terms, key=len, reverse=True)
    for r, h in zip(refs, hyps):
        said, heard = _spoken(r.split(), longest_first), _spoken(h.split(), longest_first)
        for t, name in named:
            if n := said[t]:
                yield name, min(n, heard[t]), n


def term_recall(refs: Sequence[str], hyps: Sequence[str], terms: Terms, most_missed: int = 12) -> dict:
    """Recall of term occurrences over normalised (`refs`, `hyps`) pairs: overall, for terms seen and
    unseen in training, per term, and the most-missed terms."""
    per: dict[str, list[int]] = {}
    for name, hit, n in _occurrences(refs, hyps, terms):
        acc = per.setdefault(name, [0, 0])
        acc[0] += hit
        acc[1] += n

    def block(names: Iterable[str]) -> dict:
        hits = sum(per[n][0] for n in names)
        total = sum(per[n][1] for n in names)
        return {"recall": hits / total if total else None, "hits": hits, "n": total}

    seen = [n for n in per if terms.train_counts.get(n, 0)]
    unseen = [n for n in per if not terms.train_counts.get(n, 0)]
    missed = sorted(((n, c[1] - c[0], c[1]) for n, c in per.items() if c[1] > c[0]), key=lambda x: (-x[1], x[0]))
    return {**block(per), "seen": block(seen), "unseen": block(unseen),
            "by_term": {n: {"hits": c[0], "n": c[1]} for n, c in sorted(per.items())},
            "most_missed": [{"term": n, "missed": m, "n": t} for n, m, t in missed[:most_missed]]}


def sign_test_p(gained: int, lost: int) -> float:
    """Two-sided exact binomial (McNemar) p-value of `gained` against `lost` discordant occurrences."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_recall(refs: Sequence[str], hyps_a: Sequence[str], hyps_b: Sequence[str], terms: Terms) -> dict:
    """System A's term recall against system B's on the same utterances, occurrence by occurrence:
    how many occurrences A recalls that B misses ("gained"), the reverse ("lost"), and the exact
    sign-test p-value of that split. With a few dozen occurrences a recall gap of several points
    can be a couple of words; this says whether it is more than that."""
    # Both walks see the same references, so they yield the same (utterance, term) pairs in order.
    pairs = [(a[1], b[1], a[2]) for a, b in zip(_occurrences(refs, hyps_a, terms), _occurrences(refs, hyps_b, terms))]
    gained = sum(max(0, x - y) for x, y, _ in pairs)
    lost = sum(max(0, y - x) for x, y, _ in pairs)
    n = sum(k for _, _, k in pairs)
    return {"n": n, "hits_a": sum(x for x, _, _ in pairs), "hits_b": sum(y for _, y, _ in pairs), "gained": gained,
            "lost": lost, "delta": (gained - lost) / n if n else None, "p_value": sign_test_p(gained, lost)}


def terms_file(eval_terms: str | None, data_report: dict) -> str | None:
    """eval.terms, else the terms file the data came with (a synthetic corpus's data.terms, kept to
    the terms its sentences use); None: derive them from the training text."""
    return eval_terms or (data_report.get("corpus") or {}).get("terms_file")


def terms_for_split(train_ds, tokenizer, path: str | Path | None = None) -> Terms | None:
    """The run's `Terms` from its train split (rows with "text" and "subset": subset "general" is the
    general English the terms must not use, "control" is ignored, the rest is domain text), or from
    `path`; None when the split cannot be read (streamed) and no file is given."""
    try:
        texts, subsets = list(train_ds["text"]), list(train_ds["subset"])
    except (TypeError, KeyError, ValueError):
        if path is None:
            why = "the data has no train split" if train_ds is None else "the train split is streamed, not read whole"
            log.warning("no domain terms: %s, so none can be derived from its text; set eval.terms=PATH", why)
            return None
        texts, subsets = [], []
    domain = [t for t, s in zip(texts, subsets) if s not in ("general", "control")]
    general = [t for t, s in zip(texts, subsets) if s == "general"]
    terms = build_terms(domain, general, tokenizer, path)
    if not terms.terms:
        log.warning("no domain terms derived from the training text; set eval.terms=PATH")
        return None
    log.info("domain terms: %d (%s), %d in the prompt", len(terms.terms), terms.source, terms.n_prompt_terms)
    return terms
