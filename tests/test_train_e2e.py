"""The main job end to end on a tiny random Whisper and a small JSONL corpus (fast), and on the real
bundled tiny.en with a few embedded-corpus utterances (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from asr_lora.config import CONF_DIR
from asr_lora.core.tracking import read_offline_run
from asr_lora.training.job import train
from asr_lora.training.checkpoints import resume_point

SENTENCES = ["the kopi here very nice lah", "take the MRT to Tampines", "the hawker centre is crowded",
             "can or not", "the void deck is quiet today", "chope the table first"]


def make_corpus(root: Path) -> Path:
    rows = []
    rng = np.random.default_rng(0)
    for i in range(16):
        split = "train" if i < 10 else ("dev" if i < 12 else "test")
        subset = "control" if i >= 14 else "main"
        wav = root / "audio" / f"u{i}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(16000) / 16000
        x = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.01 * rng.standard_normal(16000)
        sf.write(wav, x.astype("float32"), 16000)
        rows.append({"audio_filepath": f"audio/u{i}.wav", "text": SENTENCES[i % len(SENTENCES)], "id": f"u{i}",
                     "speaker": f"spk{i % 3 if split == 'train' else 3 + i % 2}", "split": split, "subset": subset})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def tiny_cfg(tmp_path: Path, model_dir: Path, *extra: str):
    manifest = make_corpus(tmp_path / "corpus")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            f"model.name_or_path={model_dir}", "data=jsonl", f"data.path={manifest}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}",
            "lora.scope=[decoder_self,decoder_cross]", "lora.r=4", "lora.alpha=8",
            "train.max_steps=4", "train.eval_steps=2", "train.save_steps=2", "train.logging_steps=1",
            "train.per_device_train_batch_size=4", "train.warmup_steps=0", "eval.n_bootstrap=50",
            "eval.max_new_tokens=8", "export.enabled=false", *extra,
        ])


def test_main_job_tiny_end_to_end_with_wandb_offline_and_resume(tmp_path, tiny_whisper_dir, capsys):
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=wandb", "logger.wandb.mode=offline")
    summary = train(cfg)
    run = tmp_path / "run"
    # The training stage's console: each Trainer log one readable line, in the run's log file too,
    # and no Python dicts or nested tqdm bars.
    logged = (run / "asr_lora.log").read_text()
    for line in ("step 1/4: loss ", "step 2/4: decoding dev", "step 2/4 dev: loss ", "training done: 4 steps in "):
        assert line in logged, line
    assert "{'loss'" not in capsys.readouterr().out
    for f in ["metrics.json", "data_report.json", "eval/eval.json", "eval/report.html", "eval/per_utterance.csv",
              "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/checkpoint-4"]:
        assert (run / f).exists(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 4
    assert metrics["params"]["trainable"] == summary["params"]["trainable"] > 0
    assert set(metrics["eval"]) >= {"base", "adapted", "paired", "forgetting"}
    report = json.loads((run / "data_report.json").read_text())
    assert report["counts"]["seen"] == 16 and report["counts"]["balanced"]
    # wandb offline run directory holds the logged metrics
    runs = list((run / "wandb").glob("offline-run-*"))
    assert runs, list(run.iterdir())
    logged = read_offline_run(next(runs[0].glob("run-*.wandb")))
    keys = {k for row in logged["history"] for k in row}
    assert {"train/loss", "train/learning_rate", "eval/wer"} <= keys  # per-step loss, lr, dev WER
    assert math.isfinite(logged["summary"]["eval/adapted/wer"])
    assert logged["summary"]["params/trainable"] == metrics["params"]["trainable"]
    assert any(k.startswith("wer_table") for k in keys) and any(k.startswith("worst_utterances") for k in keys)

    # resume: same run dir, more steps, starts from the last complete checkpoint
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg2 = compose("config", overrides=cfg_overrides(cfg) +
                       ["train.resume=true", "train.max_steps=6", "logger=none"])
    saved = sorted((tmp_path / "cache" / "encoder").glob("*.safetensors"))
    assert len(saved) == 3  # train, dev, test encoder outputs
    summary2 = train(cfg2)
    assert summary2["train"]["steps"] == 6
    assert sorted((tmp_path / "cache" / "encoder").glob("*.safetensors")) == saved  # reused, not recomputed
    assert (run / "checkpoints" / "checkpoint-6").exists()


def cfg_overrides(cfg):
    return [f"model.name_or_path={cfg.model.name_or_path}", "data=jsonl", f"data.path={cfg.data.path}",
            f"paths.cache_dir={cfg.paths.cache_dir}", f"run_dir={cfg.run_dir}",
            "lora.scope=[decoder_self,decoder_cross]", "lora.r=4", "lora.alpha=8", "train.eval_steps=2",
            "train.save_steps=2", "train.per_device_train_batch_size=4", "train.warmup_steps=0",
            "eval.n_bootstrap=50", "eval.max_new_tokens=8", "export.enabled=false"]


def test_lora_scale_is_what_the_run_scores_saves_and_exports(tmp_path, tiny_whisper_dir):
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "lora.scale=0.5", "export.enabled=true",
                   "export.formats=[hf]", "export.force=true", "export.probe_size=2")
    summary = train(cfg)
    run = tmp_path / "run"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == 4.0  # 8 x 0.5
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert ev["model"]["scale"] == 0.5 and ev["model"]["lora"] == {"r": 4, "lora_alpha": 4.0}
    v = summary["export"]["verification"]
    # The merged export holds bit for bit the weights the evaluation decoded at that scale.
    assert v["passed"] and v["evaluated_weights"] == {"sha256": ev["adapted_weights"]["sha256"], "identical": True}
    from asr_lora.export.job import main as export_main

    with pytest.raises(SystemExit, match="lora.scale=0.5: export ships the run's adapter"):
        export_main(cfg)  # a re-export cannot rescale what the evaluation scored


def test_a_bf16_run_trains_under_autocast_and_scores_the_fp32_model_it_saved(tmp_path, tiny_whisper_dir,
                                                                            monkeypatch):
    """train.bf16=true: the Trainer's steps run under bf16 autocast; what the run then scores and
    exports is the fp32 model with its saved adapter (Accelerate's autocast wrapper taken off), logit
    for logit."""
    import torch

    from asr_lora.training import job

    fitted = {}
    fit = job.fit
    monkeypatch.setattr(job, "fit", lambda *a, **k: fitted.setdefault("run", fit(*a, **k)))
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "train.bf16=true")
    train(cfg)
    run = fitted["run"]
    assert run.trainer.args.bf16
    saved = job.reload_trained(cfg, run.adapter_dir)
    feats = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[50257, 11, 12, 13]] * 2)
    with torch.no_grad():
        scored = run.model.eval()(input_features=feats, decoder_input_ids=ids).logits
        want = saved(input_features=feats, decoder_input_ids=ids).logits
    assert torch.equal(scored, want)


def test_encoder_time_masks_train_on_the_cached_outputs_and_are_refused_without_them(tmp_path, tiny_whisper_dir,
                                                                                     monkeypatch):
    masked = train(tiny_cfg(tmp_path / "a", tiny_whisper_dir, "logger=none", "train.encoder_time_mask=1.0",
                            "eval.before_training=false"))
    plain = train(tiny_cfg(tmp_path / "b", tiny_whisper_dir, "logger=none", "eval.before_training=false"))
    assert masked["train"]["train_loss"] != plain["train"]["train_loss"]  # the masks reached the training batches
    import asr_lora.model.encoder_cache as encoder_cache
    import asr_lora.training.job as job

    def no_decoding(*a, **k):
        raise AssertionError("decoded before refusing")

    monkeypatch.setattr(job, "zero_shot", no_decoding)
    monkeypatch.setattr(encoder_cache, "build_encoder_cache", no_decoding)
    for bad, match in (("train.cache_encoder_outputs=false", "masks the frozen encoder's cached outputs"),
                       ("train.encoder_time_masks=0", "encoder_time_masks must be >= 1")):
        cfg = tiny_cfg(tmp_path / "c", tiny_whisper_dir, "logger=none", "train.encoder_time_mask=0.5", bad)
        with pytest.raises(ValueError, match=match):  # before the encoder pass and any decoding
            train(cfg)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_whisper_dir):
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "train.resume=true")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train(cfg)


def test_an_unknown_export_quantization_is_refused_before_training(tmp_path, tiny_whisper_dir):
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "export.enabled=true", "export.formats=[ct2]",
                   "export.quantization=[int4]")
    with pytest.raises(ValueError, match="unknown CTranslate2 quantization"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "export.enabled=true", "export.formats=[]")
    with pytest.raises(ValueError, match="export.formats is empty"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_setting(tmp_path):
    assert [resume_point(v, tmp_path) for v in (False, "false", "auto", "AUTO")] == [None] * 4
    with pytest.raises(ValueError, match="train.resume='maybe': auto, true or false"):
        resume_point("maybe", tmp_path)
    from asr_lora.training.checkpoints import check_resumable

    check_resumable("auto", tmp_path)  # starts from step 0 when there is nothing to continue
    with pytest.raises(FileNotFoundError, match="train.resume=true but no complete checkpoint"):
        check_resumable("true", tmp_path)  # what train() refuses before reading any data


@pytest.mark.parametrize("typo", ["flase", "on", "off", "none", "disabled"])
def test_a_switch_setting_s_typo_is_refused_not_read_one_way_or_the_other(typo):
    """'off' turned the encoder cache on, and 'on' trained in fp32."""
    from omegaconf import OmegaConf

    from asr_lora.core.runtime import use_bf16
    from asr_lora.model.encoder_cache import cache_enabled

    with pytest.raises(ValueError, match=f"train.bf16={typo!r}: auto, true or false"):
        use_bf16(typo, on_cpu=True)
    augment = OmegaConf.create({"enabled": False, "copies": 0, "specaugment": {"enabled": False}})
    with pytest.raises(ValueError, match=f"train.cache_encoder_outputs={typo!r}: auto, true or false"):
        cache_enabled(typo, "lora", ["decoder_self"], augment)
    assert [use_bf16(v, on_cpu=True) for v in (True, "yes", 1, False, "no", "0")] == [True] * 3 + [False] * 3
    from asr_lora.config import DataConfig
    from asr_lora.data.features import use_feature_cache
    from asr_lora.data.streaming import use_streaming

    with pytest.raises(ValueError, match=f"data.streaming={typo!r}: auto, true or false"):  # was read as auto
        use_streaming(OmegaConf.structured(DataConfig(streaming=typo)))
    with pytest.raises(ValueError, match=f"data.feature_cache={typo!r}: auto, true or false"):
        use_feature_cache(OmegaConf.structured(DataConfig(feature_cache=typo)), 10)


def test_full_finetuning_baseline_same_loop(tmp_path, tiny_whisper_dir):
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "lora=none", "train.mode=full", "train.max_steps=2",
                   "train.save_steps=2", "train.eval_steps=2")
    summary = train(cfg)
    assert summary["params"]["trainable"] == summary["params"]["total"]
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_main_job_real_model_shortened(tmp_path):
    """`train +recipe=sg_english` on bundled tiny.en, a 12-sentence embedded corpus and 6 steps, export included."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "+recipe=sg_english", "data.corpus_max_sentences=12", f"data.path={tmp_path / 'corpus'}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", "logger=none",
            "train.max_steps=6", "train.eval_steps=3", "train.save_steps=3", "train.warmup_steps=0",
            # A 6-step adapter with the prompt can repeat itself up to the token cap; 64 tokens are
            # still 2.5 times the longest reference here (25) and halve that loop's time.
            "eval.n_bootstrap=100", "eval.max_new_tokens=64", "export.probe_size=2",
            # 6 steps on 12 sentences can push control WER past the forgetting gate; forcing keeps
            # the export path under test, and the card must then say the gate was overridden.
            "export.force=true",
        ])
    summary = train(cfg)
    run = tmp_path / "run"
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert ev["synthetic"] is True and ev["systems"]["base"]["wer"]["norm"]["wer"] < 1.0
    # It reads train, all of test, dev's natural-voice part (the recipe evaluates there while
    # training) and the first dev clips (the export's merge check), so dev's unseen engines are left out.
    corpus = json.loads((run / "data_report.json").read_text())["corpus"]
    assert corpus["scope"] == ["dev:neural", "dev:seen_engine", "test", "train"]
    assert set(corpus["left_out"]) == {"dev/unseen_engine"}
    html = (run / "eval" / "report.html").read_text()
    assert "Synthetic" in html or "SYNTHETIC" in html
    exp = summary["export"]
    assert "error" not in exp, exp
    v = exp["verification"]
    assert v["passed"] and v["tokens_identical"] and v["probe"] == "dev"
    assert v["max_abs_logit_diff"] <= 1e-4 or v["max_abs_logit_diff_float64"] <= 1e-5
    # The evaluation decoded with the adapter merged in: the export holds exactly those weights, so
    # it takes the evaluation's hypotheses instead of decoding the test audio again.
    assert v["evaluated_weights"] == {"sha256": ev["adapted_weights"]["sha256"], "identical": True}
    assert exp["wer"]["merged_hf"] == pytest.approx(ev["systems"]["adapted"]["wer"]["norm"]["wer"])
    for d in ("hf", "adapter", "ct2-int8"):
        card = (run / "export" / d / "README.md").read_text()
        gate_passed = summary["eval"]["forgetting"]["passed"]
        assert exp["forced"] is (not gate_passed)
        assert ("EXPORTED WITH force=True" in card) is (not gate_passed)
    # The recipe scores adapted + prompt, so the export ships that prompt and checks each format with it.
    assert set(exp["wer"]) == {"merged_hf", "ct2-int8", "merged_hf + prompt", "ct2-int8 + prompt"}
    assert exp["wer"]["merged_hf + prompt"] == pytest.approx(ev["systems"]["adapted_prompt"]["wer"]["norm"]["wer"])
    for d in ("hf", "adapter", "ct2-int8"):
        assert (run / "export" / d / "prompt.txt").read_text(encoding="utf-8") == ev["terms"]["prompt"] + "\n"
    # README's "Scoring the deployed files": the export's ct2-int8 scored by faster-whisper. At the run's
    # beam, on the same rows, its adapted WER is the export check's to the digit. (The prompt baseline
    # is left out to save its decode; test_deployed_eval checks that the ct2 backend scores it.)
    from asr_lora.evaluation.job import evaluate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        ev_cfg = compose("config", overrides=[
            "+recipe=sg_english", "data.corpus_max_sentences=12", f"data.path={tmp_path / 'corpus'}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'ct2_eval'}", "logger=none",
            "eval.n_bootstrap=100", "eval.max_new_tokens=64", "eval.backend=ct2", "eval.prompt_baseline=false",
            # the prompted systems' ct2 decoding is test_deployed_eval's; here the 6-step adapter with the
            # prompt only repeats itself up to the token cap
            "eval.adapted_prompt=false", f"adapter={run / 'export' / 'ct2-int8'}",
        ])
    deployed = evaluate(ev_cfg)
    assert set(deployed["systems"]) == {"base", "adapted"}
    assert deployed["lead_part"] == ev["lead_part"] == "neural"
    assert deployed["systems"]["adapted"]["wer"]["norm"]["wer"] == pytest.approx(exp["wer"]["ct2-int8"], abs=1e-12)


