"""Typed schema behind the Hydra config, so a misspelled key or a wrong type fails at start.

Each group's YAML in `conf/` is validated against the dataclass registered here (Hydra merges
the YAML onto the structured node; unknown keys and bad types raise with the key's full name).
Recipes in `recipes/` reach Hydra as the `recipe` group through `conf/recipe`, a link to
`../recipes`, which is what lets `+recipe=NAME` work as written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from asr_lora.core.paths import job_dirname
from asr_lora.data.augment_sections import SECTION_DEFAULTS
from asr_lora.data.records import SPLITS

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


@dataclass
class ModelConfig:
    name_or_path: str = "bundled:tiny.en"
    dtype: str = "float32"


@dataclass
class LoraSettings:
    enabled: bool = True
    r: int = 8
    alpha: Optional[int] = None  # None -> 2r
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # Any of: encoder (encoder self-attention), decoder_self, decoder_cross.
    scope: list[str] = field(default_factory=lambda: ["encoder", "decoder_self", "decoder_cross"])
    use_rslora: bool = False
    use_dora: bool = False
    bias: str = "none"
    # Multiplier on the trained update, W0 + scale * (alpha/r) B A, applied before the adapter is scored,
    # saved and exported (lora_alpha carries it; evaluate applies it to `adapter=` on top of its own).
    # Below 1 it interpolates towards the base (WiSE-FT): less forgetting, less gain; choose it on dev.
    scale: float = 1.0


@dataclass
class DataConfig:
    name: str = "sg_english"
    title: Optional[str] = None  # what the speech is, for report banners and model cards (default: name)
    source: str = "synthetic"  # synthetic | jsonl | csv | hf | common_voice | nsc
    path: Optional[str] = None
    options: dict[str, Any] = field(default_factory=dict)  # reader keyword arguments
    # Splits are named train, dev and test (readers map a corpus's own names onto them); for sources
    # without a split column, these are the fractions of *speakers* in each.
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    silence_dbfs: float = -60.0
    max_label_tokens: int = 448
    # Log-mel cache (datasets' fingerprinted cache files): auto = on when training reads each clip at least
    # twice on average and the estimated size (0.96 MB per 30 s clip) fits the budget; else per batch.
    feature_cache: str = "auto"  # auto | true | false
    feature_cache_budget_gb: float = 8.0
    # Corpus-scale path (asr_lora/data/streaming.py): the train split streams from sharded JSONL, clips decoded
    # + featurised in DataLoader workers. auto = when the in-memory path's decoded audio would pass memory_budget_gb.
    streaming: str = "auto"  # auto | true | false
    memory_budget_gb: float = 4.0
    shard_rows: int = 2000  # rows per prepared shard (shards are the unit DDP ranks/workers split)
    shuffle_buffer: int = 1000
    # Length-aware batching: group clips of similar label length within windows of this many
    # batches (0 = off). Streaming: a batched map; in memory: the Trainer's group_by_length.
    length_buckets: int = 0
    max_train_samples: Optional[int] = None
    # Train without these TTS engines' clips (leave-one-engine-out study); dev/test are untouched.
    exclude_train_engines: list[str] = field(default_factory=list)
    # Share of the train split that is general-English replay (subset "general"), 0 <= x < 1:
    # general clips are sampled down, or repeated, to reach it. None: the corpus as built (the
    # embedded corpus: 442 general of 1,594 train clips, 28%).
    replay_share: Optional[float] = None
    max_eval_samples: Optional[int] = None
    synthetic: bool = False
    # Synthetic corpus (source=synthetic): the text it is rendered from, one sentence a line; null
    # takes the shipped Singapore English file of that role (data/sg_english/).
    sentences: Optional[str] = None  # the domain's sentences
    control: Optional[str] = None  # general English for dev/test only: the forgetting gate's control set
    general: Optional[str] = None  # general English replayed in training
    voices: Optional[str] = None  # voice inventory (voices.json)
    terms: Optional[str] = None  # the domain's terms, one a line (null: derived from the training text)
    # More domain sentences for training only (more contexts per term; data/sg_english/sg_train_sentences.txt)
    train_sentences: Optional[str] = None
    # More general English for the dev split only (more control words to choose recipes on), opt-in:
    # data/sg_english/dev_control_sentences.txt for the shipped corpus
    dev_control: Optional[str] = None
    # More train clips of each train domain sentence holding a term, spoken by an espeak-ng train voice
    # that reads the terms by another language's rules (data/synthetic/respell.py); needs data.terms
    respell_takes: int = 0
    respell_languages: list[str] = field(default_factory=lambda: ["ms", "id", "it"])
    corpus_seed: int = 0
    corpus_max_sentences: Optional[int] = None
    corpus_workers: int = 2
    # false: a run renders only the splits and parts of the synthetic corpus it reads (train, the
    # scored split's eval.part, dev's train.dev_part when it evaluates on dev, dev's seen-engine
    # clips when it exports: data/scope.py); true: all of them
    render_all: bool = False


def _section_schema(name: str, defaults: dict[str, Any]) -> type:
    """A typed dataclass for one augmentation section, built from the Augmenter's own defaults
    table (the one place they are written), so a misspelt key or a wrong type fails at compose."""
    fields = []
    for key, value in defaults.items():
        if isinstance(value, list):
            kind = list[int] if all(isinstance(v, int) for v in value) else list[float]
            fields.append((key, kind, field(default_factory=lambda v=value: list(v))))
        else:
            fields.append((key, type(value), field(default=value)))
    return make_dataclass(f"{name.title()}Augment", fields)


_SECTIONS = {name: _section_schema(name, d) for name, d in SECTION_DEFAULTS.items()}


def _sections_field(name: str):
    return field(default_factory=_SECTIONS[name])


@dataclass
class AugmentConfig:
    """Training-only augmentation (asr_lora/data/augment.py). `enabled` is the group's master switch;
    every other field but `copies` and `keep_clean` is one section passed to `Augmenter`. `copies` > 0
    renders that many augmented takes of every training clip once, before training
    (`augment.prerender`), instead of augmenting every batch on the fly; `keep_clean` keeps each
    clean clip beside its takes."""

    enabled: bool = False
    copies: int = 0
    keep_clean: bool = False  # with copies: train on each clean clip too, beside its takes
    tempo: Any = _sections_field("tempo")
    pitch: Any = _sections_field("pitch")
    eq: Any = _sections_field("eq")
    room: Any = _sections_field("room")
    noise: Any = _sections_field("noise")
    telephone: Any = _sections_field("telephone")
    codec: Any = _sections_field("codec")
    gain: Any = _sections_field("gain")
    specaugment: Any = _sections_field("specaugment")


@dataclass
class TrainConfig:
    mode: str = "lora"  # lora | full
    output_subdir: str = "checkpoints"
    max_steps: int = 300
    num_train_epochs: float = 3.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    early_stopping_patience: Optional[int] = 3
    gradient_checkpointing: bool = False
    bf16: str = "auto"  # auto: bf16 autocast on a bf16-capable GPU or CPU (AVX512-BF16/AMX), else fp32
    # full: every training step runs the encoder on Whisper's 30 s input. batch: on the batch's
    # longest clip + context_pad_s, rounded up to whole seconds (asr_lora/model/context.py); evaluation
    # and exported models always use 30 s.
    encoder_context: str = "full"  # full | batch
    context_pad_s: float = 1.0
    # false | true: continue the run's last complete checkpoint (an error when there is none) | auto:
    # continue it when there is one, else train from step 0 (a job requeued into its own run_dir).
    resume: str = "false"
    dataloader_num_workers: int = 0
    # Cache the frozen encoder's outputs when no adapter touches the encoder (hand-written: no
    # library does this; it removes the 30 s encoder pass from every training step on CPU).
    cache_encoder_outputs: str = "auto"  # auto | true | false
    encoder_cache_budget_gb: float = 8.0  # auto turns the cache off past this (it lives in RAM)
    encoder_cache_on_disk: bool = True  # also keep it under the cache dir for the next run
    dev_eval_max_samples: Optional[int] = 64  # 0: no dev evaluation (no checkpoint choice)
    # Choose checkpoints on one part of the dev split only (voices.json parts): neural picks the
    # checkpoint that carries to a natural-sounding voice training never heard. null: the whole dev split.
    dev_part: Optional[str] = None
    # Share of training targets with segment timestamps instead of <|notimestamps|> (distil-whisper's
    # timestamp_probability), each clip as one segment. Off in the recipes: at 0.5 it broke long-form
    # decoding (bench/timestamps.py, docs/BENCHMARKS.md); single-clip segments teach "one segment, stop".
    timestamp_probability: float = 0.0
    # Share of training rows decoded after the domain-term prompt (the one eval's prompt systems and
    # `transcribe --prompt` use), loss on the transcript only: adapter and prompt learn to add up.
    prompt_probability: float = 0.0
    # Run a batch's prompted and plain rows as two batches, each only as wide as its own rows, instead
    # of one padded to the prompt's width: the same loss and gradients, fewer positions computed
    # (training/row_groups.py). auto: on the CPU in one process | true (one process) | false.
    split_prompted_rows: str = "auto"
    # Share of training rows whose cached encoder outputs get SpecAugment-style time masks
    # (data/features.mask_encoder_time): encoder_time_masks spans of up to encoder_time_mask_seconds
    # each, zeroed inside the speech. Needs the encoder cache.
    encoder_time_mask: float = 0.0
    encoder_time_masks: int = 2
    encoder_time_mask_seconds: float = 0.4
    # Weight of a distillation term on the general-English replay rows (Learning without Forgetting):
    # the per-token KL from the frozen base's next-token distribution (the adapter switched off) to
    # the adapted one's, added to the loss. Replay's reference text carries one token per position;
    # the base's distribution carries all it knew of general English there. Needs train.mode=lora.
    replay_kl: float = 0.0
    # Weight of the same distillation term on the domain rows' tokens that spell none of the domain's
    # own words (the terms, and every word of 3+ letters the general-English text never uses;
    # evaluation/terms.py, training/distill.py): the
    # adapter is free on the domain's words and held to the base around them, to learn the words
    # rather than the training engines' sound. Needs train.mode=lora and terms.
    context_kl: float = 0.0
    # How many times the label tokens of a domain term count in the token loss (1: Whisper's own loss,
    # every token once). The terms are the evaluation's (eval.terms or derived from the training text);
    # training/term_tokens.py says why and how they are found in the labels.
    term_loss_weight: float = 1.0
    # Evaluate, save and export a running average of the trained weights instead of the last step's:
    # average = ema_decay * average + (1 - ema_decay) * weights after every step (0: off; 0.99
    # averages about the last 100 steps). training/averaging.py.
    ema_decay: float = 0.0
    # Train the run under each of these seeds and average the adapters (the mean of their LoRA
    # updates): the run scores, saves and exports the average; each seed's adapter stays under
    # seed<N>/ (training/seeds.py). []: one run under `seed`.
    seeds: list[int] = field(default_factory=list)
    # The order clips are drawn in: "random" (the Trainer's permutation per epoch) or "by_text" (each
    # text's clips spread evenly over the epoch, so a run shorter than an epoch still hears every
    # sentence once; training/sampling.py).
    sampling: str = "random"
    ddp_backend: Optional[str] = None
    # Seconds a rank may wait for the others (init_process_group's timeout, the Trainer's ddp_timeout):
    # under torchrun the other ranks wait while rank 0 alone prepares data, encodes and decodes.
    ddp_timeout: int = 7200
    # Sharding through the Trainer/Accelerate integration (conf/train/fsdp.yaml, deepspeed_zero2.yaml).
    fsdp: bool = False
    fsdp_config: dict[str, Any] = field(default_factory=dict)
    deepspeed: Optional[str] = None  # path to a DeepSpeed JSON config


@dataclass
class EvalConfig:
    split: str = "test"  # the split every evaluation scores (train, dev or test)
    beam_size: int = 1
    batch_size: int = 16
    max_new_tokens: int = 128
    n_bootstrap: int = 1000
    max_control_degradation: float = 0.05
    worst_n: int = 15
    before_training: bool = True
    # Keep the zero-shot pass under the cache and reuse it when base, rows and settings are the same.
    reuse_zero_shot: bool = True
    # Score some parts of the split only (voices.json parts: neural | unseen_engine | seen_engine, and
    # real for the recorded clips); a name or a list of names; null: all.
    part: Optional[Any] = None
    engines: list[str] = field(default_factory=list)  # score only these TTS engines' rows ([]: all)
    # Domain terms for term recall and the prompt baseline: a file, one term per line; null: derived
    # from the training text (words the tokenizer splits that general English never uses).
    terms: Optional[str] = None
    prompt_baseline: bool = True  # also decode zero-shot with the terms as Whisper's prompt
    adapted_prompt: bool = False  # also decode the adapted model with that prompt
    # What decodes in `python -m asr_lora.evaluate`: "transformers" (the model in memory, the adapter
    # merged in) or "ct2": faster-whisper on CTranslate2 files, `adapter=` an export's ct2-<q>/ and the
    # base converted for the zero-shot systems at ct2_quantization (null: the export's <q>, else int8;
    # evaluation/deployed.py).
    backend: str = "transformers"
    ct2_quantization: Optional[str] = None
    # eval.backend=ct2 only: "matched" decodes as the transformers scoring does (one temperature, no
    # timestamp tokens, max_new_tokens); "library": faster-whisper's own transcribe() defaults
    # (temperature fallback, timestamp tokens, no token cap) at eval.beam_size, as a deployment that
    # keeps them decodes.
    ct2_decoding: str = "matched"
    # `evaluate adapter=...` refuses to score an adapter on sentences its training run recorded
    # (train_texts.json beside it); true scores anyway, and eval.json says how many there were.
    allow_train_overlap: bool = False


@dataclass
class ExportConfig:
    enabled: bool = True
    formats: list[str] = field(default_factory=lambda: ["hf", "adapter", "ct2"])
    quantization: list[str] = field(default_factory=lambda: ["int8"])
    force: bool = False
    probe_size: int = 8
    ct2_eval: bool = True


@dataclass
class WandbConfig:
    project: str = "asr-lora"
    mode: str = "offline"  # offline | online | disabled
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    log_artifacts: bool = True


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class PathsConfig:
    root_dir: str = str(REPO_ROOT)
    output_dir: str = "outputs"
    cache_dir: Optional[str] = None  # default: $ASR_LORA_CACHE or ~/.cache/asr_lora


@dataclass
class Config:
    recipe_name: str = "default"
    seed: int = 42
    device: Optional[str] = None
    run_dir: Optional[str] = None  # export/evaluate: an existing run directory
    adapter: Optional[str] = None  # evaluate: an adapter directory to score against its base
    quiet: bool = False  # console: warnings, errors and progress bars only (the run's log file keeps INFO)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def check_recipe_applied(cfg, conf_dir: Path = CONF_DIR) -> None:
    """Refuse a run whose `+recipe=NAME` was not applied. The `recipe` group is `conf/recipe`, a link
    to `../recipes`; where the link is missing (a checkout without symlinks writes a small text file
    there instead), Hydra takes the override as a plain `recipe` key, and the run would go on with
    the defaults under the recipe's name."""
    name = cfg.get("recipe")
    if name is None:
        return
    link = conf_dir / "recipe"
    state = "is missing" if not link.exists() and not link.is_symlink() else "is not a folder"
    raise SystemExit(f"+recipe={name} was not applied: {link} {state}; it must link to ../recipes "
                     f"(ln -sfn ../recipes {link}; with git: git config core.symlinks true, then check out again)")


