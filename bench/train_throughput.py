"""Training throughput and peak memory: this project's pipelines vs a reference HF/PEFT pipeline.

    .venv/bin/python bench/train_throughput.py                      # bundled tiny.en, 24 corpus clips
    .venv/bin/python bench/train_throughput.py --tiny               # random tiny Whisper + tones (smoke)
    .venv/bin/python bench/train_throughput.py --steps 6 --batch-size 8 --clips 24 --profile

Variants (same clips, same model, same batch size, same number of optimizer steps):

- `lora_decoder_cached` `+recipe=sg_english_decoder`: LoRA r=8 q/v on decoder self+cross
                     attention, SpeechCollator, frozen-encoder cache (encoder run once per clip)
- `lora_all_scopes`  `+recipe=sg_english` with q/v in encoder + decoder (ALL_SCOPES below) and the stock
                     30 s encoder input: log-mel per batch in SpeechCollator, encoder forward+backward
                     every step
- `lora_short_context` the same with `train.encoder_context=batch` (asr_lora/model/context.py): each
                     training step runs the encoder on the batch's longest clip + 1 s, not 30 s
- `lora_short_context_augment` the same with `augment=default` (conf/augment/default.yaml: the
                     audiomentations/pyroomacoustics waveform effects + SpecAugment, per clip per step
                     in the collator; the room bank is simulated once, counted in prep)
- `lora_short_context_augment_workers` the same, augmenting in one DataLoader worker
                     (`train.dataloader_num_workers=1`) so it overlaps the step
- `lora_short_context_augment_prerendered` the same with `augment.copies=1`: the waveform effects
                     render one augmented take of every clip before the first step (counted in
                     prep); per step only SpecAugment runs
- `lora_short_context_augment_clean` the same with `augment.keep_clean=true`: the train split holds
                     each clean clip beside its one augmented take (Kaldi's speed perturbation keeps
                     the 1.0x copy too), so half of what a run draws is clean
- `full`             this project's full fine-tuning baseline (`+recipe=sg_english_full`)
- `full_short_context` the same with `train.encoder_context=batch`
- `reference`        written the way the PEFT Whisper example / HF fine-tuning blog do it: numpy
                     WhisperFeatureExtractor in `datasets.map` -> input_features, the blog's
                     DataCollatorSpeechSeq2SeqWithPadding, Seq2SeqTrainer, peft LoRA r=8 alpha=16
                     on q_proj/v_proj of every attention block (the same trainable set as lora_all_scopes)

Ours run their recipe's learning rate and warm-up; the reference runs the blog's (1e-3, dropout 0.05).
`--extra NAME="override ..."` adds a variant of ours built from Hydra overrides.

With `--dev-clips N` every variant, once trained, decodes N accented dev clips greedily with the
standard 30 s input (the same code for all) and the table gains its dev WER: a speed-up that
changes what the model computes shows its WER effect next to its speed.

Each variant runs in its own subprocess so its peak memory is its own (CPU: the kernel's peak-RSS
mark, reset after the model and audio are loaded; GPU: torch.cuda.max_memory_allocated). Every
variant of one invocation shares the machine state, so the printed ratios are the numbers to
quote; absolute times move with machine load.

"prep" is the per-run preprocessing each pipeline pays before its first step (encoder cache fill
for lora_decoder_cached, datasets.map feature extraction for reference, nothing for the others);
end-to-end throughput counts it, loop throughput does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# The encoder + decoder q/v form these rows measure (the sg_english recipe's loop and learning rate;
# the recipe itself now adapts the decoder only and trains with the term prompt).
ALL_SCOPES = ["+recipe=sg_english", "lora.scope=[encoder,decoder_self,decoder_cross]",
              "lora.target_modules=[q_proj,v_proj]", "train.prompt_probability=0"]
OURS_OVERRIDES = {
    "lora_decoder_cached": ["+recipe=sg_english_decoder"],
    "lora_all_scopes": [*ALL_SCOPES, "train.encoder_context=full"],
    "lora_short_context": [*ALL_SCOPES, "train.encoder_context=batch"],
    "lora_short_context_augment": [*ALL_SCOPES, "train.encoder_context=batch", "augment=default"],
    "lora_short_context_augment_workers": [*ALL_SCOPES, "train.encoder_context=batch", "augment=default",
                                           "train.dataloader_num_workers=1"],
    "lora_short_context_augment_prerendered": [*ALL_SCOPES, "train.encoder_context=batch",
                                               "augment=default", "augment.copies=1"],
    "lora_short_context_augment_clean": [*ALL_SCOPES, "train.encoder_context=batch", "augment=default",
                                         "augment.copies=1", "augment.keep_clean=true"],
    "full": ["+recipe=sg_english_full", "train.encoder_context=full"],
    "full_short_context": ["+recipe=sg_english_full", "train.encoder_context=batch"],
}
VARIANTS = (*OURS_OVERRIDES, "reference")
DEFAULT_VARIANTS = ("lora_decoder_cached", "lora_all_scopes", "lora_short_context", "full", "full_short_context",
                    "reference")


# ---------------------------------------------------------------- worker (one variant, own process)


def _clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.t0 = self.t1 = None
            self.marks: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.marks.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            self.t1 = time.perf_counter()

        def steps(self) -> list[float]:
            pts = [self.t0, *self.marks]
            return [b - a for a, b in zip(pts, pts[1:])]

    return StepClock()


class CountingCollator:
    """Counts the clips the Trainer collates (including a prefetched batch it may never train on)."""

    def __init__(self, inner):
        self.inner, self.clips = inner, 0

    def __call__(self, rows):
        self.clips += len(rows)
        return self.inner(rows)


def _ours(variant: str, spec: dict, model, processor, ds, out_dir: Path):
    from hydra import compose, initialize_config_dir

    from asr_lora.config import CONF_DIR
    from asr_lora.data.augment import training_augmentation
    from asr_lora.data.features import SpeechCollator
    from asr_lora.training.collate import collator_columns
    from asr_lora.training.job import Rows, build_model, trainer_args
    from asr_lora.training.trainer import build_trainer

    steps, bs = spec["steps"], spec["batch_size"]
    base = spec["extra"].get(variant) or OURS_OVERRIDES[variant]
    shared = [
        f"model.name_or_path={spec['model']}", "logger=none", f"train.max_steps={steps}",
        f"train.per_device_train_batch_size={bs}", "train.gradient_accumulation_steps=1",
        f"train.logging_steps={max(1, steps)}", "train.save_steps=1000000", "train.eval_steps=1000000",
        "train.early_stopping_patience=0", f"eval.batch_size={bs}",
    ]
    # A variant's own setting (e.g. train.max_steps=128 in an --extra) wins over the shared one.
    own = {o.split("=", 1)[0] for o in base}
    overrides = base + [o for o in shared if o.split("=", 1)[0] not in own]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    t0 = time.perf_counter()
    ds, augmenter = training_augmentation(cfg.augment, ds, cfg.seed)  # a pre-render is prep, paid once
    # The main job's own step builds the model and the encoder cache, so the bench times what it runs.
    # The whole train split encoded before step 1, counted in prep, as the documented rows were measured.
    model, params, cache = build_model(cfg, model, processor, Rows({}, {}, ds, None, None, len(ds), False, augmenter),
                                       lazy_train=False)
    collator = SpeechCollator(processor, model.config.decoder_start_token_id, augmenter, cache, cfg.seed)
    keep = collator_columns(cache, ds.column_names, cfg.train.timestamp_probability)
    args = trainer_args(cfg, out_dir, [], False)
    args.disable_tqdm = True
    trainer = build_trainer(model, args, ds.select_columns(keep), None, CountingCollator(collator), processor,
                            early_stopping_patience=cfg.train.early_stopping_patience)
    prep = time.perf_counter() - t0
    info = {"params": params, "encoder_cache": cache is not None,
            "overrides": overrides[: len(base)], "learning_rate": cfg.train.learning_rate,
            "encoder_context": cfg.train.encoder_context, "augment": bool(cfg.augment.enabled),
            "dataloader_num_workers": cfg.train.dataloader_num_workers}
    return trainer, prep, info


def _reference(spec: dict, model, processor, ds, out_dir: Path):
    """The HF fine-tuning blog / PEFT int8 Whisper example, minus the int8 (CPU) and the hub."""
    from dataclasses import dataclass
    from typing import Any

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    feature_extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    t0 = time.perf_counter()

    def prepare_dataset(batch):
        audio = batch["audio"]
        batch["input_features"] = feature_extractor(audio, sampling_rate=16000).input_features[0]
        batch["labels"] = tokenizer(batch["sentence"]).input_ids
        return batch

    ds = ds.map(prepare_dataset, remove_columns=ds.column_names)

    @dataclass
    class DataCollatorSpeechSeq2SeqWithPadding:
        processor: Any
        decoder_start_token_id: int

        def __call__(self, features):
            input_features = [{"input_features": f["input_features"]} for f in features]
            batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
            label_features = [{"input_ids": f["labels"]} for f in features]
            labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
            labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
            if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
                labels = labels[:, 1:]
            batch["labels"] = labels
            return batch

    model.config.forced_decoder_ids = None
    model.config.suppress_tokens = []
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none")
    model = get_peft_model(model, config)
    args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        learning_rate=1e-3, warmup_steps=0, max_steps=spec["steps"], fp16=torch.cuda.is_available(),
        logging_steps=max(1, spec["steps"]), save_strategy="no", eval_strategy="no", report_to=[],
        remove_unused_columns=False, label_names=["labels"], disable_tqdm=True, seed=42, data_seed=42,
    )
    collator = DataCollatorSpeechSeq2SeqWithPadding(processor, model.config.decoder_start_token_id)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ds, data_collator=CountingCollator(collator),
                             processing_class=feature_extractor)
    prep = time.perf_counter() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainer, prep, {"params": {"mode": "lora", "trainable": trainable, "total": total},
                           "encoder_cache": False, "learning_rate": 1e-3}


def worker(variant: str, spec: dict, profile: bool) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset

    from asr_lora.core.runtime import seed_everything
    from asr_lora.data.splits import training_text
    from asr_lora.model.whisper import load_whisper

    common.quiet()
    seed_everything(42)
    model, processor = load_whisper(spec["model"])
    clips = common.load_clips(spec["clips"])
    durations = [c["duration"] for c in clips]
    texts = [training_text(c["text"]) for c in clips]
    if variant == "reference":  # the blog's columns: audio array + sentence
        ds = Dataset.from_dict({"audio": [c["audio"] for c in clips], "sentence": texts})
    else:  # what asr_lora.data produces: id, labels, audio
        ds = Dataset.from_dict({"id": [c["id"] for c in clips], "audio": [c["audio"] for c in clips],
                                "labels": [processor.tokenizer(t).input_ids for t in texts]})
    cuda = torch.cuda.is_available()
    rss_loaded = common.rss_mb()
    peak_reset = common.reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated() / 2**20
    out_dir = Path(spec["tmp"]) / variant
    if variant == "reference":
        trainer, prep, info = _reference(spec, model, processor, ds, out_dir)
    else:
        trainer, prep, info = _ours(variant, spec, model, processor, ds, out_dir)
    clock = _clock()
    trainer.add_callback(clock)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    result = trainer.train()
    if prof is not None:
        prof.disable()
    if cuda:
        torch.cuda.synchronize()
    peak_train = common.peak_rss_mb()  # before the dev decode, so the peak is training's own
    dev = _dev_wer(trainer.model, processor, spec) if spec.get("dev_clips") and not profile else None
    loop = clock.t1 - clock.t0
    steps = clock.steps()
    # One optimizer step = one batch (no accumulation); the collator's own count also includes the
    # batch the dataloader prefetches past the last step, so the clips trained on are counted here.
    per_epoch = [min(spec["batch_size"], len(clips) - i) for i in range(0, len(clips), spec["batch_size"])]
    clips_seen = sum(per_epoch[i % len(per_epoch)] for i in range(result.global_step))
    audio_s = clips_seen * float(np.mean(durations))
    out = {
        "variant": variant, "steps": result.global_step, "batch_size": spec["batch_size"], "clips": len(clips),
        "clips_seen": clips_seen, "clips_collated": trainer.data_collator.clips,
        "audio_seconds": round(audio_s, 2), "mean_clip_s": round(float(np.mean(durations)), 3),
        "prep_s": round(prep, 3), "loop_s": round(loop, 3), "end_to_end_s": round(prep + loop, 3),
        "step_first_s": round(steps[0], 3) if steps else None,
        "step_median_s": round(float(np.median(steps[1:] if len(steps) > 1 else steps)), 3) if steps else None,
        "audio_s_per_s_loop": round(audio_s / loop, 3) if loop else None,
        "audio_s_per_s_e2e": round(audio_s / (prep + loop), 3),
        "train_loss": result.training_loss, "rss_after_load_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(peak_train, 1), "peak_rss_is_since_start": not peak_reset, **info,
    }
    if dev is not None:
        out.update(dev)
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu_mb_before_train"] = round(gpu_base, 1)
    if prof is not None:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        out["profile_top_tottime"] = _trim_profile(buf.getvalue())
    return out


def _dev_wer(model, processor, spec: dict) -> dict:
    """Greedy dev WER with the stock 30 s input, through the project's decode loop for every variant."""
    from datasets import Dataset

    from asr_lora.data.text import normalize
    from asr_lora.evaluation.scoring import transcribe_split

    clips = common.load_clips(spec["dev_clips"])
    ds = Dataset.from_dict({"id": [c["id"] for c in clips], "audio": [c["audio"] for c in clips]})
    t0 = time.perf_counter()
    hyps = transcribe_split(model, processor, ds, 1, 16, 128, progress=False)
    refs = [normalize(c["text"]) for c in clips]
    return {"dev_wer": round(common.wer(refs, [normalize(h) for h in hyps]), 4), "dev_n": len(clips),
            "dev_decode_s": round(time.perf_counter() - t0, 1)}


