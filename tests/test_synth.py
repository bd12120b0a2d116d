"""TTS backends: every installed voice renders a valid 16 kHz mono WAV, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asr_lora.data.synthetic.corpus import load_voices
from asr_lora.data.synthetic.engines import SAMPLE_RATE, SynthError, Voice, available_engines, synthesize

TEXT = "Uncle, one kopi siew dai and one teh peng, takeaway ah."


SILERO = Voice(id="silero-en10", engine="silero", voice="en_10", speaker="silero-en-10", accent="en-us", split="train")


def _one_voice_per_engine() -> list[Voice]:
    seen: dict[str, Voice] = {}
    for v in [*load_voices(), SILERO]:  # silero: opt-in voices (non-commercial weights), not in the inventory
        seen.setdefault(v.engine, v)
    return list(seen.values())


def _installed(v: Voice) -> bool:
    return available_engines()[v.engine]["installed"]


ENGINE_VOICES = [pytest.param(v, id=v.engine) for v in _one_voice_per_engine()]


def test_inventory_names_install_hint_for_every_engine():
    inv = available_engines()
    assert set(inv) == {"espeak", "flite", "festival", "piper", "silero", "pico", "mbrola"}
    for engine, entry in inv.items():
        assert entry["install"], engine
        assert entry["installed"] == bool(entry["voices"])


@pytest.mark.parametrize("voice", ENGINE_VOICES)
def test_renders_valid_16k_mono_wav(voice, tmp_path):
    if not _installed(voice):
        pytest.skip(f"{voice.engine} not installed: {available_engines()[voice.engine]['install']}")
    out = tmp_path / "x.wav"
    duration = synthesize(TEXT, voice, out)
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, "PCM_16", "WAV")
    # Ten words: anything outside 1.5-10 s means truncated output or a runaway synthesiser.
    assert 1.5 < duration < 10
    assert info.duration == pytest.approx(duration, abs=1e-3)
    x, _ = sf.read(out)
    assert np.abs(x).max() > 0.01


@pytest.mark.parametrize("voice", ENGINE_VOICES)
def test_deterministic(voice, tmp_path):
    if not _installed(voice):
        pytest.skip(f"{voice.engine} not installed")
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    synthesize(TEXT, voice, a, seed=1)
    synthesize(TEXT, voice, b, seed=1)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.slow
def test_every_inventory_voice_is_installed_and_renders(tmp_path):
    for v in load_voices():
        assert synthesize("Can or not, tell me lah.", v, tmp_path / f"{v.id}.wav") > 0.5, v.id


def test_missing_engine_raises_with_install_hint(tmp_path, monkeypatch):
    import asr_lora.data.synthetic.engines as synth

    fake = {e: {"installed": False, "voices": [], "install": synth.INSTALL_HINTS[e]} for e in synth.ENGINES}
    monkeypatch.setattr(synth, "available_engines", lambda: fake)
    voice = Voice(id="flite-rms", engine="flite", voice="rms", speaker="s", accent="en-us", split="train")
    with pytest.raises(SynthError, match=r"flite.*flite-rms.*apt-get install flite"):
        synthesize(TEXT, voice, tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


def test_unknown_voice_raises_instead_of_silent_fallback(tmp_path):
    # flite and espeak-ng quietly substitute a default voice for an unknown name.
    for engine, name, opts in [("flite", "no_such_voice", {}), ("espeak", "en-us", {"variant": "nosuch9"}),
                               ("festival", "no_such_voice", {}), ("pico", "xx-XX", {}), ("mbrola", "us9", {}),
                               ("silero", "en_118", {}), ("piper", "en_US-nobody-medium", {}),
                               ("bogus", "x", {})]:
        voice = Voice(id=f"{engine}-bad", engine=engine, voice=name, speaker="s", accent="x", split="train",
                      options=opts)
        with pytest.raises(SynthError, match=f"{engine}-bad"):
            synthesize(TEXT, voice, tmp_path / "x.wav")


def test_cli_failure_names_engine_voice_and_text(tmp_path, monkeypatch):
    import asr_lora.data.synthetic.engines as synth

    if not available_engines()["espeak"]["installed"]:
        pytest.skip("espeak-ng not installed")
    voice = Voice(id="espeak-en-us", engine="espeak", voice="en-us", speaker="s", accent="en-us", split="train")
    monkeypatch.setattr(synth, "_run", lambda cmd, **kw: synth.subprocess.CompletedProcess(cmd, 1, "", "boom"))
    with pytest.raises(SynthError, match=r"espeak.*espeak-en-us.*takeaway ah.*boom"):
        synthesize(TEXT, voice, tmp_path / "x.wav")


def test_silero_names_the_text_it_cannot_speak_and_where_to_get_its_model(tmp_path, monkeypatch):
    if not _installed(SILERO):
        pytest.skip(f"silero not installed: {available_engines()['silero']['install']}")
    for text in ("12345", "@@@ ###"):  # no letters: the corpus writes numbers out before rendering
        with pytest.raises(SynthError, match=r"silero voice 'silero-en10' failed on text .*English letters"):
            synthesize(text, SILERO, tmp_path / "x.wav")
    import asr_lora.data.synthetic.engines as synth

    monkeypatch.setenv("ASR_LORA_SILERO_MODEL", str(tmp_path / "absent.pt"))
    synth.available_engines.cache_clear()
    try:
        with pytest.raises(SynthError, match=r"silero.*not installed: bash scripts/fetch_silero.sh"):
            synthesize(TEXT, SILERO, tmp_path / "x.wav")
    finally:
        synth.available_engines.cache_clear()


def silero_inventory(tmp_path, *args: str):
    """Run scripts/voices_with_silero.py with `args` and an output path: (its stdout, the inventory read back
    through load_voices, so the split and engine-leakage rules are checked)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "voices_with_silero.py"
    out = tmp_path / "voices.json"
    done = subprocess.run([sys.executable, str(script), *args, str(out)], capture_output=True, text=True, check=True)
    return done.stdout, load_voices(out)


