"""`python -m asr_lora.evaluate eval.backend=ct2 adapter=EXPORT`: every system is decoded by
faster-whisper from CTranslate2 files (the export's for the adapted systems, the base converted the
same way for zero-shot) and scored by the same report as the transformers evaluation."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lora.evaluation.job import evaluate
from asr_lora.export import run
from asr_lora.evaluation.deployed import export_quantization
from asr_lora.inference.ct2 import Ct2FilesMissing, convert_ct2, transcribe_ct2
from test_train_e2e import tiny_cfg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import common  # noqa: E402


@pytest.fixture(scope="module")
def export_dir(tiny_whisper_dir, tmp_path_factory) -> Path:
    from transformers import WhisperFeatureExtractor

    tmp = tmp_path_factory.mktemp("deployed")
    # b_std 0.5: an adapter that visibly changes what the tiny model says
    adapter = common.random_adapter(str(tiny_whisper_dir), tmp / "adapter", seed=3, b_std=0.5)
    fe = WhisperFeatureExtractor.from_pretrained(tiny_whisper_dir)
    probe = fe([np.zeros(16000, np.float32)], sampling_rate=16000, return_tensors="pt").input_features
    run.export_run(str(tiny_whisper_dir), adapter, tmp / "export", formats=("hf", "ct2"),
                   ct2_quantizations=("float32",), probe_features=probe, verify_max_new_tokens=8)
    return tmp / "export"


def _audio_by_id(tmp_path: Path) -> dict[str, np.ndarray]:
    rows = [json.loads(x) for x in (tmp_path / "corpus" / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: sf.read(tmp_path / "corpus" / r["audio_filepath"], dtype="float32")[0] for r in rows}


def test_ct2_backend_scores_the_exported_files_with_the_full_report(tmp_path, tiny_whisper_dir, export_dir):
    ev = evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2",
                           f"adapter={export_dir}", "eval.adapted_prompt=true"))
    assert set(ev["systems"]) == {"base", "prompt", "adapted", "adapted_prompt"}
    # the base converted at the export's quantization (its directory's name), unless eval.ct2_quantization says
    assert ev["model"]["backend"] == "faster-whisper (CTranslate2: ct2-float32, base converted at float32)"
    assert ev["terms"] and "forgetting" in ev and "paired" in ev
    hyps = json.loads((tmp_path / "run" / "eval" / "hypotheses.json").read_text())
    audio = _audio_by_id(tmp_path)
    clips = [audio[i] for i in hyps["ids"]]
    prompt = ev["terms"]["prompt"]
    # each system decoded from the right files, with the prompt where the system has one, capped at
    # eval.max_new_tokens (8 here) as the transformers decode is
    base_ct2 = convert_ct2(tiny_whisper_dir, tmp_path / "base-ct2", "float32")
    decode = lambda d, p=None: transcribe_ct2(d, clips, prompt=p, max_new_tokens=8)  # noqa: E731
    assert hyps["base"] == decode(base_ct2) != transcribe_ct2(base_ct2, clips)
    assert hyps["prompt"] == decode(base_ct2, prompt) != hyps["base"]
    assert hyps["adapted"] == decode(export_dir / "ct2-float32") != hyps["base"]
    assert hyps["adapted_prompt"] == decode(export_dir / "ct2-float32", prompt)
    assert ev["model"]["backend"] in (tmp_path / "run" / "eval" / "report.md").read_text()
    assert not list((tmp_path / "run").glob(".ct2-base-*"))  # the converted base is temporary


def test_base_quantization_follows_the_export_unless_set():
    assert export_quantization(Path("e/ct2-int8"), None) == "int8"
    assert export_quantization(Path("e/ct2-float16"), None) == "float16"
    assert export_quantization(Path("e/ct2-float16"), "int8") == "int8"
    assert export_quantization(Path("e/my_model"), None) == export_quantization(None, None) == "int8"


def test_ct2_backend_refuses_what_it_cannot_score(tmp_path, tiny_whisper_dir, export_dir):
    from asr_lora.training.job import train

    with pytest.raises(Ct2FilesMissing, match="not a local directory.*download it first"):
        convert_ct2("openai/whisper-tiny", tmp_path / "x")
    with pytest.raises(ValueError, match=r"no CTranslate2 model \(model.bin\)"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2",
                          f"adapter={export_dir / 'hf'}"))
    with pytest.raises(ValueError, match=r"eval.backend='onnx': choose one of \['transformers', 'ct2'\]"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=onnx"))
    with pytest.raises(ValueError, match="lora.scale scales a peft adapter"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2", f"adapter={export_dir}",
                          "lora.scale=0.5"))
    other = tmp_path / "other_base"  # an export whose adapter/ names another base
    shutil.copytree(export_dir, other)
    (other / "adapter").mkdir()
    (other / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "bundled:base"}))
    with pytest.raises(ValueError, match="exported from base 'bundled:base'.*pass model.name_or_path=bundled:base"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2", f"adapter={other}"))
    # the same refusal for a peft adapter scored in memory: it was scored silently on the other base
    from test_export import make_random_adapter

    peft_other = make_random_adapter(tiny_whisper_dir, tmp_path / "peft_other")
    config = json.loads((peft_other / "adapter_config.json").read_text())
    (peft_other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "bundled:base"}))
    with pytest.raises(ValueError, match="trained on base 'bundled:base'.*pass model.name_or_path=bundled:base"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", f"adapter={peft_other}"))
    with pytest.raises(ValueError, match="python -m asr_lora.evaluate eval.backend=ct2"):
        train(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2"))
    with pytest.raises(ValueError, match="python -m asr_lora.evaluate eval.backend=ct2"):
        train(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.ct2_decoding=library"))
    with pytest.raises(ValueError, match="eval.ct2_decoding=library sets faster-whisper's decoding; it needs"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.ct2_decoding=library"))
    with pytest.raises(ValueError, match=r"eval.ct2_decoding='greedy': choose one of \['matched', 'library'\]"):
        evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2", f"adapter={export_dir}",
                          "eval.ct2_decoding=greedy"))


def test_library_decoding_is_faster_whispers_own_and_repeatable(tmp_path, tiny_whisper_dir, export_dir):
    # faster-whisper's transcribe() defaults: timestamp tokens and the temperature fallback, no
    # token cap. The random-init model's rambling output trips the fallback, whose sampling is seeded.
    ev = evaluate(tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "eval.backend=ct2", f"adapter={export_dir}",
                           "eval.ct2_decoding=library", "eval.prompt_baseline=false"))
    hyps = json.loads((tmp_path / "run" / "eval" / "hypotheses.json").read_text())
    audio = _audio_by_id(tmp_path)
    clips = [audio[i] for i in hyps["ids"]]
    d = export_dir / "ct2-float32"
    # a second, separate decode (the evaluation's was the first) gives the same words; two clips
    # suffice, each library decode of a rambling random model runs to faster-whisper's token limit
    library = transcribe_ct2(d, clips[:2], library_defaults=True)
    assert hyps["adapted"][:2] == library
    assert library != transcribe_ct2(d, clips[:2])
    assert "forgetting" in ev


def test_ct2_files_this_cpu_cannot_run_are_logged_as_what_it_scored(tmp_path, tiny_whisper_dir, caplog):
    import ctranslate2
    from datasets import Dataset
    from omegaconf import OmegaConf

    from asr_lora.evaluation.deployed import ct2_hypotheses

    if "float16" in ctranslate2.get_supported_compute_types("cpu"):
        pytest.skip("this CPU runs float16")
    adapted = convert_ct2(tiny_whisper_dir, tmp_path / "export" / "ct2-float16", "float16")
    ds = Dataset.from_dict({"audio": [np.zeros(16000, np.float32)]})
    ecfg = OmegaConf.create({"beam_size": 1, "max_new_tokens": 2, "ct2_decoding": "matched"})
    ct2_hypotheses(tiny_whisper_dir, adapted, ds, ["adapted"], ecfg, "float16", None, tmp_path)
    assert "ct2-float16: float16 files are scored as float32 on this CPU" in caplog.text
