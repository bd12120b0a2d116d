"""Training-time augmentation: voice and channel diversity on the waveform, SpecAugment on the log-mel.

Applied on the fly, in training only, to a fresh copy of each clip every step. Evaluation and
any cached features use the unaugmented audio, so scores are comparable across runs and
augmentation settings.

The waveform effects come from libraries rather than hand-written DSP: audiomentations
(TimeStretch, PitchShift, SevenBandParametricEQ, AddColorNoise, High/LowPassFilter for the
telephone band, Mp3Compression through fast-mp3-augment, Gain) and pyroomacoustics (simulated
shoebox rooms). A synthetic TTS corpus has few voices and one clean channel:
these effects move the pitch, tempo, timbre, room, channel and noise of each clip.

Seeding: every random choice draws from the `numpy.random.Generator` the caller passes (the
collator derives one per batch from the run seed), so one seed reproduces one augmented clip.
audiomentations draws its parameters from the global `random` / `numpy.random` states; each
effect therefore runs inside `_seeded`, which seeds both from the caller's generator and puts
the previous global states back afterwards.

Cost (3 s clip, 1 CPU core): pitch shift ~17 ms, time stretch ~15 ms, EQ ~6 ms, MP3 ~8 ms,
noise ~4 ms, band-pass ~3 ms. audiomentations' RoomSimulator builds a new room per call
(~230 ms with ray tracing), which would more than double a CPU step, so rooms are simulated
once, when the Augmenter is built (`room.n_rooms` impulse responses from `room.seed`), and each
clip convolves with one drawn from the generator (~2 ms): the RIR equivalent of Kaldi's
pre-rendered speed-perturbed copies.

Pre-rendering (`augment.copies: K`, `prerender`): on 2 CPU cores the waveform effects cost more
per step than the whole plain step allows, so a run can instead render K augmented copies of every
training clip once, before training, and train on those (SpecAugment still draws per step on
their log-mels, which is cheap). `datasets` fingerprints the render, so a later run with the same
clips, sections, K and seed reuses its cache file next to the prepared corpus. The price is
variety: a clip has K takes instead of a new one every epoch, which matters only when training
sees each clip more than K times."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from asr_lora.core.logs import progress
from asr_lora.core.paths import cache_key
from asr_lora.data.audio import SAMPLE_RATE, speech_frames
from asr_lora.data.augment_sections import SECTION_DEFAULTS, WAVE_SECTIONS

log = logging.getLogger(__name__)


@contextmanager
def _seeded(seed: int):
    """Run a library effect with the global `random` and `numpy.random` states seeded with `seed`,
    restoring both afterwards (audiomentations draws from them; nothing else should notice)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def simulate_rooms(n: int, sr: int, rt60_range: tuple[float, float], seed: int) -> list[np.ndarray]:
    """`n` mono room impulse responses from pyroomacoustics: shoebox rooms of random size, RT60
    drawn from `rt60_range` (wall absorption from Sabine's formula), source and microphone at
    random places; image sources to order 3 plus ray tracing for the tail. Deterministic for a seed."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    for _ in range(n):
        dim = np.array([rng.uniform(3.0, 8.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.2)])
        absorption, _order = pra.inverse_sabine(float(rng.uniform(*rt60_range)), dim)
        room = pra.ShoeBox(dim, fs=sr, materials=pra.Material(absorption), max_order=3, ray_tracing=True,
                           air_absorption=True)
        room.set_ray_tracing(receiver_radius=0.5, n_rays=2000, energy_thres=1e-5)
        room.add_source(dim * rng.uniform(0.15, 0.85, 3))
        room.add_microphone(dim * rng.uniform(0.15, 0.85, 3))
        # The ray tracer is stochastic; pyroomacoustics' package RNG (numpy side and the C++ libroom
        # side) is seeded per room, and numpy's global state too for older code paths.
        seed = int(rng.integers(2**32))
        pra.random.seed(numpy=seed, libroom=seed)
        with _seeded(seed):
            room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rirs.append(rir[int(np.argmax(np.abs(rir))):])  # start at the direct path: no added delay
    return rirs


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response (direct path first); keeps the length and RMS, so a
    later SNR means the same thing."""
    from scipy.signal import oaconvolve

    if len(x) == 0:
        return x.copy()
    y = oaconvolve(x.astype(np.float64), rir)[: len(x)]
    in_rms, out_rms = np.sqrt(np.mean(np.square(x, dtype=np.float64))), np.sqrt(np.mean(y**2))
    return (y * (in_rms / out_rms if out_rms > 0 else 0.0)).astype(np.float32)


