"""WER/CER, speaker-level bootstrap intervals and error analysis, on top of jiwer 4.

All functions take strings that are already normalised (see `asr_lora.data.text.normalize`); tokens are
whitespace-separated words (or characters, for CER, spaces included, as `jiwer.cer` counts them).

Rules worth knowing:

- Corpus WER is ratio-of-sums: (S + D + I) / N over all utterances, so long utterances weigh more.
  It equals `jiwer.wer(refs, hyps)` whenever every reference is non-empty.
- A reference that is empty after normalisation (e.g. only noise tags) has N = 0; every hypothesis
  word counts as an insertion. Such utterances add errors but no reference words. A corpus with
  N = 0 has WER 0.0 if there are no errors and `inf` otherwise.
- Intervals resample whole speakers with replacement, not utterances: a speaker's utterances share
  voice, accent and microphone, so utterance resampling would make intervals far too narrow. With
  fewer than two speakers no between-speaker interval exists and (nan, nan) is returned, except in
  `group_breakdown`, which falls back to resampling utterances inside a single-speaker group.
- Per-utterance rows (the per_utterance.csv schema) are dicts with at least ``sub, dele, ins,
  n_ref`` (``del`` is a Python keyword, hence ``dele``) plus whatever metadata the caller adds
  (``id, speaker, accent, voice, subset, ref, hyp``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import jiwer
import numpy as np
from jiwer.process import AlignmentChunk

from asr_lora.data.text import PARTICLES, normalize

Chunks = list[AlignmentChunk]


def _tokens(s: str, unit: str) -> list[str]:
    if unit == "word":
        return s.split()
    return list(s.strip())


def _align(refs: Sequence[str], hyps: Sequence[str], unit: str = "word"):
    """Yield (ref_tokens, hyp_tokens, chunks) per utterance; empty references handled here."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    nonempty = [i for i, r in enumerate(refs) if _tokens(r, unit)]
    out: dict[int, Chunks] = {}
    if nonempty:
        process = jiwer.process_words if unit == "word" else jiwer.process_characters
        res = process([refs[i] for i in nonempty], [hyps[i] for i in nonempty])
        out = dict(zip(nonempty, res.alignments))
    for i, (r, h) in enumerate(zip(refs, hyps)):
        rt, ht = _tokens(r, unit), _tokens(h, unit)
        if i in out:
            yield rt, ht, out[i]
        else:  # empty reference: jiwer's behaviour here has changed across versions, so decide it
            yield rt, ht, [AlignmentChunk("insert", 0, 0, 0, len(ht))] if ht else []


def _counts(chunks: Chunks, n_ref: int) -> dict[str, int]:
    c = {"sub": 0, "dele": 0, "ins": 0, "hits": 0, "n_ref": n_ref}
    key = {"substitute": "sub", "delete": "dele", "insert": "ins", "equal": "hits"}
    for ch in chunks:
        span = ch.hyp_end_idx - ch.hyp_start_idx if ch.type == "insert" else ch.ref_end_idx - ch.ref_start_idx
        c[key[ch.type]] += span
    return c


def per_utterance_errors(refs: Sequence[str], hyps: Sequence[str], unit: str = "word") -> list[dict]:
    """One ``{sub, dele, ins, hits, n_ref}`` per pair, aligned in a single jiwer call."""
    return [_counts(ch, len(rt)) for rt, _, ch in _align(refs, hyps, unit)]


def utterance_errors(ref: str, hyp: str) -> dict[str, int]:
    return per_utterance_errors([ref], [hyp])[0]


def utterance_char_errors(ref: str, hyp: str) -> dict[str, int]:
    return per_utterance_errors([ref], [hyp], unit="char")[0]


def _rate(errors: float, n: float) -> float:
    if n == 0:
        return 0.0 if errors == 0 else float("inf")
    return float(errors / n)


def _corpus(refs, hyps, unit: str) -> dict[str, Any]:
    tot = Counter()
    for c in per_utterance_errors(refs, hyps, unit):
        tot.update(c)
    errors = tot["sub"] + tot["dele"] + tot["ins"]
    return {"rate": _rate(errors, tot["n_ref"]), "sub": tot["sub"], "del": tot["dele"], "ins": tot["ins"],
            "hits": tot["hits"], "n": tot["n_ref"]}


