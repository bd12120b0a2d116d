"""Turn a trained LoRA adapter into deployable checkpoints, refusing any that would mislead.

Outputs under ``out_root`` (each directory carries a README.md model card):

- ``hf/``            merged fp32 Whisper; plain transformers loads it, no peft needed
- ``adapter/``       the peft adapter alone (safetensors), to stack on the base at load time
- ``ct2-<quant>/``   CTranslate2 conversion of ``hf/`` for faster-whisper (``int8``, ``float16``, ...)

Refusals (all `ExportError`): a quantised base (merging into rounded weights shifts outputs well
beyond peft's ~1e-4 guarantee, FIELD_NOTES 6), non-finite adapter or merged weights, a merged
model whose logits or greedy tokens differ from the unmerged adapter model, and a failed
forgetting gate. ``force=True`` overrides the last two gates only, and every model card then says so.

Every directory is built in a temporary sibling and moved into place with `os.replace` only
after all formats, checks and cards are complete, so a failed export never leaves a
half-written directory where a deployable one is expected.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from transformers import GenerationConfig

from .inference import SAMPLE_RATE, check_adapter_dir, generate_features, transcribe_arrays
from .metrics import corpus_wer
from .model import load_whisper, resolve_model_dir
from .report import pct, pct_ci, render_markdown_table
from .text import normalize

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CT2_COPY_FILES = ["tokenizer.json", "preprocessor_config.json"]  # else faster-whisper goes to the hub


class ExportError(RuntimeError):
    """An export that would produce a broken or misleading checkpoint."""


class QuantizedBaseError(ExportError):
    """The base model is 8-bit/4-bit; merging into it is refused."""


# ---------------------------------------------------------------- merge


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
    """(peft model in eval mode, processor): fp32 base + adapter, unmerged. No task_type (FIELD_NOTES 2)."""
    from peft import PeftModel

    adapter_dir = check_adapter_dir(adapter_dir)
    _check_adapter_finite(adapter_dir)
    _refuse_quantized(base)
    model, processor = load_whisper(base, dtype=torch.float32)
    _refuse_quantized(base, model)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
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


# ---------------------------------------------------------------- verification


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


# ---------------------------------------------------------------- writers


def export_hf(merged, processor, base_dir: str | Path, out_dir: Path) -> Path:
    """Plain transformers directory: safetensors, tokenizer, preprocessor_config.json, base generation config."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The base's generation config carries alignment_heads and suppress lists; a reload without
    # them decodes differently (FIELD_NOTES 6) and loses word timestamps.
    merged.generation_config = GenerationConfig.from_pretrained(str(base_dir))
    merged.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    # transformers 5 writes processor_config.json; faster-whisper and older readers want this file.
    processor.feature_extractor.save_pretrained(out_dir)
    return out_dir