def test_wandb_accepts_artifact_names_made_from_hydra_sweep_job_names():
    import wandb

    from asr_lora.core.tracking import artifact_name

    job = "sg_english-2_lora.scope=[encoder,decoder_self],train.max_steps=64,logger.wandb.group=study" * 3
    for kind in ("report", "adapter"):
        name = artifact_name(job, kind)
        wandb.Artifact(name=name, type=kind)  # raises on characters wandb refuses
        assert name.endswith(kind) and len(name) <= 128 and name.startswith("sg_english-2_lora.scope_encoder")
    assert artifact_name(job, "report") != artifact_name(job[:-1], "report")  # long names stay distinct


def test_a_resumed_run_draws_what_an_uninterrupted_one_draws(tmp_path, tiny_whisper_dir, monkeypatch):
    """The collator's seeded streams (here the timestamp targets and where the encoder outputs are masked) go on
    from the batches the checkpoint already trained on: a run stopped after step 2 and resumed
    reaches step 4 with the weights of a run that trained its 4 steps straight, bit for bit."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from asr_lora.training import trainer as trainer_module

    streams = ("logger=none", "eval.before_training=false", "train.timestamp_probability=0.5",
               "train.encoder_time_mask=1.0", "train.per_device_train_batch_size=2")
    train(tiny_cfg(tmp_path / "straight", tiny_whisper_dir, *streams))

    class StopAtStep2(TrainerCallback):  # a preempted job: the schedule still runs to max_steps=4
        def on_save(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2

    build = trainer_module.build_trainer

    def stopping(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(StopAtStep2())
        return trainer

    monkeypatch.setattr(trainer_module, "build_trainer", stopping)
    cfg = tiny_cfg(tmp_path / "stopped", tiny_whisper_dir, *streams)
    train(cfg)
    monkeypatch.setattr(trainer_module, "build_trainer", build)
    run = tmp_path / "stopped" / "run"
    assert not (run / "checkpoints" / "checkpoint-4").exists()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        resumed = compose("config", overrides=cfg_overrides(cfg) + [*streams, "train.max_steps=4", "train.resume=true"])
    train(resumed)
    # Step 4's weights: the final adapter is the best checkpoint by dev WER, which may be step 2's.
    want = load_file(tmp_path / "straight" / "run" / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    got = load_file(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_split_by_speaker_with_nothing_to_score_is_refused_before_training(tmp_path, tiny_whisper_dir):
    """Rows with no split column and too few speakers for data.split_fractions: the test split got
    nobody, and the run used to train and then score nothing; it stops first, naming the split."""
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none")
    manifest = Path(cfg.data.path)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, r in enumerate(rows):  # these three names all hash into train at 0.8/0.1/0.1
        r.pop("split")
        r["speaker"] = ("ann", "bob", "cy")[i % 3]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="split 'test' is empty: data.split_fractions placed no speaker in it"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
