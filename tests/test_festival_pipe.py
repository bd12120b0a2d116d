"""The kept-running festival (data/synthetic/festival_pipe.py) writes exactly text2wave's bytes."""

from __future__ import annotations

import subprocess

import pytest

from asr_lora.data.synthetic import festival_pipe
from asr_lora.data.synthetic.corpus import load_voices
from asr_lora.data.synthetic.engines import festival_setup as _setup

pytestmark = pytest.mark.skipif(not festival_pipe.available(),
                                reason="festival not installed (apt-get install festival)")

# Several sentences in one text (tts_file splits them into utterances joined in one file) and
# a text after others, so state kept between renders would show.
TEXTS = ["Uncle, one kopi siew dai and one teh peng, takeaway ah.",
         "Wah, the queue very long. Can or not? We go other stall lah!",
         "Don't play play, the MRT at Jurong East very crowded one."]


FESTIVAL_VOICES = [pytest.param(v, id=v.id) for v in load_voices() if v.engine == "festival"]


@pytest.mark.parametrize("voice", FESTIVAL_VOICES)
def test_pipe_bytes_equal_text2wave(voice, tmp_path):
    for i, text in enumerate(TEXTS):
        txt = tmp_path / f"{i}.txt"
        txt.write_text(text, encoding="utf-8")
        festival_pipe.render(_setup(voice), str(txt), str(tmp_path / f"pipe{i}.wav"), timeout=60)
        subprocess.run(["text2wave", "-eval", _setup(voice), str(txt), "-o", str(tmp_path / f"cli{i}.wav")],
                       check=True, capture_output=True)
        assert (tmp_path / f"pipe{i}.wav").read_bytes() == (tmp_path / f"cli{i}.wav").read_bytes(), (voice.id, i)


def test_failed_render_raises_and_the_next_one_starts_afresh(tmp_path):
    setup = _setup(next(v for v in load_voices() if v.engine == "festival"))
    with pytest.raises(festival_pipe.FestivalError):
        festival_pipe.render(setup, str(tmp_path / "missing.txt"), str(tmp_path / "x.wav"), timeout=60)
    assert setup not in festival_pipe._PIPES  # the failed process is not reused
    txt = tmp_path / "ok.txt"
    txt.write_text(TEXTS[0], encoding="utf-8")
    festival_pipe.render(setup, str(txt), str(tmp_path / "ok.wav"), timeout=60)
    assert (tmp_path / "ok.wav").stat().st_size > 10_000


def test_quote_in_path_is_refused(tmp_path):
    with pytest.raises(festival_pipe.FestivalError, match="quotes"):
        festival_pipe.render("(voice_kal_diphone)", str(tmp_path / 'a"b.txt'), str(tmp_path / "x.wav"), timeout=5)


def test_long_run_of_corpus_texts_equals_text2wave(tmp_path, monkeypatch):
    """festival-kal's corpus texts, rendered in corpus order as the corpus renders them
    (`synthesize`, a temporary directory per clip), with 'I made a sandwich with cheese, ham and
    tomato.' as the 42nd: one process rendering a run like this once wrote a different wave for
    that 42nd clip, which `RENDERS_PER_PROCESS` exists to prevent."""
    from asr_lora.data.synthetic.corpus import CONTROL, GENERAL, SENTENCES, load_sentences, plan_corpus
    from asr_lora.data.synthetic.engines import synthesize

    voices = load_voices()
    voice = next(v for v in voices if v.id == "festival-kal")
    recs = [r for r in plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), voices, 0,
                                   general=load_sentences(GENERAL)) if r.voice == voice.id]
    sandwich = "I made a sandwich with cheese, ham and tomato."
    texts = [r.text for r in recs[:41]] + [sandwich] + [r.text for r in recs[41:]]
    festival_pipe.close_all()  # start from a fresh process, as a corpus worker does
    for i, text in enumerate(texts):
        synthesize(text, voice, tmp_path / f"p{i}.wav")
    monkeypatch.setattr(festival_pipe, "available", lambda: False)  # synthesize's text2wave path
    for i in (len(texts) - 1, *range(0, len(texts) - 1, 7)):
        synthesize(texts[i], voice, tmp_path / "c.wav")
        assert (tmp_path / f"p{i}.wav").read_bytes() == (tmp_path / "c.wav").read_bytes(), texts[i]


def test_text_without_an_utterance_raises_not_a_stale_header(tmp_path):
    setup = _setup(next(v for v in load_voices() if v.engine == "festival"))
    (tmp_path / "ok.txt").write_text(TEXTS[0], encoding="utf-8")
    festival_pipe.render(setup, str(tmp_path / "ok.txt"), str(tmp_path / "ok.wav"), timeout=60)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(festival_pipe.FestivalError):
        festival_pipe.render(setup, str(tmp_path / "empty.txt"), str(tmp_path / "empty.wav"), timeout=60)


def test_synthesize_falls_back_to_text2wave_when_the_pipe_fails(tmp_path, monkeypatch, caplog):
    from asr_lora.data.synthetic.engines import synthesize

    voice = next(v for v in load_voices() if v.engine == "festival")
    synthesize(TEXTS[1], voice, tmp_path / "pipe.wav")

    def broken(*a, **k):
        raise festival_pipe.FestivalError("stdout never arrived")

    monkeypatch.setattr(festival_pipe, "render", broken)
    synthesize(TEXTS[1], voice, tmp_path / "fallback.wav")
    assert "rendering with text2wave" in caplog.text
    assert (tmp_path / "fallback.wav").read_bytes() == (tmp_path / "pipe.wav").read_bytes()