# (key, test, what it must be): refused before any data is read, not minutes in or never.
_RANGES = [
    ("train.per_device_train_batch_size", lambda v: v >= 1, "1 or more"),
    ("train.gradient_accumulation_steps", lambda v: v >= 1, "1 or more"),
    ("train.learning_rate", lambda v: v > 0, "above 0"),
    ("train.warmup_steps", lambda v: v >= 0, "0 or more"),
    ("train.max_steps", lambda v: v >= 1 or v == -1, "1 or more, or -1 to train train.num_train_epochs"),
    ("train.prompt_probability", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("train.timestamp_probability", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("train.dev_eval_max_samples", lambda v: v >= 0, "0 (no dev evaluation) or more, or null (all)"),
    ("data.max_train_samples", lambda v: v >= 1, "1 or more, or null (all)"),
    ("data.max_eval_samples", lambda v: v >= 1, "1 or more, or null (all)"),
    ("data.split_fractions", lambda v: len(v) == 3 and min(v) >= 0 < sum(v), "three shares >= 0 (train, dev, test)"),
    ("lora.alpha", lambda v: v > 0, "above 0 (at 0 the adapter's update is zero)"),
    ("eval.split", lambda v: v in SPLITS, f"{', '.join(SPLITS[:-1])} or {SPLITS[-1]}"),
    ("eval.beam_size", lambda v: v >= 1, "1 or more"),
    ("eval.batch_size", lambda v: v >= 1, "1 or more"),
    ("model.dtype", lambda v: v in ("float32", "float16", "bfloat16"), "float32, float16 or bfloat16"),
    ("logger.wandb.mode", lambda v: v in ("offline", "online", "disabled"), "offline, online or disabled"),
    ("train.fsdp", lambda v: not v or int(os.environ.get("WORLD_SIZE", "1")) > 1,
     "FSDP needs torchrun on 2+ GPUs (this is one process); use train=ddp or train=default"),
]


def check_settings(cfg, training: bool = False) -> None:
    """Refuse settings no run can use, all of them in one error, before any work is paid for."""
    bad = [f"{key}={value!r}: {want}" for key, ok, want in _RANGES
           if (value := OmegaConf.select(cfg, key)) is not None and not ok(value)]
    if training and (cfg.eval.backend != "transformers" or cfg.eval.ct2_decoding != "matched"):  # no export yet
        bad.append("eval.backend and eval.ct2_decoding score exported files: train, then run "
                   "`python -m asr_lora.evaluate eval.backend=ct2 adapter=RUN/export/ct2-int8`")
    from asr_lora.core.runtime import cuda_missing  # torch: not at import, the entry points stay light

    if cuda_missing(device := cfg.get("device")):
        bad.append(f"device={device!r}: this machine has no CUDA device (leave device unset to use what it has)")
    if bad:
        raise ValueError("; ".join(bad))


def register_configs() -> None:
    OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in [
        ("model", ModelConfig), ("lora", LoraSettings), ("data", DataConfig), ("augment", AugmentConfig),
        ("train", TrainConfig), ("eval", EvalConfig), ("export", ExportConfig), ("logger", LoggerConfig),
        ("paths", PathsConfig),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=node)


register_configs()
