"""Process plumbing every entry point shares: distributed init, rank-0-first, run dir, seeds, and the
device and precision training runs on."""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import timedelta
from pathlib import Path

import torch

log = logging.getLogger("asr_lora")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(timeout_s: float = 7200) -> None:
    """Under torchrun, join the process group before data preparation so ranks can wait for rank 0;
    the Trainer (Accelerate) reuses the group it finds, and with it this group's timeout.

    The other ranks wait at a barrier while rank 0 alone renders or reads the corpus, encodes the
    cached clips and decodes the zero-shot passes; NCCL's default 10 minutes would abort the job
    there, so the wait is `timeout_s` (train.ddp_timeout). Each rank takes its own GPU first: until
    then a bare "cuda" is cuda:0 on every rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                             timeout=timedelta(seconds=timeout_s))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def accelerator() -> str:
    """This process's GPU ("cuda:<LOCAL_RANK>"; one per torchrun rank)."""
    return f"cuda:{local_rank()}"


def sum_over_ranks(values: list) -> list[float]:
    """Each value summed over the ranks of the process group (the values themselves without one).
    A collective: every rank must call it, with as many values."""
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            t = t.to(f"cuda:{local_rank()}")
        dist.all_reduce(t)
    return t.cpu().tolist()


def run_dir_of(run_dir: str | None) -> Path:
    """An explicit `run_dir=` (resume, export, evaluate of an old run) or Hydra's fresh one."""
    if run_dir:
        d = Path(run_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not any(
                o.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for o in hydra.overrides.hydra):
            # each rank composes its own config: a timestamped folder per rank, wherever their clocks differ
            raise ValueError("under torchrun, name the run's folder: hydra.run.dir=DIR (or run_dir=DIR), the same "
                             "for every rank (docs/SCALING.md)")
        d = Path(hydra.runtime.output_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (it fills the caches), then the others (they read them).

    A barrier on the process group `init_distributed` joined, rather than accelerate's
    `PartialState().main_process_first()`: on a CPU-only host PartialState() without `cpu=True`
    detects no distributed setup, every rank calls itself main, and the block runs on all ranks at
    once (two ranks then race to publish the same cache directory)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield
        return
    main = dist.get_rank() == 0
    if not main:
        dist.barrier()
    try:
        yield
    finally:
        if main:
            dist.barrier()


def trains_on_cpu(device: str | None) -> bool:
    """Whether the Trainer runs on the CPU: asked for (`device` "cpu"), or no accelerator visible."""
    return device == "cpu" or not (torch.cuda.is_available() or torch.backends.mps.is_available())


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (elsewhere autocast emulates them, slower than
    fp32). torch exposes the probe only under torch.cpu's private names."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cuda_missing(device: str | None) -> bool:
    """Whether `device` names CUDA on a machine that has none (refused by the settings check and the
    inference engine alike)."""
    return str(device or "").startswith("cuda") and not torch.cuda.is_available()


_SWITCH = {"auto": "auto", "true": "true", "1": "true", "yes": "true", "false": "false", "0": "false", "no": "false"}


def switch(value, what: str) -> str:
    """An auto/true/false setting as "auto", "true" or "false" (YAML's booleans and the command
    line's strings alike); anything else is refused naming `what`, where a typo ("flase", "on")
    used to mean whichever way the caller's test fell."""
    try:
        return _SWITCH[str(value).lower()]
    except KeyError:
        raise ValueError(f"{what}={value!r}: auto, true or false") from None


def use_bf16(setting: str, on_cpu: bool) -> bool:
    """Whether training runs under bf16 autocast (train.bf16; fp32 master weights, scoring stays fp32).
    auto: on a bf16-capable GPU, and on a CPU with native bf16 arithmetic, where a recipe step takes
    about half its fp32 time (docs/BENCHMARKS.md)."""
    setting = switch(setting, "train.bf16")
    if setting != "auto":
        return setting == "true"
    return cpu_has_bf16() if on_cpu else torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resume_mode(resume) -> str:
    """train.resume as "false", "true" or "auto" (the command line's true/false arrive as strings)."""
    return switch(resume, "train.resume")
