"""The training loop is transformers' Seq2SeqTrainer; this module only configures it for Whisper +
peft and adds what it lacks: a stop on non-finite loss, and dev WER through our
normaliser.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path

import torch

# transformers' integrations module, which the Trainer imports, print()s "[INFO] Running in WANDB
# offline mode" on import under WANDB_MODE=offline (this project's default): not on the console.
with contextlib.redirect_stdout(io.StringIO()):
    from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.models.whisper.modeling_whisper import shift_tokens_right

from asr_lora.core.runtime import trains_on_cpu, use_bf16
from asr_lora.evaluation.metrics import normalized_wer
from asr_lora.model.lora import adapted_module_names, add_lora, count_parameters, expected_lora_parameters
from asr_lora.training.averaging import WeightAverage
from asr_lora.training.checkpoints import MarkCompleteCheckpoints, last_complete_checkpoint
from asr_lora.training.distill import distillation, means_over_ranks
from asr_lora.training.label_logits import logits_only_at
from asr_lora.training.progress import use_training_progress
from asr_lora.training.row_groups import row_groups, splits_rows, take_rows, width_of
from asr_lora.training.term_tokens import weighted_token_loss

log = logging.getLogger(__name__)


class ShardingUnavailableError(RuntimeError):
    """A sharding preset (FSDP) was asked for where the Trainer/Accelerate cannot provide it."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last saved checkpoint is the last good one."""


