"""Which rows a run uses: parts of the voice inventory, TTS engines in or out, the replay share of
general English, and seeded subsamples. Training, evaluation and the export's WER check choose
their rows with these."""

from __future__ import annotations

import logging

import numpy as np
from datasets import Dataset

log = logging.getLogger(__name__)


def subsample(ds: Dataset | None, n: int | None, seed: int) -> Dataset | None:
    if ds is None or n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def keep_part(ds, part, what: str):
    """The rows of `ds` whose voice lies in `part` of voices.json (e.g. the unseen-engine dev
    part, so checkpoints are chosen on voices of engines training never heard). `part` may be a
    list of parts; "real" names the recorded clips (rows with no TTS engine). None: all rows."""
    if ds is None or part is None:
        return ds
    from asr_lora.data.scope import parts_of
    from asr_lora.data.synthetic.voices import parts_of_rows

    wanted = parts_of(part, what)
    n = len(ds)
    column = lambda name: ds[name] if name in ds.column_names else [None] * n  # noqa: E731
    parts = parts_of_rows(column("part"), column("voice"), column("engine"))
    have = sorted({p for p in parts if p})
    if not have:  # a corpus without parts (real speech, a user's manifest): nothing to choose from
        log.warning("%s=%s: this split has no voice parts; using all %d rows", what, part, n)
        return ds
    keep = [i for i, p in enumerate(parts) if p in wanted]
    if not keep:
        raise ValueError(f"{what}={part!r}: no rows of that part (parts present: {have}; "
                         "see the voice inventory, data/sg_english/voices.json or data.voices)")
    kept = ds.select(keep)
    log.info("%s=%s: %d of %d rows", what, part if isinstance(part, str) else list(wanted), len(kept), len(ds))
    return kept


def eval_rows(ds, part=None, engines=()):
    """The rows of a split an evaluation scores: `eval.part`'s parts, then `eval.engines`' engines.
    The training job, `python -m asr_lora.evaluate` and the export's WER check all score these."""
    ds = keep_part(ds, part, "eval.part")
    ds = filter_engines(ds, engines or [], "eval.engines", keep=True)
    _check_domain_rows(ds, f"eval.part={part!r}, eval.engines={list(engines or [])}",
                       "(e.g. 'eval.part=[neural,real]')")
    return ds


def check_scored_split(ds, split: str, report: dict) -> None:
    """A run whose scored split has no rows: refused before training when the split by speaker left
    it empty (too few speakers for data.split_fractions), said when the source has none (training only)."""
    if ds is not None:
        return
    if split in report.get("empty_splits", ()):
        raise ValueError(f"split {split!r} is empty: data.split_fractions placed no speaker in it (too few "
                         "speakers; data_report.json's empty_splits); give the rows a split column, or score another "
                         "split (eval.split)")
    log.warning("no rows in split %r: this run trains and scores nothing", split)


def scored_rows(ds, part=None, engines=(), max_samples: int | None = None, seed: int = 0):
    """`eval_rows`, then `data.max_eval_samples` of them drawn with `seed`: what the training job and
    `python -m asr_lora.evaluate` score."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"data.max_eval_samples={max_samples}: score at least one clip (null: all)")
    ds = subsample(eval_rows(ds, part, engines), max_samples, seed)
    _check_domain_rows(ds, f"data.max_eval_samples={max_samples}", "; draw more")
    return ds


def _check_domain_rows(ds, what: str, fix: str) -> None:
    """Refused before any training or decoding: every figure of the report is about the domain's
    (accented) rows, and the control clips only gate them."""
    if ds is not None and len(ds) and "subset" in ds.column_names and set(ds["subset"]) == {"control"}:
        raise ValueError(f"{what}: the {len(ds)} rows left are all general-English control clips; an evaluation "
                         f"scores the domain's speech beside them {fix}")


def filter_engines(ds, engines, what: str, keep: bool = False):
    """`ds` without (keep=False) or with only (keep=True) the rows of these TTS engines. The
    leave-one-engine-out study trains without engine E and scores on E's dev voices
    (bench/study_unseen.py)."""
    engines = sorted(set(engines or []))
    if ds is None or not engines:
        return ds
    present = set(ds["engine"]) if isinstance(ds, Dataset) else None
    if present is not None and (unknown := [e for e in engines if e not in present]):
        raise ValueError(f"{what}: engines {unknown} have no rows (engines present: {sorted(present - {''})})")
    kept = ds.filter(lambda e: (e in engines) == keep, input_columns="engine")
    if present is not None:
        log.info("%s=%s: %d of %d rows kept", what, engines, len(kept), len(ds))
    return kept


def set_replay_share(ds, share: float | None, seed: int, what: str = "data.replay_share"):
    """`ds` with general-English replay rows (subset "general") making up `share` of it. The
    Singapore English rows stay as they are; general rows are a seeded sample of the split's
    own, whole copies of them first when the share asks for more than there are (each copy with an
    id of its own, `<id>#2`, ...: the encoder cache, augmented takes and reports key on the id).
    Rehearsal is the corpus's guard against forgetting, so how much of it to mix in is a study knob."""
    if ds is None or share is None:
        return ds
    if not 0 <= share < 1:
        raise ValueError(f"{what}={share}: must be at least 0 and below 1 (a share of the train split)")
    subsets = ds["subset"] if "subset" in ds.column_names else [""] * len(ds)
    general = [i for i, s in enumerate(subsets) if s == "general"]
    rest = [i for i, s in enumerate(subsets) if s != "general"]
    want = round(share * len(rest) / (1 - share))
    if want and not general:
        raise ValueError(f"{what}={share}: the train split has no general-English (subset 'general') rows")
    rng = np.random.default_rng(seed)
    picked = general * (want // len(general)) if general else []
    picked += sorted(rng.choice(general, size=want - len(picked), replace=False).tolist()) if want > len(picked) else []
    log.info("%s=%s: %d general-English replay rows (of %d distinct%s) with %d others", what, share,
             len(picked), len(general), ", repeated" if len(picked) > len(general) else "", len(rest))
    out = ds.select(sorted(rest + picked))
    if len(picked) > len(general):
        seen: dict[str, int] = {}
        ids = []
        for i in out["id"]:
            seen[i] = seen.get(i, 0) + 1
            ids.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
        out = out.map(lambda _, k: {"id": ids[k]}, with_indices=True, desc="replay copies' ids")
    return out
