"""Exports: merge equivalence, reload of each format by its own library, and every refusal."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from asr_lora.data.audio import SAMPLE_RATE
from asr_lora.export import formats, merge, run
from asr_lora.export.merge import ExportError, QuantizedBaseError
from asr_lora.inference.ct2 import Ct2FilesMissing, transcribe_ct2
from asr_lora.inference.decode import generate_features, transcribe_arrays
from asr_lora.model.adapters import UnsafeAdapterError

SOT_NOTIMESTAMPS = [50257, 50362]  # tiny.en decoder prompt
TERM_PROMPT = "Bukit Timah, Serangoon, kopi, chope"
VERIFY_TOKENS = 16  # greedy steps per probe: CPU decoding of even a tiny Whisper is ~0.1 s a step


def tone(seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_random_adapter(base_dir: Path, out_dir: Path, seed: int = 1, scale: float = 0.2, **config) -> Path:
    """LoRA with non-zero B, so the merge really changes q_proj/v_proj (`config`: more LoraConfig fields)."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapter_dir(tiny_whisper_dir, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_whisper_dir, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="module")
def probe(tiny_whisper_dir) -> torch.Tensor:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(tiny_whisper_dir)
    return fe([tone(1.0, 440), tone(2.0, 300)], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


@pytest.fixture(scope="module")
def exported(tiny_whisper_dir, adapter_dir, probe, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    info = {"synthetic": True, "corpus": {"name": "sg_english (synthetic)"},
            "lora": {"scope": ["encoder", "decoder_self", "decoder_cross"]},
            "systems": {"base": {"wer": {"norm": {"wer": 0.4, "ci_low": 0.35, "ci_high": 0.45}}},
                        "adapted": {"wer": {"norm": {"wer": 0.2, "ci_low": 0.15, "ci_high": 0.25}}}},
            "forgetting": {"control_wer_base": 0.1, "control_wer_adapted": 0.105, "relative_degradation": 0.05,
                           "max_relative_degradation": 0.1, "passed": True}}
    summary = run.export_run(
        str(tiny_whisper_dir), adapter_dir, out, formats=("hf", "adapter", "ct2"),
        ct2_quantizations=("float32", "int8"), probe_features=probe, verify_max_new_tokens=VERIFY_TOKENS,
        test_audios=[tone(1.0)], test_refs=["hello there"], info=info, prompt=TERM_PROMPT,
    )
    return out, summary


def test_merge_is_equivalent_and_changes_weights(tiny_whisper_dir, adapter_dir, probe):
    from transformers import WhisperForConditionalGeneration

    adapter_model, _ = merge.load_adapter_model(str(tiny_whisper_dir), adapter_dir)
    merged = merge.merge_loaded(copy.deepcopy(adapter_model))
    res = merge.verify_merge(adapter_model, merged, probe, atol=1e-4, max_new_tokens=VERIFY_TOKENS)
    assert res["passed"] and res["tokens_identical"] and res["n_probe"] == 2
    assert res["max_abs_logit_diff"] <= 1e-4

    base = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    w0 = base.model.decoder.layers[0].self_attn.q_proj.weight
    w1 = merged.model.decoder.layers[0].self_attn.q_proj.weight
    assert (w1 - w0).abs().max() > 1e-3  # the merge did something
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_a_wrong_merge_fails_even_in_float64(tiny_whisper_dir, adapter_dir, probe):
    adapter_model, _ = merge.load_adapter_model(str(tiny_whisper_dir), adapter_dir)
    merged = merge.merge_loaded(copy.deepcopy(adapter_model))
    torch.manual_seed(0)
    with torch.no_grad():  # a merge that is off by a little, the kind fp32 rounding never produces
        w = merged.model.decoder.layers[0].self_attn.v_proj.weight
        w.add_(1e-2 * torch.randn_like(w))
    res = merge.verify_merge(adapter_model, merged, probe, atol=1e-4, max_new_tokens=VERIFY_TOKENS)
    assert not res["passed"], res
    if "max_abs_logit_diff_float64" in res:
        assert res["max_abs_logit_diff_float64"] > 1e-5


def test_merge_adapter_returns_plain_whisper(tiny_whisper_dir, adapter_dir):
    merged = merge.merge_adapter(str(tiny_whisper_dir), adapter_dir)
    assert type(merged).__name__ == "WhisperForConditionalGeneration"
    assert all(p.dtype == torch.float32 for p in merged.parameters())


def test_merged_in_place_holds_the_export_weights_and_restores_the_base_bit_for_bit(tiny_whisper_dir, adapter_dir):
    from asr_lora.model.lora import merged_in_place, merged_weights_digest

    model, _ = merge.load_adapter_model(str(tiny_whisper_dir), adapter_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with merged_in_place(model) as merged:
        assert merged
        inside = merged_weights_digest(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not just close: equal
    # Outside, the digest is the base's (the adapter is not folded in); inside, the merged export's.
    assert merged_weights_digest(model) == merged_weights_digest(merge.load_whisper(str(tiny_whisper_dir))[0])
    assert inside != merged_weights_digest(model)
    assert inside == merged_weights_digest(merge.merge_adapter(str(tiny_whisper_dir), adapter_dir))


def test_export_takes_the_evaluated_hypotheses_only_for_bit_identical_weights(tiny_whisper_dir, adapter_dir, probe,
                                                                               tmp_path):
    from asr_lora.model.lora import merged_weights_digest

    digest = merged_weights_digest(merge.merge_adapter(str(tiny_whisper_dir), adapter_dir))
    refs = ["hello there", "one kopi please"]

    def export(sha):
        return run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / sha[:4], formats=("hf",),
                              probe_features=probe, verify_max_new_tokens=VERIFY_TOKENS,
                              test_audios=[tone(1.0), tone(1.5, 300)], test_refs=refs, evaluated=(sha, refs))

    same, other = export(digest), export("0" * 64)
    # The evaluated hypotheses here are the references themselves, so reusing them scores 0%; the
    # random-init model decoding the tones for itself cannot.
    assert same["verification"]["evaluated_weights"] == {"sha256": digest, "identical": True}
    assert same["wer"]["merged_hf"] == 0.0
    assert other["verification"]["evaluated_weights"]["identical"] is False
    assert other["wer"]["merged_hf"] > 0.5
    card = (tmp_path / digest[:4] / "hf" / "README.md").read_text()
    assert f"`{digest}`: bit-identical to the model the evaluation above decoded" in card
    assert "Decode greedily (beam 1)" in card


def test_evaluated_hypotheses_need_the_export_beam_size(tmp_path):
    import json

    from asr_lora.export.job import evaluated_hypotheses

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "hypotheses.json").write_text(json.dumps({"ids": ["a"], "base": ["x"], "adapted": ["y"]}))
    ev = {"adapted_weights": {"sha256": "f" * 64}, "beam_size": 5}
    assert evaluated_hypotheses(tmp_path, ev, beam_size=5) == ("f" * 64, {"a": "y"})
    assert evaluated_hypotheses(tmp_path, ev, beam_size=1) is None  # decoded otherwise: decode again
    assert evaluated_hypotheses(tmp_path, {**ev, "beam_size": 1}, beam_size=1) is not None
    assert evaluated_hypotheses(tmp_path, ev, beam_size=5, system="adapted_prompt") is None  # not scored
    h = json.loads((tmp_path / "eval" / "hypotheses.json").read_text())
    (tmp_path / "eval" / "hypotheses.json").write_text(json.dumps({**h, "adapted_prompt": ["z"]}))
    assert evaluated_hypotheses(tmp_path, ev, beam_size=5, system="adapted_prompt") == ("f" * 64, {"a": "z"})


def test_model_card_gives_the_beam_size_the_figures_were_decoded_with():
    from asr_lora.export.formats import _loading_snippets

    text = "\n".join(_loading_snippets("bundled:tiny.en", "ct2-int8", beams=5))
    assert "Decode with beam 5" in text and '{"num_beams": 5}' in text and "beam_size=5" in text
    assert 'WhisperModel("ct2-int8"' in text


@pytest.mark.slow
def test_summary_layout_and_cards(exported):
    out, s = exported
    assert set(s["paths"]) == {"hf", "adapter", "ct2-float32", "ct2-int8"}
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "ct2-float32", "ct2-int8", "export_summary.json",
                                                     "hf"]  # no temp dirs
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # nor staging folders beside it
    on_disk = json.loads((out / "export_summary.json").read_text())
    assert on_disk["paths"] == s["paths"] and on_disk["adapter_sha256"] == s["adapter_sha256"]
    assert s["sizes_bytes"]["adapter"] < s["sizes_bytes"]["ct2-int8"] < s["sizes_bytes"]["merged"]
    assert s["verification"]["passed"] and s["forced"] is False
    assert set(s["wer"]) == {"merged_hf", "ct2-float32", "ct2-int8", "merged_hf + prompt", "ct2-float32 + prompt",
                             "ct2-int8 + prompt"}
    for d in s["paths"].values():
        assert (Path(d) / "prompt.txt").read_text(encoding="utf-8") == TERM_PROMPT + "\n"
        card = (Path(d) / "README.md").read_text()
        assert "## Decoding with the term prompt" in card and f"\n{TERM_PROMPT}\n" in card and "initial_prompt" in card
        assert "Synthetic corpus" in card and "40.00% [35.0, 45.0]" in card and "20.00% [15.0, 25.0]" in card
        assert "r=4, alpha=8" in card and "PASS" in card and "force" not in card
        assert "faster_whisper" in card and "PeftModel" in card and "pipeline(" in card


@pytest.mark.slow
def test_hf_export_loads_with_plain_transformers_pipeline(exported, tiny_whisper_dir, adapter_dir):
    from transformers import pipeline

    hf = Path(exported[0]) / "hf"
    assert not (hf / "adapter_config.json").exists()
    assert (hf / "preprocessor_config.json").is_file() and (hf / "tokenizer.json").is_file()
    with safe_open(str(hf / "model.safetensors"), framework="pt") as f:
        assert not any("lora" in k for k in f.keys())  # noqa: SIM118
    gen = json.loads((hf / "generation_config.json").read_text())
    assert gen["alignment_heads"] == [[1, 0]] and gen["begin_suppress_tokens"] == [220, 50256]

    audio = tone(1.0)
    adapter_model, processor = merge.load_adapter_model(str(tiny_whisper_dir), adapter_dir)
    expected = transcribe_arrays(adapter_model, processor, [audio])[0]
    asr = pipeline("automatic-speech-recognition", model=str(hf))
    # The transformers 5 ASR pipeline defaults to 5 beams; match the project's greedy decoding.
    got = asr(audio.copy(), generate_kwargs={"num_beams": 1, "max_new_tokens": 128})["text"].strip()
    assert got == expected and got


@pytest.mark.slow
def test_adapter_export_reloads_with_peft(exported, tiny_whisper_dir, adapter_dir, probe):
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    out_adapter = Path(exported[0]) / "adapter"
    assert sorted(p.name for p in out_adapter.iterdir()) == sorted(["README.md", "prompt.txt", *merge.ADAPTER_FILES])
    dec = torch.tensor([SOT_NOTIMESTAMPS])
    logits = []
    for d in (adapter_dir, out_adapter):
        base = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
        m = PeftModel.from_pretrained(base, str(d)).eval()
        with torch.no_grad():
            logits.append(m(input_features=probe[:1], decoder_input_ids=dec).logits)
    assert torch.equal(logits[0], logits[1])


@pytest.mark.slow
def test_ct2_float32_matches_merged_tokens(exported, probe):
    import ctranslate2
    from transformers import WhisperForConditionalGeneration

    out = Path(exported[0])
    merged = WhisperForConditionalGeneration.from_pretrained(out / "hf").eval()
    hf_ids = generate_features(merged, None, probe, 1, max_new_tokens=32)
    ct2 = ctranslate2.models.Whisper(str(out / "ct2-float32"), device="cpu", compute_type="float32")
    # This ctranslate2 build emits about max_length/2 new tokens; compare the common prefix.
    res = ct2.generate(ctranslate2.StorageView.from_array(probe.numpy()), [SOT_NOTIMESTAMPS] * len(probe),
                       beam_size=1, max_length=64)
    for row, r in zip(hf_ids.tolist(), res):
        ct2_ids = r.sequences_ids[0]
        n = min(len(row), len(ct2_ids))
        assert n >= 16 and ct2_ids[:n] == row[:n]


@pytest.mark.slow
def test_faster_whisper_reads_int8_export_offline(exported):
    for q in ("int8", "float32"):
        d = Path(exported[0]) / f"ct2-{q}"
        assert (d / "tokenizer.json").is_file() and (d / "preprocessor_config.json").is_file()
        texts = transcribe_ct2(d, [tone(1.0)])
        assert len(texts) == 1 and isinstance(texts[0], str)
    # The term prompt reaches faster-whisper (initial_prompt): the seeded random model then says otherwise.
    d = Path(exported[0]) / "ct2-float32"
    assert transcribe_ct2(d, [tone(1.0)], prompt=TERM_PROMPT) != transcribe_ct2(d, [tone(1.0)])


def test_export_ships_no_prompt_when_none_was_scored(tiny_whisper_dir, adapter_dir, probe, tmp_path):
    s = run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", formats=("adapter",),
                       probe_features=probe[:1], verify_max_new_tokens=VERIFY_TOKENS)
    d = Path(s["paths"]["adapter"])
    assert not (d / "prompt.txt").exists() and "term prompt" not in (d / "README.md").read_text()


