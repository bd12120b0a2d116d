"""Domain terms: derivation from training text, term recall, the prompt baseline row."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from datasets import Dataset
from test_unseen_engine import ROWS, _evaluate

from asr_lora.evaluation.scoring import eval_systems
from asr_lora.evaluation.summary import systems_table
from asr_lora.evaluation.terms import (Terms, TermsError, build_terms, derive_terms, paired_recall, read_terms_file,
                                       sign_test_p, term_recall, terms_for_split)


@pytest.fixture(scope="module")
def tokenizer(tiny_whisper_dir):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(str(tiny_whisper_dir)).tokenizer


def _terms(*names, seen=()):
    return Terms([tuple(n.split()) for n in names], "test", {n: (1 if n in seen else 0) for n in names})


def test_recall_counts_occurrences_per_utterance():
    t = _terms("kopi", "bukit timah", "lah", seen=("kopi", "bukit timah"))
    refs = ["one kopi two kopi at bukit timah", "kopi lah", "nothing here"]
    hyps = ["one kopi two copy at bukit tima", "kopi kopi kopi lah", "kopi"]
    r = term_recall(refs, hyps, t)
    # kopi: 3 in refs, hyps hold 1 (utt 1) + min(1, 3) (utt 2) = 2; the third utterance has no term.
    assert r["by_term"] == {"bukit timah": {"hits": 0, "n": 1}, "kopi": {"hits": 2, "n": 3},
                            "lah": {"hits": 1, "n": 1}}
    assert (r["hits"], r["n"]) == (3, 5) and r["recall"] == pytest.approx(0.6)
    assert r["seen"] == {"recall": pytest.approx(2 / 4), "hits": 2, "n": 4}
    assert r["unseen"] == {"recall": 1.0, "hits": 1, "n": 1}
    assert [m["term"] for m in r["most_missed"]] == ["bukit timah", "kopi"]


def test_a_term_inside_a_longer_one_is_not_counted_again():
    t = _terms("mee", "mee siam", "bukit", "bukit timah")
    # Said: one "mee siam", one "mee", one "bukit timah"; heard: "mee sian" (a bare "mee"), "bukit timah".
    r = term_recall(["one mee siam and mee at bukit timah"], ["one mee sian and tea at bukit timah"], t)
    assert r["by_term"] == {"mee siam": {"hits": 0, "n": 1}, "mee": {"hits": 1, "n": 1},
                            "bukit timah": {"hits": 1, "n": 1}}
    assert (r["hits"], r["n"]) == (2, 3)


def test_paired_recall_counts_occurrences_won_and_lost():
    t = _terms("kopi", "bukit timah", "lah")
    refs = ["one kopi two kopi at bukit timah", "kopi lah", "nothing here"]
    a = ["one kopi two kopi at bukit timah", "copy la", "kopi"]
    b = ["one copy two kopi at bukit tima", "kopi lah", "nothing"]
    r = paired_recall(refs, a, b, t)
    # utt 1: A 2 kopi + bukit timah, B 1 kopi; utt 2: A nothing, B kopi and lah. The third has no term.
    assert (r["n"], r["hits_a"], r["hits_b"], r["gained"], r["lost"]) == (5, 3, 3, 2, 2)
    assert r["delta"] == 0.0 and r["p_value"] == 1.0
    assert paired_recall(refs, refs, b, t)["gained"] == 2 and paired_recall(refs, refs, b, t)["lost"] == 0


def test_sign_test_p_is_the_exact_binomial():
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0
    assert sign_test_p(10, 0) == pytest.approx(2 / 1024)
    assert sign_test_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert sign_test_p(17, 2) < 0.001 < sign_test_p(6, 2)


def test_terms_derived_from_training_text_only(tokenizer):
    domain = ["We went to Serangoon for kopi and kaya toast.", "The kopi at Serangoon is good."]
    general = ["We went to the market for toast and good coffee."]
    got = [" ".join(t) for t in derive_terms(domain, general, tokenizer)]
    assert "serangoon" in got and "kopi" in got
    assert not {"we", "went", "toast", "good", "the"} & set(got)  # single tokens or general English
    terms = build_terms(domain, general, tokenizer)
    assert terms.train_counts["serangoon"] == 2 and terms.prompt.split(", ")[:2] == ["kopi", "serangoon"]


def test_the_domains_own_words_include_the_ones_the_tokenizer_keeps_whole(tokenizer):
    # What train.context_kl leaves free: every word general English never uses, however it is split.
    domain = ["Can or not lah, the kopi at Serangoon is shiok.", "Got the kopi already lor."]
    general = ["Can you get the coffee or not, it is already late."]
    terms = build_terms(domain, general, tokenizer)
    own = {" ".join(w) for w in terms.own_words}
    assert len(tokenizer.tokenize(" Lah")) == 1 and "lah" not in terms.names  # whole as " Lah": not a term
    assert {"lah", "lor", "kopi", "serangoon"} <= own and set(terms.names) <= own
    assert not {"can", "the", "not", "already", "coffee"} & own  # general English stays held


def test_terms_file_errors_name_the_line(tmp_path, tokenizer):
    f = tmp_path / "terms.txt"
    f.write_bytes(b"# comment\nkopi\n\nBukit Timah\n\xff\xfebad\n")
    with pytest.raises(TermsError, match=r"terms.txt:5: not UTF-8"):
        read_terms_file(f)
    f.write_text("kopi\nKopi\n")
    with pytest.raises(TermsError, match=r"terms.txt:2: 'Kopi' repeats line 1"):
        read_terms_file(f)
    f.write_text("\n# nothing\n")
    with pytest.raises(TermsError, match="no terms"):
        read_terms_file(f)
    with pytest.raises(TermsError, match="eval.terms: no such file"):
        read_terms_file(tmp_path / "missing.txt")
    f.write_text("kopi\nBukit Timah\nzorblax\n")
    t = build_terms(["kopi at bukit timah"], [], tokenizer, f)
    assert t.names == ["kopi", "bukit timah", "zorblax"] and t.summary()["n_unseen_in_training"] == 1


def test_terms_for_split_uses_train_domain_rows(tokenizer):
    ds = Dataset.from_dict({"text": ["Makan at Tampines lah", "Eat at home", "Tampines control"],
                            "subset": ["main", "general", "control"]})
    t = terms_for_split(ds, tokenizer)
    assert "tampines" in t.names and t.train_counts["tampines"] == 1  # control text is not training text
    assert eval_systems(SimpleNamespace(prompt_baseline=True, adapted_prompt=False), True, True) == (
        "base", "prompt", "adapted")
    assert eval_systems(SimpleNamespace(prompt_baseline=True, adapted_prompt=True), False, True) == ("base", "adapted")


def test_evaluation_reports_prompt_baseline_and_term_recall(tmp_path):
    # The prompt baseline gets "kopi" right everywhere, the adapter only on the seen engines.
    pre = {"base": [r[6] for r in ROWS], "prompt": [r[6].replace("copy", "kopi") for r in ROWS],
           "adapted": [r[7] for r in ROWS]}
    terms = _terms("kopi", "shiok", "lah", seen=("kopi", "shiok", "lah"))
    terms.prompt, terms.n_prompt_terms = "kopi, shiok, lah", 3
    ev = _evaluate(tmp_path, pre=pre, systems=("base", "prompt", "adapted"), terms=terms)
    table = systems_table(ev["systems"])
    assert list(table) == ["unseen_engine", "seen_engine", "real", "all"]
    un = table["unseen_engine"]
    assert un["base"]["term_recall"] == 0.0  # "la" and "copy" / "shock": no term heard
    assert un["prompt"]["term_recall"] == pytest.approx(1 / 3)  # kopi
    assert un["adapted"]["term_recall"] == pytest.approx(1 / 3)  # shiok
    assert table["seen_engine"]["adapted"]["term_recall"] == 1.0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["terms"]["n_prompt_terms"] == 3 and "prompt" in saved["systems"]
    report = (tmp_path / "report.md").read_text()
    assert "Zero-shot, term-prompt baseline and adapted" in report and "zero-shot + term prompt" in report
    assert report.index("term-prompt baseline") < report.index("Headline: speech from TTS engines")
    # Occurrence by occurrence on the lead part: the adapter gains shiok and loses kopi.
    assert saved["terms_paired"]["part"] == "unseen_engine"
    assert {k: saved["terms_paired"]["systems"]["adapted"][k] for k in ("gained", "lost", "n")} == \
        {"gained": 1, "lost": 1, "n": 3}
    assert "adapted against the prompt baseline (unseen TTS engine): 1 against 1 of 3" in report
    assert np.isfinite(un["prompt"]["wer"])
    # The scored terms are written out as a terms file the next run can take (data.terms, eval.terms).
    assert read_terms_file(tmp_path / "terms.txt") == terms.terms


SG_SENTENCE = "We ate kaya toast at Tiong Bahru before going to Bukit Timah lah."


@pytest.mark.slow
def test_term_prompt_reaches_the_decoder_in_transcribe(tmp_path, capsys):
    import subprocess

    from asr_lora.transcribe import main

    wav = tmp_path / "sg.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", SG_SENTENCE, "-o", str(wav)], check=True)
    assert main([str(wav), "--output", "json", "--beam-size", "1"]) == 0
    plain = json.loads(capsys.readouterr().out)["text"].lower()
    assert main([str(wav), "--output", "json", "--beam-size", "1", "--prompt", "kaya, Tiong Bahru, Bukit Timah"]) == 0
    prompted = json.loads(capsys.readouterr().out)["text"].lower()
    assert "bukit timah" not in plain and "bukit timah" in prompted  # the prompt, not the audio, changed


@pytest.mark.slow
def test_server_and_transcribe_give_the_evaluated_transcript_at_the_scored_beam(tmp_path, capsys):
    """An adapter whose export summary says beam 5: `transcribe` and the server's engine decode with
    5 beams by default and give the transcript the evaluation (adapter merged in) gave."""
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import common

    from asr_lora.data.audio import load_audio
    from asr_lora.evaluation.scoring import transcribe_split
    from asr_lora.inference.engine import Engine, Job
    from asr_lora.model.adapters import load_adapter
    from asr_lora.model.lora import merged_in_place
    from asr_lora.model.whisper import load_whisper
    from asr_lora.transcribe import main

    wav = tmp_path / "sg.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", SG_SENTENCE, "-o", str(wav)], check=True)
    export = tmp_path / "export"
    adapter = common.random_adapter("bundled:tiny.en", export / "adapter", seed=3, b_std=0.02)
    (export / "export_summary.json").write_text(json.dumps({"beam_size": 5, "wer": {}}))

    model, processor = load_whisper("bundled:tiny.en")
    model = load_adapter(model, adapter)
    ds = Dataset.from_dict({"id": ["a"], "audio": [load_audio(wav).tolist()]})
    with merged_in_place(model):
        evaluated = transcribe_split(model, processor, ds, beam_size=5, progress=False)[0]
        greedy = transcribe_split(model, processor, ds, beam_size=1, progress=False)[0]
    assert evaluated != greedy  # the beam size matters on this clip, so the check below can fail

    capsys.readouterr()  # what loading the model printed above (a log line, when it had to convert) is not main's
    assert main([str(wav), "--adapter", f"sg={adapter}", "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["beam_size"] == 5 and out["text"] == evaluated
    engine = Engine(None, {"sg": adapter})  # the server's engine, mixed mode, beam from the summary
    assert engine.beam_size == 5 and engine.base_name == "bundled:tiny.en"
    audio = load_audio(wav)
    got = engine.decode([Job(audio, "sg"), Job(audio, "base")])
    assert got[0]["text"] == evaluated
