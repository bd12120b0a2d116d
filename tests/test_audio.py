"""Decoding, resampling, checks and augmentation in asr_lora.audio, on audio generated here."""

from __future__ import annotations

import random
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures_build import tone, write_tone

from asr_lora.data.audio import AudioError, check_audio, load_audio, peak_dbfs, rms_dbfs
from asr_lora.data.augment import WAVE_SECTIONS, Augmenter, reverberate, simulate_rooms, spec_augment

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
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match="folder.wav: a directory, not an audio file"):
        load_audio(tmp_path / "folder.wav")
    with pytest.raises(AudioError, match="-: audio from standard input is not read"):
        load_audio("-")


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
    click = np.zeros(SR, dtype=np.float32)
    click[SR // 2: SR // 2 + 16] = 0.9
    assert check_audio(click, SR) == "silent"  # a lone click is not sound to transcribe


def test_quiet_speech_and_speech_before_a_long_pause_are_not_silent():
    """Whole-file RMS refused both: -63 dBFS RMS speech, and a clip whose speech is a tenth of it."""
    quiet = np.concatenate([tone(0.3, amp=0.005), np.zeros(int(3.7 * SR), dtype=np.float32)])
    assert rms_dbfs(quiet) < -60 and check_audio(quiet, SR) is None  # a short quiet word: -46 dBFS peak
    pause = np.concatenate([tone(1.0), np.zeros(28 * SR, dtype=np.float32)])
    assert rms_dbfs(pause) < -15 and check_audio(pause, SR) is None
    assert check_audio(np.concatenate([1e-4 * tone(1.0), np.zeros(10 * SR, dtype=np.float32)]), SR) == "silent"


def test_loudness():
    full = tone(1.0, amp=1.0)
    assert peak_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert rms_dbfs(full) == pytest.approx(-3.01, abs=0.02)
    assert peak_dbfs(np.zeros(10)) == rms_dbfs(np.zeros(10)) == float("-inf")


# ------------------------------------------------------------------------------------ augmentation


def only(section: str, **keys) -> Augmenter:
    """An Augmenter with one wave section on, always firing."""
    return Augmenter({section: {"enabled": True, "prob": 1.0, **keys}})


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(10 * np.log10(power[(f >= lo) & (f < hi)].sum() + 1e-20))


@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_tempo_changes_length_not_pitch(rate):
    x = tone(1.0, freq=500.0)
    y = only("tempo", rate=[rate, rate])(x, np.random.default_rng(0))
    assert abs(len(y) - len(x) / rate) <= 0.01 * len(x)
    assert dominant_hz(y, SR) == pytest.approx(500, abs=5)


def test_tempo_never_slows_a_clip_past_whisper_s_30_s_window():
    """A 29.5 s clip at rate 0.9 became 32.8 s: the log-mel cut its end, the label kept every word."""
    x = tone(29.5, freq=300.0)
    slowed = only("tempo", rate=[0.9, 0.9])
    assert len(slowed(x, np.random.default_rng(0))) == len(x)  # left as it was
    assert len(slowed(tone(20.0), np.random.default_rng(0))) > 20.0 * SR  # a shorter clip is still slowed


@pytest.mark.parametrize("semitones", [-2.0, 2.0])
def test_pitch_changes_pitch_not_length(semitones):
    x = tone(1.0, freq=500.0)
    y = only("pitch", semitones=[semitones, semitones])(x, np.random.default_rng(0))
    assert len(y) == len(x)
    assert dominant_hz(y, SR) == pytest.approx(500 * 2 ** (semitones / 12), rel=0.02)


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_hits_requested_snr(snr):
    x = tone(1.0, amp=0.3)
    y = only("noise", snr_db=[snr, snr], f_decay=[0.0, 0.0])(x, np.random.default_rng(3))
    assert snr_db(x, y) == pytest.approx(snr, abs=0.5)


def test_brown_noise_is_low_heavy_and_white_is_flat():
    x = np.zeros(2 * SR, dtype=np.float32)
    x[::400] = 1.0  # a click train: flat spectrum, so the noise's colour shows in the difference
    brown = only("noise", snr_db=[0.0, 0.0], f_decay=[-6.0, -6.0])(x, np.random.default_rng(0)) - x
    white = only("noise", snr_db=[0.0, 0.0], f_decay=[0.0, 0.0])(x, np.random.default_rng(0)) - x
    assert band_db(brown, 100, 200) - band_db(brown, 4000, 4100) > 20
    assert abs(band_db(white, 100, 200) - band_db(white, 4000, 4100)) < 3


def test_telephone_band_cuts_lows_and_highs():
    aug = only("telephone")
    for hz, kept in [(100.0, False), (1000.0, True), (6000.0, False)]:
        x = tone(1.0, freq=hz, amp=0.3)
        y = aug(x, np.random.default_rng(0))
        drop = rms_dbfs(x) - rms_dbfs(y)
        assert (abs(drop) < 1.5) if kept else (drop > 15), (hz, drop)


def test_codec_keeps_length_and_most_of_the_signal():
    x = tone(1.0, freq=700.0, amp=0.3)
    y = only("codec", bitrate_kbps=[32, 32])(x, np.random.default_rng(0))
    assert len(y) == len(x) and not np.allclose(x, y)
    assert snr_db(x, y) > 5  # lossy but aligned: no added delay


def test_gain_and_eq():
    x = tone(1.0, amp=0.1)
    assert rms_dbfs(only("gain", gain_db=[6.0, 6.0])(x, np.random.default_rng(0))) == pytest.approx(
        rms_dbfs(x) + 6.0, abs=0.01)
    clicks = np.zeros(SR, dtype=np.float32)
    clicks[::200] = 0.5
    y = only("eq", gain_db=[-12.0, 12.0])(clicks, np.random.default_rng(1))
    assert len(y) == len(clicks)
    bands = [(100, 200), (400, 800), (1600, 3200), (4000, 7000)]
    changes = [band_db(y, *b) - band_db(clicks, *b) for b in bands]
    assert max(changes) - min(changes) > 3  # the timbre moved, not only the level


def test_simulated_rooms_are_seeded_and_reverberant():
    a, b = simulate_rooms(2, SR, (0.4, 0.6), seed=7), simulate_rooms(2, SR, (0.4, 0.6), seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], simulate_rooms(1, SR, (0.4, 0.6), seed=8)[0])
    for rir in a:
        assert int(np.argmax(np.abs(rir))) == 0  # direct path first: reverb adds no delay
        energy = np.cumsum(rir[::-1] ** 2)[::-1]
        tail = energy[int(0.1 * SR)] / energy[0]  # energy left after 100 ms
        assert 1e-4 < tail < 0.5


