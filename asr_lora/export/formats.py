"""Write the deployable formats: merged transformers and the adapter alone (CTranslate2 for
faster-whisper: `inference/ct2.py`); and the model card every one of them carries."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import GenerationConfig

from asr_lora.evaluation.report import pct, pct_ci, render_markdown_table
from asr_lora.export.merge import ADAPTER_FILES
from asr_lora.model.adapters import BUNDLED_HUB_IDS, PROMPT_FILE, check_adapter_dir, make_adapter_portable

log = logging.getLogger(__name__)


def export_hf(merged, processor, base_dir: str | Path, out_dir: Path) -> Path:
    """Plain transformers directory: safetensors, tokenizer, preprocessor_config.json, base generation config
    (a multilingual base's set to English transcription, `english_only_decoding`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The base's generation config carries alignment_heads and suppress lists; a reload without
    # them decodes differently and loses word timestamps.
    merged.generation_config = english_only_decoding(GenerationConfig.from_pretrained(str(base_dir)))
    merged.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    # transformers 5 writes processor_config.json; faster-whisper and older readers want this file.
    processor.feature_extractor.save_pretrained(out_dir)
    return out_dir


def english_only_decoding(gen: GenerationConfig) -> GenerationConfig:
    """The evaluation decodes a multilingual Whisper as English transcription (`<|en|><|transcribe|>`);
    left unset, generate() detects the language per clip and decodes a model nobody scored. An
    English-only Whisper stays as it is: it refuses a language."""
    if getattr(gen, "is_multilingual", False):
        gen.language, gen.task = "en", "transcribe"
    return gen


def export_adapter(adapter_dir: Path, out_dir: Path, base: str | None = None) -> Path:
    """The adapter's config and safetensors weights only (never pickles, optimiser state or peft's card).

    The config's `base_model_name_or_path` becomes portable (`bundled:tiny.en`, not this machine's
    converted cache directory), so the copy loads anywhere asr_lora is installed."""
    adapter_dir = check_adapter_dir(adapter_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(adapter_dir / name, out_dir / name)
    make_adapter_portable(out_dir, base)
    return out_dir


def _loading_snippets(base: str, ct2: str, beams: int = 1, language: str | None = None) -> list[str]:
    if base.startswith(("bundled:", "ct2:")):  # not a transformers name: asr_lora converts it
        load_base = ["from asr_lora.model import load_whisper", f'base, _ = load_whisper("{base}")']
    else:
        load_base = ["from transformers import WhisperForConditionalGeneration",
                     f'base = WhisperForConditionalGeneration.from_pretrained("{base}")  # fp32, not 8-bit']
    return [
        "## Loading", "", (f"Decode with beam {beams} to reproduce the figures above." if beams > 1 else
                           "Decode greedily (beam 1) to reproduce the figures above."), "",
        "transformers, merged model in `hf/` (no peft needed):", "", "```python",
        "from transformers import pipeline",
        'asr = pipeline("automatic-speech-recognition", model="hf")',
        f'asr("clip.wav", generate_kwargs={{"num_beams": {beams}{_lang_kwarg(language)}}})'
        "  # the transformers 5 pipeline defaults to 5 beams",
        "```", "", "peft, adapter in `adapter/` on top of the base:", "", "```python",
        "from peft import PeftModel", *load_base, 'model = PeftModel.from_pretrained(base, "adapter")', "```", "",
        f"faster-whisper, CTranslate2 model in `{ct2}/`:", "", "```python",
        "from faster_whisper import WhisperModel",
        f'model = WhisperModel("{ct2}", device="cpu")',
        f'segments, _ = model.transcribe("clip.wav", beam_size={beams}, temperature=0.0,  # its default is beam 5',
        f"                               condition_on_previous_text=False{_lang_arg(language)})", "```", "",
    ]


# A multilingual model was scored in English: the snippets pin it, or the libraries detect a language.
def _lang_kwarg(language: str | None) -> str:
    return f', "language": "{language}"' if language else ""


def _lang_arg(language: str | None) -> str:
    return f', language="{language}"' if language else ""


def _prompt_snippets(prompt: str, ct2: str, beams: int = 1, language: str | None = None) -> list[str]:
    return [
        "## Decoding with the term prompt", "",
        (f"The evaluation also scored this model with the domain terms as Whisper's prompt (`adapted_prompt` "
         f"above). `{PROMPT_FILE}` in every export directory holds it:"), "", "```text", prompt, "```", "",
        "```python",
        f'prompt = open("{ct2}/{PROMPT_FILE}", encoding="utf-8").read().strip()',
        f'segments, _ = model.transcribe("clip.wav", beam_size={beams}, temperature=0.0,  # faster-whisper',
        f"                               condition_on_previous_text=False, initial_prompt=prompt{_lang_arg(language)})",
        f"ids = model.generate(input_features=features, num_beams={beams}{_lang_arg(language)},  # transformers",
        '                     prompt_ids=processor.get_prompt_ids(prompt, return_tensors="pt"))',
        "```", "",
        f'`python -m asr_lora.transcribe clip.wav --adapter adapter --prompt "$(cat adapter/{PROMPT_FILE})"` and the '
        "server's `prompt` field take it too; `python -m asr_lora.serve --adapter NAME=adapter --adapter-prompts` "
        "uses it for requests that send no prompt.", "",
    ]


def write_model_card(out_dir: Path, info: dict) -> Path:
    """README.md for one export. ``info`` follows `asr_lora.evaluation.report`'s eval dict, plus ``lora``,
    ``verification``, ``export_wer``, ``forced`` (messages of gates that force overrode),
    ``this`` (this directory's name), ``exports`` (all directory names), ``prompt`` (the term
    prompt the evaluation scored the model with, or none), ``language`` (what a multilingual model
    was scored in) and ``forgetting_unchecked`` (why no forgetting gate was decided)."""
    base = info.get("model", {}).get("base", "?")
    lora, corpus = info.get("lora", {}), info.get("corpus", {})
    title = corpus.get("title") or corpus.get("name") or "adapted speech"
    lines = [f"# Whisper + LoRA for {title} ({info.get('this', 'export')})", ""]
    if info.get("forced"):
        lines += ["> **WARNING: EXPORTED WITH force=True OVER FAILED GATES. Do not deploy without review.**",
                  *[f"> - {msg}" for msg in info["forced"]], ""]
    if info.get("synthetic"):
        lines += [("> **Synthetic corpus**: trained and evaluated on synthesised speech, not recordings. "
                   "The WER figures below say little about real speakers."), ""]
    data = corpus.get("name", "n/a") + (f" - {corpus['description']}" if corpus.get("description") else "")
    hub = [f"- Base weights: `{BUNDLED_HUB_IDS[base]}` (Hugging Face hub id; `{base}` ships them offline)"
           ] if base in BUNDLED_HUB_IDS else []
    lines += ["## Model", "", f"- Base model: `{base}`", *hub, f"- Data: {data}",
              (f"- LoRA: r={lora.get('r', '?')}, alpha={lora.get('alpha', '?')}, "
               f"targets={lora.get('target_modules', '?')}, scope={lora.get('scope', 'all matching modules')}"), ""]

    if systems := info.get("systems"):
        variant = info.get("headline", "norm")
        rows = [[name, pct_ci(s.get("wer", {}).get(variant, {}))] for name, s in systems.items()]
        lines += [f"## WER (test split, {variant} text, 95% speaker-bootstrap interval)", "",
                  render_markdown_table(rows, ["system", "WER [95% CI]"]), ""]
    beams = int(info.get("beam_size") or 1)
    if ew := info.get("export_wer"):
        search = f"beam {beams}" if beams > 1 else "greedy (beam 1)"
        lines += [(f"WER of the exported files on the test audio, decoded with {search}, the beam the figures "
                   "above were scored with (faster-whisper pads the log-mel differently from transformers, so "
                   "small gaps are expected):"), "",
                  render_markdown_table([[k, pct(x)] for k, x in ew.items()], ["export", "WER"]), ""]
    if unchecked := info.get("forgetting_unchecked"):
        lines += [f"Forgetting gate (general-English control set): **NOT CHECKED**, {unchecked}.", ""]
    elif f := info.get("forgetting"):
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
        if ew := v.get("evaluated_weights"):
            lines += [(f"Merged weights sha256 `{ew['sha256']}`: "
                       + ("bit-identical to the model the evaluation above decoded (the adapter merged in), "
                          "so its WER is this export's." if ew["identical"]
                          else "not the evaluated model's weights, so the export decoded the test audio itself.")),
                      ""]
    # the faster-whisper snippets name the export's CTranslate2 directory (ct2-int8 when none was made)
    ct2 = next((e for e in info.get("exports", []) if e.startswith("ct2-")), "ct2-int8")
    lines += _loading_snippets(base, ct2, beams, info.get("language"))
    if prompt := info.get("prompt"):
        lines += _prompt_snippets(prompt, ct2, beams, info.get("language"))
    path = Path(out_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path
