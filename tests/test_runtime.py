"""Process plumbing under a real 2-process gloo group (CPU): rank 0 goes first through
`main_process_first`, and the other rank enters only once rank 0 has left the block."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import torch.multiprocessing as mp


@contextlib.contextmanager
def _gloo_group(rank: int, port: int):
    """This process as `rank` of a 2-process gloo group on localhost, torn down on leaving."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _worker(rank: int, port: int, out: str) -> None:
    from asr_lora.core.runtime import main_process_first

    with _gloo_group(rank, port):
        with main_process_first():
            entered = time.monotonic()
            if rank == 0:
                time.sleep(1.0)  # long enough that a rank running concurrently would enter first
            left = time.monotonic()
        Path(out, f"{rank}.json").write_text(json.dumps({"entered": entered, "left": left}))


def test_main_process_first_runs_rank_0_alone_first(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    # CLOCK_MONOTONIC is system-wide on Linux, so the two processes' readings compare
    assert r1["entered"] >= r0["left"], (r0, r1)


def test_main_process_first_is_a_plain_block_without_a_process_group():
    from asr_lora.core.runtime import main_process_first

    ran = []
    with main_process_first():
        ran.append(1)
    assert ran == [1]


def test_replica_ranks_print_warnings_only(monkeypatch):
    import logging

    from rich.logging import RichHandler

    from asr_lora.core.logs import setup_logging

    levels = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        setup_logging(None)
        levels[rank] = next(h.level for h in logging.getLogger().handlers if isinstance(h, RichHandler))
    monkeypatch.delenv("RANK")
    setup_logging(None)
    assert levels == {"0": logging.NOTSET, "1": logging.WARNING}


def _waiting_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from asr_lora.core.runtime import init_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    init_distributed(timeout_s=2)
    try:
        if rank == 0:
            time.sleep(6)  # rank 0 alone at work, past the group's timeout
        try:
            dist.barrier()
            outcome = "waited"
        except RuntimeError:
            outcome = "timed out"
        Path(out, f"{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_the_process_group_waits_as_long_as_train_ddp_timeout(tmp_path):
    """The group's timeout is init_distributed's (train.ddp_timeout), not the backend default: here a
    2 s timeout ends the other rank's wait for a rank 0 that is still at work."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_waiting_worker, args=(port, str(tmp_path)), nprocs=2)
    assert (tmp_path / "1.txt").read_text() == "timed out"


def test_importing_the_trainer_prints_nothing_under_offline_wandb():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import asr_lora.training.job, asr_lora.training.trainer"],
                         capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""


def _kl_worker(rank: int, port: int, out: str) -> None:
    import torch

    from asr_lora.training.distill import means_over_ranks

    with _gloo_group(rank, port):
        # rank 1 drew no replay rows since the last log: it must still take part in the sum
        totals = ({"replay_kl": [torch.tensor(0.6), 2], "context_kl": [torch.tensor(1.0), 1]} if rank == 0
                  else {"context_kl": [torch.tensor(3.0), 1]})
        got = means_over_ranks(totals, {"replay_kl": 1.0, "context_kl": 3.0, "unused_kl": 0.0})
        Path(out, f"kl{rank}.json").write_text(json.dumps(got))


def test_distillation_terms_are_logged_as_their_mean_over_every_rank(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_kl_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"kl{rank}.json").read_text())
        assert got == {"context_kl": 2.0, "replay_kl": 0.3}, (rank, got)


def test_distillation_means_without_a_process_group_are_this_process_s():
    from asr_lora.training.distill import means_over_ranks

    assert means_over_ranks({"replay_kl": [1.5, 3]}, {"replay_kl": 1.0, "context_kl": 2.0}) == {"replay_kl": 0.5}