def test_the_silero_study_inventory_is_a_valid_voice_plan(tmp_path):
    stdout, voices = silero_inventory(tmp_path, "10")  # the rules hold with the extra train voices
    assert "12 of them Silero" in stdout
    silero = [v for v in voices if v.engine == "silero"]
    assert len(silero) == 12 and {v.split for v in silero} == {"train"}
    assert len(voices) == len(load_voices()) + 12


def test_the_silero_held_out_inventory_puts_silero_where_piper_joe_was(tmp_path):
    stdout, voices = silero_inventory(tmp_path, "--held-out")  # no Silero or piper voice trains
    assert "5 of them Silero" in stdout
    shipped = load_voices()
    neural = {(v.split, v.engine, v.reads_all) for v in voices if v.part == "neural"}
    assert neural == {("dev", "silero", False), ("dev", "silero", True), ("test", "silero", False)}
    assert not [v for v in voices if v.engine in ("silero", "piper") and v.split == "train"]
    assert [v.id for v in voices if v.engine != "silero"] == [v.id for v in shipped if v.engine != "piper"]
    # The same speaker structure as joe's part: one dealt dev voice and two readers, two dealt test voices.
    for split in ("dev", "test"):
        assert (sorted(v.reads_all for v in voices if v.split == split and v.part == "neural")
                == sorted(v.reads_all for v in shipped if v.split == split and v.part == "neural"))


def test_the_silero_inventory_script_names_an_out_it_cannot_write(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "voices_with_silero.py"
    for out, message in ((tmp_path / "no-such-folder" / "voices.json", "out: no folder"),
                         (tmp_path, "is a directory")):
        done = subprocess.run([sys.executable, str(script), "10", str(out)], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
