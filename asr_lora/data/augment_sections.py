"""Augmentation sections, their keys and defaults: the one table the Augmenter (`augment.py`)
and the typed config schema (`config.py`) are both built from. Kept apart from `augment.py` so
that reading the config schema does not import torch."""

from __future__ import annotations

from typing import Any

WAVE_SECTIONS = ("tempo", "pitch", "eq", "room", "noise", "telephone", "codec", "gain")  # application order

SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    # Speaking rate, pitch kept (audiomentations.TimeStretch, signalsmith stretch).
    "tempo": {"enabled": False, "prob": 0.3, "rate": [0.9, 1.1]},
    # Voice pitch, duration kept (audiomentations.PitchShift).
    "pitch": {"enabled": False, "prob": 0.3, "semitones": [-2.0, 2.0]},
    # Timbre / microphone colour: seven peaking bands (audiomentations.SevenBandParametricEQ).
    "eq": {"enabled": False, "prob": 0.3, "gain_db": [-6.0, 6.0]},
    # Simulated rooms (pyroomacoustics ShoeBox, image sources + ray tracing).
    "room": {"enabled": False, "prob": 0.3, "rt60": [0.2, 0.8], "n_rooms": 16, "seed": 0},
    # Coloured noise at an SNR; f_decay in dB/octave: -6 brown, -3 pink, 0 white (audiomentations.AddColorNoise).
    "noise": {"enabled": False, "prob": 0.4, "snr_db": [10.0, 30.0], "f_decay": [-6.0, 0.0]},
    # Narrow-band telephone channel (audiomentations High/LowPassFilter).
    "telephone": {"enabled": False, "prob": 0.1, "low_hz": [250.0, 350.0], "high_hz": [3000.0, 3600.0]},
    # Lossy codec (audiomentations.Mp3Compression, fast-mp3-augment backend: a wheel, no ffmpeg/lame).
    "codec": {"enabled": False, "prob": 0.2, "bitrate_kbps": [16, 64]},
    # Level (audiomentations.Gain); Whisper's log-mel is not level-invariant.
    "gain": {"enabled": False, "prob": 0.5, "gain_db": [-6.0, 6.0]},
    "specaugment": {
        "enabled": False,
        "n_freq_masks": 2,
        "freq_width": 10,
        "n_time_masks": 2,
        "time_width": 40,
    },
}
