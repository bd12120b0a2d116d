"""Short encoder context while training: run the Whisper encoder over a batch's speech, not 30 s.

Whisper pads every clip to 30 s (3000 log-mel frames, 1500 encoder positions), and transformers'
`WhisperEncoder.forward` refuses any other length. For a 4 s clip most of that encoder pass, and
with encoder adapters all of its backward, is spent on padding. With `train.encoder_context=batch`
a training step instead cuts the batch's log-mel after its longest clip (plus `context_pad_s` of
the padding, rounded up to whole seconds) and runs the encoder on that prefix with the matching
prefix of the position table. Evaluation, generation, export and every deployed model keep the
standard 30 s input: the switch is on only while the encoder is in training mode.

This changes what the model computes during training (the encoder attends over fewer padding
frames), so its effect on dev/test WER, scored with the standard 30 s input, is measured next to
its speed (docs/BENCHMARKS.md, recipes/RESULTS_sg_english.md). Hand-written because neither
transformers nor peft offers a variable-length Whisper encoder.
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from asr_lora.data.audio import speech_frames

FRAMES_PER_SECOND = 100  # Whisper's log-mel hop is 10 ms


STEP_FRAMES = FRAMES_PER_SECOND  # context lengths are whole seconds: few distinct shapes


def context_length(features: torch.Tensor, pad_s: float) -> int:
    """Frames a training batch needs: its longest clip (audio.speech_frames) + pad_s, in whole seconds."""
    full = features.shape[-1]
    need = speech_frames(features) + math.ceil(pad_s * FRAMES_PER_SECOND)
    return min(full, max(STEP_FRAMES, math.ceil(need / STEP_FRAMES) * STEP_FRAMES))


def _short_forward(encoder, input_features: torch.Tensor, pad_s: float) -> BaseModelOutput:
    """`WhisperEncoder.forward` on a prefix of the frames (the same layers, in the same order)."""
    frames = context_length(input_features, pad_s)
    x = input_features[..., :frames]
    x = nn.functional.gelu(encoder.conv1(x))
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    hidden = x + encoder.embed_positions.weight[: x.shape[1]]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    for layer in encoder.layers:
        if encoder.training and encoder.layerdrop > 0.0 and torch.rand([]) < encoder.layerdrop:
            continue
        hidden = layer(hidden, None)
    return BaseModelOutput(last_hidden_state=encoder.layer_norm(hidden))


def whisper_encoder(model) -> nn.Module:
    """The model's WhisperEncoder (through peft's wrapper, as features.encode reaches it)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    if not isinstance(encoder, WhisperEncoder):
        raise TypeError(f"{type(model).__name__} has no WhisperEncoder (found {type(encoder).__name__})")
    return encoder


def enable_short_context(model, pad_s: float = 1.0):
    """Make the model's encoder use the short context in training mode only (returns the model)."""
    if pad_s < 0:
        raise ValueError(f"train.context_pad_s must be >= 0, not {pad_s}")
    encoder = whisper_encoder(model)
    disable_short_context(model)  # idempotent: never wrap a wrapper
    full_forward = encoder.forward

    def forward(self, input_features, attention_mask=None, **kwargs):
        if self.training and not kwargs.get("output_attentions") and not kwargs.get("output_hidden_states"):
            return _short_forward(self, input_features, pad_s)
        return full_forward(input_features, attention_mask, **kwargs)

    encoder.forward = types.MethodType(forward, encoder)
    encoder._asr_lora_full_forward = full_forward
    return model


def disable_short_context(model):
    encoder = whisper_encoder(model)
    if hasattr(encoder, "_asr_lora_full_forward"):
        del encoder.forward, encoder._asr_lora_full_forward  # back to the class's forward
    return model
