"""Which splits and parts of a synthetic corpus a run reads, so that only those are rendered.

A scope is a sorted tuple of "split" (every part of it) and "split:part" entries, e.g.
("test:neural", "test:real", "train"): `make demo` trains on train and scores the test split's
natural-voice part and the real clips, so the dev split and the test split's engine parts (about
half the corpus's rendering time, most of it the neural dev speakers) are not rendered. Rendered
files are named by (text, voice), so a later run that reads more renders only what is missing.
None is the whole corpus (`python -m asr_lora.prepare`, `data.render_all=true`)."""

from __future__ import annotations

from collections.abc import Sequence

Scope = tuple[str, ...]


def _parts(part) -> list[str] | None:
    if part is None:
        return None
    return [part] if isinstance(part, str) else list(part)


def run_scope(eval_split: str, eval_part=None, dev_part=None, dev_read: bool = False) -> Scope:
    """The scope of a run that trains on train (always read: training, and the domain terms derived
    from its text), scores `eval_split`'s `eval_part` (None: all of it) and, with `dev_read`, also
    evaluates on dev's `dev_part` while training."""
    wanted: dict[str, set[str] | None] = {"train": None}
    reads = [(eval_split, _parts(eval_part))] + ([("dev", _parts(dev_part))] if dev_read else [])
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
