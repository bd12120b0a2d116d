"""Audio loading and quality checks.

`load_audio` returns float32 mono at the target rate (16 kHz for Whisper) or raises
`AudioError` with a reason key the pipeline can put straight into the `Ledger`
("missing_file", "empty_file", "unreadable", "truncated", "nan", "bad_sample_rate", and with
`max_seconds` "audio_too_long", judged before resampling). `check_audio` adds the
content checks ("nan", "too_short", "too_long", "silent")."""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000


class AudioError(Exception):
    """A file that cannot become a training clip; `reason` is the ledger's skip key."""

    def __init__(self, path: str | os.PathLike | None, reason: str, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {message}" if self.path else message)


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, channels averaged."""
    x = np.asarray(x, dtype=np.float32)
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x


# The sample rates recordings are made at. A header's rate alone sets what resampling costs: a
# file of a few KB claiming 1 Hz would become gigabytes at 16 kHz.
RATES = (1000, 384_000)
# torchaudio's sinc kernel holds (target/g) x (orig/g) taps for g = gcd(orig, target): 70,560 for
# 44.1 kHz, but 16e9 for a prime rate such as 999,983 Hz. Past this, soxr, which takes any ratio in
# little memory, resamples instead (the common rates keep torchaudio's output, and so the corpus).
_SINC_TAPS = 4_000_000


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return x
    g = math.gcd(int(orig_sr), int(target_sr))
    if (orig_sr // g) * (target_sr // g) > _SINC_TAPS:
        import soxr

        return soxr.resample(np.ascontiguousarray(x, dtype=np.float32), orig_sr, target_sr).astype(np.float32)
    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), int(orig_sr), int(target_sr)).numpy()


def check_rate(path, sr: int, frames: int, max_seconds: float | None = None) -> None:
    """AudioError for a sample rate no recording has, or (`max_seconds`) audio longer than that:
    both judged from the decoded samples, before resampling spends memory on them."""
    if not RATES[0] <= sr <= RATES[1]:
        raise AudioError(path, "bad_sample_rate", f"sample rate {sr} Hz is not a recording's "
                                                  f"({RATES[0]} to {RATES[1]:,} Hz)")
    if max_seconds is not None and frames > max_seconds * sr:
        raise AudioError(path, "audio_too_long", f"{frames / sr:.1f} s of audio is over the limit of {max_seconds:g} s")


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


def load_audio(path: str | os.PathLike, target_sr: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decode any soundfile/ffmpeg format to float32 mono at `target_sr`, or raise AudioError.
    A segment or zip-member address (`segment_address`, `zip_address`) loads just that part."""
    if (part := parse_address(path)) is not None:
        return load_part(*part, target_sr=target_sr)
    if str(path) == "-":
        raise AudioError(path, "missing_file", "audio from standard input is not read; pass the file's path")
    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "missing_file", "a directory, not an audio file")
    if not path.is_file():
        raise AudioError(path, "missing_file", "audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty_file", "audio file is empty (0 bytes)")
    try:
        if path.suffix.lower() in (".wav", ".wave") and (why := _wav_truncated(path)):
            raise AudioError(path, "truncated", f"truncated WAV: {why}")
    except OSError as e:  # permissions, I/O errors: the file's reason, not a traceback
        raise AudioError(path, "unreadable", f"cannot read the file ({e.strerror or e})") from None
    x, sr = _decode(path)
    if x.shape[0] == 0:
        raise AudioError(path, "empty_file", "audio file decodes to zero samples")
    check_rate(path, sr, x.shape[0], max_seconds)
    x = to_mono(x)
    if not np.isfinite(x).all():
        raise AudioError(path, "nan", "audio contains NaN or infinite samples")
    return resample(x, sr, target_sr)


# ---- addresses: a part of a file, carried in the one `audio_path` string every data path passes on.
# Long NSC recordings are cut into utterances without writing a copy of each segment, and NSC's
# speaker zips are read in place, so a Record's `audio_path` may name "<file>#t=<start>,<end>" (the
# W3C media-fragment form, seconds) or "<archive>.zip#<member>". Only strings that are not an
# existing file are parsed, so a real file whose name holds '#' still loads as itself.