def test_reverb_keeps_length_and_level():
    x = tone(1.0)
    rir = simulate_rooms(1, SR, (0.3, 0.6), seed=0)[0]
    y = reverberate(x, rir)
    assert len(y) == len(x) and y.dtype == np.float32
    assert rms_dbfs(y) == pytest.approx(rms_dbfs(x), abs=0.01)
    assert not np.allclose(x, y)
    room = Augmenter({"room": {"enabled": True, "prob": 1.0, "n_rooms": 2, "rt60": [0.3, 0.6]}})
    out = room(x, np.random.default_rng(0))
    assert any(np.array_equal(out, reverberate(x, r)) for r in room.rirs)


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


CONFIG = {s: {"enabled": True, "prob": 0.7} for s in WAVE_SECTIONS} | {
    "room": {"enabled": True, "prob": 0.7, "n_rooms": 3},
    "specaugment": {"enabled": True, "n_freq_masks": 2, "freq_width": 10, "n_time_masks": 2, "time_width": 20},
}


@pytest.fixture(scope="module")
def full_augmenter():
    return Augmenter(CONFIG)


def test_augmenter_is_deterministic_per_seed(full_augmenter):
    aug, x = full_augmenter, tone(1.0)
    a, b = aug(x, np.random.default_rng(42)), aug(x, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    outputs = {aug(x, np.random.default_rng(seed)).tobytes() for seed in range(6)}
    assert len(outputs) == 6
    # A fresh Augmenter built from the same config reproduces the same clip (rooms included).
    np.testing.assert_array_equal(a, Augmenter(CONFIG)(x, np.random.default_rng(42)))
    logmel = np.zeros((80, 100), dtype=np.float32) + np.arange(100, dtype=np.float32)
    np.testing.assert_array_equal(
        aug.spec(logmel, np.random.default_rng(5)), aug.spec(logmel, np.random.default_rng(5))
    )


def test_augmenter_leaves_global_random_states_alone(full_augmenter):
    random.seed(1)
    np.random.seed(1)
    expected = (random.random(), np.random.random())
    random.seed(1)
    np.random.seed(1)
    for seed in range(4):
        full_augmenter(tone(0.5), np.random.default_rng(seed))
    assert (random.random(), np.random.random()) == expected


def test_one_sections_outcome_does_not_shift_the_next():
    """The gain drawn for a clip is the same whether or not the noise before it fired."""
    x = tone(0.5, amp=0.1)
    levels = []
    for noise_prob in (0.0, 1.0):  # 60 dB SNR: the noise itself moves the level by < 0.001 dB
        aug = Augmenter({"noise": {"enabled": True, "prob": noise_prob, "snr_db": [60.0, 60.0]},
                         "gain": {"enabled": True, "prob": 1.0, "gain_db": [-6.0, 6.0]}})
        levels.append([rms_dbfs(aug(x, np.random.default_rng(seed))) for seed in range(4)])
    np.testing.assert_allclose(levels[0], levels[1], atol=0.01)
    assert np.ptp(levels[0]) > 0.5  # the gains themselves vary with the seed


def test_augmenter_off_by_default_and_strict_config():
    x = tone(0.5)
    assert Augmenter()(x, np.random.default_rng(0)) is x
    assert Augmenter({"pitch": {"enabled": False}}).spec(x, np.random.default_rng(0)) is x
    with pytest.raises(ValueError, match="snr"):
        Augmenter({"noise": {"enabled": True, "snr": [5, 10]}})
    with pytest.raises(ValueError, match="unknown augmentation section"):
        Augmenter({"speed": {}})
    with pytest.raises(ValueError, match="unknown augmentation section 'enabled'"):
        Augmenter({"enabled": True})  # the Hydra group's switch is the caller's to strip
    with pytest.raises(ValueError, match="prob"):
        Augmenter({"gain": {"enabled": True, "prob": 1.5}})


def test_default_group_builds_an_augmenter():
    """conf/augment/default.yaml, as the job builds it, is a valid Augmenter config with every effect on."""
    from hydra import compose, initialize_config_dir

    from asr_lora.config import CONF_DIR
    from asr_lora.data.augment import build_augmenter

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["augment=default", "augment.room.n_rooms=1"])
    assert cfg.augment.enabled is True and cfg.augment.copies == 0  # per batch unless asked to pre-render
    aug = build_augmenter(cfg.augment)
    assert all(aug.on(s) for s in (*WAVE_SECTIONS, "specaugment"))
    y = aug(tone(1.0), np.random.default_rng(0))
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_prerender_renders_reproducible_takes_that_keep_labels():
    from datasets import Dataset

    from asr_lora.data.augment import prerender

    aug = Augmenter({"tempo": {"enabled": True, "prob": 1.0, "rate": [0.8, 0.8]},
                     "noise": {"enabled": True, "prob": 1.0, "snr_db": [20.0, 20.0]}})
    clips = [tone(0.5 + 0.25 * i) for i in range(3)]
    ds = Dataset.from_dict({"id": ["a", "b", "c"], "audio": clips, "labels": [[1, 2], [3], [4, 5, 6]],
                            "duration": [len(c) / 16000 for c in clips]})
    out = prerender(ds, aug, copies=2, seed=7, batch_size=2)
    assert out["id"] == ["a~aug1", "a~aug2", "b~aug1", "b~aug2", "c~aug1", "c~aug2"]
    assert out["labels"] == [[1, 2], [1, 2], [3], [3], [4, 5, 6], [4, 5, 6]]
    audio = [np.asarray(a, dtype=np.float32) for a in out["audio"]]
    # tempo 0.8 stretches every take to 1.25x its clip, and the duration column follows.
    for k, a in enumerate(audio):
        assert len(a) == pytest.approx(1.25 * len(clips[k // 2]), rel=0.02)
        assert out["duration"][k] == pytest.approx(len(a) / 16000)
    assert not np.array_equal(audio[0], audio[1])  # two takes of one clip differ
    # The same seed renders the same takes whatever the batch size; another seed does not.
    again = prerender(ds, aug, copies=2, seed=7, batch_size=5)
    for a, b in zip(audio, again["audio"]):
        np.testing.assert_array_equal(a, np.asarray(b, dtype=np.float32))
    other = prerender(ds, aug, copies=2, seed=8)
    assert not np.array_equal(audio[0], np.asarray(other["audio"][0], dtype=np.float32))
    # keep_clean: each clip itself, untouched, before the same takes.
    both = prerender(ds, aug, copies=2, seed=7, keep_clean=True)
    assert both["id"] == ["a", "a~aug1", "a~aug2", "b", "b~aug1", "b~aug2", "c", "c~aug1", "c~aug2"]
    for k, clip in enumerate(clips):
        np.testing.assert_array_equal(np.asarray(both["audio"][3 * k], dtype=np.float32), clip)
        np.testing.assert_array_equal(np.asarray(both["audio"][3 * k + 2], dtype=np.float32), audio[2 * k + 1])
    with pytest.raises(ValueError, match="copies"):
        prerender(ds, aug, copies=0, seed=7)
    with pytest.raises(ValueError, match="training audio"):
        prerender(ds.remove_columns("audio"), aug, copies=1, seed=7)


def test_build_augmenter_takes_the_hydra_group():
    from omegaconf import OmegaConf

    from asr_lora.data.augment import build_augmenter

    assert build_augmenter(OmegaConf.create({"enabled": False, "copies": 0})) is None
    aug = build_augmenter(OmegaConf.create({"enabled": True, "copies": 2, "gain": {"enabled": True},
                                            "specaugment": {"enabled": True}}))
    assert aug.on("gain") and aug.touches_waveform()
    spec = aug.spec_only()
    assert spec.on("specaugment") and not spec.touches_waveform()
    assert build_augmenter(OmegaConf.create({"enabled": True, "gain": {"enabled": True}})).spec_only() is None


def test_training_augmentation_prerenders_only_when_asked():
    from datasets import Dataset
    from omegaconf import OmegaConf

    from asr_lora.data.augment import training_augmentation

    ds = Dataset.from_dict({"id": ["a"], "audio": [tone(0.5)], "labels": [[1]]})
    group = {"enabled": True, "gain": {"enabled": True, "prob": 1.0}, "specaugment": {"enabled": True}}
    same, aug = training_augmentation(OmegaConf.create({**group, "copies": 0}), ds, seed=0)
    assert same is ds and aug.touches_waveform()  # per batch
    takes, spec = training_augmentation(OmegaConf.create({**group, "copies": 2}), ds, seed=0)
    assert takes["id"] == ["a~aug1", "a~aug2"] and not spec.touches_waveform() and spec.on("specaugment")
    kept, _ = training_augmentation(OmegaConf.create({**group, "copies": 1, "keep_clean": True}), ds, seed=0)
    assert kept["id"] == ["a", "a~aug1"]
    with pytest.raises(ValueError, match="streaming"):
        training_augmentation(OmegaConf.create({**group, "copies": 1}), ds, seed=0, streaming=True)
    with pytest.raises(ValueError, match="copies must be >= 1"):
        training_augmentation(OmegaConf.create({**group, "copies": -1}), ds, seed=0)
    assert training_augmentation(OmegaConf.create({"enabled": False, "copies": 2}), ds, seed=0) == (ds, None)
