"""Audio loading, quality checks and training-time augmentation.

Loading: `load_audio` returns float32 mono at the target rate (16 kHz for Whisper) or raises
`AudioError` with a reason key the pipeline can put straight into the `Ledger`
("missing_file", "empty_file", "unreadable", "truncated", "nan"). `check_audio` adds the
content checks ("nan", "too_short", "too_long", "silent").

Augmentation is applied on the fly, in training only, to a fresh copy of each clip every epoch.
Evaluation and any cached features use the unaugmented audio, so scores are comparable across
runs and augmentation settings. Every random choice draws from a `numpy.random.Generator`
passed in by the caller, so one seed reproduces one augmented clip exactly.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy.signal import fftconvolve


class AudioError(Exception):
    """A file that cannot become a training clip; `reason` is the ledger's skip key."""

    def __init__(self, path: str | os.PathLike | None, reason: str, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {message}" if self.path else message)


# ---------------------------------------------------------------------------------------- loading


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, channels averaged."""
    x = np.asarray(x, dtype=np.float32)
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return x
    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), int(orig_sr), int(target_sr)).numpy()


def _wav_truncated(path: Path) -> str | None:
    """libsndfile quietly returns whatever data a cut-off WAV holds; a clip missing its tail no
    longer matches its transcript, so compare the declared data size with the bytes present."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF are what streaming writers leave when they never seek back.
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                have = size - pos - 8
                return (
                    None
                    if have >= chunk_size
                    else f"data chunk declares {chunk_size} bytes, file holds {have}"
                )
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _decode(path: Path) -> tuple[np.ndarray, int]:
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return x, sr
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        sf_error = e
    # Formats libsndfile lacks (m4a, aac, wma, ...) go through librosa -> audioread -> ffmpeg.
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(str(path), sr=None, mono=False)
    except Exception as e:  # audioread raises a zoo of types (EOFError, NoBackendError, ...)
        raise AudioError(
            path,
            "unreadable",
            f"cannot decode: soundfile: {sf_error}; librosa/ffmpeg: {type(e).__name__}: {e}",
        ) from e
    y = np.asarray(y, dtype=np.float32)
    return (y.T if y.ndim == 2 else y[:, None]), int(sr)


def load_audio(path: str | os.PathLike, target_sr: int = 16000) -> np.ndarray:
    """Decode any soundfile/ffmpeg format to float32 mono at `target_sr`, or raise AudioError."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "missing_file", "audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty_file", "audio file is empty (0 bytes)")
    if path.suffix.lower() in (".wav", ".wave") and (why := _wav_truncated(path)):
        raise AudioError(path, "truncated", f"truncated WAV: {why}")
    x, sr = _decode(path)
    if x.shape[0] == 0:
        raise AudioError(path, "empty_file", "audio file decodes to zero samples")
    x = to_mono(x)
    if not np.isfinite(x).all():
        raise AudioError(path, "nan", "audio contains NaN or infinite samples")
    return resample(x, sr, target_sr)


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Encoded audio in memory (e.g. a Hugging Face row) -> (float32 mono, native rate)."""
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(name, "unreadable", f"cannot decode audio bytes: {e}") from e
    if x.shape[0] == 0:
        raise AudioError(name, "empty_file", "audio bytes decode to zero samples")
    return to_mono(x), int(sr)


# ----------------------------------------------------------------------------------------- checks


def peak_dbfs(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def rms_dbfs(x: np.ndarray) -> float:
    power = float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
    return 10.0 * np.log10(power) if power > 0 else float("-inf")


def duration_reason(seconds: float, min_s: float, max_s: float) -> str | None:
    """"too_long" / "too_short" / None: the length rule, for decoded clips and file headers alike."""
    if seconds > max_s:
        return "too_long"
    if seconds < min_s:
        return "too_short"
    return None


def check_audio(
    samples: np.ndarray, sr: int, min_s: float = 0.1, max_s: float = 30.0, silence_dbfs: float = -60.0
) -> str | None:
    """Reason key for an unusable clip, or None. `max_s` defaults to Whisper's 30 s window;
    silence is judged on RMS so a lone click does not make a silent file look usable."""
    if not np.isfinite(samples).all():
        return "nan"
    if reason := duration_reason(len(samples) / sr, min_s, max_s):
        return reason
    if rms_dbfs(samples) < silence_dbfs:
        return "silent"
    return None


# ----------------------------------------------------------------------------------- augmentation


def speed_perturb(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Kaldi/ESPnet-style speed perturbation: play the clip `factor` times faster (pitch moves
    too) by pretending it was recorded at sr*factor and resampling back to sr.
    The length becomes len(x)/factor."""
    if factor == 1.0:
        return x
    return resample(x, round(sr * factor), sr)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    # 1/f power = 1/sqrt(f) amplitude; shaping white noise in the frequency domain is exact enough.
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """Add white or pink noise scaled so that 10*log10(P_signal / P_noise) == snr_db exactly."""
    if color not in ("white", "pink"):
        raise ValueError(f"noise color must be 'white' or 'pink', got {color!r}")
    p_signal = float(np.mean(np.square(x, dtype=np.float64)))
    if p_signal == 0.0 or len(x) == 0:
        return x.copy()  # no signal level to measure an SNR against
    noise = rng.standard_normal(len(x)) if color == "white" else _pink(len(x), rng)
    p_noise = float(np.mean(np.square(noise)))
    noise *= np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (x + noise).astype(np.float32)


def reverberate(
    x: np.ndarray, sr: int, rng: np.random.Generator, rt60_range: tuple[float, float] = (0.2, 0.8)
) -> np.ndarray:
    """Convolve with a synthetic room: a direct path plus exponentially decaying noise reaching
    -60 dB at a sampled RT60. Output keeps the input length and RMS so later SNRs mean the same."""
    if len(x) == 0:
        return x.copy()
    rt60 = float(rng.uniform(*rt60_range))
    t = np.arange(int(rt60 * sr)) / sr
    rir = rng.standard_normal(len(t)) * 10.0 ** (-3.0 * t / rt60)  # amplitude -60 dB at t = rt60
    rir[0] = np.max(np.abs(rir)) * 2.0  # direct path dominates, as for a close-talking mic
    y = fftconvolve(x.astype(np.float64), rir)[: len(x)]
    in_rms, out_rms = np.sqrt(np.mean(np.square(x, dtype=np.float64))), np.sqrt(np.mean(y**2))
    return (y * (in_rms / out_rms if out_rms > 0 else 0.0)).astype(np.float32)


def speech_frames(logmel: np.ndarray | torch.Tensor) -> int:
    """Frames of a (..., n_mels, T) Whisper log-mel before its padding, over all leading dims.

    Whisper zero-pads the waveform to 30 s, so a clip's padding is a run of identical frames at
    the end (all at the clamp floor, or floor plus a frequency mask's fill): the speech ends at the
    last frame that differs from the final one.
    """
    x = torch.as_tensor(logmel)
    differs = (x != x[..., -1:]).any(dim=-2).reshape(-1, x.shape[-1])
    frames = torch.arange(1, x.shape[-1] + 1, device=x.device)
    return int((differs * frames).amax()) if differs.numel() else 0


def spec_augment(
    logmel: np.ndarray | torch.Tensor,
    rng: np.random.Generator,
    n_freq_masks: int = 2,
    freq_width: int = 27,
    n_time_masks: int = 2,
    time_width: int = 40,
) -> np.ndarray | torch.Tensor:
    """SpecAugment masks on a (..., n_mels, T) log-mel; returns a masked copy of the same type.
    Masks are filled with the input's mean: Whisper features are scaled to about [-1, 1], where
    zero is not "silence", so the mean is the least surprising value. Time masks fall on the
    speech, not on Whisper's 30 s padding (masking padding teaches nothing, and would make the
    short training context of context.py reach to the mask)."""
    out = logmel.clone() if isinstance(logmel, torch.Tensor) else np.array(logmel, copy=True)
    if out.ndim < 2:
        raise ValueError(f"spec_augment expects (..., n_mels, T), got shape {tuple(out.shape)}")
    n_mels, n_frames = out.shape[-2], max(1, speech_frames(out))
    fill = out.mean()
    for _ in range(n_freq_masks):
        w = int(rng.integers(0, min(freq_width, n_mels) + 1))
        f0 = int(rng.integers(0, n_mels - w + 1))
        out[..., f0 : f0 + w, :] = fill
    for _ in range(n_time_masks):
        w = int(rng.integers(0, min(time_width, n_frames) + 1))
        t0 = int(rng.integers(0, n_frames - w + 1))
        out[..., t0 : t0 + w] = fill
    return out


_DEFAULTS: dict[str, dict[str, Any]] = {
    "speed": {"enabled": False, "factors": [0.9, 1.0, 1.1]},
    "noise": {"enabled": False, "snr_db": [10, 30], "prob": 0.5, "colors": ["white", "pink"]},
    "reverb": {"enabled": False, "prob": 0.3, "rt60": [0.2, 0.8]},
    "specaugment": {
        "enabled": False,
        "n_freq_masks": 2,
        "freq_width": 27,
        "n_time_masks": 2,
        "time_width": 40,
    },
}


class Augmenter:
    """Training-only augmentation built from a config mapping (keys as in `_DEFAULTS`; every
    section is off unless `enabled: true`). Unknown keys raise, so a typo cannot silently turn
    augmentation off. Wave order: speed -> reverb -> noise (the room colours the voice, the mic
    adds noise afterwards)."""

    def __init__(self, config: Mapping[str, Any] | None = None, sr: int = 16000) -> None:
        self.sr = sr
        self.cfg: dict[str, dict[str, Any]] = {k: dict(v) for k, v in _DEFAULTS.items()}
        for section, values in dict(config or {}).items():
            if section not in _DEFAULTS:
                raise ValueError(f"unknown augmentation section {section!r}; known: {sorted(_DEFAULTS)}")
            for key, value in dict(values or {}).items():
                if key not in _DEFAULTS[section]:
                    raise ValueError(f"unknown key {section}.{key}; known: {sorted(_DEFAULTS[section])}")
                # list() also turns an OmegaConf ListConfig into a plain list.
                self.cfg[section][key] = list(value) if isinstance(_DEFAULTS[section][key], list) else value

    def on(self, section: str) -> bool:
        return bool(self.cfg[section]["enabled"])

    def touches_waveform(self) -> bool:
        """True when some augmentation must run before the log-mel (cached features won't do)."""
        return any(self.on(s) for s in ("speed", "noise", "reverb"))

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        if self.on("speed"):
            wave = speed_perturb(wave, self.sr, float(rng.choice(c["speed"]["factors"])))
        if self.on("reverb") and rng.random() < c["reverb"]["prob"]:
            wave = reverberate(wave, self.sr, rng, tuple(c["reverb"]["rt60"]))
        if self.on("noise") and rng.random() < c["noise"]["prob"]:
            snr = float(rng.uniform(*c["noise"]["snr_db"]))
            wave = add_noise(wave, snr, rng, color=str(rng.choice(c["noise"]["colors"])))
        return wave

    def spec(self, logmel: np.ndarray | torch.Tensor, rng: np.random.Generator) -> np.ndarray | torch.Tensor:
        if not self.on("specaugment"):
            return logmel
        s = self.cfg["specaugment"]
        return spec_augment(
            logmel, rng, s["n_freq_masks"], s["freq_width"], s["n_time_masks"], s["time_width"]
        )
