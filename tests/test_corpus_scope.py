"""A run renders only the splits and parts of the synthetic corpus it reads (asr_lora/data/scope.py)."""

import json

import pytest

from asr_lora.data.scope import PROBE, check_read, in_scope, run_scope
from asr_lora.data.synthetic.corpus import build_corpus, corpus_files, info_of, load_manifest


def test_run_scope_names_what_a_run_reads():
    # make demo: train, and the test split's natural-voice part and real clips; no dev evaluation.
    assert run_scope("test", ["neural", "real"]) == ("test:neural", "test:real", "train")
    assert run_scope("test", "neural", dev_part="neural", dev_read=True) == ("dev:neural", "test:neural", "train")
    assert run_scope("test", None, dev_part="neural", dev_read=True) == ("dev:neural", "test", "train")
    assert run_scope("dev", ["neural"], dev_part=None, dev_read=True) == ("dev", "train")
    assert run_scope("dev", ["neural"], dev_part="unseen_engine", dev_read=True) == (
        "dev:neural", "dev:unseen_engine", "train")
    # Exporting: the merge check's probe, the first dev clips.
    assert run_scope("test", ["neural", "real"], probe=True) == (PROBE, "test:neural", "test:real", "train")
    assert run_scope("test", None, "neural", dev_read=True, probe=True) == ("dev:neural", PROBE, "test", "train")
    assert in_scope("train", None, ("train",)) and in_scope("test", "real", ("test:real", "train"))
    assert not in_scope("test", "neural", ("test:real", "train")) and in_scope("dev", "neural", None)


def test_scope_refuses_parts_the_run_could_not_read():
    from asr_lora.data.records import Record

    with pytest.raises(ValueError, match=r"eval.part='nueral': unknown parts \['nueral'\]"):
        run_scope("test", "nueral")
    with pytest.raises(ValueError, match=r"train.dev_part=\['neural', 'x'\]: unknown parts \['x'\]"):
        run_scope("test", None, ["neural", "x"], dev_read=True)
    plan = [Record(id=f"{s}-{p}", text="t", audio_path="a.wav", split=s, part=p)
            for s, p in (("train", None), ("dev", "seen_engine"), ("test", "seen_engine"), ("test", "neural"))]
    check_read(plan, run_scope("test", ["neural", "real"], probe=True))  # no real clips: the neural ones will do
    with pytest.raises(ValueError, match=r"reads test:real, but the corpus has no such clips in split 'test' "
                                         r"\(parts there: \['neural', 'seen_engine'\]"):
        check_read(plan, run_scope("test", "real"))
    with pytest.raises(ValueError, match="reads dev:neural"):  # train.dev_part on an inventory without it
        check_read(plan, run_scope("test", None, "neural", dev_read=True))
    check_read(plan[:1] + plan[2:], run_scope("test", None, probe=True))  # no probe clips: the export does without


@pytest.mark.slow
def test_scoped_build_renders_only_its_parts_and_the_rest_later(tmp_path):
    out = tmp_path / "sg"
    scope = (PROBE, "test:neural", "test:real", "train")
    manifest = build_corpus(out, seed=0, max_sentences=12, progress=False, scope=scope)
    assert (manifest, info_of(manifest)) == corpus_files(out, scope)
    info = json.loads(info_of(manifest).read_text())
    scoped = load_manifest(manifest)
    assert {r.split for r in scoped} == {"train", "dev", "test"}
    assert {r.part for r in scoped if r.split == "dev"} == {"seen_engine"}
    assert {r.voice for r in scoped if r.split == "test"} <= {"piper-joe", "piper-joe-deep", None}
    assert info["scope"] == list(scope) and info["utterances"] == len(scoped)
    assert set(info["left_out"]) == {"dev/neural", "dev/unseen_engine", "test/seen_engine", "test/unseen_engine"}
    assert info["rendered"] == len(scoped) - sum(1 for r in scoped if r.part == "real") and info["reused"] == 0
    # Again: reused as it is.
    assert build_corpus(out, seed=0, max_sentences=12, progress=False, scope=scope) == manifest
    assert json.loads(info_of(manifest).read_text())["built_at"] == info["built_at"]
    assert {p.parent.name for p in (out / "audio").rglob("*.wav")} == {r.voice or "real" for r in scoped}

    # data.render_all=true: the whole corpus, whatever the scope; it renders only the clips left out
    # and lists the scoped ones as they were.
    from omegaconf import OmegaConf

    from asr_lora.data.records import Ledger
    from asr_lora.data.sources import read_records

    dcfg = OmegaConf.create({"source": "synthetic", "name": "sg_english", "path": str(out), "corpus_seed": 0,
                             "corpus_workers": 2, "corpus_max_sentences": 12, "split_fractions": [0.8, 0.1, 0.1],
                             "render_all": True, "synthetic": True,
                             **dict.fromkeys(("sentences", "control", "general", "voices", "terms", "train_sentences",
                                              "dev_control"))})
    _, info_all = read_records(dcfg, Ledger(), progress=False, scope=scope)
    assert info_all["manifest"] == str(corpus_files(out)[0])
    assert info_all["corpus"]["rendered"] == sum(info["left_out"].values()) and "scope" not in info_all["corpus"]
    assert info_all["corpus"]["reused"] == len(scoped) - sum(1 for r in scoped if r.part == "real")
    whole = load_manifest(corpus_files(out)[0])
    assert len(whole) == len(scoped) + sum(info["left_out"].values())
    assert [r for r in whole if in_scope(r.split, r.part, scope)] == scoped


@pytest.mark.slow
def test_the_demos_overrides_train_score_and_export_on_what_they_render(tmp_path, tiny_whisper_dir):
    """make demo's overrides (test natural-voice part and real clips, no dev evaluation) on a small
    corpus: the run renders train, those test parts and the probe's dev clips, and the export
    checks its merge on dev clips."""
    from hydra import compose, initialize_config_dir

    from asr_lora.config import CONF_DIR
    from asr_lora.training.job import train

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "+recipe=sg_english", "eval.part=[neural,real]", "train.dev_eval_max_samples=0",
            "data.corpus_max_sentences=12", f"data.path={tmp_path / 'corpus'}",
            f"model.name_or_path={tiny_whisper_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", "logger=none",
            "lora.r=4", "lora.alpha=8", "train.max_steps=2", "train.eval_steps=2", "train.save_steps=2",
            "train.warmup_steps=0", "eval.n_bootstrap=20", "eval.max_new_tokens=6", "eval.beam_size=1",
            "export.force=true", "export.formats=[hf]", "export.ct2_eval=false", "export.probe_size=2"])
    summary = train(cfg)
    corpus = json.loads((tmp_path / "run" / "data_report.json").read_text())["corpus"]
    assert corpus["scope"] == [PROBE, "test:neural", "test:real", "train"]
    assert set(corpus["left_out"]) == {"dev/neural", "dev/unseen_engine", "test/seen_engine", "test/unseen_engine"}
    assert summary["train"]["best_dev_wer"] is None  # no dev evaluation
    assert "error" not in summary["export"] and summary["export"]["verification"]["probe"] == "dev"