def spec_augment(
    logmel: np.ndarray | torch.Tensor,
    rng: np.random.Generator,
    n_freq_masks: int = 2,
    freq_width: int = 10,
    n_time_masks: int = 2,
    time_width: int = 40,
) -> np.ndarray | torch.Tensor:
    """SpecAugment masks on a (..., n_mels, T) log-mel; returns a masked copy of the same type.
    Hand-written on purpose: torchaudio's FrequencyMasking/TimeMasking draw from torch's global
    RNG (not the caller's generator), fill with a constant (0 is not silence on Whisper's
    [-1, 1]-scaled features) and would mask Whisper's 30 s padding. Masks are filled with the
    input's mean, and time masks fall on the speech, not on the padding (masking padding teaches
    nothing, and would make the short training context reach to the mask)."""
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


WINDOW_S = 30.0  # Whisper's input window: the feature extractor cuts a clip there


def _effect(section: str, c: dict[str, Any]):
    """The audiomentations transform of one section (p=1: the Augmenter draws the coin itself)."""
    import audiomentations as am

    if section == "tempo":
        return am.TimeStretch(min_rate=c["rate"][0], max_rate=c["rate"][1], leave_length_unchanged=False,
                              method="signalsmith_stretch", p=1.0)
    if section == "pitch":
        return am.PitchShift(min_semitones=c["semitones"][0], max_semitones=c["semitones"][1],
                             method="signalsmith_stretch", p=1.0)
    if section == "eq":
        return am.SevenBandParametricEQ(min_gain_db=c["gain_db"][0], max_gain_db=c["gain_db"][1], p=1.0)
    if section == "noise":
        return am.AddColorNoise(min_snr_db=c["snr_db"][0], max_snr_db=c["snr_db"][1], min_f_decay=c["f_decay"][0],
                                max_f_decay=c["f_decay"][1], p_apply_a_weighting=0.0, p=1.0)
    if section == "telephone":
        return am.Compose([
            am.HighPassFilter(min_cutoff_freq=c["low_hz"][0], max_cutoff_freq=c["low_hz"][1], p=1.0),
            am.LowPassFilter(min_cutoff_freq=c["high_hz"][0], max_cutoff_freq=c["high_hz"][1], p=1.0),
        ], p=1.0)
    if section == "codec":
        return am.Mp3Compression(min_bitrate=int(c["bitrate_kbps"][0]), max_bitrate=int(c["bitrate_kbps"][1]),
                                 backend="fast-mp3-augment", p=1.0)
    if section == "gain":
        return am.Gain(min_gain_db=c["gain_db"][0], max_gain_db=c["gain_db"][1], p=1.0)
    raise KeyError(section)


class Augmenter:
    """Training-only augmentation built from a config mapping (sections and keys as in `SECTION_DEFAULTS`;
    every section is off unless `enabled: true`, and each enabled wave section runs with its own
    `prob`). Unknown keys raise, so a typo cannot silently turn augmentation off. A top-level
    `enabled` (the Hydra group's master switch) is not a section: pass the sections only.
    Wave order: tempo -> pitch -> eq (the voice) -> room -> noise -> telephone -> codec (the channel)
    -> gain."""

    def __init__(self, config: Mapping[str, Any] | None = None, sr: int = 16000) -> None:
        self.sr = sr
        self.sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in SECTION_DEFAULTS.items()}
        for section, values in dict(config or {}).items():
            if section not in SECTION_DEFAULTS:
                raise ValueError(f"unknown augmentation section {section!r}; known: {sorted(SECTION_DEFAULTS)}")
            for key, value in dict(values or {}).items():
                if key not in SECTION_DEFAULTS[section]:
                    raise ValueError(f"unknown key {section}.{key}; known: {sorted(SECTION_DEFAULTS[section])}")
                # list() also turns an OmegaConf ListConfig into a plain list.
                self.sections[section][key] = list(value) if isinstance(SECTION_DEFAULTS[section][key], list) else value
        for section in WAVE_SECTIONS:
            p = float(self.sections[section]["prob"])
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{section}.prob must be in [0, 1], got {p}")
        self._effects = {s: _effect(s, self.sections[s]) for s in WAVE_SECTIONS if self.on(s) and s != "room"}
        self.rirs: list[np.ndarray] = []
        if self.on("room"):
            r = self.sections["room"]
            self.rirs = simulate_rooms(int(r["n_rooms"]), sr, tuple(r["rt60"]), int(r["seed"]))

    def spec_only(self) -> Augmenter | None:
        """This augmenter with the waveform sections off (what runs per step after `prerender`)."""
        if not self.on("specaugment"):
            return None
        return Augmenter({"specaugment": self.sections["specaugment"]}, self.sr)

    def on(self, section: str) -> bool:
        return bool(self.sections[section]["enabled"])

    def touches_waveform(self) -> bool:
        """True when some augmentation must run before the log-mel (cached features won't do)."""
        return any(self.on(s) for s in WAVE_SECTIONS)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One augmented copy of a mono float32 clip. Every enabled section draws its coin (and,
        if applied, its parameters) from `rng`, in a fixed order; the coin and the seed are drawn
        whether or not the effect fires, so one section's outcome never shifts another's draws."""
        for section in WAVE_SECTIONS:
            if not self.on(section):
                continue
            coin, seed = rng.random(), int(rng.integers(2**32))
            if coin >= self.sections[section]["prob"] or len(wave) == 0:
                continue
            if section == "room":
                wave = reverberate(wave, self.rirs[seed % len(self.rirs)])
                continue
            with _seeded(seed):
                out = self._effects[section](np.ascontiguousarray(wave, dtype=np.float32), sample_rate=self.sr)
            if section == "tempo" and len(out) > WINDOW_S * self.sr >= len(wave):
                continue  # slowed past Whisper's 30 s input: the label would hold words cut from the audio
            wave = out
        return wave

    def spec(self, logmel: np.ndarray | torch.Tensor, rng: np.random.Generator) -> np.ndarray | torch.Tensor:
        if not self.on("specaugment"):
            return logmel
        s = self.sections["specaugment"]
        return spec_augment(
            logmel, rng, s["n_freq_masks"], s["freq_width"], s["n_time_masks"], s["time_width"]
        )


GROUP_KEYS = ("enabled", "copies", "keep_clean")  # the augment group's own keys; the rest are sections


def build_augmenter(augment_cfg) -> Augmenter | None:
    """The Augmenter of a Hydra `augment` group, or None when it is off. `enabled` (the group's
    switch), `copies` and `keep_clean` (`prerender`) are the group's own keys, not sections."""
    if not augment_cfg.enabled:
        return None
    from omegaconf import OmegaConf

    sections = OmegaConf.to_container(augment_cfg, resolve=True)
    return Augmenter({k: v for k, v in sections.items() if k not in GROUP_KEYS})