def test_transcribe_ct2_refuses_incomplete_dir(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(Ct2FilesMissing, match="tokenizer.json"):
        transcribe_ct2(tmp_path, [tone(0.5)])


def test_nan_adapter_refused_naming_parameter(tiny_whisper_dir, adapter_dir, tmp_path):
    bad = tmp_path / "bad_adapter"
    shutil.copytree(adapter_dir, bad)
    weights = load_file(bad / "adapter_model.safetensors")
    key = min(k for k in weights if "lora_B" in k)
    weights[key][0, 0] = float("nan")
    save_file(weights, bad / "adapter_model.safetensors")
    with pytest.raises(ExportError, match=key.replace(".", r"\.")):
        run.export_run(str(tiny_whisper_dir), bad, tmp_path / "out", formats=("hf",))
    assert not (tmp_path / "out" / "hf").exists()


def test_nonfinite_merge_names_parameter(tiny_whisper_dir, adapter_dir):
    adapter_model, _ = merge.load_adapter_model(str(tiny_whisper_dir), adapter_dir)
    with torch.no_grad():
        adapter_model.base_model.model.model.decoder.layers[1].fc1.weight[0, 0] = float("inf")
    with pytest.raises(ExportError, match=r"decoder\.layers\.1\.fc1\.weight"):
        merge.merge_loaded(adapter_model)


def test_pickle_in_adapter_dir_refused(tiny_whisper_dir, adapter_dir, tmp_path):
    bad = tmp_path / "pickled"
    shutil.copytree(adapter_dir, bad)
    (bad / "adapter_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UnsafeAdapterError, match="adapter_model.bin"):
        run.export_run(str(tiny_whisper_dir), bad, tmp_path / "out")
    with pytest.raises(UnsafeAdapterError):
        formats.export_adapter(bad, tmp_path / "copy")


def test_quantized_base_refused(tiny_whisper_dir, adapter_dir, tmp_path):
    qbase = tmp_path / "qbase"
    shutil.copytree(tiny_whisper_dir, qbase)
    cfg = json.loads((qbase / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (qbase / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuantizedBaseError, match="quantised"):
        merge.merge_adapter(str(qbase), adapter_dir)


@pytest.mark.slow
def test_forgetting_gate_refuses_unless_forced(tiny_whisper_dir, adapter_dir, probe, tmp_path):
    info = {"forgetting": {"control_wer_base": 0.1, "control_wer_adapted": 0.2, "relative_degradation": 1.0,
                           "max_relative_degradation": 0.1, "passed": False}}
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"forgetting gate failed.*\(force=True exports anyway\)") as refused:
        run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("adapter",),
                          probe_features=probe[:1], verify_max_new_tokens=VERIFY_TOKENS, info=info)
    assert [f.split(":")[0] for f in refused.value.failures] == ["forgetting gate failed"]
    assert not (out / "adapter").exists()

    s = run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("adapter",),
                          probe_features=probe[:1], verify_max_new_tokens=VERIFY_TOKENS, info=info, force=True)
    assert s["forced"] and "forgetting" in s["gate_failures"][0]
    card = (out / "adapter" / "README.md").read_text()
    assert "force=True" in card and "FAIL" in card


def test_failed_verification_refuses_unless_forced(tiny_whisper_dir, adapter_dir, probe, tmp_path, monkeypatch):
    real = merge.verify_merge
    monkeypatch.setattr(run, "verify_merge", lambda *a, **k: {**real(*a, **k), "passed": False})
    with pytest.raises(ExportError, match="merge verification failed"):
        run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", formats=("adapter",),
                          probe_features=probe[:1], verify_max_new_tokens=VERIFY_TOKENS)


