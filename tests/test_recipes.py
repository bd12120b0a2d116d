"""Every recipe in recipes/*.yaml starts and trains: a few steps of the real job on the tiny random
Whisper and a tiny generated corpus. Only size knobs are overridden (model path, data location,
steps, batch, eval sizes, export, logger, cache); each recipe's own structure (LoRA scope, train
mode, encoder context, augmentation) is what runs, so a recipe that cannot start fails here.
Recipes are discovered by glob: a new one is covered without editing this file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from asr_lora.config import CONF_DIR, REPO_ROOT
from asr_lora.training.job import train

RECIPES = sorted(p.stem for p in (REPO_ROOT / "recipes").glob("*.yaml"))
# (recipe, extra overrides a user types on top of it): every recipe as shipped, plus the documented
# combinations that have broken before.
CASES = [(r, ()) for r in RECIPES] + [("sg_english", ("augment=default",)),
                                      ("sg_english", ("augment=default", "augment.copies=2"))]
SENTENCES = ["the kopi here very nice lah", "take the MRT to Tampines", "can or not", "chope the table first"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """10 clips of 1 s (6 train, one of them general-English replay; 2 dev, 2 test; one control clip in
    test): tones with a little noise."""
    root = tmp_path_factory.mktemp("recipe_corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        split = "train" if i < 6 else ("dev" if i < 8 else "test")
        t = np.arange(16000) / 16000
        x = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.01 * rng.standard_normal(len(t))
        (root / "audio").mkdir(exist_ok=True)
        sf.write(root / "audio" / f"u{i}.wav", x.astype("float32"), 16000)
        rows.append({"audio_filepath": f"audio/u{i}.wav", "text": SENTENCES[i % len(SENTENCES)], "id": f"u{i}",
                     "speaker": f"spk{i % 2 if split == 'train' else 2 + i % 2}", "split": split,
                     "subset": "control" if i == 9 else ("general" if i == 4 else "main")})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def size_overrides(tmp_path: Path, model_dir: Path, manifest: Path) -> list[str]:
    return [
        f"model.name_or_path={model_dir}", "data=jsonl", f"data.path={manifest}", "data.train_sentences=null",
        f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", "logger=none",
        "train.max_steps=2", "train.per_device_train_batch_size=2", "train.per_device_eval_batch_size=2",
        "train.eval_steps=2", "train.save_steps=2", "train.logging_steps=1", "train.warmup_steps=0",
        "train.dev_eval_max_samples=2", "eval.batch_size=2", "eval.max_new_tokens=4", "eval.n_bootstrap=20",
        "export.enabled=false",
    ]


def test_recipes_are_found():
    assert {"sg_english", "sg_english_gpu"} <= set(RECIPES)


@pytest.mark.parametrize("recipe,extra", CASES, ids=[" ".join((r, *e)) for r, e in CASES])
def test_recipe_trains_a_few_steps(recipe, extra, corpus, tmp_path, tiny_whisper_dir):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        shipped = compose("config", overrides=[f"+recipe={recipe}", *extra])
        cfg = compose("config", overrides=[f"+recipe={recipe}", *extra,
                                           *size_overrides(tmp_path, tiny_whisper_dir, corpus)])
    # The recipe's structure is what runs, not something the size overrides replaced.
    for key in ("train.mode", "train.encoder_context", "lora.scope", "augment", "recipe_name"):
        assert _get(cfg, key) == _get(shipped, key), key
    summary = train(cfg)
    assert summary["recipe"] == recipe
    assert summary["train"]["steps"] == 2 and np.isfinite(summary["train"]["train_loss"])
    weights = "adapter/adapter_model.safetensors" if cfg.train.mode == "lora" else "model/model.safetensors"
    assert (tmp_path / "run" / weights).is_file()
    assert (tmp_path / "run" / "metrics.json").is_file()
    if cfg.augment.enabled and cfg.augment.copies:  # trained on the pre-rendered takes, 2 per train clip
        assert "training on 12 pre-rendered augmented clips (from 6)" in (tmp_path / "run" / "asr_lora.log").read_text()


def test_a_recipes_corpus_text_is_refused_on_recorded_clips(corpus, tmp_path, tiny_whisper_dir):
    overrides = [o for o in size_overrides(tmp_path, tiny_whisper_dir, corpus) if o != "data.train_sentences=null"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+recipe=sg_english_terms", *overrides])
    with pytest.raises(ValueError, match=r"data.train_sentences: text the synthetic corpus is rendered from, but "
                                         r"data.source=jsonl reads recorded clips from .*manifest.jsonl"):
        train(cfg)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+recipe=sg_english", *overrides, "data.terms=terms.txt"])
    with pytest.raises(ValueError, match=r"data.terms: text the synthetic corpus .*the terms of recorded clips go in "
                                         r"eval.terms"):
        train(cfg)


def _get(cfg, dotted: str):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.select(cfg, dotted), resolve=True) if OmegaConf.is_config(
        OmegaConf.select(cfg, dotted)) else OmegaConf.select(cfg, dotted)


def demo_args() -> list[str]:
    """The overrides `make demo` adds to +recipe=sg_english (the Makefile's DEMO_ARGS line)."""
    import shlex

    line = next(s for s in (REPO_ROOT / "Makefile").read_text().splitlines() if s.startswith("DEMO_ARGS"))
    return shlex.split(line.split(":=", 1)[1])


def test_make_demo_overrides_start_and_skip_the_dev_evaluation(corpus, tmp_path, tiny_whisper_dir):
    args = demo_args()
    assert "eval.part=[neural,real]" in args
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # The demo's own overrides last, so they are what runs (not the size knobs' dev samples).
        cfg = compose("config", overrides=["+recipe=sg_english",
                                           *size_overrides(tmp_path, tiny_whisper_dir, corpus), *args])
    assert list(cfg.eval.part) == ["neural", "real"] and cfg.train.dev_eval_max_samples == 0
    summary = train(cfg)
    assert summary["train"]["steps"] == 2 and summary["train"]["best_dev_wer"] is None
    assert (tmp_path / "run" / "eval" / "eval.json").is_file()


def test_make_soup_trains_the_demo_under_its_seeds_in_one_run(corpus, tmp_path, tiny_whisper_dir):
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    seeds = next(s for s in lines if s.startswith("SOUP_SEEDS")).split(":=", 1)[1].strip()
    rule = lines[lines.index("soup: setup") + 1]
    assert "$(DEMO_ARGS)" in rule and "'train.seeds=$(SOUP_SEEDS)'" in rule
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+recipe=sg_english", *size_overrides(tmp_path, tiny_whisper_dir, corpus),
                                           *demo_args(), f"train.seeds={seeds}"])
    assert list(cfg.train.seeds) == [42, 1, 2]
    summary = train(cfg)
    assert [m["seed"] for m in summary["train"]["seeds"]] == [42, 1, 2]
    assert (tmp_path / "run" / "adapter" / "averaged_from.json").is_file()