def corpus_wer(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Any]:
    """``{wer, sub, del, ins, hits, n_ref_words}``."""
    c = _corpus(refs, hyps, "word")
    return {"wer": c.pop("rate"), **{k: c[k] for k in ("sub", "del", "ins", "hits")}, "n_ref_words": c["n"]}


def normalized_wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER of raw transcripts after the one normaliser (the figure every report quotes)."""
    return corpus_wer([normalize(r) for r in refs], [normalize(h) for h in hyps])["wer"]


def corpus_cer(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Any]:
    """``{cer, sub, del, ins, hits, n_ref_chars}``; spaces count as characters, as in jiwer."""
    c = _corpus(refs, hyps, "char")
    return {"cer": c.pop("rate"), **{k: c[k] for k in ("sub", "del", "ins", "hits")}, "n_ref_chars": c["n"]}


def _group_sums(values: Sequence[Sequence[float]], groups) -> list[np.ndarray]:
    n = len(values[0])
    # A row that names no speaker is a group of its own, as the data split treats it: pooled as one
    # "unknown" speaker, a corpus without speaker ids had no interval at all.
    keys = (np.asarray([f"row {i}" for i in range(n)]) if groups is None else
            np.asarray([str(g) if g not in NO_SPEAKER else f"\0row {i}" for i, g in enumerate(groups)]))
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group labels for {n} utterances")
    _, inv = np.unique(keys, return_inverse=True)
    return [np.bincount(inv, weights=np.asarray(v, dtype=float)) for v in values]


NO_SPEAKER = (None, "", "unknown")


def _replicates(sums: list[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    g = len(sums[0])
    idx = np.random.default_rng(seed).integers(0, g, size=(n_boot, g))
    return [s[idx].sum(axis=1) for s in sums]


def _ratio(e: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, e / np.where(n > 0, n, 1), np.nan)


def _interval(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(per_utt_errors, per_utt_nref, groups=None, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of corpus WER, resampling whole groups (speakers) with replacement.

    ``groups=None`` makes every utterance its own group. Returns (nan, nan) with fewer than 2 groups.
    """
    e, n = _group_sums([per_utt_errors, per_utt_nref], groups)
    if len(e) < 2:
        return float("nan"), float("nan")
    re_, rn = _replicates([e, n], n_boot, seed)
    return _interval(_ratio(re_, rn), alpha)


def paired_bootstrap(errs_a, errs_b, nref, groups=None, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, float]:
    """Compare systems A and B on the same utterances; each replicate uses the same speakers for both.

    ``delta = wer_b - wer_a`` (negative: B is better). ``prob_improvement`` is the share of replicates
    with delta < 0; ``p_value`` is a two-sided bootstrap approximation, 2 * min(P(d <= 0), P(d >= 0)),
    each share counted as (k + 1) / (n + 1): a finite set of replicates cannot show p = 0, and the
    smallest value it can show (2 / (n_boot + 1)) is reported instead.
    """
    ea, eb, n = _group_sums([errs_a, errs_b, nref], groups)
    wer_a, wer_b = _rate(ea.sum(), n.sum()), _rate(eb.sum(), n.sum())
    out = {"wer_a": wer_a, "wer_b": wer_b, "delta": wer_b - wer_a, "low": float("nan"),
           "high": float("nan"), "prob_improvement": float("nan"), "p_value": float("nan")}
    if len(n) < 2:
        return out
    ra, rb, rn = _replicates([ea, eb, n], n_boot, seed)
    d = _ratio(rb, rn) - _ratio(ra, rn)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return out
    out["low"], out["high"] = _interval(d, alpha)
    out["prob_improvement"] = float(np.mean(d < 0))
    tail = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
    out["p_value"] = float(min(1.0, 2 * (tail + 1) / (d.size + 1)))
    return out


def _errors(row: dict) -> int:
    return row["errors"] if "errors" in row else row["sub"] + row["dele"] + row["ins"]