@pytest.mark.slow
def test_failed_export_leaves_previous_export_untouched(tiny_whisper_dir, adapter_dir, probe, tmp_path,
                                                        monkeypatch):
    out = tmp_path / "out"
    run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("adapter",),
                      probe_features=probe[:1], verify_max_new_tokens=VERIFY_TOKENS)
    before = (out / "adapter" / "adapter_model.safetensors").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(run, "write_model_card", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("adapter",),
                      probe_features=probe[:1], verify_max_new_tokens=VERIFY_TOKENS)
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "export_summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # temp dirs cleaned up


def test_an_export_interrupted_while_it_publishes_leaves_the_previous_one_whole(tiny_whisper_dir, adapter_dir,
                                                                              probe, tmp_path, monkeypatch):
    """Publishing is one switch: an interrupt there leaves the last export complete, its summary and
    every format from one model, and a user's own file where it was; never a new `hf/` beside an old
    `adapter/`."""
    out = tmp_path / "out"
    (out / "hf").mkdir(parents=True)
    (out / "hf" / "model.safetensors").write_bytes(b"old model")
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"old adapter")
    (out / "export_summary.json").write_text('{"adapter_sha256": "old"}')
    (out / "notes.txt").write_text("mine")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = run.publish_dir

    def interrupted(staged, target):
        if sorted(p.name for p in staged.iterdir()) != ["adapter", "export_summary.json", "hf", "notes.txt"]:
            return real(staged, target)  # one staged folder holds the whole export, the user's file carried
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "publish_dir", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("hf", "adapter"), probe_features=probe[:1],
                       verify_max_new_tokens=2)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    monkeypatch.setattr(run, "publish_dir", real)
    s = run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("hf", "adapter"), probe_features=probe[:1],
                       verify_max_new_tokens=2)
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "export_summary.json").read_text()) == s
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == (
        adapter_dir / "adapter_model.safetensors").read_bytes()


