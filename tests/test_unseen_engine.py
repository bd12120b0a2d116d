"""Engine-disjoint evaluation: dev/test voices of TTS engines no train voice uses,
the headline and the forgetting gate taken from them, and the engines themselves."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from datasets import Dataset

from asr_lora.data.synthetic.corpus import CONTROL, SENTENCES, load_sentences, plan_corpus
from asr_lora.data.synthetic.engines import available_engines, synthesize
from asr_lora.data.synthetic.voices import VOICES, check_parts, load_voices, part_of
from asr_lora.evaluation.scoring import evaluate_systems
from asr_lora.evaluation.summary import headline
from asr_lora.training.console import eval_summary, print_summary

UNSEEN = {"pico", "mbrola"}


def _plan(voices=None, seed=0, max_sentences=None):
    return plan_corpus(load_sentences(SENTENCES), load_sentences(CONTROL), voices or load_voices(), seed,
                       max_sentences)


def test_inventory_holds_unseen_engines_out_of_train():
    voices = load_voices()
    train_engines = {v.engine for v in voices if v.split == "train"}
    unseen = [v for v in voices if part_of(v) == "unseen_engine"]
    assert {v.engine for v in unseen} == UNSEEN and not UNSEEN & train_engines
    assert {v.split for v in unseen} == {"dev", "test"}
    speakers = {s: {v.speaker for v in unseen if v.split == s} for s in ("dev", "test")}
    assert speakers["dev"] and speakers["test"] and not speakers["dev"] & speakers["test"]
    assert all(part_of(v) == "seen_engine" for v in voices
               if v.split != "train" and v.engine not in UNSEEN | {"piper"})


def test_plan_puts_unseen_engines_in_dev_and_test_only():
    records = _plan()
    train_engines = {r.engine for r in records if r.split == "train"}
    unseen = [r for r in records if r.part == "unseen_engine"]
    assert {r.engine for r in unseen} == UNSEEN and not UNSEEN & train_engines
    assert {(r.split, r.subset) for r in unseen} == {(s, sub) for s in ("dev", "test") for sub in ("main", "control")}
    assert all(r.part is None for r in records if r.split == "train")
    assert all(r.part == "seen_engine" for r in records if r.split != "train" and r.engine not in UNSEEN | {"piper"})
    # Its own sentence assignment from the dev/test sentence sets: each dev/test sentence exactly once.
    for split in ("dev", "test"):
        for subset in ("main", "control"):
            seen = {r.text for r in records if (r.split, r.subset, r.part) == (split, subset, "seen_engine")}
            un = [r.text for r in unseen if (r.split, r.subset) == (split, subset)]
            assert sorted(un) == sorted(seen), (split, subset)
    per_voice = defaultdict(int)
    for r in unseen:
        per_voice[r.split, r.voice] += 1
    for split in ("dev", "test"):
        counts = [n for (s, _), n in per_voice.items() if s == split]
        assert len(counts) == 3 and max(counts) - min(counts) <= 2  # dealt evenly over the voices
    assert len({r.id for r in records}) == len(records)


def test_unseen_engine_part_leaves_the_cached_plan_unchanged():
    voices = load_voices()
    without = [v for v in voices if part_of(v) != "unseen_engine"]
    for kw in ({}, {"seed": 3, "max_sentences": 40}):
        full = _plan(voices, **kw)
        old = _plan(without, **kw)
        assert [(r.id, r.audio_path) for r in old] == [(r.id, r.audio_path) for r in full
                                                        if r.part != "unseen_engine"]


def _doc():
    return json.loads(VOICES.read_text(encoding="utf-8"))


def test_unseen_engine_in_train_is_refused(tmp_path):
    f = tmp_path / "voices.json"
    doc = _doc()
    doc["voices"].append({"id": "pico-train", "engine": "pico", "voice": "en-US", "speaker": "svox-other",
                          "accent": "en-us", "split": "train"})
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unseen_engine voices .*pico.* engine that train also uses"):
        load_voices(f)
    doc = _doc()
    next(v for v in doc["voices"] if v["engine"] == "flite" and v["split"] == "dev")["part"] = "unseen_engine"
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"flite-kal16 \(flite\)"):
        load_voices(f)
    doc = _doc()
    next(v for v in doc["voices"] if v["engine"] == "mbrola")["part"] = "seen_engine"
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="marked seen_engine but no train voice"):
        load_voices(f)
    doc = _doc()
    doc["voices"] = [v for v in doc["voices"] if not (v.get("part") == "unseen_engine" and v["split"] == "test")]
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"no unseen_engine voice in \['test'\]"):
        load_voices(f)
    voices = load_voices()
    with pytest.raises(ValueError, match="carry a part"):
        check_parts([replace(voices[0], part="seen_engine")] + voices[1:])


# A small test set with every part. On the training engines the adapter "improves" control speech;
# on the unseen engine it breaks it: the gate must see the unseen engine, not the training ones.
ROWS = [  # id, subset, voice, engine, speaker, reference, base hyp, adapted hyp
    ("s1", "main", "flite-slt", "flite", "cmu-slt", "can lah go home now", "can la go home", "can lah go home now"),
    ("s2", "main", "espeak-en-us-m5", "espeak", "espeak-m5", "the kopi very shiok", "the copy very shock",
     "the kopi very shiok"),
    ("u1", "main", "pico-en-gb", "pico", "svox-kh", "can lah go home now", "can la go home", "can la go home now"),
    ("u2", "main", "mbrola-us1", "mbrola", "mbrola-us1", "the kopi very shiok", "the copy very shock",
     "the copy very shiok"),
    ("sc1", "control", "flite-slt", "flite", "cmu-slt", "please close the door", "please close a door",
     "please close the door"),
    ("sc2", "control", "espeak-en-us-m5", "espeak", "espeak-m5", "the weather is nice", "a weather is nice",
     "the weather is nice"),
    ("uc1", "control", "pico-en-gb", "pico", "svox-kh", "please close the door", "please close the door",
     "please close a floor"),
    ("uc2", "control", "mbrola-en1", "mbrola", "mbrola-en1", "the weather is nice", "the weather is nice",
     "a weather was nice"),
    ("r1", "control", "", "", "librivox-austen-reader", "it was a fine day", "it was a fine day", "it was a fine day"),
]


def _evaluate(tmp_path, rows=ROWS, pre=None, systems=("base", "adapted"), terms=None):
    ds = Dataset.from_dict({
        "id": [r[0] for r in rows], "subset": [r[1] for r in rows], "voice": [r[2] for r in rows],
        "engine": [r[3] for r in rows], "speaker": [r[4] for r in rows], "accent": ["x"] * len(rows),
        "text": [r[5] for r in rows]})
    ecfg = SimpleNamespace(beam_size=1, batch_size=4, max_new_tokens=32, n_bootstrap=50, worst_n=3,
                           max_control_degradation=0.05)
    pre = pre or {"base": [r[6] for r in rows], "adapted": [r[7] for r in rows]}
    info = {"synthetic": True, "corpus": {"name": "sg-mini"}, "split": "test"}
    return evaluate_systems(None, None, ds, ecfg, tmp_path, info, systems, precomputed=pre, progress=False,
                            terms=terms)


def test_headline_and_gate_come_from_the_unseen_engine(tmp_path):
    ev = _evaluate(tmp_path)
    assert ev["lead_part"] == "unseen_engine" and ev["lead"]["part"] == "unseen_engine"
    assert list(ev["parts"]) == ["unseen_engine", "seen_engine", "real"]
    un, seen = ev["parts"]["unseen_engine"], ev["parts"]["seen_engine"]
    assert un["engines"] == ["mbrola", "pico"] and seen["engines"] == ["espeak", "flite"]
    # Nine reference words a part ("la" is not "lah"). Seen engines: 4 -> 0 errors (all gone);
    # unseen: 4 -> 2 (half gone).
    assert seen["wer_base"] == pytest.approx(4 / 9) and seen["relative_wer_reduction"] == pytest.approx(1.0)
    assert un["wer_base"] == pytest.approx(4 / 9) and un["wer_adapted"] == pytest.approx(2 / 9)
    assert un["relative_wer_reduction"] == pytest.approx(0.5)
    assert ev["paired"]["part"] == "unseen_engine" and "paired_all" in ev

    gate = ev["forgetting"]
    assert gate["decided_on"] == ["unseen_engine", "real"]
    # Unseen control 0/8 -> 4/8, real 0/5 -> 0/5: pooled 0 -> 4/13, so the gate fails although the
    # training-engine control speech got better.
    assert gate["control_wer_base"] == 0 and gate["control_wer_adapted"] == pytest.approx(4 / 13)
    assert gate["passed"] is False
    assert gate["rows"]["seen_engine"]["relative_degradation"] == pytest.approx(-1.0)
    assert gate["rows"]["seen_engine"]["decides"] is False and gate["rows"]["real"]["decides"] is True
    assert gate["rows"]["real"]["n_utts"] == 1 and gate["rows"]["real"]["within_limit"] is True

    h = headline(ev, "adapted")
    assert {"part", "wer", "ci_low", "ci_high", "wer_no_particles", "wer_raw", "control_wer", "control_ci",
            "by_part", "pooled"} <= set(h)
    assert h["part"] == "unseen_engine" and h["wer"] == pytest.approx(2 / 9)
    assert h["by_part"]["seen_engine"]["wer"] == 0 and h["pooled"]["wer"] == pytest.approx(2 / 18)
    assert "wer" not in h["by_part"]["real"] and h["by_part"]["real"]["control_wer"] == 0

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["lead"]["relative_wer_reduction"] == pytest.approx(0.5)
    md = (tmp_path / "report.md").read_text()
    assert md.index("Headline: speech from TTS engines held out of training") < md.index("## Summary")
    lead = md.index("unseen TTS engine (mbrola, pico) | Singapore English")
    assert lead < md.index("training TTS engines (new voices) (espeak, flite) | Singapore English")
    assert "decision: unseen TTS engine + real recorded speech" in md and "Forgetting gate: FAIL" in md
    csv_head = (tmp_path / "per_utterance.csv").read_text().splitlines()[0]
    assert csv_head.endswith(",engine,part")


def test_run_summary_leads_with_unseen_engine(tmp_path, capsys, monkeypatch):
    summary = {"recipe": "sg_english", "run_dir": str(tmp_path), "params": {"trainable": 1, "total": 2},
               "train": {"steps": 1, "seconds": 1.0}, "eval": eval_summary(_evaluate(tmp_path), "test")}
    e = summary["eval"]
    assert e["part"] == "unseen_engine" and e["relative_wer_reduction"] == pytest.approx(0.5)
    assert e["base"]["wer"] == pytest.approx(4 / 9) and e["parts"]["seen_engine"]["relative_wer_reduction"] == 1
    monkeypatch.setenv("COLUMNS", "200")
    print_summary(summary)
    out = capsys.readouterr().out
    assert out.index("base WER (unseen TTS engine, norm)") < out.index("base WER (training TTS engines")
    assert out.index("relative WER reduction (unseen TTS engine)") < out.index("base WER (training TTS engines")
    assert "50.0%" in out and "forgetting gate (unseen TTS engine+real recorded speech)" in out
    assert "export" not in out  # export disabled: no row


@pytest.mark.parametrize("exported, shown", [
    ({"error": "ExportRefused: export refused: forgetting gate failed", "refused": ["forgetting gate failed"]},
     "refused (export.force=true overrides)"),
    ({"error": "OSError: disk full"}, "failed (OSError)"),
    ({"paths": {}}, "export"),
])
def test_run_summary_says_what_became_of_the_export(tmp_path, capsys, monkeypatch, exported, shown):
    monkeypatch.setenv("COLUMNS", "200")
    print_summary({"recipe": "r", "run_dir": str(tmp_path), "params": {}, "train": {}, "export": exported})
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "│ export" in line)
    assert (str(tmp_path / "export") if shown == "export" else shown) in row
    # a refusal by the forgetting gate says what to try; other failures do not
    assert ("Averaging the adapters of a few seeds (train.seeds=[42,1,2])" in out) == ("refused" in exported)
    if "refused" in exported:  # a run that averaged seeds already is not told to
        print_summary({"recipe": "r", "run_dir": str(tmp_path), "params": {}, "train": {"seeds": [{}, {}]},
                       "export": exported})
        out = capsys.readouterr().out
        assert "The forgetting gate refused the export" in out and "train.seeds" not in out


def test_no_unseen_part_scores_as_before(tmp_path):
    ev = _evaluate(tmp_path, [r for r in ROWS if r[3] not in UNSEEN])
    assert ev["lead_part"] is None and "lead" not in ev and "paired_all" not in ev
    assert ev["forgetting"]["decided_on"] == ["all"] and "rows" not in ev["forgetting"]
    h = headline(ev, "base")
    assert "part" not in h and "by_part" not in h and h["wer"] == pytest.approx(4 / 9)


@pytest.mark.slow
def test_unseen_engines_render_intelligible_speech(tmp_path):
    """One sentence per unseen engine: valid 16 kHz audio, plausible length and level, and tiny.en
    understands it (these engines are only useful if the base model can read them)."""
    from asr_lora.data.text import normalize
    from asr_lora.evaluation.metrics import corpus_wer
    from asr_lora.model.whisper import load_whisper

    text = "The weather today is warm and the trains are running on time."
    voices = {v.engine: v for v in load_voices() if v.engine in UNSEEN and v.split == "dev"}
    missing = [e for e in UNSEEN if not available_engines()[e]["installed"]]
    assert not missing, f"unseen engines not installed: {[available_engines()[e]['install'] for e in missing]}"
    model, processor = load_whisper("bundled:tiny.en")
    for engine, v in sorted(voices.items()):
        out = tmp_path / f"{v.id}.wav"
        duration = synthesize(text, v, out)
        x, sr = sf.read(out, dtype="float32")
        assert sr == 16000 and x.ndim == 1 and 2.0 < duration < 8.0, (engine, duration)
        assert 0.02 < float(np.sqrt(np.mean(x**2))) < 0.5, engine
        a, b = tmp_path / "a.wav", tmp_path / "b.wav"
        synthesize(text, v, a)
        synthesize(text, v, b)
        assert a.read_bytes() == b.read_bytes(), f"{engine} is not deterministic"
        feats = processor(x, sampling_rate=16000, return_tensors="pt").input_features
        hyp = processor.batch_decode(model.generate(input_features=feats, max_new_tokens=40),
                                     skip_special_tokens=True)[0]
        assert corpus_wer([normalize(text)], [normalize(hyp)])["wer"] < 0.35, (engine, hyp)