def group_breakdown(rows: Iterable[dict], key: str, speaker_key: str = "speaker", n_boot: int = 1000,
                    seed: int = 0, alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """``{group: {wer, n_utts, n_words, ci_low, ci_high}}`` for the rows' ``key`` (speaker, accent, ...).

    Rows whose ``key`` is missing, None or empty are left out (e.g. ``voice`` on real speech). Intervals
    resample speakers inside the group, or utterances when the group holds one speaker only.
    """
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r.get(key) not in (None, ""):
            by.setdefault(str(r[key]), []).append(r)
    out = {}
    for g in sorted(by):
        rs = by[g]
        errs, nref = [_errors(r) for r in rs], [r["n_ref"] for r in rs]
        speakers = [r.get(speaker_key, "unknown") for r in rs]
        lo, hi = bootstrap_ci(errs, nref, speakers if len(set(speakers)) > 1 else None, n_boot, seed, alpha)
        out[g] = {"wer": _rate(sum(errs), sum(nref)), "n_utts": len(rs), "n_words": int(sum(nref)),
                  "ci_low": lo, "ci_high": hi}
    return out


def error_analysis(refs: Sequence[str], hyps: Sequence[str], top_n: int = 20) -> dict[str, list]:
    """Most frequent word-level confusions.

    Substitutions are paired word by word inside each substituted span (jiwer's
    `collect_error_counts` pairs whole spans, which hides the individual confusions).
    Returns ``{substitutions: [(ref, hyp, n)], deletions: [(word, n)], insertions: [(word, n)]}``.
    """
    subs, dels, ins = Counter(), Counter(), Counter()
    for rt, ht, chunks in _align(refs, hyps):
        for ch in chunks:
            r, h = rt[ch.ref_start_idx:ch.ref_end_idx], ht[ch.hyp_start_idx:ch.hyp_end_idx]
            if ch.type == "substitute":
                subs.update(zip(r, h))
            elif ch.type == "delete":
                dels.update(r)
            elif ch.type == "insert":
                ins.update(h)
    return {
        "substitutions": [(r, h, n) for (r, h), n in subs.most_common(top_n)],
        "deletions": dels.most_common(top_n),
        "insertions": ins.most_common(top_n),
    }


def particle_stats(refs: Sequence[str], hyps: Sequence[str], particles: Iterable[str] = PARTICLES) -> dict:
    """Recall and precision of discourse particles, counted through the word alignment.

    Use particle-kept normalised text. A particle is matched when the alignment pairs it with the
    same word in the hypothesis. Recall/precision are nan when there is nothing to divide by.
    """
    ps = set(particles)
    n_ref, n_hyp, matched = Counter(), Counter(), Counter()
    for rt, ht, chunks in _align(refs, hyps):
        n_ref.update(w for w in rt if w in ps)
        n_hyp.update(w for w in ht if w in ps)
        for ch in chunks:
            if ch.type == "equal":
                matched.update(w for w in rt[ch.ref_start_idx:ch.ref_end_idx] if w in ps)

    def ratio(a, b):
        return a / b if b else float("nan")

    tr, th, tm = sum(n_ref.values()), sum(n_hyp.values()), sum(matched.values())
    return {
        "n_ref": tr, "n_hyp": th, "matched": tm, "recall": ratio(tm, tr), "precision": ratio(tm, th),
        "per_particle": {p: {"n_ref": n_ref[p], "n_hyp": n_hyp[p], "matched": matched[p]}
                         for p in sorted(set(n_ref) | set(n_hyp))},
    }


def worst_utterances(rows: Iterable[dict], n: int = 10) -> list[dict]:
    """The ``n`` rows with most errors (ties: higher WER, then id), each with ``errors`` and ``wer``.

    Sorting by error count first keeps one-word utterances with WER 1.0 from filling the list.
    Error-free rows are never listed.
    """
    scored = [{**r, "errors": _errors(r), "wer": _rate(_errors(r), r["n_ref"])} for r in rows if _errors(r)]
    scored.sort(key=lambda r: (-r["errors"], -r["wer"], str(r.get("id", ""))))
    return scored[:n]