def test_model_card_formats_percentages_and_force(tmp_path):
    info = {"model": {"base": "bundled:tiny.en"}, "synthetic": True, "forced": ["forgetting gate failed: x"],
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"], "scope": ["encoder"]},
            "systems": {"base": {"wer": {"norm": {"wer": 0.1234, "ci_low": 0.1, "ci_high": 0.15}}}},
            "verification": {"n_probe": 8, "max_abs_logit_diff": 3e-6, "atol": 1e-4, "tokens_identical": True,
                             "passed": True}}
    card = formats.write_model_card(tmp_path, info).read_text()
    assert "12.34% [10.0, 15.0]" in card and "WARNING" in card and "force=True" in card
    assert "Synthetic corpus" in card and "3.00e-06" in card
    assert 'load_whisper("bundled:tiny.en")' in card  # a bundled name is not a transformers id


def test_export_check_decodes_at_the_token_cap_it_is_given(tiny_whisper_dir, adapter_dir, probe, tmp_path):
    # Two reference words: a hypothesis of at most two tokens can be at most 100% WER, where the
    # random-init model left to run on fills its default cap with words.
    def export(cap):
        s = run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / str(cap), formats=("ct2",),
                           ct2_quantizations=("float32",), probe_features=probe[:1],
                           verify_max_new_tokens=VERIFY_TOKENS, test_audios=[tone(1.0)], test_refs=["hello there"],
                           max_new_tokens=cap)
        return s["wer"]

    capped, free = export(2), export(128)
    assert capped["merged_hf"] <= 1.0 and capped["ct2-float32"] <= 1.0
    assert free["merged_hf"] > 1.0 and free["ct2-float32"] > 1.0


