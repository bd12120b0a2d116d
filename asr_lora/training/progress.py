"""The training stage's console: one progress bar, like every other stage's (`core.logs.progress`),
and each Trainer log as one readable line in the console and the run's log file.

The Trainer's own display is a tqdm bar that prints every log as a Python dict
(`{'loss': '2.423', 'grad_norm': '5.035', ...}`), opens a second bar inside it for each dev
evaluation, and writes none of it to the run's log file. Its callback is swapped for this one.
"""

from __future__ import annotations

import contextlib
import logging

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from asr_lora.core.logs import progress

log = logging.getLogger("asr_lora.train")

# Log keys shown under another name, and the bookkeeping the Trainer logs that a person does not read.
_NAMES = {"learning_rate": "lr", "grad_norm": "grad norm"}
_HIDDEN = {"epoch", "total_flos", "step"}


def _value(key: str, v) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    if key.endswith("wer"):
        return f"{100 * v:.2f}%"
    return f"{v:.2e}" if key == "learning_rate" else f"{v:.4g}"


def log_line(step: int, max_steps: int, logs: dict) -> str | None:
    """One Trainer log as a line: a training step's loss and learning rate, a dev evaluation's WER
    and loss, or the training's end; None for a log with nothing to show."""
    if "train_runtime" in logs:
        return (f"training done: {step} steps in {logs['train_runtime']:.0f} s, "
                f"mean loss {logs.get('train_loss', float('nan')):.4g}")
    if any(k.startswith("eval_") for k in logs):
        shown = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k[5:] in ("wer", "loss")}
        return f"step {step}/{max_steps} dev: " + ", ".join(f"{k.upper() if k == 'wer' else k} {_value(k, v)}"
                                                            for k, v in shown.items())
    shown = {k: v for k, v in logs.items() if k not in _HIDDEN}
    if not shown:
        return None
    return f"step {step}/{max_steps}: " + ", ".join(f"{_NAMES.get(k, k)} {_value(k, v)}" for k, v in shown.items())


class TrainingProgress(TrainerCallback):
    """The training bar (steps, elapsed, remaining) on the main process, and every log as a line."""

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._advance = None
        self._shown = 0
        self._evaluating = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._advance = self._stack.enter_context(progress(f"training ({state.max_steps} steps)", state.max_steps,
                                                              enabled=not args.disable_tqdm))
            self._shown = state.global_step  # a resumed run starts part way
            self._advance(self._shown)

    def on_step_end(self, args, state, control, **kwargs):
        if self._advance is not None:
            self._advance(state.global_step - self._shown)
            self._shown = state.global_step

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        # One line instead of a second bar (rich shows one live display at a time): the training bar
        # stands still while the dev split is decoded.
        if state.is_world_process_zero and not self._evaluating:
            self._evaluating = True
            n = len(eval_dataloader) if eval_dataloader is not None and hasattr(eval_dataloader, "__len__") else "?"
            log.info("step %d/%d: decoding dev (%s batches)", state.global_step, state.max_steps, n)

    def on_evaluate(self, args, state, control, **kwargs):
        self._evaluating = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and (line := log_line(state.global_step, state.max_steps, logs or {})):
            log.info(line)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """End the bar (also when training stops on an error, which skips `on_train_end`)."""
        self._stack.close()
        self._advance = None


def use_training_progress(trainer) -> TrainingProgress:
    """Swap the Trainer's display (tqdm, or with `disable_tqdm` its printed dicts) for a
    `TrainingProgress`, which is returned; `disable_tqdm` still hides the bar."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    shown = TrainingProgress()
    trainer.add_callback(shown)
    return shown
