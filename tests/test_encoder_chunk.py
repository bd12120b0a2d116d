"""`generate_features` on CPU runs the encoder CPU_ENCODER_CHUNK clips per call
(asr_lora/inference/decode.py); the tokens must be those of one stock `generate` call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_lora.inference.decode import CPU_ENCODER_CHUNK, generate_features
from asr_lora.model.whisper import load_whisper


def _model(tiny_whisper_dir):
    torch.manual_seed(0)
    model, _ = load_whisper(str(tiny_whisper_dir), dtype=torch.float32)
    with torch.no_grad():  # random init decodes one token over and over; wider weights vary it
        for prm in model.parameters():
            prm.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("beams", [1, 3])
def test_chunked_encoder_gives_the_stock_tokens(tiny_whisper_dir, beams):
    model = _model(tiny_whisper_dir)
    clips = 2 * CPU_ENCODER_CHUNK + 1
    feats = torch.from_numpy(np.random.default_rng(0).standard_normal((clips, 80, 3000)).astype(np.float32))
    calls = []
    model.get_encoder().register_forward_pre_hook(lambda m, a, kw: calls.append(len((a or [kw["input_features"]])[0])),
                                                  with_kwargs=True)
    ours = generate_features(model, None, feats, beams, max_new_tokens=8)
    assert calls == [CPU_ENCODER_CHUNK, CPU_ENCODER_CHUNK, 1]
    calls.clear()
    with torch.no_grad():
        stock = model.generate(input_features=feats, num_beams=beams, max_new_tokens=8, do_sample=False)
    assert calls == [clips]
    assert torch.equal(ours, stock)
    assert len({tuple(r.tolist()) for r in stock}) > 1  # the clips decode differently, so a mix-up would show
