"""The console: each log record printed once, third-party noise silenced at its source, and one
progress display per stage (`progress`), with counts and an ETA.

Third-party libraries each bring their own bars and warnings (transformers' weight-loading and
shard-writing bars, datasets' "Saving the dataset" / "Map" / "Filter" bars, deprecation warnings
for names peft still reads). The project shows its own bar for every stage it runs, so those are
turned off in the library (its own switch), not by swallowing all warnings. The Trainer's tqdm
display gives way to the same kind of bar and a line per log (training/progress.py).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger("asr_lora")

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_libraries() -> None:
    """Turn off the bars and chatter of the libraries whose stages the project reports itself."""
    import datasets
    import transformers

    # Whisper's generate warns on every call about settings we pass on purpose.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" / "Writing model shards"
    datasets.disable_progress_bars()  # the project shows its own bar for each stage
    datasets.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft (0.17-0.21) still reads the deprecated `is_gradient_checkpointing` property when it wraps
    # a model, which transformers 5.x answers with a FutureWarning; our code uses the new names.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def setup_logging(run_dir: Path | None = None, quiet: bool = False, stderr: bool = False) -> None:
    """One console handler (rich) and, with a run dir, one plain file handler, on the root logger.

    Anything installed earlier (Hydra's job logging, a library's basicConfig) is removed first, so a
    record reaches the console exactly once. `quiet=True` (`quiet=true` on the command line) leaves
    the console warnings, errors and progress bars; the run's log file keeps INFO. Hydra's
    `hydra.verbose=true` (root at DEBUG) and `hydra.verbose=[asr_lora.x]` (one logger) still apply on
    rank 0; under torchrun the other ranks' consoles print warnings and errors only. `stderr=True`:
    the console handler writes to stderr, for a command whose stdout is its output (a transcript,
    JSON lines) and must stay parseable."""
    from rich.console import Console
    from rich.logging import RichHandler

    root = logging.getLogger()
    debug = root.level == logging.DEBUG  # hydra.verbose=true set it before the job started
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    console = RichHandler(show_path=False, markup=False, console=Console(stderr=True) if stderr else None)
    # Under torchrun every rank runs the same job: the console gets each INFO line once, from rank 0
    # (transformers' `log_level_replica` convention); the other ranks still print warnings and errors.
    from asr_lora.core.runtime import is_main_process

    console.setLevel(logging.WARNING if quiet or not is_main_process() else logging.NOTSET)
    root.addHandler(console)
    if run_dir is not None:
        fh = logging.FileHandler(run_dir / "asr_lora.log")
        fh.setFormatter(logging.Formatter(FILE_FORMAT))
        root.addHandler(fh)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # A logger with its own handler would print the record a second time through the root's.
    for name in ("asr_lora",):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    quiet_libraries()


def progress(description: str, total: int | None, enabled: bool = True, transient: bool = False):
    """The stage's progress display: description, bar, done/total and time remaining.

    Use as `with progress("decoding test", n) as advance: ... advance(k)`."""
    from contextlib import contextmanager

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    @contextmanager
    def _bar():
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), disable=not enabled, transient=transient) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    return _bar()
