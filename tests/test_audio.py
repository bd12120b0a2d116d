"""Decoding, resampling, checks and augmentation in asr_lora.audio, on audio generated here."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures_build import tone, write_tone

from asr_lora.audio import (
    AudioError,
    Augmenter,
    add_noise,
    check_audio,
    load_audio,
    peak_dbfs,
    reverberate,
    rms_dbfs,
    spec_augment,
    speed_perturb,
)

SR = 16000


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * sr / len(x)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


# ---------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "ext,kwargs", [("wav", {}), ("flac", {"format": "FLAC"}), ("ogg", {"format": "OGG", "subtype": "VORBIS"})]
)
def test_soundfile_formats(tmp_path, ext, kwargs):
    path = write_tone(tmp_path / f"clip.{ext}", seconds=0.5, **kwargs)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 8000) <= 2 if ext != "ogg" else abs(len(x) - 8000) < 1200
    assert dominant_hz(x, SR) == pytest.approx(440, abs=3)


def _encode_mp3(wav, mp3) -> str | None:
    """Encode with whatever exists here; returns the encoder used or None."""
    try:
        sf.write(str(mp3), sf.read(str(wav))[0], SR, format="MP3")
        return "libsndfile"
    except (sf.LibsndfileError, ValueError, TypeError):
        pass
    if shutil.which("ffmpeg"):
        r = subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(mp3)], capture_output=True, check=False
        )
        if r.returncode == 0:
            return "ffmpeg"
    if shutil.which("sox"):
        r = subprocess.run(["sox", str(wav), str(mp3)], capture_output=True, check=False)
        if r.returncode == 0:
            return "sox"
    return None


def test_mp3(tmp_path):
    wav = write_tone(tmp_path / "clip.wav", seconds=1.0)
    if _encode_mp3(wav, tmp_path / "clip.mp3") is None:
        pytest.skip("no MP3 encoder here: libsndfile < 1.1, and neither ffmpeg nor sox can write MP3")
    x = load_audio(tmp_path / "clip.mp3")
    assert abs(len(x) - SR) < 2000  # encoder padding
    assert dominant_hz(x, SR) == pytest.approx(440, abs=3)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed: no AAC encoder/decoder")
def test_librosa_fallback_for_formats_soundfile_lacks(tmp_path):
    wav = write_tone(tmp_path / "clip.wav", seconds=1.0, sr=44100)
    m4a = tmp_path / "clip.m4a"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True
    )
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(m4a))
    x = load_audio(m4a)
    assert abs(len(x) - SR) < 2000
    assert dominant_hz(x, SR) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("sr", [8000, 22050, 48000])
def test_resampled_to_16k(tmp_path, sr):
    path = write_tone(tmp_path / "clip.wav", seconds=1.0, sr=sr, freq=1000.0)
    x = load_audio(path)
    assert abs(len(x) - SR) <= 1
    assert dominant_hz(x, SR) == pytest.approx(1000, abs=2)


def test_six_channel_downmix(tmp_path):
    t = np.arange(SR) / SR
    channels = np.stack([0.1 * (i + 1) * np.sin(2 * np.pi * 300 * t) for i in range(6)], axis=1).astype(
        np.float32
    )
    path = tmp_path / "surround.wav"
    sf.write(str(path), channels, SR, subtype="FLOAT")
    x = load_audio(path)
    assert x.shape == (SR,)
    np.testing.assert_allclose(x, channels.mean(axis=1), atol=1e-6)


def test_nan_file(tmp_path):
    x = tone()
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert e.value.reason == "nan" and "nan.wav" in str(e.value)


def test_missing_and_zero_byte_files(tmp_path):
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "nope.wav")
    assert e.value.reason == "missing_file" and "nope.wav" in str(e.value)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "zero.wav")
    assert e.value.reason == "empty_file" and "zero.wav" in str(e.value)


@pytest.mark.parametrize("cut,reason", [(30, "unreadable"), (2000, "truncated")])
def test_truncated_wav(tmp_path, cut, reason):
    """Cut inside the header: nothing decodes. Cut inside the data: libsndfile would quietly
    return the stub, which no longer matches its transcript."""
    good = write_tone(tmp_path / "good.wav", seconds=1.0)
    bad = tmp_path / "cut.wav"
    bad.write_bytes(good.read_bytes()[:cut])
    with pytest.raises(AudioError) as e:
        load_audio(bad)
    assert e.value.reason == reason and "cut.wav" in str(e.value)


def test_corrupt_wav(tmp_path):
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"RIFF" + np.random.default_rng(0).bytes(600))
    with pytest.raises(AudioError) as e:
        load_audio(bad)
    assert e.value.reason == "unreadable" and "garbage.wav" in str(e.value)


# ------------------------------------------------------------------------------------------ checks


def test_checks():
    assert check_audio(tone(2.0), SR) is None
    assert check_audio(np.full(SR, np.nan, dtype=np.float32), SR) == "nan"
    assert check_audio(np.zeros(SR, dtype=np.float32), SR) == "silent"
    assert check_audio(tone(40.0), SR) == "too_long"
    assert check_audio(tone(0.05), SR) == "too_short"
    assert check_audio(tone(5.0), SR, max_s=4.0) == "too_long"
    assert check_audio(1e-4 * tone(1.0), SR, silence_dbfs=-60) == "silent"  # about -83 dBFS RMS


def test_loudness():
    full = tone(1.0, amp=1.0)
    assert peak_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert rms_dbfs(full) == pytest.approx(-3.01, abs=0.02)
    assert peak_dbfs(np.zeros(10)) == rms_dbfs(np.zeros(10)) == float("-inf")


# ------------------------------------------------------------------------------------ augmentation


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_length_and_pitch(factor):
    x = tone(1.0, freq=500.0)
    y = speed_perturb(x, SR, factor)
    assert abs(len(y) - len(x) / factor) <= 1
    assert dominant_hz(y, SR) == pytest.approx(500 * factor, abs=3)
    assert speed_perturb(x, SR, 1.0) is x


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_hits_requested_snr(color, snr):
    x = tone(1.0)
    y = add_noise(x, snr, np.random.default_rng(3), color=color)
    assert snr_db(x, y) == pytest.approx(snr, abs=0.01)
    np.testing.assert_array_equal(y, add_noise(x, snr, np.random.default_rng(3), color=color))


def test_pink_noise_is_pink():
    noisy = add_noise(tone(2.0, amp=1.0), 0.0, np.random.default_rng(0), color="pink") - tone(2.0, amp=1.0)
    power = np.abs(np.fft.rfft(noisy)) ** 2
    freqs = np.fft.rfftfreq(len(noisy), 1 / SR)
    low, high = power[(freqs > 100) & (freqs < 200)].mean(), power[(freqs > 4000) & (freqs < 8000)].mean()
    assert low > 10 * high


def test_reverb_keeps_length_and_level():
    x = tone(1.0)
    y = reverberate(x, SR, np.random.default_rng(0), (0.3, 0.6))
    assert len(y) == len(x) and y.dtype == np.float32
    assert rms_dbfs(y) == pytest.approx(rms_dbfs(x), abs=0.01)
    assert not np.allclose(x, y)
    np.testing.assert_array_equal(y, reverberate(x, SR, np.random.default_rng(0), (0.3, 0.6)))


def test_spec_augment_numpy_and_torch():
    logmel = np.random.default_rng(0).normal(size=(80, 300)).astype(np.float32)
    out = spec_augment(logmel, np.random.default_rng(1), 2, 27, 2, 40)
    assert out.shape == logmel.shape and not np.array_equal(out, logmel)
    assert np.isclose(out, logmel.mean()).any(axis=1).any()
    np.testing.assert_array_equal(out, spec_augment(logmel, np.random.default_rng(1), 2, 27, 2, 40))
    t = torch.from_numpy(logmel.copy())
    out_t = spec_augment(t, np.random.default_rng(1), 2, 27, 2, 40)
    assert isinstance(out_t, torch.Tensor)
    torch.testing.assert_close(t, torch.from_numpy(logmel))  # input untouched
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-6)


CONFIG = {
    "speed": {"enabled": True, "factors": [0.9, 1.0, 1.1]},
    "noise": {"enabled": True, "snr_db": [10, 30], "prob": 1.0},
    "reverb": {"enabled": True, "prob": 1.0, "rt60": [0.2, 0.8]},
    "specaugment": {
        "enabled": True,
        "n_freq_masks": 2,
        "freq_width": 10,
        "n_time_masks": 2,
        "time_width": 20,
    },
}


def test_augmenter_is_deterministic_per_seed():
    aug, x = Augmenter(CONFIG), tone(1.0)
    a, b = aug(x, np.random.default_rng(42)), aug(x, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    outputs = {aug(x, np.random.default_rng(seed)).tobytes() for seed in range(6)}
    assert len(outputs) > 1
    logmel = np.zeros((80, 100), dtype=np.float32) + np.arange(100, dtype=np.float32)
    np.testing.assert_array_equal(
        aug.spec(logmel, np.random.default_rng(5)), aug.spec(logmel, np.random.default_rng(5))
    )


def test_augmenter_off_by_default_and_strict_config():
    x = tone(0.5)
    assert Augmenter()(x, np.random.default_rng(0)) is x
    assert Augmenter({"speed": {"enabled": False}}).spec(x, np.random.default_rng(0)) is x
    with pytest.raises(ValueError, match="snr"):
        Augmenter({"noise": {"enabled": True, "snr": [5, 10]}})
    with pytest.raises(ValueError, match="unknown augmentation section"):
        Augmenter({"pitch": {}})
