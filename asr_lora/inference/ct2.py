"""CTranslate2, the format faster-whisper runs: convert a transformers Whisper directory with
ctranslate2's own converter, and decode clips with faster-whisper set up like our transformers
decoding. The export writes its `ct2-<q>/` directories with `convert_ct2` and checks them with
`transcribe_ct2`; `evaluate eval.backend=ct2` scores such a directory with the full report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asr_lora.core.logs import progress
from asr_lora.inference.decode import DecodeOptions

log = logging.getLogger(__name__)
CT2_COPY_FILES = ["tokenizer.json", "preprocessor_config.json"]  # else faster-whisper goes to the hub


class Ct2FilesMissing(ValueError):
    """A directory lacks what a CTranslate2 conversion or a faster-whisper load needs offline."""


def _require(directory: Path, files: Sequence[str], what: str) -> None:
    missing = [f for f in files if not (Path(directory) / f).is_file()]
    if missing:
        raise Ct2FilesMissing(f"{directory}: missing {missing}; {what}")


def check_quantizations(quantizations: Sequence[str], what: str = "export.quantization") -> list[str]:
    """Refuse a quantization ctranslate2's converter does not know, before any work that would precede it."""
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES

    bad = [q for q in quantizations if q not in ACCEPTED_MODEL_TYPES]
    if bad:
        raise ValueError(f"{what}: unknown CTranslate2 quantization {bad}; choose from {list(ACCEPTED_MODEL_TYPES)}")
    return list(quantizations)


def cpu_compute_type(ct2_dir: str | Path, saved: str) -> str:
    """The type `transcribe_ct2` (compute_type="default", on this CPU) computes files saved at `saved` in:
    `saved` where the CPU runs it, else ctranslate2's stand-in (float16 and bfloat16 files run as
    float32, int8_float16 as int8_float32), so a WER is labelled with what was decoded."""
    import ctranslate2

    if saved in ctranslate2.get_supported_compute_types("cpu"):
        return saved
    return ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="default").compute_type


def warn_cpu_compute_type(ct2_dir: str | Path, saved: str) -> str:
    """`cpu_compute_type`, logged when it is not `saved`: the WER is then that type's, not what a
    device that runs `saved` would score."""
    ran = cpu_compute_type(ct2_dir, saved)
    if ran != saved:
        log.warning("%s: %s files are scored as %s on this CPU, which does not run %s", ct2_dir, saved, ran, saved)
    return ran


def convert_ct2(hf_dir: str | Path, out_dir: str | Path, quantization: str = "int8") -> Path:
    """CTranslate2 conversion of a transformers Whisper directory (overwrites out_dir)."""
    from ctranslate2.converters import TransformersConverter

    check_quantizations([quantization], "quantization")
    if not Path(hf_dir).is_dir():
        raise Ct2FilesMissing(f"{hf_dir}: not a local directory; the CTranslate2 converter reads a transformers "
                              "Whisper directory (a hub id: download it first and pass its path)")
    _require(Path(hf_dir), CT2_COPY_FILES, "a transformers Whisper directory with its tokenizer and "
                                           "feature extractor (the export's hf/ has both)")
    # dtype comes from config.json (fp32 here); the quantisation happens in convert().
    TransformersConverter(str(hf_dir), copy_files=CT2_COPY_FILES).convert(
        str(out_dir), quantization=quantization, force=True
    )
    return Path(out_dir)


def is_ct2_dir(path: str | Path) -> bool:
    return (Path(path) / "model.bin").is_file()


def transcribe_ct2(ct2_dir: str | Path, audios: Sequence[np.ndarray], beam_size: int = 1,
                   compute_type: str = "default", description: str | None = None,
                   prompt: str | None = None, max_new_tokens: int = DecodeOptions.max_new_tokens,
                   library_defaults: bool = False) -> list[str]:
    """faster-whisper decoding set up like ours: `beam_size` beams, one temperature, no context, no VAD;
    `prompt` is Whisper's previous-text prompt (faster-whisper's `initial_prompt`, the tokens
    transformers' `prompt_ids` give); `max_new_tokens` caps a clip's tokens as eval.max_new_tokens
    caps transformers' (a decode caught in a repetition loop stops at the same length).

    faster-whisper's defaults (beam 5, temperature fallback, conditioning on previous text and
    timestamp tokens) would make any comparison with transformers meaningless.
    `library_defaults=True` decodes with them all the same (only the beam size, the prompt and the
    language set, no token cap): what a user who calls `transcribe(audio, beam_size=...)` gets. The
    fallback's sampling is seeded, so two runs give the same words.
    """
    from faster_whisper import WhisperModel

    # without tokenizer.json faster-whisper silently downloads one from the hub
    _require(Path(ct2_dir), ["model.bin", *CT2_COPY_FILES], "not a complete CTranslate2 export")
    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, local_files_only=True)
    # faster-whisper logs one INFO line per clip ("Processing audio with duration ..."), which
    # buries the job's own log under hundreds of lines; the progress display below replaces it.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    lang = {"language": "en"} if fw.model.is_multilingual else {}
    if library_defaults:
        import ctranslate2

        ctranslate2.set_random_seed(0)
        options: dict = {}
    else:
        options = {"temperature": 0.0, "condition_on_previous_text": False, "without_timestamps": True,
                   "vad_filter": False, "max_new_tokens": max_new_tokens}
    out = []
    # `description`: this decode is a stage of its own, with its progress display.
    with progress(f"{description or 'ct2'} ({len(audios)} clips)", len(audios), description is not None) as advance:
        for audio in audios:
            segments, _ = fw.transcribe(np.asarray(audio, dtype=np.float32), beam_size=beam_size,
                                        initial_prompt=prompt, **options, **lang)
            out.append(" ".join(s.text.strip() for s in segments).strip())
            advance()
    return out
