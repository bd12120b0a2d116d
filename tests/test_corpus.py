"""The sg_english inputs, the split plan, and a small real build with its cache."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import soundfile as sf

import asr_lora.data.synthetic.corpus as corpus
from asr_lora.data.synthetic.corpus import (
    CONTROL,
    DEV_CONTROL,
    GENERAL,
    SENTENCES,
    TRAIN_SENTENCES,
    CorpusInputs,
    build_corpus,
    default_cache_dir,
    load_manifest,
    load_sentences,
    load_voices,
    plan_corpus,
)

MANIFEST_FIELDS = {"id", "text", "audio_filepath", "speaker", "accent", "duration", "split", "subset", "source"}


def test_sentence_files_are_big_and_distinct():
    sg, ctl = load_sentences(SENTENCES), load_sentences(CONTROL)  # raises on duplicates / bad lengths
    assert len(sg) >= 600 and len(set(sg)) == len(sg)
    assert len(ctl) >= 150
    assert not set(sg) & set(ctl)
    particles = {"lah", "leh", "lor", "meh", "hor", "sia", "ah"}
    with_particle = [s for s in sg if particles & set(re.findall(r"[a-z]+", s.lower()))]
    assert len(with_particle) > len(sg) / 5


def _words(s):
    return re.findall(r"[a-z']+", s.lower())


def test_general_sentences_are_plain_and_disjoint_from_control():
    gen, ctl, sg = load_sentences(GENERAL), load_sentences(CONTROL), load_sentences(SENTENCES)
    assert len(gen) >= 400
    assert all(6 <= len(s.split()) <= 16 and s.isascii() for s in gen)
    keys = {" ".join(_words(s)) for s in ctl} | {" ".join(_words(s)) for s in sg}
    assert not [s for s in gen if " ".join(_words(s)) in keys]
    ctl_words = [(set(_words(c)), c) for c in ctl]
    near = [(g, c) for g in gen for cw, c in ctl_words if len(set(_words(g)) & cw) >= 0.6 * len(set(_words(g)))]
    assert not near, near[:3]
    singlish = {"lah", "leh", "lor", "meh", "hor", "sia", "makan", "chope", "shiok", "kiasu", "alamak", "paiseh",
                "hdb", "mrt", "hawker", "kopi", "singapore"}
    assert not [s for s in gen if singlish & set(_words(s))]


def test_plan_refuses_general_that_repeats_control():
    ctl = load_sentences(CONTROL)
    with pytest.raises(ValueError, match=r"general_sentences.txt:1: general sentence repeats the control sentence at "
                                         r"data/sg_english/control_sentences.txt:1 "):
        plan_corpus(load_sentences(SENTENCES), ctl, load_voices(), general=[ctl[0].upper()])


@pytest.mark.parametrize("subset, other", [("control", "main"), ("general", "main"), ("general", "control"),
                                           ("train_only", "main"), ("train_only", "control"), ("dev_control", "main"),
                                           ("dev_control", "general"), ("dev_control", "train_only")])
def test_a_sentence_that_could_be_trained_on_and_scored_stops_the_plan_naming_both_lines(subset, other):
    texts = {"main": load_sentences(SENTENCES)[:40], "control": load_sentences(CONTROL)[:10],
             "general": ["My neighbour grows tomatoes in her garden."],
             "train_only": ["The kopi uncle at Bedok always remembers my order lah."],
             "dev_control": ["He fixed the leaking tap before dinner."]}
    texts[subset] = [*texts[subset], texts[other][0].upper()]
    sources = {s: [f"{s}.txt:{i + 1}" for i in range(len(t))] for s, t in texts.items()}
    named = {s: s.replace("_", "-") for s in texts}
    with pytest.raises(ValueError, match=rf"^{subset}.txt:{len(texts[subset])}: {named[subset]} sentence repeats the "
                                         rf"{named[other]} sentence at {other}.txt:1 \(1 such lines\)"):
        plan_corpus(texts["main"], texts["control"], load_voices(), general=texts["general"], sources=sources,
                    train_only=texts["train_only"], dev_control=texts["dev_control"])
    texts[subset].pop()  # and without the repeat, the same inputs plan
    assert plan_corpus(texts["main"], texts["control"], load_voices(), general=texts["general"], sources=sources,
                       train_only=texts["train_only"], dev_control=texts["dev_control"])


def test_load_sentences_rejects_duplicates_and_digits(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("The kopi here very nice lah.\nthe kopi here very nice lah\n")
    with pytest.raises(ValueError, match=r"s.txt:2: repeats line 1"):
        load_sentences(f)
    f.write_text("Chicken rice now costs S$4.50 at Maxwell.\n")
    with pytest.raises(ValueError, match=r"s.txt:1: write numbers and symbols in words"):
        load_sentences(f)


def test_voice_inventory_is_speaker_disjoint_and_covers_engines():
    voices = load_voices()
    assert len({v.id for v in voices}) >= 15
    engines = {v.engine for v in voices}
    assert engines == {"espeak", "flite", "festival", "piper", "pico", "mbrola"}
    by_split = defaultdict(set)
    for v in voices:
        by_split[v.split].add(v)
    # pico and mbrola (unseen engines) and piper (the neural voice) are dev/test only
    # (tests/test_unseen_engine.py).
    assert {v.engine for v in by_split["train"]} == engines - {"pico", "mbrola", "piper"}
    speakers = {s: {v.speaker for v in vs} for s, vs in by_split.items()}
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]


def test_speakers_in_two_splits_are_refused(tmp_path):
    doc = json.loads(corpus.VOICES.read_text())
    doc["voices"][0]["speaker"] = next(v["speaker"] for v in doc["voices"] if v["split"] == "test")
    f = tmp_path / "voices.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="more than one split"):
        load_voices(f)


def _check_disjoint(records):
    sentences, voices = defaultdict(set), defaultdict(set)
    for r in records:
        if r.engine is not None:
            sentences[r.split].add(r.text)
            voices[r.split].add(r.voice)
    for a, b in [("train", "dev"), ("train", "test"), ("dev", "test")]:
        assert not sentences[a] & sentences[b], (a, b)
        assert not voices[a] & voices[b], (a, b)
    assert all(r.split in ("dev", "test") for r in records if r.subset == "control")
    assert all(r.split == "train" and r.id.startswith("gen-") for r in records if r.subset == "general")


def test_full_plan_sizes_and_disjointness():
    general = load_sentences(GENERAL)
    records = plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), load_voices(), seed=0, general=general)
    _check_disjoint(records)
    n = defaultdict(int)
    for r in records:
        n[r.split, r.subset] += 1
    assert 800 <= n["train", "main"] <= 1500
    test_main = Counter(r.part for r in records if r.split == "test" and r.subset == "main")
    assert 150 <= test_main["seen_engine"] <= 300
    # Each held-out part speaks every test sentence once.
    assert 100 <= test_main["unseen_engine"] == test_main["neural"] <= 150
    assert n["train", "control"] == 0
    assert n["train", "general"] == len(general) >= 400  # one voice each
    assert n["dev", "general"] == n["test", "general"] == 0
    gen_voices = defaultdict(int)
    for r in records:
        if r.subset == "general":
            gen_voices[r.voice] += 1
    train_voices = {v.id for v in load_voices() if v.split == "train"}
    assert set(gen_voices) == train_voices and max(gen_voices.values()) - min(gen_voices.values()) <= 1
    assert len({r.id for r in records}) == len(records)
    # Adding general data leaves the main/control plan (and so its cached audio) unchanged.
    without = plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), load_voices(), seed=0)
    assert [(r.id, r.audio_path) for r in without] == [(r.id, r.audio_path) for r in records if r.subset != "general"]
    # Same seed, same plan; another seed, another split.
    again = plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), load_voices(), seed=0, general=general)
    assert [r.id for r in again] == [r.id for r in records]
    other = plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), load_voices(), seed=1)
    assert {r.text for r in other if r.split == "test"} != {r.text for r in records if r.split == "test"}


def test_shipped_train_only_sentences_add_contexts_not_evaluation_text():
    extra, sg = load_sentences(TRAIN_SENTENCES), load_sentences(SENTENCES)  # raises on duplicates / digits
    scored = [set(_words(s)) for s in (*sg, *load_sentences(CONTROL))]  # any of them may be dev or test
    # No train-only line shares 60% of the shorter one's words with a sentence that may be scored.
    near = [s for s in extra if any(len(set(_words(s)) & w) >= 0.6 * min(len(w), len(set(_words(s))))
                                    for w in scored)]
    assert len(extra) >= 400 and not near, near[:3]


def test_train_only_sentences_go_to_train_and_leave_the_rest_of_the_plan():
    sg, ctl, voices = load_sentences(SENTENCES), load_sentences(CONTROL), load_voices()
    extra = ["The kopi uncle at Bedok always remembers my order lah.", "Take the MRT to Toa Payoh, faster."]
    records = plan_corpus(sg, ctl, voices, seed=0, train_only=extra)
    added = [r for r in records if r.id.startswith("sgt-")]
    assert {r.text for r in added} == set(extra) and {(r.split, r.subset) for r in added} == {("train", "main")}
    assert len(added) == 2 * len(extra)  # the main sentences' voices per sentence, all train voices
    assert {r.voice for r in added} <= {v.id for v in voices if v.split == "train"}
    without = plan_corpus(sg, ctl, voices, seed=0)
    assert [(r.id, r.audio_path) for r in without] == [(r.id, r.audio_path) for r in records if r not in added]
    with pytest.raises(ValueError, match=r"extra.txt:2: train-only sentence repeats the main sentence at "):
        plan_corpus(sg, ctl, voices, train_only=[extra[0], sg[5].upper()],
                    sources={"main": [""] * len(sg), "control": [""] * len(ctl), "general": [],
                             "train_only": ["extra.txt:1", "extra.txt:2"]})


def test_shipped_dev_control_sentences_are_plain_and_unlike_every_other_line():
    dev = load_sentences(DEV_CONTROL)  # raises on duplicates / digits
    others = [set(_words(s)) for f in (SENTENCES, CONTROL, GENERAL, TRAIN_SENTENCES) for s in load_sentences(f)]
    near = [s for s in dev if any(len(set(_words(s)) & w) >= 0.6 * min(len(w), len(set(_words(s)))) for w in others)]
    assert len(dev) >= 150 and not near, near[:3]
    assert all(s.isascii() and 6 <= len(s.split()) <= 16 for s in dev)
    singlish = {"lah", "leh", "lor", "meh", "hor", "sia", "makan", "chope", "kopi", "hawker", "mrt", "hdb"}
    assert not [s for s in dev if singlish & set(_words(s))]


def test_dev_control_sentences_join_dev_control_only_and_leave_the_rest_of_the_plan():
    sg, ctl, voices = load_sentences(SENTENCES), load_sentences(CONTROL), load_voices()
    extra = ["The library closes early on public holidays.", "He fixed the leaking tap before dinner.",
             "Our neighbours painted their fence a bright shade of green."]
    records = plan_corpus(sg, ctl, voices, seed=0, dev_control=extra)
    added = [r for r in records if r.id.startswith("dctl-")]
    assert {(r.split, r.subset) for r in added} == {("dev", "control")}
    dev = [v for v in voices if v.split == "dev"]
    by_part = defaultdict(list)
    for r in added:
        by_part[r.part, r.text].append(r.voice)
    # Each part's dev voices read it as they read a control sentence: every reads-all voice, one dealt voice.
    assert {r.part for r in added} == {corpus.part_of(v) for v in dev} == {"seen_engine", "neural", "unseen_engine"}
    for part in {r.part for r in added}:
        reads_all = {v.id for v in dev if v.reads_all and corpus.part_of(v) == part}
        dealt = any(not v.reads_all and corpus.part_of(v) == part for v in dev)
        for text in extra:
            heard = by_part[part, text]
            assert reads_all <= set(heard) and len(heard) == len(set(heard)) == len(reads_all) + dealt
    without = plan_corpus(sg, ctl, voices, seed=0)
    assert [(r.id, r.audio_path) for r in without] == [(r.id, r.audio_path) for r in records if r not in added]
    with pytest.raises(ValueError, match=r"more.txt:2: dev-control sentence repeats the general sentence at g.txt:1 "):
        plan_corpus(sg, ctl, voices, general=["A plain sentence about the weather today."],
                    dev_control=[extra[0], "a plain sentence about the WEATHER today"],
                    sources={"main": [""] * len(sg), "control": [""] * len(ctl), "general": ["g.txt:1"],
                             "train_only": [], "dev_control": ["more.txt:1", "more.txt:2"]})


def test_dev_control_sentences_are_opt_in(tmp_path):
    assert CorpusInputs.of().dev_control is None is CorpusInputs().dev_control
    assert CorpusInputs.of(dev_control=str(DEV_CONTROL)).dev_control == DEV_CONTROL
    own = CorpusInputs.of("drugs", tmp_path / "d.txt", control=tmp_path / "c.txt", dev_control=tmp_path / "e.txt")
    assert own.dev_control == tmp_path / "e.txt"


def test_train_only_sentences_are_opt_in(tmp_path):
    assert CorpusInputs.of().train_sentences is None
    assert CorpusInputs.of("drugs", tmp_path / "d.txt").train_sentences is None
    own = CorpusInputs.of("drugs", sentences=tmp_path / "d.txt", train_sentences=tmp_path / "more.txt")
    assert own.train_sentences == tmp_path / "more.txt"
    assert CorpusInputs.of(train_sentences=str(TRAIN_SENTENCES)).sentences == SENTENCES


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ASR_LORA_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "corpora" / "sg_english"


@pytest.mark.slow
def test_small_build_manifest_split_and_cache(tmp_path):
    out = tmp_path / "sg"
    manifest = build_corpus(out, seed=0, workers=2, max_sentences=12, progress=False)
    assert manifest == out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    records = load_manifest(manifest)
    assert len(rows) == len(records) > 12
    for row in rows:
        assert MANIFEST_FIELDS <= set(row), row
        info = sf.info(row["audio_filepath"])
        assert (info.samplerate, info.channels) == (16000, 1)
        assert row["duration"] == pytest.approx(info.duration, abs=1e-3)
        if row["subset"] == "main":
            assert {"engine", "voice"} <= set(row)
    _check_disjoint(records)
    assert {r.split for r in records if r.subset == "main"} == {"train", "dev", "test"}
    assert {r.split for r in records if r.subset == "general"} == {"train"}

    info = json.loads((out / "corpus_info.json").read_text())
    assert info["synthetic"] is True and info["seed"] == 0
    assert info["utterances"] == len(rows)
    assert set(info["input_files_sha256"]) == {"sentences:sg_sentences.txt", "control:control_sentences.txt",
                                               "general:general_sentences.txt", "voices:voices.json"}
    assert info["counts"]["train"]["general"] == 3  # max(1, 12 // 4)
    # Unseen-engine part (tests/test_unseen_engine.py): rendered, in dev and test, counted per part.
    assert {r.split for r in records if r.part == "unseen_engine"} == {"dev", "test"}
    assert info["parts"]["test"]["unseen_engine/main"] == info["parts"]["test"]["seen_engine/main"] // 2
    assert "general" not in info["counts"]["dev"] and "general" not in info["counts"]["test"]
    real = [r for r in records if r.engine is None]
    if info["real_control"]["included"]:
        assert real and all(r.split == "test" and r.subset == "control" for r in real)
    else:
        assert not real and "pocketsphinx" in info["real_control"]["reason"]

    # Second call: nothing re-rendered, nothing rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert build_corpus(out, seed=0, max_sentences=12, progress=False) == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes

    # A lost file is re-rendered, the others are left alone.
    lost = next(r for r in records if r.engine is not None)
    Path(lost.audio_path).unlink()
    build_corpus(out, seed=0, max_sentences=12, progress=False)
    assert Path(lost.audio_path).is_file()
    assert json.loads((out / "corpus_info.json").read_text())["rendered"] == 1
    kept = [p for p in mtimes if p.suffix == ".wav" and p != Path(lost.audio_path)]
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in kept)
