"""Merge a LoRA adapter into its base and prove the merged model is the one evaluated.

Refusals (all `ExportError`): a quantised base (merging into rounded weights shifts outputs well
beyond peft's ~1e-4 guarantee), non-finite adapter or merged weights, and a merged
model whose logits or greedy tokens differ from the unmerged adapter model."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from transformers import GenerationConfig

from asr_lora.data.audio import SAMPLE_RATE
from asr_lora.inference.decode import generate_features
from asr_lora.model.adapters import check_adapter_dir, load_adapter
from asr_lora.model.whisper import load_whisper, resolve_model_dir

log = logging.getLogger(__name__)



ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(RuntimeError):
    """An export that would produce a broken or misleading checkpoint."""


class ExportRefused(ExportError):
    """A check the export runs failed (merge verification, forgetting gate); `override` names what
    exports anyway, in the caller's terms (the keyword here, the config key on the command line)."""

    def __init__(self, failures: list[str], override: str = "force=True"):
        self.failures, self.override = list(failures), override
        super().__init__(f"export refused: {'; '.join(self.failures)} ({override} exports anyway)")


class QuantizedBaseError(ExportError):
    """The base model is 8-bit/4-bit; merging into it is refused."""


def _refuse_quantized(base: str, model=None) -> None:
    src = Path(resolve_model_dir(base))
    cfg_file = src / "config.json"
    if cfg_file.is_file() and json.loads(cfg_file.read_text()).get("quantization_config"):
        raise QuantizedBaseError(f"{base}: base is quantised (quantization_config in config.json); "
                                 "merge into the fp32 base instead")
    if model is None:
        return
    flags = [f for f in ("is_loaded_in_8bit", "is_loaded_in_4bit", "is_quantized") if getattr(model, f, False)]
    odd = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if flags or odd:
        raise QuantizedBaseError(f"{base}: base must be plain fp32 for merging, got {flags or odd}")


def _check_adapter_finite(adapter_dir: Path) -> None:
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            if not torch.isfinite(f.get_tensor(key)).all():
                raise ExportError(f"{adapter_dir}: adapter weight {key} holds NaN/inf; refusing to export")


def _check_finite(model, what: str) -> None:
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ExportError(f"{what}: non-finite weights in {bad[:5]}{' ...' if len(bad) > 5 else ''}")


def load_adapter_model(base: str, adapter_dir: Path):
    """(peft model in eval mode, processor): fp32 base + adapter, unmerged. No task_type."""
    adapter_dir = check_adapter_dir(adapter_dir)
    _check_adapter_finite(adapter_dir)
    _refuse_quantized(base)
    model, processor = load_whisper(base, dtype=torch.float32)
    _refuse_quantized(base, model)
    peft_model = load_adapter(model, adapter_dir)
    return peft_model.eval(), processor


def merge_loaded(peft_model):
    """Fold the adapter into the base weights; the peft model passed in is consumed."""
    try:
        merged = peft_model.merge_and_unload(safe_merge=True)
    except ValueError as e:  # peft's NaN check names the adapter, not the parameter: find it
        _check_finite(peft_model, "merge")
        raise ExportError(f"merge refused: {e}") from e
    _check_finite(merged, "merged model")
    return merged.eval()


def merge_adapter(base: str, adapter_dir: Path):
    """Merged fp32 `WhisperForConditionalGeneration`, checked finite."""
    peft_model, _ = load_adapter_model(base, adapter_dir)
    return merge_loaded(peft_model)


def _decoder_prompt(gen: GenerationConfig) -> list[int]:
    # The prompt `generate_features` uses; generate() strips it from what it returns.
    prompt = [gen.decoder_start_token_id]
    if getattr(gen, "is_multilingual", False):
        prompt += [gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"]]
    return prompt + [gen.no_timestamps_token_id]


@torch.no_grad()
def verify_merge(adapter_model, merged_model, probe_features: torch.Tensor, atol: float = 1e-4,
                 max_new_tokens: int = 128, batch_size: int = 4) -> dict[str, Any]:
    """Compare unmerged vs merged on the same audio: teacher-forced logits and greedy token ids.

    Teacher forcing uses the adapter model's greedy tokens as decoder input for both models, so
    one early near-tie cannot hide or exaggerate the logit gap over the rest of the sequence.
    """
    adapter_model.eval()
    merged_model.eval()
    device = next(merged_model.parameters()).device
    prompt = _decoder_prompt(merged_model.generation_config)
    max_diff, identical, batches = 0.0, True, []
    for start in range(0, len(probe_features), batch_size):
        feats = probe_features[start : start + batch_size].to(device, torch.float32)
        ids_a = generate_features(adapter_model, None, feats, 1, max_new_tokens)
        ids_m = generate_features(merged_model, None, feats, 1, max_new_tokens)
        identical &= ids_a.shape == ids_m.shape and bool(torch.equal(ids_a, ids_m))
        dec = torch.cat([torch.tensor([prompt] * len(feats), device=device), ids_a], dim=1)
        with torch.no_grad():
            la = adapter_model(input_features=feats, decoder_input_ids=dec).logits
            lm = merged_model(input_features=feats, decoder_input_ids=dec).logits
        max_diff = max(max_diff, (la - lm).abs().max().item())
        batches.append((feats, dec))
    result = {"max_abs_logit_diff": max_diff, "atol": atol, "tokens_identical": bool(identical),
              "n_probe": len(probe_features), "passed": bool(max_diff <= atol and identical)}
    if identical and not result["passed"]:
        # W0 + s·BA folded into one fp32 matrix rounds differently from the unmerged two-path sum;
        # through 4+ layers and logits of ~30 that alone can reach ~1e-4 (each model sits ~4e-5
        # from its own float64 run). Re-run both in float64: a real merge error survives there,
        # rounding does not.
        diff64 = _float64_logit_diff(adapter_model, merged_model, batches)
        result.update(max_abs_logit_diff_float64=diff64, passed=diff64 <= atol / 10,
                      note="fp32 gap is rounding: float64 logits agree" if diff64 <= atol / 10 else "")
    return result


def _float64_logit_diff(adapter_model, merged_model, batches) -> float:
    a64, m64 = copy.deepcopy(adapter_model).double(), copy.deepcopy(merged_model).double()
    worst = 0.0
    with torch.no_grad():
        for feats, dec in batches:
            la = a64(input_features=feats.double(), decoder_input_ids=dec).logits
            lm = m64(input_features=feats.double(), decoder_input_ids=dec).logits
            worst = max(worst, (la - lm).abs().max().item())
    del a64, m64
    return worst


def synthetic_probe(processor, n: int = 4, seconds: float = 3.0, seed: int = 0) -> torch.Tensor:
    """Fallback probe (tones in noise) when no dev features are supplied: weaker, but never skipped."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audios = [(0.2 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.02 * rng.standard_normal(len(t)))
              .astype(np.float32) for i in range(n)]
    return processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
