"""Every config group option and every recipe composes against the schema; bad keys fail early."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from asr_lora.config import CONF_DIR, REPO_ROOT, check_settings

GROUPS = ["model", "lora", "data", "augment", "train", "eval", "export", "logger", "paths"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
RECIPES = sorted(p.stem for p in (REPO_ROOT / "recipes").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_there_is_something_to_compose():
    assert len(OPTIONS) >= 15 and "sg_english" in RECIPES


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option not in ("sg_english",):
        overrides.append("data.path=/some/corpus")
    cfg = _compose(overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_with_plus(recipe):
    cfg = _compose([f"+recipe={recipe}"])
    assert cfg.recipe_name == recipe
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_settings(cfg, training=True)  # no shipped recipe is refused


@pytest.mark.parametrize("override, message", [
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps=0: 1 or more"),
    ("train.per_device_train_batch_size=0", "train.per_device_train_batch_size=0: 1 or more"),
    ("train.learning_rate=-1", "train.learning_rate=-1.0: above 0"),
    ("train.warmup_steps=-5", "train.warmup_steps=-5: 0 or more"),
    ("train.max_steps=0", "train.max_steps=0: 1 or more, or -1"),
    ("train.prompt_probability=1.5", "train.prompt_probability=1.5: between 0 and 1"),
    ("train.timestamp_probability=2", "train.timestamp_probability=2.0: between 0 and 1"),
    ("train.dev_eval_max_samples=-1", "train.dev_eval_max_samples=-1: 0 (no dev evaluation) or more"),
    ("data.max_train_samples=0", "data.max_train_samples=0: 1 or more, or null"),
    ("data.max_eval_samples=0", "data.max_eval_samples=0: 1 or more, or null"),
    ("lora.alpha=0", "lora.alpha=0: above 0"),
    ("data.split_fractions=[0.9,0.1]", "data.split_fractions=[0.9, 0.1]: three shares >= 0"),
    ("data.split_fractions=[1,-0.5,0.5]", "data.split_fractions=[1.0, -0.5, 0.5]: three shares >= 0"),
    ("data.split_fractions=[0,0,0]", "data.split_fractions=[0.0, 0.0, 0.0]: three shares >= 0"),
    ("eval.split=valid", "eval.split='valid': train, dev or test"),
    ("eval.beam_size=0", "eval.beam_size=0: 1 or more"),
    ("model.dtype=fp16", "model.dtype='fp16': float32, float16 or bfloat16"),
    ("logger.wandb.mode=offlin", "logger.wandb.mode='offlin': offline, online or disabled"),
    ("train=fsdp", "train.fsdp=True: FSDP needs torchrun on 2+ GPUs (this is one process)"),
])
def test_a_setting_no_run_can_use_is_refused_before_any_work(override, message):
    """Each of these used to fail minutes in (a ZeroDivisionError, a library's assertion after the
    zero-shot passes) or to run without a word: a misspelt eval.split skipped the evaluation, alpha 0
    trained an update of zero."""
    with pytest.raises(ValueError, match=re.escape(message)):
        check_settings(_compose(["+recipe=sg_english", override]), training=True)


def test_every_refusal_is_named_at_once():
    with pytest.raises(ValueError, match=r"lora.alpha=0: .*; eval.split='valid': "):
        check_settings(_compose(["lora.alpha=0", "eval.split=valid"]))


def test_recipe_is_a_delta_over_defaults():
    default, recipe = _compose([]), _compose(["+recipe=sg_english"])
    decoder = _compose(["+recipe=sg_english_decoder"])
    assert default.lora.scope == ["encoder", "decoder_self", "decoder_cross"]
    assert recipe.lora.scope == decoder.lora.scope == ["decoder_self", "decoder_cross"]
    assert default.lora.target_modules == decoder.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.lora.target_modules == ["q_proj", "v_proj", "fc1", "fc2"]
    assert (default.train.max_steps, recipe.train.max_steps, decoder.train.max_steps) == (300, 384, 220)
    assert _compose(["+recipe=sg_english_terms"]).train.max_steps == 128  # as it was measured
    # A frozen encoder trains on its cached 30 s outputs, what it gives at test time.
    assert default.train.encoder_context == recipe.train.encoder_context == decoder.train.encoder_context == "full"
    assert recipe.lora.r == default.lora.r == 8 and recipe.lora.alpha == 16 and recipe.lora.dropout == 0.0


def test_misspelled_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException, match="lora.rank"):
        _compose(["lora.rank=4"])


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(ConfigCompositionException) as e:
        _compose(["lora.r=eight"])
    assert isinstance(e.value.__cause__, (ValidationError, ConfigKeyError)) or "lora.r" in str(e.value)


def test_misspelled_key_in_a_yaml_file_fails(tmp_path):
    bad = tmp_path / "conf"
    import shutil

    shutil.copytree(CONF_DIR, bad, symlinks=False)
    (bad / "lora" / "typo.yaml").write_text("defaults: [lora_schema, _self_]\nrr: 4\n")
    with initialize_config_dir(config_dir=str(bad), version_base="1.3"):
        with pytest.raises(Exception, match="rr"):
            compose("config", overrides=["lora=typo"])


def test_exact_command_line_resolves_the_recipe():
    out = subprocess.run(
        [sys.executable, "-m", "asr_lora.train", "+recipe=sg_english", "--cfg", "job"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.recipe_name == "sg_english" and cfg.model.name_or_path == "bundled:tiny.en"


def test_recipe_group_link_points_at_recipes():
    link = CONF_DIR / "recipe"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "recipes").resolve()
    assert Path(link / "sg_english.yaml").is_file()


def test_a_checkout_without_the_recipe_link_refuses_the_recipe_instead_of_ignoring_it(tmp_path):
    # Without the link (a checkout without symlinks writes a text file there), Hydra would take
    # +recipe=NAME as a plain key and run the defaults under that name.
    import shutil

    shutil.copytree(REPO_ROOT / "asr_lora", tmp_path / "asr_lora", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CONF_DIR, tmp_path / "conf", symlinks=True, ignore=shutil.ignore_patterns("recipe"))
    (tmp_path / "conf" / "recipe").write_text("../recipes")
    for entry in ("train", "evaluate", "prepare", "export"):
        out = subprocess.run([sys.executable, "-m", f"asr_lora.{entry}", "+recipe=sg_english"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert out.returncode == 1, (entry, out.stdout, out.stderr)
        assert "+recipe=sg_english was not applied" in out.stderr and "is not a folder" in out.stderr, entry
    (tmp_path / "conf" / "recipe").unlink()
    out = subprocess.run([sys.executable, "-m", "asr_lora.train", "+recipe=sg_english", "--cfg", "job"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "recipe: sg_english" in out.stdout  # what Hydra makes of it: a plain key
    from asr_lora.config import check_recipe_applied

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        check_recipe_applied(compose("config", overrides=["+recipe=sg_english"]))  # applied: nothing to refuse
    with pytest.raises(SystemExit, match="conf/recipe is missing; it must link to ../recipes"):
        check_recipe_applied(OmegaConf.create(out.stdout), tmp_path / "conf")


def test_encoder_cache_only_when_the_training_audio_is_fixed():
    """Per-step augmentation rules the frozen-encoder cache out; pre-rendered takes without
    SpecAugment are fixed audio and may be cached."""
    from asr_lora.training.job import caches_encoder as cache_enabled

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=["+recipe=sg_english_decoder", *overrides])

    assert cache_enabled(cfg())
    assert not cache_enabled(cfg("augment=default"))
    assert not cache_enabled(cfg("augment=default", "augment.copies=2"))  # SpecAugment still per step
    assert cache_enabled(cfg("augment=default", "augment.copies=2", "augment.specaugment.enabled=false"))
    with pytest.raises(ValueError, match="no per-step augmentation"):
        cache_enabled(cfg("augment=default", "train.cache_encoder_outputs=true"))


def test_the_documented_export_of_a_sweep_run_parses_its_quoted_run_dir():
    # README: a sweep's run folder holds '=' (0_lora.r=4), which Hydra reads as one path only quoted.
    run = "outputs/sg_english/multirun_x/0_lora.r=4"
    out = subprocess.run([sys.executable, "-m", "asr_lora.export", f"run_dir='{run}'", "--cfg", "job"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0 and f"run_dir: {run}" in out.stdout, out.stderr


def test_a_sweep_job_folder_is_one_short_folder():
    """The folder name is made from every override: a path value made nested folders, and a dozen
    overrides passed the file system's 255-byte limit at launch."""
    from asr_lora.core.paths import job_dirname

    assert job_dirname("lora.r=4,train.seeds=[1,2]") == "lora.r=4,train.seeds=[1,2]"  # short names as they were
    assert job_dirname("data.sentences=/data/drugs.txt") == "data.sentences=_data_drugs.txt"
    long = [",".join(f"train.option_number_{i}={v}" for i in range(13)) for v in ("a", "b")]
    names = [job_dirname(x) for x in long]
    assert all(len(n.encode()) <= 120 for n in names) and names[0] != names[1]


def test_torchrun_without_a_named_run_folder_is_refused(monkeypatch, tmp_path):
    """Each rank composes its config, so each would take its own timestamped folder."""
    from hydra.core.hydra_config import HydraConfig

    from asr_lora.core.runtime import run_dir_of

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # restored afterwards
    for overrides, refused in (([], True), ([f"hydra.run.dir={tmp_path / 'run'}"], False)):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")  # what Hydra sets when it runs the job
        HydraConfig.instance().set_config(cfg)
        if refused:
            with pytest.raises(ValueError, match="under torchrun, name the run's folder: hydra.run.dir=DIR"):
                run_dir_of(None)
        else:
            assert run_dir_of(None) == tmp_path / "run"
    assert run_dir_of(str(tmp_path / "given")) == tmp_path / "given"  # run_dir= names it too