def export_adapter(adapter_dir: Path, out_dir: Path) -> Path:
    """The adapter's config and safetensors weights only (never pickles, optimiser state or peft's card)."""
    adapter_dir = check_adapter_dir(adapter_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(adapter_dir / name, out_dir / name)
    return out_dir


def export_ct2(hf_dir: Path, out_dir: Path, quantization: str = "int8") -> Path:
    """CTranslate2 conversion of a merged transformers directory (overwrites out_dir)."""
    from ctranslate2.converters import TransformersConverter

    missing = [f for f in CT2_COPY_FILES if not (Path(hf_dir) / f).is_file()]
    if missing:
        raise ExportError(f"{hf_dir}: missing {missing}; export with export_hf first")
    # dtype comes from config.json (fp32 here); the quantisation happens in convert().
    TransformersConverter(str(hf_dir), copy_files=CT2_COPY_FILES).convert(
        str(out_dir), quantization=quantization, force=True
    )
    return Path(out_dir)


def transcribe_ct2(ct2_dir: Path, audios: Sequence[np.ndarray], beam_size: int = 1,
                   compute_type: str = "default") -> list[str]:
    """faster-whisper decoding set up like ours: greedy, one temperature, no context, no VAD.

    faster-whisper's defaults (beam 5, temperature fallback, conditioning on previous text and
    timestamp tokens) would make any comparison with transformers meaningless (FIELD_NOTES 12).
    """
    from faster_whisper import WhisperModel

    missing = [f for f in CT2_COPY_FILES if not (Path(ct2_dir) / f).is_file()]
    if missing:  # without tokenizer.json faster-whisper silently downloads one from the hub
        raise ExportError(f"{ct2_dir}: missing {missing}; not a complete CTranslate2 export")
    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, local_files_only=True)
    # faster-whisper logs one INFO line per clip ("Processing audio with duration ..."), which
    # buries the job's own log under hundreds of lines; our progress is reported elsewhere.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    lang = {"language": "en"} if fw.model.is_multilingual else {}
    out = []
    for audio in audios:
        segments, _ = fw.transcribe(
            np.asarray(audio, dtype=np.float32), beam_size=beam_size, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False, **lang,
        )
        out.append(" ".join(s.text.strip() for s in segments).strip())
    return out


def _wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    return corpus_wer([normalize(r) for r in refs], [normalize(h) for h in hyps])["wer"]


# ---------------------------------------------------------------- model card


def _loading_snippets(base: str, exports: Sequence[str]) -> list[str]:
    ct2 = next((e for e in exports if e.startswith("ct2-")), "ct2-int8")
    if base.startswith(("bundled:", "ct2:")):  # not a transformers name: asr_lora converts it
        load_base = ["from asr_lora.model import load_whisper", f'base, _ = load_whisper("{base}")']
    else:
        load_base = ["from transformers import WhisperForConditionalGeneration",
                     f'base = WhisperForConditionalGeneration.from_pretrained("{base}")  # fp32, not 8-bit']
    return [
        "## Loading", "", "Decode greedily (beam 1) to reproduce the figures above.", "",
        "transformers, merged model in `hf/` (no peft needed):", "", "```python",
        "from transformers import pipeline",
        'asr = pipeline("automatic-speech-recognition", model="hf")',
        'asr("clip.wav", generate_kwargs={"num_beams": 1})  # the transformers 5 pipeline defaults to 5 beams',
        "```", "", "peft, adapter in `adapter/` on top of the base:", "", "```python",
        "from peft import PeftModel", *load_base, 'model = PeftModel.from_pretrained(base, "adapter")', "```", "",
        f"faster-whisper, CTranslate2 model in `{ct2}/`:", "", "```python",
        "from faster_whisper import WhisperModel",
        f'model = WhisperModel("{ct2}", device="cpu")',
        'segments, _ = model.transcribe("clip.wav", beam_size=1, temperature=0.0,  # its default is beam 5',
        "                               condition_on_previous_text=False)", "```", "",
    ]