def _multilingual_copy(base_dir: Path, out: Path) -> Path:
    """The tiny model's files with the generation config of a multilingual Whisper."""
    shutil.copytree(base_dir, out)
    gen = json.loads((out / "generation_config.json").read_text())
    gen.update(is_multilingual=True, lang_to_id={"<|en|>": 50259}, task_to_id={"transcribe": 50359})
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


def test_a_multilingual_hf_export_decodes_english_as_scored_and_an_english_one_is_unchanged(tiny_whisper_dir,
                                                                                            tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    multi = _multilingual_copy(tiny_whisper_dir, tmp_path / "multi")
    gen = json.loads((formats.export_hf(model, processor, multi, tmp_path / "hf") / "generation_config.json")
                     .read_text())
    assert (gen["language"], gen["task"]) == ("en", "transcribe")
    gen = json.loads((formats.export_hf(model, processor, tiny_whisper_dir, tmp_path / "hf.en")
                      / "generation_config.json").read_text())
    assert gen.get("language") is None and gen.get("task") is None  # an English-only Whisper refuses a language


def test_the_card_of_a_multilingual_export_pins_english_in_every_snippet(tmp_path):
    info = {"model": {"base": "bundled:base"}, "exports": ["ct2-int8"], "prompt": TERM_PROMPT}
    card = formats.write_model_card(tmp_path, {**info, "language": "en"}).read_text()
    assert 'generate_kwargs={"num_beams": 1, "language": "en"}' in card
    assert card.count('condition_on_previous_text=False, language="en")') == 1
    assert 'initial_prompt=prompt, language="en")' in card and 'num_beams=1, language="en",' in card
    assert "language" not in formats.write_model_card(tmp_path, info).read_text()


def test_an_adapter_is_never_merged_into_another_base(tiny_whisper_dir, adapter_dir, tmp_path):
    other = shutil.copytree(tiny_whisper_dir, tmp_path / "other-base")
    with pytest.raises(ExportError, match=rf"trained on base '{tiny_whisper_dir}'.*merges it into '{other}'"):
        run.export_run(str(other), adapter_dir, tmp_path / "out", formats=("hf", "adapter"))
    assert not (tmp_path / "out").exists()


def test_a_reexport_removes_the_formats_it_did_not_write(tiny_whisper_dir, adapter_dir, probe, tmp_path):
    out = tmp_path / "out"
    for old in ("hf", "ct2-float16"):  # an earlier export's, of another model
        (out / old).mkdir(parents=True)
        (out / old / "model.bin").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    s = run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=("adapter",), probe_features=probe[:1],
                       verify_max_new_tokens=2)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "export_summary.json", "notes.txt"]
    assert list(s["paths"]) == ["adapter"]