_SEGMENT = re.compile(r"^(?P<file>.+)#t=(?P<start>\d+(?:\.\d+)?),(?P<end>\d+(?:\.\d+)?)$")


def segment_address(path: str | os.PathLike, start: float, end: float) -> str:
    return f"{path}#t={start:.3f},{end:.3f}"


def zip_address(archive: str | os.PathLike, member: str) -> str:
    return f"{archive}#{member}"


def parse_address(path: str | os.PathLike) -> tuple[str, str | None, float | None, float | None] | None:
    """(file, zip member or None, start or None, end or None) for an address, None for a plain path."""
    s = str(path)
    if "#" not in s or os.path.isfile(s):
        return None
    if m := _SEGMENT.match(s):
        inner = parse_address(m["file"])
        file, member = (inner[0], inner[1]) if inner else (m["file"], None)
        return file, member, float(m["start"]), float(m["end"])
    archive, member = s.rsplit("#", 1)
    if archive.lower().endswith(".zip") and member:
        return archive, member, None, None
    return None


def load_part(file: str, member: str | None, start: float | None, end: float | None,
              target_sr: int = 16000) -> np.ndarray:
    """A zip member (read into memory, decoded with `decode_bytes`) and/or the [start, end) seconds of
    a recording (soundfile seeks there: only those frames are read). A segment the file cannot
    fill raises "truncated" rather than returning a shorter clip than its transcript covers."""
    name = zip_address(file, member) if member else file
    if not os.path.isfile(file):
        raise AudioError(file, "missing_file", "audio file not found")
    if member is not None:
        import zipfile

        try:
            with zipfile.ZipFile(file) as zf:
                data = zf.read(member)
        except KeyError:
            raise AudioError(name, "missing_file", "no such member in the zip") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise AudioError(name, "unreadable", f"cannot read zip member: {e}") from e
        if start is None:
            x, sr = decode_bytes(data, name)
        else:
            x, sr = _read_span(io.BytesIO(data), name, start, end)
    else:
        x, sr = _read_span(file, name, start, end)
    if not np.isfinite(x).all():
        raise AudioError(name, "nan", "audio contains NaN or infinite samples")
    check_rate(name, sr, len(x))
    return resample(x, sr, target_sr)


def _read_span(src, name: str, start: float, end: float) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(src) as f:
            sr, total = f.samplerate, f.frames
            first, last = int(round(start * sr)), int(round(end * sr))
            if last <= first:
                raise AudioError(name, "empty_file", f"segment {start:.3f}-{end:.3f} s is empty")
            if last > total + 1:  # one frame of rounding slack
                raise AudioError(name, "truncated", f"segment ends at {end:.3f} s, audio has {total / sr:.3f} s")
            f.seek(first)
            x = f.read(min(last, total) - first, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(name, "unreadable", f"cannot decode: {e}") from e
    return to_mono(x), int(sr)


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Encoded audio in memory (e.g. a Hugging Face row) -> (float32 mono, native rate)."""
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(name, "unreadable", f"cannot decode audio bytes: {e}") from e
    if x.shape[0] == 0:
        raise AudioError(name, "empty_file", "audio bytes decode to zero samples")
    return to_mono(x), int(sr)


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
    """Reason key for an unusable clip, or None. `max_s` defaults to Whisper's 30 s window.
    Silence is judged on the loudness of 50 ms frames: a clip is silent unless at least 150 ms of
    it (its whole length, if shorter) is above `silence_dbfs` RMS. Whole-file RMS refused quiet
    speech (-63 dBFS RMS, -43 peak) and speech followed by a long pause; a lone click is one frame."""
    if not np.isfinite(samples).all():
        return "nan"
    if reason := duration_reason(len(samples) / sr, min_s, max_s):
        return reason
    frame = max(1, int(0.05 * sr))
    n = max(1, len(samples) // frame)
    power = np.mean(np.square(np.asarray(samples[: n * frame], dtype=np.float64)).reshape(n, -1), axis=1)
    if np.sum(power > 10 ** (silence_dbfs / 10)) < min(3, n):
        return "silent"
    return None


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