def training_augmentation(augment_cfg, train_ds, seed: int, streaming: bool = False):
    """(train_ds, per-step Augmenter or None) for a Hydra `augment` group: with `copies` set, the
    waveform effects are rendered into the train split here, once, and only SpecAugment is left
    per step. The one place the training job and bench/train_throughput.py build augmentation."""
    augmenter = build_augmenter(augment_cfg)
    if augmenter is None or not augment_cfg.copies:
        return train_ds, augmenter
    if streaming:
        raise ValueError("augment.copies pre-renders the train split, which streaming never holds; "
                         "use augment.copies=0 (augment per batch) with data.streaming")
    rendered = prerender(train_ds, augmenter, augment_cfg.copies, seed, keep_clean=bool(augment_cfg.get("keep_clean")))
    return rendered, augmenter.spec_only()


def prerender(ds, augmenter: Augmenter, copies: int, seed: int, batch_size: int = 16, keep_clean: bool = False):
    """`copies` augmented takes of every row of a (map-style) `datasets.Dataset`, rendered once.

    Row i's take k draws from `default_rng([seed, 11, i, k])`, so the render is reproducible and
    does not depend on the batch size. Each take keeps the row's labels and metadata, gets id
    `<id>~aug<k>` (per-utterance tables then tell takes apart) and, when the row has one, the
    duration of its augmented audio (tempo changes it). Returns a dataset of len(ds) * copies rows,
    or with `keep_clean` len(ds) * (copies + 1): each row itself first, then its takes, the way
    Kaldi and ESPnet keep the 1.0x copy beside their speed-perturbed ones."""
    if copies < 1:
        raise ValueError(f"augment.copies must be >= 1 to pre-render, got {copies}")
    if "audio" not in ds.column_names:
        raise ValueError(f"augment.copies needs the training audio; the train split has only {ds.column_names}")
    key = cache_key(ds._fingerprint, augmenter.sections, copies, seed, "prerender-1", keep_clean)
    total = len(ds) * (copies + keep_clean)
    with progress(f"pre-rendering {copies} augmented cop{'y' if copies == 1 else 'ies'} ({total} clips)",
                  total) as advance:
        def render(batch, indices):
            out = {col: [] for col in batch}
            for j, i in enumerate(indices):
                for col in batch if keep_clean else ():
                    out[col].append(batch[col][j])
                for k in range(copies):
                    wave = augmenter(np.asarray(batch["audio"][j], dtype=np.float32),
                                     np.random.default_rng([seed, 11, i, k]))
                    for col in batch:
                        out[col].append(batch[col][j])
                    out["audio"][-1] = wave
                    out["id"][-1] = f"{batch['id'][j]}~aug{k + 1}"
                    if "duration" in out:
                        out["duration"][-1] = len(wave) / SAMPLE_RATE
                advance(copies + keep_clean)
            return out

        rendered = ds.map(render, batched=True, batch_size=batch_size, with_indices=True, new_fingerprint=key)
    log.info("augment.copies=%d: training on %d pre-rendered augmented clips (from %d)%s", copies,
             len(rendered), len(ds), ", each clean clip kept beside its takes" if keep_clean else "")
    return rendered