def test_an_unknown_quantization_is_refused_before_the_merge(tiny_whisper_dir, adapter_dir, tmp_path, monkeypatch):
    def no_merge(*a, **k):
        raise AssertionError("merged before the quantization was checked")

    monkeypatch.setattr(run, "load_adapter_model", no_merge)
    with pytest.raises(ValueError, match=r"unknown CTranslate2 quantization \['int4'\]; choose from \[.*'int8'"):
        run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", ct2_quantizations=("int8", "int4"))


@pytest.mark.parametrize("formats, quantizations, message", [
    ((), ("int8",), "export.formats is empty: the export would write nothing and retire the last export's files"),
    (("hf", "onnx"), ("int8",), r"unknown export formats \['onnx'\]"),
    (("ct2",), (), "export.formats has ct2 but export.quantization is empty"),
])
def test_an_export_that_would_write_nothing_of_what_it_names_is_refused_and_the_last_one_kept(
        tiny_whisper_dir, adapter_dir, tmp_path, monkeypatch, formats, quantizations, message):
    def no_merge(*a, **k):
        raise AssertionError("merged before the settings were checked")

    out = tmp_path / "out"
    (out / "hf").mkdir(parents=True)
    (out / "hf" / "model.safetensors").write_bytes(b"the last export")
    monkeypatch.setattr(run, "load_adapter_model", no_merge)
    with pytest.raises(ValueError, match=message):
        run.export_run(str(tiny_whisper_dir), adapter_dir, out, formats=formats, ct2_quantizations=quantizations)
    assert (out / "hf" / "model.safetensors").read_bytes() == b"the last export"


