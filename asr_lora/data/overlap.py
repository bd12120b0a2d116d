"""Which scored sentences an adapter was trained on.

A training run writes `train_texts.json` (a digest of each training sentence as the scorer reads
it: texts are not copied out of the user's data) beside its adapter; `evaluate adapter=...` reads it
and refuses to score the adapter on sentences it trained on. A corpus whose sentence file changed
after training (a line added to a synthetic source moves sentences between splits), or another
corpus, would otherwise report the adapter's recall of its own training text as a test result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from asr_lora.core.io import read_json, write_json
from asr_lora.data.text import NORMALIZER_VERSION, normalize

RECORD = "train_texts.json"


def text_digest(text: str) -> str:
    return _digest(normalize(text))


def _digest(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()[:16]


def record_train_texts(run_dir: Path, texts: Iterable[str]) -> Path:
    digests = sorted({_digest(n) for t in texts if t and (n := normalize(t))})
    return write_json(Path(run_dir) / RECORD, {"normaliser": NORMALIZER_VERSION, "n": len(digests),
                                               "digests": digests})


def find_record(adapter: str | Path) -> Path | None:
    """The training run's record for an adapter: `<run>/adapter`, `<run>/seedN/adapter` of a
    several-seed run, and an export's `<run>/export/<format>`."""
    adapter = Path(adapter)
    for d in (adapter.parent, adapter.parent.parent):
        if (d / RECORD).is_file():
            return d / RECORD
    return None


def trained_on(adapter: str | Path, texts: Sequence[str],
               corpus_train: Iterable[str] = ()) -> tuple[Path | None, list[int]]:
    """(the record found, or None; the indices of `texts` the adapter was trained on that the
    corpus's own train split does not hold). A sentence in both of a corpus's splits (read by a
    train and a test speaker, as real corpora do) was scored so when the run trained too: only a
    sentence that left the adapter's train split for the scored one is counted."""
    record = find_record(adapter)
    if record is None:
        return None, []
    data = read_json(record, "adapter's training-text record")
    if data.get("normaliser") != NORMALIZER_VERSION:  # other digests of the same text: nothing to compare
        return None, []
    seen = set(data.get("digests") or []) - {text_digest(t) for t in corpus_train if t}
    return record, [i for i, t in enumerate(texts) if text_digest(t) in seen]


def check_not_trained_on(adapter: str | Path, texts: Sequence[str], ids: Sequence[str], allow: bool,
                         corpus_train: Iterable[str] = ()) -> dict:
    """What eval.json records about the overlap; raises ValueError when the scored rows hold
    sentences the adapter trained on (`trained_on`), unless `allow` (eval.allow_train_overlap)."""
    record, hits = trained_on(adapter, texts, corpus_train)
    if record is None:
        return {"checked": False, "why": f"no {RECORD} of this normaliser beside the adapter or its run"}
    out = {"checked": True, "record": str(record), "n_scored": len(texts), "n_trained_on": len(hits),
           "examples": [ids[i] for i in hits[:5]]}
    if hits and not allow:
        raise ValueError(
            f"{len(hits)} of the {len(texts)} scored clips say sentences {adapter} was trained on ({record}; e.g. "
            f"{ids[hits[0]]}: {texts[hits[0]]!r}): the corpus is not the one it was trained with (a sentence file "
            "changed, which moves sentences between splits, or another corpus); score it on the corpus it trained "
            "on, or pass eval.allow_train_overlap=true to score anyway (eval.json then says so)")
    return out
