"""The order training draws its clips in (train.sampling).

`random` is the Trainer's: a fresh permutation of the clips every epoch. A run that stops before the
epoch ends (128 steps of 8 clips cover 64% of the sg_english train split) then never hears some
sentences at all: a sentence read by two voices is missed by both with probability (1 - 0.64)^2 = 13%,
and a domain term that one sentence carries goes untrained with it.

`by_text` still visits every clip once per epoch, but spreads the clips of each text evenly over
the epoch: a text read by k voices gets one clip in each k-th of it, at a random offset. Every
text is then drawn once before any is drawn a second time (up to the random offsets), and any
prefix of the epoch keeps the split's mix of texts read once (general-English replay) and read
several times. Hand-written: neither the Trainer nor `datasets` has a sampler that groups by a
column.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

log = logging.getLogger(__name__)

SAMPLINGS = ("random", "by_text")


class SpreadByText(Sampler[int]):
    """Indices of `texts` in an order that spreads each text's clips evenly over the epoch; seeded
    by (`seed`, epoch), the same on every rank (Accelerate shards the batches it yields)."""

    def __init__(self, texts: Sequence[str], seed: int = 0):
        groups: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            groups.setdefault(text, []).append(i)
        self.groups = list(groups.values())
        self.n = len(texts)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls it at each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        keys, order = [], []
        for group in self.groups:
            clips = rng.permutation(group)
            offset = rng.random()
            keys.extend((k + offset) / len(clips) for k in range(len(clips)))
            order.extend(int(i) for i in clips)
        return iter([order[j] for j in np.argsort(keys, kind="stable")])


def check_sampling(sampling: str, streaming: bool, length_buckets: int = 0) -> None:
    """Refuses a train.sampling the run cannot honour, before any encoding or decoding."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"train.sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    if sampling == "by_text" and streaming:
        raise ValueError("train.sampling=by_text orders the whole train split, but a streamed split (data.streaming) "
                         "is read in shard order; use train.sampling=random there")
    if sampling == "by_text" and length_buckets:
        raise ValueError("train.sampling=by_text and data.length_buckets each choose the order of the training clips; "
                         "set one of them")


def train_sampler(sampling: str, train_ds, seed: int) -> Sampler | None:
    """The sampler for train.sampling over an in-memory train split whose setting `check_sampling`
    accepted (None: the Trainer's own); only `by_text` reads the split's text column."""
    if sampling != "by_text":
        return None
    sampler = SpreadByText(train_ds["text"], seed)
    log.info("training order: by text, %s clips of %s texts spread over each epoch", f"{sampler.n:,}",
             f"{len(sampler.groups):,}")
    return sampler
