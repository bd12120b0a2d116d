"""Respelled takes (data.respell_takes): train clips whose terms an espeak voice says by another
language's rules, under the sentence as written."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from asr_lora.config import CONF_DIR
from asr_lora.data.records import Ledger
from asr_lora.data.sources import read_records
from asr_lora.data.synthetic.corpus import CONTROL, GENERAL, SENTENCES, load_sentences, load_voices, plan_corpus
from asr_lora.data.synthetic.respell import RESPELL_LANGUAGES, _pattern, foreign_phonemes, respell, respelled_takes

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
TERMS = ["kopi", "pulau ubin", "hawker", "jurong"]


@needs_espeak
def test_respelled_takes_are_more_train_takes_of_term_sentences_under_their_written_label():
    voices = load_voices()
    records = plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), voices, seed=0,
                          general=load_sentences(GENERAL))
    takes = respelled_takes(records, TERMS, voices, 2, seed=0)
    pattern = _pattern(TERMS)
    with_terms = {r.id.removesuffix(f"-{r.voice}"): r for r in records
                  if r.split == "train" and r.subset == "main" and pattern.search(r.text)}
    assert len(takes) == 2 * len(with_terms) > 20
    espeak_train = {v.id for v in voices if v.split == "train" and v.engine == "espeak"}
    voices_of = {}
    for r in records:
        voices_of.setdefault(r.id.removesuffix(f"-{r.voice}"), set()).add(r.voice)
    for t in takes:
        sentence = t.id.split("-rs")[0]
        assert (t.split, t.subset, t.part) == ("train", "main", None) and t.voice in espeak_train
        assert t.text == with_terms[sentence].text  # the label is the sentence as written
        assert t.voice not in voices_of[sentence]  # a voice the sentence did not have
        spoken = t.extra["spoken"]
        assert "[[" in spoken and not pattern.search(spoken.replace("[[", " ").replace("]]", " "))
        assert t.extra["respelled_as"] in RESPELL_LANGUAGES
    assert {t.extra["respelled_as"] for t in takes} == set(RESPELL_LANGUAGES)
    assert len({t.id for t in takes} | {r.id for r in records}) == len(takes) + len(records)
    assert len({t.audio_path for t in takes}) == len(takes)
    assert respelled_takes(records, TERMS, voices, 2, seed=0) == takes  # deterministic
    assert respelled_takes(records, TERMS, voices, 0, seed=0) == []
    with pytest.raises(ValueError, match="data.terms"):
        respelled_takes(records, [], voices, 1, seed=0)


@needs_espeak
def test_a_respelled_term_is_said_by_the_other_language_and_the_rest_as_english():
    pattern = _pattern(["johor", "pulau ubin"])
    spoken = respell("We cycled round Pulau  Ubin, then drove to Johor.", pattern, "ms")
    assert spoken == (f"We cycled round [[{foreign_phonemes('pulau ubin', 'ms')}]], then drove to "
                      f"[[{foreign_phonemes('johor', 'ms')}]].")
    english = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us", "johor"], capture_output=True, text=True).stdout
    assert foreign_phonemes("johor", "ms") != english.strip()  # another reading, not English's
    # What the English voice then says: the Malay phonemes for the term, English for the rest.
    said = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us", spoken], capture_output=True, text=True).stdout
    assert foreign_phonemes("johor", "ms") in said and "dr'oUv" in said


@needs_espeak
def test_the_documented_options_render_respelled_takes_and_need_terms(tmp_path):
    voices = [{"id": f"espeak-{n}", "engine": "espeak", "voice": "en-us", "options": {"variant": n},
               "speaker": n, "split": split, **({"part": "seen_engine"} if split != "train" else {})}
              for n, split in (("m1", "train"), ("f2", "train"), ("m3", "train"), ("m4", "dev"), ("f4", "test"))]
    files = {"voices": tmp_path / "voices.json", "terms": tmp_path / "terms.txt"}
    files["voices"].write_text(json.dumps({"voices": voices}))
    files["terms"].write_text("".join(t + "\n" for t in TERMS))
    sg = load_sentences(SENTENCES)
    with_terms = [s for s in sg if _pattern(TERMS).search(s)][:20]
    for role, lines in (("sentences", with_terms + [s for s in sg if s not in with_terms][:12]),
                        ("control", load_sentences(CONTROL)[:6]), ("general", load_sentences(GENERAL)[:4])):
        files[role] = tmp_path / f"{role}.txt"
        files[role].write_text("".join(s + "\n" for s in lines))

    def records(*extra: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["+recipe=sg_english", "data=synthetic", f"data.path={tmp_path / 'c'}",
                                               *(f"data.{role}={p}" for role, p in files.items()), *extra])
        return read_records(cfg.data, Ledger(), progress=False)[0]

    takes = [r for r in records("data.respell_takes=1", "data.respell_languages=[ms]") if "-rs0-" in r.id]
    assert takes and all(r.split == "train" and r.engine == "espeak" for r in takes)
    assert all(r.extra["spoken"] != r.text and r.extra["respelled_as"] == "ms" for r in takes)
    assert all(sf.info(r.audio_path).duration > 0.5 for r in takes)
    assert not [r for r in records() if "-rs0-" in r.id]  # the corpus cache keys on the option
    del files["terms"]
    with pytest.raises(ValueError, match="data.terms"):
        records("data.respell_takes=1")