def _trim_profile(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    head = [line for line in lines[:start] if "function calls" in line]
    return "\n".join(head + lines[start:]).rstrip()


# ---------------------------------------------------------------- driver


def run_variant(variant: str, spec_path: Path, profile: bool, timeout: int) -> dict:
    out = spec_path.with_name(f"{variant}{'-profile' if profile else ''}.json")
    cmd = [sys.executable, __file__, "--_worker", variant, "--_spec", str(spec_path), "--_out", str(out)]
    if profile:
        cmd.append("--profile")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout)[-3000:]
        return {"variant": variant, "error": f"exit {proc.returncode}", "stderr_tail": tail}
    res = json.loads(out.read_text())
    res["process_s"] = round(time.perf_counter() - t0, 1)
    return res


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _ratios(ok: dict, mem_key: str) -> dict:
    """Every variant of ours against the reference (throughput) and against full fine-tuning at the
    same encoder context (peak memory, throughput); short-context LoRA also against 30 s full FT."""
    ref, out = ok.get("reference"), {}
    ours = [v for v in ok if v != "reference" and not v.startswith("full")]
    for v in ours:
        if ref:
            out[f"{v}/reference throughput (loop)"] = ratio(ok[v]["audio_s_per_s_loop"], ref["audio_s_per_s_loop"])
            out[f"{v}/reference throughput (e2e)"] = ratio(ok[v]["audio_s_per_s_e2e"], ref["audio_s_per_s_e2e"])
            # With unequal step counts (an --extra variant), what matters at a given dev WER is time.
            out[f"reference/{v} training time (e2e)"] = ratio(ref["end_to_end_s"], ok[v]["end_to_end_s"])
    for v in [*ours, "reference", "full_short_context"]:
        peers = ["full"] + (["full_short_context"] if ok.get(v, {}).get("encoder_context") == "batch"
                            and v != "full_short_context" else [])
        for peer in peers:
            if v not in ok or peer not in ok:
                continue
            out[f"{v}/{peer} peak memory"] = ratio(ok[v].get(mem_key), ok[peer].get(mem_key))
            if mem_key == "peak_rss_mb":
                out[f"{v}/{peer} peak memory above loaded"] = ratio(
                    ok[v][mem_key] - ok[v]["rss_after_load_mb"], ok[peer][mem_key] - ok[peer]["rss_after_load_mb"])
            out[f"{v}/{peer} throughput (e2e)"] = ratio(ok[v]["audio_s_per_s_e2e"], ok[peer]["audio_s_per_s_e2e"])
    # Augmentation cost: each augmented variant's step time against the same pipeline without it.
    for v in ok:
        plain = v.split("_augment")[0]
        if "_augment" in v and plain in ok:
            out[f"{v}/{plain} step time (median)"] = ratio(ok[v]["step_median_s"], ok[plain]["step_median_s"])
            out[f"{v}/{plain} loop time"] = ratio(ok[v]["loop_s"], ok[plain]["loop_s"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--model", default="bundled:tiny.en")
    ap.add_argument("--tiny", action="store_true", help="random tiny Whisper + synthetic tones (smoke run)")
    ap.add_argument("--tones", action="store_true",
                    help="the real --model on synthetic 1-3 s tone clips (no corpus build; e.g. augmentation cost)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list from {VARIANTS}")
    ap.add_argument("--extra", action="append", default=[], metavar='NAME="OVERRIDE ..."',
                    help="an extra variant of ours from Hydra overrides (repeatable)")
    ap.add_argument("--dev-clips", type=int, default=0,
                    help="after training, decode this many accented dev clips (30 s input) and report dev WER")
    ap.add_argument("--profile", nargs="?", const="all", default=None, metavar="VARIANTS",
                    help="after the measured runs, rerun these variants (comma list; default all) under cProfile "
                         "and print their top time sinks")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per variant subprocess")
    ap.add_argument("--name", default=None, help="result name (default train_throughput[_tiny])")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a._worker:
        spec = json.loads(Path(a._spec).read_text())
        res = worker(a._worker, spec, bool(a.profile))
        Path(a._out).write_text(json.dumps(res, default=float))
        return 0

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    extra = {}
    for item in a.extra:
        name, _, ovs = item.partition("=")
        if not name or not ovs.split() or name in VARIANTS:
            ap.error(f"--extra wants NAME=\"override ...\" with a new name, not {item!r}")
        extra[name] = ovs.split()
    variants += list(extra)
    bad = sorted(set(variants) - set(VARIANTS) - set(extra))
    if bad:
        ap.error(f"unknown variants {bad}")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        common.quiet()
        if a.tiny:
            model = str(common.make_tiny_whisper(tmp / "tiny-whisper"))
            clips = common.tone_clips(a.clips, tmp / "tones")
        elif a.tones:
            model, clips = a.model, common.tone_clips(a.clips, tmp / "tones")
        else:
            model, clips = a.model, common.corpus_clips(a.clips, "train")
        dev_clips = []
        if a.dev_clips:
            dev_clips = clips[: a.dev_clips] if a.tiny or a.tones else common.corpus_clips(a.dev_clips, "dev")
        spec = {"model": model, "clips": clips, "steps": a.steps, "batch_size": a.batch_size, "tmp": str(tmp),
                "extra": extra, "dev_clips": dev_clips}
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(spec))
        machine = common.machine_info()
        results = []
        for v in variants:
            print(f"[train_throughput] {v} ...", flush=True)
            results.append(run_variant(v, spec_path, False, a.timeout))
            if "error" in results[-1]:
                print(f"  FAILED: {results[-1]['error']}\n{results[-1]['stderr_tail']}", flush=True)
        profiles = []
        if a.profile:
            for v in variants if a.profile == "all" else [p.strip() for p in a.profile.split(",") if p.strip()]:
                print(f"[train_throughput] profiling {v} ...", flush=True)
                profiles.append(run_variant(v, spec_path, True, a.timeout))

    ok = {r["variant"]: r for r in results if "error" not in r}
    mem_key = "peak_gpu_mb" if machine["device"] == "cuda" else "peak_rss_mb"
    rows = []
    for r in results:
        if "error" in r:
            rows.append({"variant": r["variant"], "trainable": "FAILED"})
            continue
        rows.append({
            "variant": r["variant"], "trainable": f"{r['params']['trainable']:,}", "steps": r["steps"],
            "prep s": r["prep_s"],
            "loop s": r["loop_s"], "step median s": r["step_median_s"], "step 1 s": r["step_first_s"],
            "audio s/s (loop)": r["audio_s_per_s_loop"], "audio s/s (e2e)": r["audio_s_per_s_e2e"],
            "peak MB": r.get(mem_key), "peak - loaded MB": (round(r[mem_key] - r["rss_after_load_mb"], 1)
                                                             if mem_key == "peak_rss_mb" else r.get("peak_gpu_mb")),
            "dev WER": f"{100 * r['dev_wer']:.2f}%" if "dev_wer" in r else None,
        })
    ratios = _ratios(ok, mem_key)
    cols = ["variant", "trainable", "steps", "prep s", "loop s", "step median s", "step 1 s", "audio s/s (loop)",
            "audio s/s (e2e)", "peak MB", "peak - loaded MB"] + (["dev WER"] if a.dev_clips else [])
    first = next(iter(ok.values()), {})
    print(f"\ntrain throughput: model={'tiny-random' if a.tiny else a.model}, {first.get('clips')} clips "
          f"(mean {first.get('mean_clip_s')} s), batch {a.batch_size}, {a.steps} steps unless the row says otherwise, "
          f"dev WER on {len(dev_clips)} clips, device {machine['device']}, "
          f"torch threads {machine['torch_threads']}, load avg at start {machine.get('loadavg_at_start')}")
    common.print_results(rows, cols, ratios)
    for p in profiles:
        if "profile_top_tottime" in p:
            print(f"\n--- cProfile top time sinks (tottime): {p['variant']} ---\n{p['profile_top_tottime']}")
        elif "error" in p:
            print(f"\n--- profile of {p['variant']} failed: {p['error']}")
    name = a.name or ("train_throughput_tiny" if a.tiny else "train_throughput")
    path = common.write_result(name, {
        "benchmark": "train_throughput", "args": {k: v for k, v in vars(a).items() if not k.startswith("_")},
        "machine": machine, "loadavg_at_end": list(__import__("os").getloadavg()), "results": results,
        "ratios": ratios, "profiles": profiles, "table": rows,
    })
    print(f"\nwrote {path}")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