def test_a_ct2_wer_is_labelled_with_the_type_this_cpu_decoded(tiny_whisper_dir, adapter_dir, probe, tmp_path, caplog):
    import ctranslate2

    if "float16" in ctranslate2.get_supported_compute_types("cpu"):
        pytest.skip("this CPU runs float16")
    s = run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", formats=("ct2",),
                       ct2_quantizations=("float16",), probe_features=probe[:1], verify_max_new_tokens=2,
                       test_audios=[tone(1.0)], test_refs=["hello there"], max_new_tokens=2)
    label = "ct2-float16 (scored as float32 on this CPU)"
    assert set(s["wer"]) == {"merged_hf", label}
    assert f"| {label} |" in (tmp_path / "out" / "ct2-float16" / "README.md").read_text()
    assert "float16 files are scored as float32 on this CPU" in caplog.text


def test_an_export_job_with_no_evaluation_is_refused_unless_forced(tiny_whisper_dir, adapter_dir, tmp_path):
    from omegaconf import OmegaConf

    from asr_lora.export.job import main as export_main
    from asr_lora.export.merge import ExportRefused
    from test_train_e2e import tiny_cfg

    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "export.formats=[adapter]")
    shutil.copytree(adapter_dir, tmp_path / "run" / "adapter")
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")  # a run, but never evaluated
    with pytest.raises(ExportRefused, match=r"no evaluation: .*eval\.json missing.*\(export\.force=true exports"):
        export_main(cfg)
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "eval.json").write_text('{"systems": {')
    with pytest.raises(SystemExit, match=r"export: .*eval\.json:1:14: not valid JSON"):
        export_main(cfg)