def write_model_card(out_dir: Path, info: dict) -> Path:
    """README.md for one export. ``info`` follows `asr_lora.report`'s eval dict, plus ``lora``,
    ``verification``, ``export_wer``, ``forced`` (messages of gates that force overrode),
    ``this`` (this directory's name) and ``exports`` (all directory names)."""
    base = info.get("model", {}).get("base", "?")
    lora, corpus = info.get("lora", {}), info.get("corpus", {})
    lines = [f"# Whisper + LoRA for Singapore English ({info.get('this', 'export')})", ""]
    if info.get("forced"):
        lines += ["> **WARNING: EXPORTED WITH force=True OVER FAILED GATES. Do not deploy without review.**",
                  *[f"> - {msg}" for msg in info["forced"]], ""]
    if info.get("synthetic"):
        lines += [("> **Synthetic corpus**: trained and evaluated on synthesised speech, not recordings. "
                   "The WER figures below say little about real Singapore English speakers."), ""]
    data = corpus.get("name", "n/a") + (f" - {corpus['description']}" if corpus.get("description") else "")
    lines += ["## Model", "", f"- Base model: `{base}`", f"- Data: {data}",
              (f"- LoRA: r={lora.get('r', '?')}, alpha={lora.get('alpha', '?')}, "
               f"targets={lora.get('target_modules', '?')}, scope={lora.get('scope', 'all matching modules')}"), ""]

    if systems := info.get("systems"):
        variant = info.get("headline", "norm")
        rows = [[name, pct_ci(s.get("wer", {}).get(variant, {}))] for name, s in systems.items()]
        lines += [f"## WER (test split, {variant} text, 95% speaker-bootstrap interval)", "",
                  render_markdown_table(rows, ["system", "WER [95% CI]"]), ""]
    if ew := info.get("export_wer"):
        lines += [("WER of the exported files on the test audio, greedy (faster-whisper pads the log-mel "
                   "differently from transformers, so small gaps are expected):"), "",
                  render_markdown_table([[k, pct(x)] for k, x in ew.items()], ["export", "WER"]), ""]
    if f := info.get("forgetting"):
        lines += [(f"Forgetting gate (general-English control set): **{'PASS' if f.get('passed') else 'FAIL'}**, "
                   f"control WER {pct(f.get('control_wer_base'))} -> {pct(f.get('control_wer_adapted'))} "
                   f"(relative change {pct(f.get('relative_degradation'), 1)}, "
                   f"allowed {pct(f.get('max_relative_degradation'), 1)})."), ""]
    if v := info.get("verification"):
        lines += ["## Merge verification", "",
                  (f"Merged vs unmerged adapter on {v.get('n_probe')} probe clips ({v.get('probe', 'dev')}): "
                   f"max |logit diff| = {v.get('max_abs_logit_diff', float('nan')):.2e} "
                   f"(tolerance {v.get('atol')}), greedy tokens identical: {v.get('tokens_identical')}. "
                   + (f"In float64 the gap is {v['max_abs_logit_diff_float64']:.2e}: the fp32 gap is rounding, "
                      "not a different model. " if "max_abs_logit_diff_float64" in v else "")
                   + f"**{'PASS' if v.get('passed') else 'FAIL'}**"), ""]
    lines += _loading_snippets(base, info.get("exports", []))
    path = Path(out_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------- orchestration


def _stage(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def _publish(tmp: Path, target: Path) -> None:
    tmp.chmod(0o755)  # mkdtemp makes 0700 directories
    if target.exists():  # os.replace cannot overwrite a non-empty directory: move the old one aside
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)


def export_run(base: str, adapter_dir: Path, out_root: Path, formats: Sequence[str] = ("hf", "adapter", "ct2"),
               ct2_quantizations: Sequence[str] = ("int8",), probe_features: torch.Tensor | None = None,
               test_audios: Sequence[np.ndarray] | None = None, test_refs: Sequence[str] | None = None,
               info: dict | None = None, force: bool = False, atol: float = 1e-4,
               verify_max_new_tokens: int = 128,
               merged_transcriber: Callable[[Any], list[str]] | None = None) -> dict[str, Any]:
    """Merge, verify, gate, then write every requested format atomically; returns a summary.

    `merged_transcriber(merged_model) -> hypotheses for test_audios` lets the caller reuse work it
    already has (e.g. cached encoder outputs when the adapter never touched the encoder).
    """
    unknown = set(formats) - {"hf", "adapter", "ct2"}
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from hf, adapter, ct2")
    adapter_dir, out_root = Path(adapter_dir), Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    info = copy.deepcopy(info or {})
    info.setdefault("model", {}).setdefault("base", base)
    adapter_cfg = json.loads((check_adapter_dir(adapter_dir) / "adapter_config.json").read_text())
    # The adapter's own config is the truth for r/alpha/targets; the caller adds e.g. scope.
    info["lora"] = {**info.get("lora", {}), "r": adapter_cfg.get("r"), "alpha": adapter_cfg.get("lora_alpha"),
                    "target_modules": sorted(adapter_cfg.get("target_modules") or [])}

    adapter_model, processor = load_adapter_model(base, adapter_dir)
    merged = merge_loaded(copy.deepcopy(adapter_model))
    probe = "dev"
    if probe_features is None:
        probe_features, probe = synthetic_probe(processor), "synthetic tones; no dev features given"
    verification = {**verify_merge(adapter_model, merged, probe_features, atol=atol,
                                    max_new_tokens=verify_max_new_tokens), "probe": probe}
    info["verification"] = verification
    del adapter_model

    failures = []
    if not verification["passed"]:
        failures.append(f"merge verification failed: max |logit diff| {verification['max_abs_logit_diff']:.2e} "
                        f"(atol {atol}), tokens identical: {verification['tokens_identical']}")
    if (info.get("forgetting") or {}).get("passed") is False:
        f = info["forgetting"]
        change, allowed = pct(f.get("relative_degradation"), 1), pct(f.get("max_relative_degradation"), 1)
        failures.append(f"forgetting gate failed: control WER relative change {change} > allowed {allowed}")
    if failures and not force:
        raise ExportError("export refused (pass force=True to override): " + "; ".join(failures))
    info["forced"] = failures  # empty unless force overrode something

    targets = {}
    if "hf" in formats:
        targets["hf"] = out_root / "hf"
    if "adapter" in formats:
        targets["adapter"] = out_root / "adapter"
    if "ct2" in formats:
        targets.update({f"ct2-{q}": out_root / f"ct2-{q}" for q in ct2_quantizations})
    staged = {name: _stage(t) for name, t in targets.items()}
    scratch = None
    try:
        hf_dir = staged.get("hf") or (scratch := Path(tempfile.mkdtemp(prefix=".hf-scratch-", dir=out_root)))
        export_hf(merged, processor, resolve_model_dir(base), hf_dir)
        if "adapter" in staged:
            export_adapter(adapter_dir, staged["adapter"])
        for q in ct2_quantizations if "ct2" in formats else ():
            export_ct2(hf_dir, staged[f"ct2-{q}"], q)

        export_wer = {}
        if test_audios is not None and test_refs is not None:
            merged_hyps = (merged_transcriber(merged) if merged_transcriber
                           else transcribe_arrays(merged, processor, test_audios))
            export_wer["merged_hf"] = _wer(test_refs, merged_hyps)
            for q in ct2_quantizations if "ct2" in formats else ():
                export_wer[f"ct2-{q}"] = _wer(test_refs, transcribe_ct2(staged[f"ct2-{q}"], test_audios))
            info["export_wer"] = export_wer
        for name, tmp in staged.items():
            write_model_card(tmp, {**info, "this": name, "exports": list(targets)})
        sizes = {"adapter": (adapter_dir / "adapter_model.safetensors").stat().st_size,
                 "merged": (hf_dir / "model.safetensors").stat().st_size}
        sizes.update({f"ct2-{q}": (staged[f"ct2-{q}"] / "model.bin").stat().st_size
                      for q in ct2_quantizations if "ct2" in formats})
        for name, tmp in staged.items():
            _publish(tmp, targets[name])
    except BaseException:
        for tmp in staged.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    if failures:
        log.warning("EXPORTED WITH force=True over failed gates: %s", "; ".join(failures))
    return {"paths": {k: str(v) for k, v in targets.items()}, "sizes_bytes": sizes,
            "verification": verification, "wer": export_wer or None, "forced": bool(failures),
            "gate_failures": failures}


if __name__ == "__main__":
    # `python -m asr_lora.export run_dir=DIR ...` is the Hydra entry point in export_job.py.
    from .export_job import main

    main()
