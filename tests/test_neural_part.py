"""The natural-voice held-out part: a neural voice whose engine and base voice no train voice
uses, turned into several speakers, leading the report and the forgetting gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asr_lora.data.synthetic.engines import change_speaker
from asr_lora.data.synthetic.voices import VOICES, lead_part, load_voices, part_of
from test_unseen_engine import ROWS, _evaluate, _plan


def test_neural_voices_are_held_out_of_train_in_dev_and_test():
    voices = load_voices()
    neural = [v for v in voices if part_of(v) == "neural"]
    train = [v for v in voices if v.split == "train"]
    assert {v.split for v in neural} == {"dev", "test"}
    assert not {v.engine for v in neural} & {v.engine for v in train}
    assert not {(v.engine, v.voice) for v in neural} & {(v.engine, v.voice) for v in train}
    dev, test = ({v.speaker for v in neural if v.split == s} for s in ("dev", "test"))
    assert dev and test and not dev & test
    # The dev speaker is a changed voice, so no test render is a dev render.
    assert all(v.options.get("change_gender") for v in neural if v.split == "dev")


def test_a_neural_voice_in_train_is_refused(tmp_path):
    doc = json.loads(VOICES.read_text(encoding="utf-8"))
    doc["voices"].append({"id": "piper-train", "engine": "piper", "voice": "en_US-joe-medium", "speaker": "joe-t",
                          "accent": "en-us", "split": "train"})
    f = tmp_path / "voices.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"neural voices .*piper.* engine that train also uses"):
        load_voices(f)


def test_dev_speakers_that_read_all_add_clips_and_leave_the_dealt_plan_as_is():
    voices = load_voices()
    readers = [v for v in voices if v.reads_all]
    assert readers and {(v.split, part_of(v)) for v in readers} == {("dev", "neural")}
    for kw in ({}, {"seed": 3, "max_sentences": 40}):
        full = _plan(voices, **kw)
        dealt = _plan([v for v in voices if not v.reads_all], **kw)
        keep = [(r.id, r.audio_path) for r in full if r.voice not in {v.id for v in readers}]
        assert keep == [(r.id, r.audio_path) for r in dealt]  # test and the rest of dev untouched
        # Each reader speaks every dev sentence of the part once: the dealt dev voice's sentences.
        dev_neural = sorted((r.subset, r.text) for r in dealt if (r.split, r.part) == ("dev", "neural"))
        for v in readers:
            assert sorted((r.subset, r.text) for r in full if r.voice == v.id) == dev_neural


def test_reads_all_outside_a_held_out_part_is_refused(tmp_path):
    doc = json.loads(VOICES.read_text(encoding="utf-8"))
    seen_dev = next(v for v in doc["voices"] if v["split"] == "dev" and v.get("part", "seen_engine") == "seen_engine")
    seen_dev["reads_all"] = True
    f = tmp_path / "voices.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="set reads_all outside a held-out dev/test part"):
        load_voices(f)
    doc = json.loads(VOICES.read_text(encoding="utf-8"))
    next(v for v in doc["voices"] if v.get("reads_all"))["reads_all"] = "false"  # a string, not a boolean
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"voices \['piper-joe-dev-mid'\] give reads_all as something other"):
        load_voices(f)


@pytest.mark.parametrize("text, match", [
    ('{"voices": [', r"voices.json: not a JSON voices file \(Expecting value: line 1 column 13"),
    ('[{"id": "a"}]', r'voices.json: want \{"voices": \[...\]\} at the top level'),
    ('{"voices": [{"id": "a", "voice": "en"}]}', r"voices.json: voice 1 .*: no engine; each voice needs id, engine"),
    ('{"voices": ["espeak"]}', r"voices.json: voice 1 \(espeak\): not an object"),
], ids=["not JSON", "no voices list", "no engine", "not an object"])
def test_a_malformed_voices_file_is_an_error_naming_it(tmp_path, text, match):
    f = tmp_path / "voices.json"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_voices(f)


def _voiced(sr=16000, f0=120.0, seconds=1.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))).astype(np.float32)


def test_change_speaker_moves_the_pitch_and_is_reproducible():
    import parselmouth

    x = _voiced()
    a, b = change_speaker(x, 16000, 1.1, 200.0), change_speaker(x, 16000, 1.1, 200.0)
    assert np.array_equal(a, b)
    f0 = parselmouth.Sound(a.astype(np.float64), 16000).to_pitch().selected_array["frequency"]
    assert np.median(f0[f0 > 0]) == pytest.approx(200, rel=0.1)
    assert np.abs(a).max() <= 0.95 + 1e-6


NEURAL_ROWS = [  # the adapter helps the neural voice's accented speech and keeps its control speech
    ("n1", "main", "piper-joe", "piper", "neural-joe-b", "can lah go home now", "can la go home",
     "can lah go home now"),
    ("nc1", "control", "piper-joe", "piper", "neural-joe-b", "please close the door", "please close the door",
     "please close the door"),
]


def test_the_neural_part_leads_the_headline_and_the_gate(tmp_path):
    assert lead_part({"seen_engine", "unseen_engine", "neural"}) == "neural"
    assert lead_part({"seen_engine", "unseen_engine"}) == "unseen_engine"
    ev = _evaluate(tmp_path, ROWS + NEURAL_ROWS)
    assert ev["lead_part"] == "neural"
    assert list(ev["parts"])[:2] == ["neural", "unseen_engine"]
    assert ev["forgetting"]["decided_on"] == ["neural", "real"]
    # The unseen engine's broken control speech no longer decides the gate; the neural voice's does.
    assert ev["forgetting"]["passed"]
