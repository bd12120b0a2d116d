"""Collect requests that arrive together into one decode call.

A single worker thread owns the model. It waits for a first job, then keeps collecting for
`window_ms` or until `max_batch` jobs are waiting, groups them by decoding options (adapters are
NOT part of the key: mixed-adapter batches are the point), and hands each group's clips up to 30 s
to `Engine.decode`, then each longer clip alone, delivering every result as soon as it is ready.
Callers get a `concurrent.futures.Future`; an exception in a batch fails that batch's futures
only, and the worker keeps serving. A future cancelled before its batch starts
(the client went away) is not decoded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from asr_lora.inference.decode import CHUNK_SECONDS
from asr_lora.inference.engine import Engine, Job, Options

log = logging.getLogger(__name__)


class Batcher:
    def __init__(self, engine: Engine, max_batch: int = 8, window_ms: float = 20.0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.engine, self.max_batch, self.window_s = engine, max_batch, max(0.0, window_ms) / 1000
        self._queue: queue.Queue[tuple[Job, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="asr-lora-batcher", daemon=True)
        self._thread.start()

    def submit(self, audio: np.ndarray, model: str, options: Options = Options()) -> Future:
        if model not in self.engine.models:
            raise KeyError(model)
        options = self.engine.prepare(options)  # refused options never reach the queue
        fut: Future = Future()
        self._queue.put((Job(audio, model, options), fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _collect(self, first) -> tuple[list, bool]:
        batch, deadline = [first], time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            groups: dict[Options, list] = {}
            for job, fut in batch:
                if _claim(fut):
                    groups.setdefault(job.options, []).append((job, fut))
            # Clips up to 30 s first, one batch per options group; then each longer clip on its own
            # (the engine decodes those one at a time anyway), so a short request never waits for a
            # long-form decode that happened to share its window.
            for items in groups.values():
                if short := [(job, fut) for job, fut in items if job.duration <= CHUNK_SECONDS]:
                    self._decode(short)
            for items in groups.values():
                for job, fut in items:
                    if job.duration > CHUNK_SECONDS:
                        self._decode([(job, fut)])

    def _decode(self, items: list[tuple[Job, Future]]) -> None:
        try:
            results: list = self.engine.decode([j for j, _ in items])
        except Exception as e:  # fail these requests, keep the worker alive
            log.exception("decode failed for a batch of %d", len(items))
            results = [e] * len(items)
        for (_, fut), r in zip(items, results):
            _deliver(fut, r)


def _claim(fut: Future) -> bool:
    """Mark `fut` running; False when its caller cancelled it (nobody waits: skip the decode) or
    it was settled elsewhere."""
    try:
        return fut.set_running_or_notify_cancel()
    except RuntimeError:
        return False


def _deliver(fut: Future, result) -> None:
    # A future settled behind the worker's back must cost that request only, never the worker.
    try:
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
    except Exception:  # InvalidStateError, or whatever a future subclass raises
        log.warning("a request's result was dropped: its future refused it", exc_info=True)
