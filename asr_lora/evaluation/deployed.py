"""Scoring the files a deployment runs: `python -m asr_lora.evaluate eval.backend=ct2
adapter=EXPORT/ct2-int8`. Every system is decoded by faster-whisper from CTranslate2 files (the
adapted systems from the export's directory, zero-shot and the prompt baseline from the base
converted the same way) and handed to `scoring.evaluate_systems` as its hypotheses, so the report,
the parts, term recall and the forgetting gate are those of the transformers evaluation. With
`eval.beam_size=1` this is how a faster-whisper user decoding greedily will see the model."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from asr_lora.evaluation.scoring import SYSTEMS
from asr_lora.evaluation.terms import Terms
from asr_lora.inference.ct2 import convert_ct2, is_ct2_dir, transcribe_ct2, warn_cpu_compute_type
from asr_lora.model.adapters import PROMPT_FILE, adapter_prompt

log = logging.getLogger("asr_lora.evaluate")
BACKENDS = ("transformers", "ct2")
CT2_DECODING = ("matched", "library")


def check_backend(backend: str, ct2_decoding: str = "matched") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"eval.backend={backend!r}: choose one of {list(BACKENDS)}")
    if ct2_decoding not in CT2_DECODING:
        raise ValueError(f"eval.ct2_decoding={ct2_decoding!r}: choose one of {list(CT2_DECODING)}")
    if ct2_decoding != "matched" and backend != "ct2":
        raise ValueError(f"eval.ct2_decoding={ct2_decoding} sets faster-whisper's decoding; it needs eval.backend=ct2")
    return backend


def resolve_ct2_adapter(path: str | Path) -> Path:
    """The CTranslate2 directory `adapter=` names for eval.backend=ct2: a ct2-<q>/ directory itself,
    or an export directory holding exactly one."""
    path = Path(path)
    if is_ct2_dir(path):
        return path
    found = sorted(d for d in path.glob("ct2-*") if is_ct2_dir(d)) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"adapter={path}: holds {[d.name for d in found]}; name one of them for eval.backend=ct2")
    raise ValueError(f"adapter={path}: no CTranslate2 model (model.bin) there or in a ct2-*/ directory under it; "
                     "eval.backend=ct2 scores an export's ct2-<q>/ (export.formats includes ct2)")


def check_export_base(ct2_dir: Path, base: str) -> None:
    """Refuse an export made from another base than `model.name_or_path`: its zero-shot rows would
    score a different model, and the tokenizer could differ. The export's `adapter/` names its base."""
    from asr_lora.model.adapters import other_base

    sibling = ct2_dir.parent / "adapter"
    if (sibling / "adapter_config.json").is_file() and (named := other_base(sibling, base)):
        raise ValueError(f"adapter={ct2_dir}: exported from base {named!r} ({sibling}), but model.name_or_path is "
                         f"{base!r}; pass model.name_or_path={named}")


def export_quantization(ct2_dir: Path | None, setting: str | None) -> str:
    """The quantization the base is converted at: eval.ct2_quantization when set, else the export's
    (its `ct2-<q>` directory name), else int8; zero-shot and adapted then differ by the adapter alone."""
    if setting:
        return str(setting)
    m = re.fullmatch(r"ct2-(\w+)", ct2_dir.name) if ct2_dir is not None else None
    return m.group(1) if m else "int8"


def ct2_hypotheses(base_hf_dir: str | Path, adapted_ct2: Path | None, ds, systems, ecfg, quantization: str,
                   terms: Terms | None, work_dir: Path) -> dict[str, list[str]]:
    """{system: faster-whisper hypotheses for every row of `ds`}, at eval.beam_size and capped at
    eval.max_new_tokens as the transformers decode is. The base is converted into a temporary
    directory at `quantization`."""
    audios = [np.asarray(a, dtype=np.float32) for a in ds["audio"]]
    prompt = terms.prompt if terms is not None else None
    shipped = adapter_prompt(adapted_ct2) if adapted_ct2 is not None else None
    if prompt and shipped is not None and shipped != prompt:
        log.warning("%s differs from the term prompt this evaluation derived (eval.terms or the training text); "
                    "the prompted systems decode with the derived one", adapted_ct2 / PROMPT_FILE)
    out: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix=".ct2-base-", dir=work_dir) as tmp:
        base_ct2 = None
        if any(not SYSTEMS[s][0] for s in systems):
            base_ct2 = convert_ct2(base_hf_dir, Path(tmp) / f"ct2-{quantization}", quantization)
            log.info("base converted to CTranslate2 (%s) for the zero-shot systems", quantization)
            warn_cpu_compute_type(base_ct2, quantization)
        if adapted_ct2 is not None and (named := re.fullmatch(r"ct2-(\w+)", adapted_ct2.name)):
            warn_cpu_compute_type(adapted_ct2, named.group(1))
        for system in systems:
            adapter_on, prompted = SYSTEMS[system]
            if prompted and not prompt:
                raise ValueError(f"system {system!r} needs domain terms for its prompt (eval.terms or training text)")
            out[system] = transcribe_ct2(adapted_ct2 if adapter_on else base_ct2, audios, ecfg.beam_size,
                                         description=f"faster-whisper ({system.replace('_', ' + ')})",
                                         prompt=prompt if prompted else None, max_new_tokens=ecfg.max_new_tokens,
                                         library_defaults=ecfg.ct2_decoding == "library")
    return out