def test_an_adapter_changed_after_its_evaluation_is_refused_unless_forced(tiny_whisper_dir, adapter_dir, tmp_path):
    from omegaconf import OmegaConf

    from asr_lora.export.job import changed_since_scored
    from asr_lora.export.job import main as export_main
    from asr_lora.model.adapters import adapter_sha256
    from asr_lora.export.merge import ExportRefused
    from test_train_e2e import tiny_cfg

    run_dir = tmp_path / "run"
    shutil.copytree(adapter_dir, run_dir / "adapter")
    scored = adapter_sha256(run_dir / "adapter")
    ev = {"model": {"adapter": str(run_dir / "adapter"), "adapter_sha256": scored}, "systems": {}}
    assert changed_since_scored(run_dir / "adapter", scored, ev) == []
    assert changed_since_scored(run_dir / "adapter", scored, {"model": {}}) == []  # evaluated before the digest
    make_random_adapter(tiny_whisper_dir, run_dir / "adapter", seed=7)  # rewritten after it was scored
    (failure,) = changed_since_scored(run_dir / "adapter", adapter_sha256(run_dir / "adapter"), ev)
    assert "adapter_model.safetensors changed since it was scored" in failure and scored[:12] in failure
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "export.formats=[adapter]", "export.ct2_eval=false")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(ExportRefused, match=r"changed since it was scored.*\(export\.force=true exports"):
        export_main(cfg)
    assert not (run_dir / "export" / "adapter").exists()


def test_a_refused_export_removes_an_export_of_an_earlier_adapter_only(tiny_whisper_dir, adapter_dir, tmp_path):
    from asr_lora.export.job import retire_stale_export
    from asr_lora.model.adapters import adapter_sha256

    out = tmp_path / "export"
    shutil.copytree(adapter_dir, out / "adapter")  # an export of this very adapter, no summary: kept
    retire_stale_export(out, adapter_sha256(adapter_dir))
    assert (out / "adapter").is_dir()
    (out / "export_summary.json").write_text(json.dumps({"adapter_sha256": adapter_sha256(adapter_dir)}))
    retire_stale_export(out, adapter_sha256(adapter_dir))
    assert (out / "adapter").is_dir()
    retrained = make_random_adapter(tiny_whisper_dir, tmp_path / "retrained", seed=3)
    retire_stale_export(out, adapter_sha256(retrained))  # the run's adapter is now another one: the old export goes
    assert not out.exists()


def test_a_forced_export_without_an_evaluation_says_so_on_every_card(tiny_whisper_dir, adapter_dir, probe, tmp_path,
                                                                     monkeypatch):
    missing = ["no evaluation: run/eval/eval.json missing"]
    real = run.load_adapter_model
    monkeypatch.setattr(run, "load_adapter_model", lambda *a: pytest.fail("merged an unevaluated adapter"))
    with pytest.raises(ExportError, match="no evaluation"):
        run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", formats=("adapter",),
                       gate_failures=missing)
    monkeypatch.setattr(run, "load_adapter_model", real)
    s = run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", formats=("adapter",),
                       probe_features=probe[:1], verify_max_new_tokens=2, gate_failures=missing, force=True)
    card = (tmp_path / "out" / "adapter" / "README.md").read_text()
    assert s["gate_failures"] == missing and "WARNING" in card and missing[0] in card


def test_an_evaluation_without_control_clips_exports_saying_forgetting_was_not_checked(tiny_whisper_dir, adapter_dir,
                                                                                       probe, tmp_path, caplog):
    info = {"systems": {"base": {}, "adapted": {}}}  # scored, but with no control set: no gate
    s = run.export_run(str(tiny_whisper_dir), adapter_dir, tmp_path / "out", formats=("adapter",),
                       probe_features=probe[:1], verify_max_new_tokens=2, info=info)
    card = (tmp_path / "out" / "adapter" / "README.md").read_text()
    assert not s["forced"] and s["forgetting_unchecked"].startswith("the evaluation scored no control clips")
    assert "**NOT CHECKED**, the evaluation scored no control clips" in card
    assert "forgetting gate not checked: the evaluation scored no control clips" in caplog.text