class StopOnNonFiniteLoss(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            last = state.best_model_checkpoint or last_complete_checkpoint(Path(args.output_dir))
            raise NonFiniteLossError(
                f"loss became {loss} at step {state.global_step}; stopping. Last good checkpoint: {last or 'none'}. "
                "Lower train.learning_rate or check the data."
            )


def reads_per_clip(tcfg, n_train: int) -> float | None:
    """How many times one rank reads each train clip on average (micro-batches counted). Per rank,
    because every rank would build the whole log-mel cache for itself."""
    if n_train <= 0:
        return None
    if (tcfg.max_steps or -1) <= 0:
        return float(tcfg.num_train_epochs)
    return tcfg.max_steps * tcfg.per_device_train_batch_size * tcfg.gradient_accumulation_steps / n_train


def prepare_model(model, mode: str, lora, encoder_context: str = "full", context_pad_s: float = 1.0):
    """LoRA (frozen base, adapters trainable; `lora` is the lora config section) or full
    fine-tuning (`mode`); returns (model, param info)."""
    if mode == "full":
        if lora.enabled:
            raise ValueError("train.mode=full trains every weight: use it with lora=none")
        for p in model.parameters():
            p.requires_grad_(True)
        info = {"mode": "full", **count_parameters(model)}
    elif mode == "lora":
        if not lora.enabled:
            raise ValueError("train.mode=lora needs lora.enabled=true (or use lora=none train.mode=full)")
        names = adapted_module_names(model, lora.target_modules, lora.scope)
        expected = expected_lora_parameters(model, names, lora.r, lora.bias)
        model = add_lora(model, lora)
        counts = count_parameters(model)
        if not lora.use_dora and counts["trainable"] != expected:
            raise RuntimeError(f"trainable parameters {counts['trainable']} != r*(d_in+d_out) sum {expected}")
        info = {"mode": "lora", "adapted_modules": len(names), **counts}
    else:
        raise ValueError(f"train.mode must be 'lora' or 'full', not {mode!r}")
    if encoder_context == "batch":
        from asr_lora.model.context import enable_short_context

        model = enable_short_context(model, context_pad_s)
    elif encoder_context != "full":
        raise ValueError(f"train.encoder_context must be 'full' or 'batch', not {encoder_context!r}")
    log.info("trainable parameters: %s of %s (%.3f%%)", f"{info['trainable']:,}", f"{info['total']:,}",
             100 * info["trainable"] / info["total"])
    return model, info


def _checkpointing_args(enabled: bool) -> dict:
    # transformers 5.x renamed gradient_checkpointing* to activation_checkpointing* (the old names
    # warn); use whichever this transformers knows. Reentrant checkpoints leave encoder adapters
    # untrained.
    kwargs = {"use_reentrant": False} if enabled else None
    if "activation_checkpointing" in Seq2SeqTrainingArguments.__dataclass_fields__:
        return {"activation_checkpointing": enabled, "activation_checkpointing_kwargs": kwargs}
    return {"gradient_checkpointing": enabled, "gradient_checkpointing_kwargs": kwargs}


def training_args(t, output_dir: Path, report_to: list[str], has_dev: bool, streaming: bool = False, *,
                  seed: int = 42, generation_max_length: int = 128, length_buckets: int = 0,
                  device: str | None = None) -> Seq2SeqTrainingArguments:
    """The Trainer's arguments from the train config section `t`; `device` "cpu" forces the CPU."""
    extra = {}
    if streaming:
        # Each rank reads its own manifest shards (Accelerate shards a datasets IterableDataset by
        # rank when batches are not dispatched from rank 0), and workers split them again.
        extra["accelerator_config"] = {"dispatch_batches": False, "split_batches": False}
    elif length_buckets:
        extra.update(train_sampling_strategy="group_by_length", length_column_name="n_labels")
    on_cpu = trains_on_cpu(device)
    return Seq2SeqTrainingArguments(
        **extra,
        output_dir=str(output_dir),
        max_steps=t.max_steps,
        num_train_epochs=t.num_train_epochs,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        # The Trainer would otherwise log a NaN step as the running mean and train on silently.
        logging_nan_inf_filter=False,
        eval_strategy="steps" if has_dev else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_dev,
        metric_for_best_model="wer" if has_dev else None,
        greater_is_better=False,
        predict_with_generate=True,
        generation_max_length=generation_max_length,
        generation_num_beams=1,
        bf16=use_bf16(t.bf16, on_cpu=on_cpu),
        **_checkpointing_args(t.gradient_checkpointing),
        # PeftModel.forward takes **kwargs, so the Trainer must not prune columns.
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=t.dataloader_num_workers,
        # Workers made anew each epoch would start from fresh copies of the collator, whose seeded
        # streams would then draw every epoch's n-th batch alike; kept, they go on counting.
        dataloader_persistent_workers=t.dataloader_num_workers > 0,
        ddp_backend=t.ddp_backend,
        ddp_timeout=t.ddp_timeout,
        # Accelerate treats torchrun's processes as one distributed job on CPU (gloo) only with
        # use_cpu; without it every rank silently trains alone on the whole data set.
        use_cpu=on_cpu,
        fsdp=bool(t.fsdp) or None,
        fsdp_config=_plain(t.fsdp_config) or None,
        deepspeed=_deepspeed_config(t.deepspeed),
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _deepspeed_config(path: str | None) -> str | None:
    """The DeepSpeed JSON path, or a clear error before the Trainer's when deepspeed is missing."""
    if not path:
        return None
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError(f"train.deepspeed={path} needs the deepspeed package (pip install deepspeed, on a CUDA "
                           "machine), or use train=ddp / train=fsdp")
    if not Path(path).is_file():
        raise FileNotFoundError(f"train.deepspeed: no DeepSpeed config at {path}")
    return str(path)


def wer_metric(tokenizer):
    def compute(pred):
        preds = pred.predictions
        labels = pred.label_ids.copy()
        labels[labels == -100] = tokenizer.pad_token_id
        preds[preds == -100] = tokenizer.pad_token_id
        hyps = tokenizer.batch_decode(preds, skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"wer": normalized_wer(refs, hyps)}

    return compute


class SpeechTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose dev batches come from a clean collator (the Trainer feeds train and eval
    through one `data_collator`, so training-only augmentation and timestamp targets would otherwise
    reach the dev WER that picks the checkpoint), whose training loss computes logits at the label
    tokens only (`logits_only_at`), can count the tokens the collator marks as term tokens
    `term_loss_weight` times, and adds the base distillation terms of training/distill.py:
    `replay_kl` times the one on the rows the collator flags as replay, `context_kl` times the one
    on the other rows' tokens outside the domain's own words. With `split_rows` a batch's prompted
    and plain rows run as two narrower batches (training/row_groups.py)."""

    def __init__(self, *args, eval_collator=None, replay_kl: float = 0.0, term_loss_weight: float = 1.0,
                 train_sampler=None, context_kl: float = 0.0, split_rows: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.split_rows = split_rows
        self.eval_collator = eval_collator
        self.train_sampler = train_sampler  # None: the Trainer's own (train.sampling)
        self.replay_kl, self.context_kl = replay_kl, context_kl
        self.term_loss_weight = term_loss_weight
        self._kl: dict[str, list] = {}  # name: [sum, count] since the last logged step
        self.shown = use_training_progress(self)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.shown.close()  # a run stopped by an error leaves no bar running

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = inputs.pop("distill_rows", None)
        marked = inputs.pop("term_tokens", None)
        own = inputs.pop("own_tokens", None)
        if not model.training:  # dev loss: the model's own, on the clean collator's batches
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        at = labels != -100
        unwrapped = self.accelerator.unwrap_model(model)
        whisper = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped  # lora / full
        if "decoder_input_ids" not in inputs:  # what the model does with labels alone
            inputs["decoder_input_ids"] = shift_tokens_right(labels, whisper.config.pad_token_id,
                                                             whisper.config.decoder_start_token_id)
        head = whisper.get_output_embeddings()
        groups = row_groups(labels) if self.split_rows and not return_outputs else None
        if groups is None:
            with logits_only_at(head, at):
                outputs = model(**inputs)
            logits = outputs.logits
        else:
            # Rows reordered group by group: the loss and the distillation terms are means over
            # tokens, and the logits below come out in the reordered label tokens' order.
            order = torch.cat(groups)
            side = {"labels": labels, "term_tokens": marked, "own_tokens": own, "distill_rows": rows}
            inputs = take_rows(inputs | {k: v for k, v in side.items() if v is not None}, order)
            labels, marked, own, rows = (inputs.pop(k, None) for k in side)
            at, parts, start, outputs = labels != -100, [], 0, None
            for group in groups:
                idx = torch.arange(start, start + len(group))
                start += len(group)
                width = width_of(labels[idx])
                with logits_only_at(head, at[idx, :width]):
                    parts.append(model(**take_rows(inputs, idx, width)).logits)
            logits = torch.cat(parts)
        targets = labels[at]
        weight = self.term_loss_weight if marked is not None else 1.0
        loss = weighted_token_loss(logits, targets, marked[at] if marked is not None else torch.zeros_like(targets),
                                   weight)
        if (self.replay_kl or self.context_kl) and rows is not None:
            weights = {"replay_kl": self.replay_kl, "context_kl": self.context_kl}
            for name, kl in distillation(unwrapped, inputs, logits, labels, rows, own, self.replay_kl,
                                         self.context_kl).items():
                # Summed as a tensor: a float() here would make every GPU step wait for its kernels.
                total = self._kl.setdefault(name, [0.0, 0])
                total[0], total[1] = total[0] + kl.detach(), total[1] + 1
                loss = loss + weights[name] * kl
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        return self.train_sampler or super()._get_train_sampler(train_dataset)

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and (self.replay_kl or self.context_kl):
            logs.update(means_over_ranks(self._kl, {"context_kl": self.context_kl, "replay_kl": self.replay_kl}))
            self._kl = {}
        super().log(logs, *args, **kwargs)

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator


def build_trainer(model, args, train_ds, dev_ds, collator, processor, eval_collator=None,
                  early_stopping_patience: int | None = None, replay_kl: float = 0.0,
                  term_loss_weight: float = 1.0, train_sampler=None, context_kl: float = 0.0,
                  ema_decay: float = 0.0, split_prompted_rows: str = "false") -> Seq2SeqTrainer:
    callbacks = [StopOnNonFiniteLoss(), MarkCompleteCheckpoints()]
    if ema_decay:  # WeightAverage refuses a decay outside [0, 1)
        callbacks.append(WeightAverage(ema_decay))
    if dev_ds is not None and early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    trainer = SpeechTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds, data_collator=collator,
        processing_class=processor.feature_extractor, compute_metrics=wer_metric(processor.tokenizer),
        callbacks=callbacks, eval_collator=eval_collator, replay_kl=replay_kl,
        term_loss_weight=term_loss_weight, train_sampler=train_sampler, context_kl=context_kl,
        split_rows=splits_rows(split_prompted_rows, args.use_cpu, args.world_size),
    )
    # Whisper's forward takes **kwargs but its loss is a plain token mean that ignores
    # `num_items_in_batch`; left True, the Trainer multiplies the loss (and gradients) by the world
    # size under DDP and skips the 1/gradient_accumulation_steps scaling (tests/test_distributed.py).
    trainer.model_accepts_loss_kwargs = False
    if args.fsdp and not trainer.is_fsdp_enabled:
        # Accelerate turns FSDP on only for multi-GPU jobs; elsewhere the run would quietly be DDP.
        raise ShardingUnavailableError(
            f"train.fsdp=true but Accelerate did not enable FSDP for this job ({args.world_size} process(es), "
            f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}): FSDP needs torchrun on 2+ GPUs. "
            "Use train=ddp (or train=default) here.")
    return trainer
