"""Which splits and parts of a synthetic corpus a run reads, so that only those are rendered.

A scope is a sorted tuple of "split" (every part of it) and "split:part" entries, e.g.
("dev:seen_engine", "test:neural", "test:real", "train"): `make demo` trains on train, scores the
test split's natural-voice part and the real clips, and its export checks the merge on the first
dev clips, so the rest of dev and test's engine parts (about half the corpus's rendering time,
most of it the neural dev speakers) are not rendered. Rendered files are named by (text, voice), so
a later run that reads more renders only what is missing. None is the whole corpus
(`data.render_all=true`)."""

from __future__ import annotations

from collections.abc import Sequence

Scope = tuple[str, ...]

# The export checks the merged model against the unmerged one on the first clips of dev
# (export/job.py), which the corpus plan lays out as the seen-engine voices' domain sentences.
PROBE = "dev:seen_engine"


def parts_of(part, what: str) -> list[str] | None:
    """`part` (a config value: one part, a list of them, or None for all) as a list, after checking
    every name; `what` names the config key in the error."""
    from asr_lora.data.synthetic.voices import PARTS, REAL_PART

    if part is None:
        return None
    parts = [part] if isinstance(part, str) else list(part)
    if bad := [p for p in parts if p not in (*PARTS, REAL_PART)]:
        raise ValueError(f"{what}={part!r}: unknown parts {bad}; choose from {[*PARTS, REAL_PART]}")
    return parts


def run_scope(eval_split: str, eval_part=None, dev_part=None, dev_read: bool = False, probe: bool = False) -> Scope:
    """The scope of a run that trains on train (always read: training, and the domain terms derived
    from its text), scores `eval_split`'s `eval_part` (None: all of it), with `dev_read` evaluates
    on dev's `dev_part` while training, and with `probe` exports (the merge check's dev clips)."""
    wanted: dict[str, set[str] | None] = {"train": None}
    reads = [(eval_split, parts_of(eval_part, "eval.part"))]
    reads += [("dev", parts_of(dev_part, "train.dev_part"))] if dev_read else []
    probe_split, probe_part = PROBE.split(":")
    reads += [(probe_split, [probe_part])] if probe else []
    for split, parts in reads:
        if parts is None or (split in wanted and wanted[split] is None):
            wanted[split] = None
        else:
            wanted[split] = (wanted.get(split) or set()) | set(parts)
    return tuple(sorted(s if parts is None else f"{s}:{p}" for s, parts in wanted.items() for p in (parts or [None])))


def in_scope(split: str, part: str | None, scope: Scope | None) -> bool:
    return scope is None or split in scope or f"{split}:{part}" in scope


def scope_tag(scope: Scope) -> str:
    """A file-name-safe name of the scope (the scoped manifest is manifest.<tag>.jsonl)."""
    return "+".join(s.replace(":", "-") for s in scope)


def describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def left_out(records: Sequence, scope: Scope | None) -> dict[str, int]:
    """Clips of the plan outside `scope`, counted per "split" or "split/part"."""
    out: dict[str, int] = {}
    for r in records:
        if not in_scope(r.split, r.part, scope):
            key = f"{r.split}/{r.part}" if r.part else r.split
            out[key] = out.get(key, 0) + 1
    return out


def check_read(records: Sequence, scope: Scope | None) -> None:
    """Refuse a scope that names a split none of whose named parts the plan has (the probe aside,
    which the export does without): the run would otherwise go on without scoring or dev checks."""
    for split in sorted({e.split(":")[0] for e in scope or ()} - {"train"}):
        entries = [e for e in scope if e.split(":")[0] == split and e != PROBE]
        if entries and not any(in_scope(r.split, r.part, tuple(entries)) for r in records):
            have = sorted({r.part for r in records if r.split == split and r.part})
            raise ValueError(f"the run reads {', '.join(entries)}, but the corpus has no such clips in split "
                             f"{split!r} (parts there: {have}; see the voice inventory, data.voices)")
