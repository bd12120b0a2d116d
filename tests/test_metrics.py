import math

import jiwer
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_lora.evaluation.metrics import (
    bootstrap_ci,
    corpus_cer,
    corpus_wer,
    error_analysis,
    group_breakdown,
    paired_bootstrap,
    particle_stats,
    per_utterance_errors,
    utterance_char_errors,
    utterance_errors,
    worst_utterances,
)


def E(sub=0, dele=0, ins=0, hits=0, n_ref=0):
    return {"sub": sub, "dele": dele, "ins": ins, "hits": hits, "n_ref": n_ref}


@pytest.mark.parametrize(
    "ref, hyp, want",
    [
        ("a b c", "a b c", E(hits=3, n_ref=3)),
        ("a b c", "a x c", E(sub=1, hits=2, n_ref=3)),
        ("a b c", "a c", E(dele=1, hits=2, n_ref=3)),
        ("a b c", "a b c d", E(ins=1, hits=3, n_ref=3)),
        ("a b c", "", E(dele=3, n_ref=3)),  # empty hypothesis: WER 1.0
        ("", "x y", E(ins=2, n_ref=0)),  # empty reference: every word is an insertion
        ("", "", E()),
        ("   ", "x", E(ins=1)),
    ],
)
def test_utterance_errors_hand_computed(ref, hyp, want):
    assert utterance_errors(ref, hyp) == want


def test_char_errors():
    assert utterance_char_errors("abc", "abd") == E(sub=1, hits=2, n_ref=3)
    assert utterance_char_errors("", "ab") == E(ins=2)


def test_corpus_wer_hand_computed():
    # 1 sub in 4 words, 1 del in 2 words, 2 ins against an empty reference: (1+1+2)/6
    out = corpus_wer(["the cat sat down", "hello world", ""], ["the bat sat down", "hello", "uh oh"])
    assert out == {"wer": 4 / 6, "sub": 1, "del": 1, "ins": 2, "hits": 4, "n_ref_words": 6}


def test_empty_hypothesis_is_wer_one():
    assert corpus_wer(["a b", "c"], ["", ""])["wer"] == 1.0


def test_all_empty_references():
    assert corpus_wer([""], [""])["wer"] == 0.0
    assert corpus_wer([""], ["x"])["wer"] == math.inf


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="2 references but 1"):
        corpus_wer(["a", "b"], ["a"])


words = st.lists(st.sampled_from(["a", "b", "c", "lah", "kopi"]), max_size=8).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(words.filter(bool), words), min_size=1, max_size=6))
def test_equals_jiwer_on_nonempty_refs(pairs):
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    assert corpus_wer(refs, hyps)["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert corpus_cer(refs, hyps)["cer"] == pytest.approx(jiwer.cer(refs, hyps))


def test_per_utterance_sums_to_corpus():
    refs, hyps = ["a b c", "d e", ""], ["a c", "d e f", "g"]
    rows = per_utterance_errors(refs, hyps)
    c = corpus_wer(refs, hyps)
    assert sum(r["sub"] + r["dele"] + r["ins"] for r in rows) == c["sub"] + c["del"] + c["ins"] == 3
    assert sum(r["n_ref"] for r in rows) == c["n_ref_words"] == 5


def _speakers(n_spk, seed=0):
    rng = np.random.default_rng(seed)
    errs, nref, groups = [], [], []
    for s in range(n_spk):
        for _ in range(5):
            nref.append(10)
            errs.append(int(rng.binomial(10, rng.uniform(0.05, 0.4))))
            groups.append(f"spk{s}")
    return errs, nref, groups


def test_bootstrap_contains_point_and_narrows():
    widths = []
    for n_spk in (4, 16, 64):
        errs, nref, groups = _speakers(n_spk)
        point = sum(errs) / sum(nref)
        lo, hi = bootstrap_ci(errs, nref, groups, n_boot=2000)
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_is_seeded():
    errs, nref, groups = _speakers(8)
    assert bootstrap_ci(errs, nref, groups, seed=3) == bootstrap_ci(errs, nref, groups, seed=3)


def test_bootstrap_single_speaker_has_no_interval():
    lo, hi = bootstrap_ci([1, 2], [10, 10], ["s", "s"])
    assert math.isnan(lo) and math.isnan(hi)


def test_clips_that_name_no_speaker_are_resampled_one_by_one():
    """A manifest without speaker ids used to pool every clip as one "unknown" speaker: no interval,
    no paired test."""
    errs, nref = [1, 2, 0, 3], [10, 10, 10, 10]
    for unnamed in ("unknown", "", None):
        assert bootstrap_ci(errs, nref, [unnamed] * 4) == bootstrap_ci(errs, nref, None)
        assert paired_bootstrap(errs, [0, 1, 0, 1], nref, [unnamed] * 4)["p_value"] == pytest.approx(
            paired_bootstrap(errs, [0, 1, 0, 1], nref, None)["p_value"])
    lo, hi = bootstrap_ci(errs, nref, ["unknown"] * 4)
    assert lo < 0.15 < hi


def test_bootstrap_speaker_resampling_wider_than_utterance():
    # Two speakers, one perfect and one terrible: speaker resampling must see that spread.
    errs, nref = [0] * 10 + [5] * 10, [10] * 20
    groups = ["good"] * 10 + ["bad"] * 10
    lo_s, hi_s = bootstrap_ci(errs, nref, groups)
    lo_u, hi_u = bootstrap_ci(errs, nref, None)
    assert hi_s - lo_s > hi_u - lo_u


def test_paired_known_delta():
    # B fixes exactly 2 errors for every one of 5 speakers: delta = -10/100, every replicate improves.
    errs_a = [3, 4, 5, 6, 7]
    errs_b = [1, 2, 3, 4, 5]
    nref = [20] * 5
    groups = ["s1", "s2", "s3", "s4", "s5"]
    out = paired_bootstrap(errs_a, errs_b, nref, groups)
    assert out["delta"] == pytest.approx(-0.1)
    assert out["wer_a"] == pytest.approx(0.25) and out["wer_b"] == pytest.approx(0.15)
    assert out["low"] <= out["delta"] <= out["high"]
    assert out["low"] == pytest.approx(-0.1) and out["high"] == pytest.approx(-0.1)
    assert out["prob_improvement"] == 1.0
    # No replicate crosses zero: the smallest p a 1,000-replicate bootstrap can show, never 0.
    assert out["p_value"] == pytest.approx(2 / 1001)


def test_paired_identical_systems():
    errs, nref, groups = _speakers(6)
    out = paired_bootstrap(errs, errs, nref, groups)
    assert out["delta"] == 0.0 and out["low"] == 0.0 and out["high"] == 0.0
    assert out["prob_improvement"] == 0.0 and out["p_value"] == 1.0


def test_paired_fix_in_one_speaker_only():
    # B fixes 4 errors of speaker s1 only: point delta -4/40; the interval straddles it, stays <= 0.
    out = paired_bootstrap([4, 2, 2, 2], [0, 2, 2, 2], [10] * 4, ["s1", "s2", "s3", "s4"], n_boot=2000)
    assert out["delta"] == pytest.approx(-0.1)
    assert out["low"] <= -0.1 <= out["high"] <= 0.0
    assert 0.5 < out["prob_improvement"] < 1.0


def _rows():
    return [
        {"id": "u1", "speaker": "s1", "accent": "sg", "sub": 1, "dele": 0, "ins": 0, "n_ref": 10},
        {"id": "u2", "speaker": "s1", "accent": "sg", "sub": 0, "dele": 1, "ins": 1, "n_ref": 10},
        {"id": "u3", "speaker": "s2", "accent": "sg", "sub": 0, "dele": 0, "ins": 0, "n_ref": 5},
        {"id": "u4", "speaker": "s3", "accent": "us", "sub": 2, "dele": 0, "ins": 0, "n_ref": 4,
         "voice": "v1"},
    ]


def test_group_breakdown_by_speaker_and_accent():
    by_spk = group_breakdown(_rows(), "speaker")
    assert by_spk["s1"]["wer"] == pytest.approx(3 / 20)
    assert by_spk["s1"]["n_utts"] == 2 and by_spk["s1"]["n_words"] == 20
    assert by_spk["s1"]["ci_low"] <= by_spk["s1"]["wer"] <= by_spk["s1"]["ci_high"]
    by_acc = group_breakdown(_rows(), "accent")
    assert by_acc["sg"]["wer"] == pytest.approx(3 / 25)
    us = by_acc["us"]
    assert (us["wer"], us["n_utts"], us["n_words"]) == (0.5, 1, 4)
    assert math.isnan(us["ci_low"]) and math.isnan(us["ci_high"])  # one utterance: nothing to resample


def test_group_breakdown_skips_missing_key():
    assert list(group_breakdown(_rows(), "voice")) == ["v1"]
    # a CSV row's voice is "": no "WER by voice" row with an empty label
    assert list(group_breakdown([{**r, "voice": r.get("voice") or ""} for r in _rows()], "voice")) == ["v1"]


def test_error_analysis_counts():
    refs = ["i want kopi lah", "the bus is late", "go home"]
    hyps = ["i want coffee", "the bus is late now", "go go home"]
    ea = error_analysis(refs, hyps)
    assert ("kopi", "coffee", 1) in ea["substitutions"]
    assert ea["deletions"] == [("lah", 1)]
    assert dict(ea["insertions"]) == {"now": 1, "go": 1}


def test_error_analysis_empty_reference_is_insertions():
    assert error_analysis([""], ["oh no"])["insertions"] == [("oh", 1), ("no", 1)]


def test_particle_recall_precision():
    refs = ["can lah", "ok lor", "go ah"]
    hyps = ["can lah", "ok", "go ah meh"]
    st_ = particle_stats(refs, hyps)
    assert (st_["n_ref"], st_["n_hyp"], st_["matched"]) == (3, 3, 2)
    assert st_["recall"] == pytest.approx(2 / 3) and st_["precision"] == pytest.approx(2 / 3)
    assert st_["per_particle"]["lor"] == {"n_ref": 1, "n_hyp": 0, "matched": 0}


def test_particle_stats_without_particles_is_nan():
    st_ = particle_stats(["a b"], ["a b"])
    assert math.isnan(st_["recall"]) and math.isnan(st_["precision"])


def test_worst_utterances_order():
    worst = worst_utterances(_rows(), n=2)
    assert [w["id"] for w in worst] == ["u4", "u2"]  # 2 errors each; the higher WER breaks the tie
    assert worst[0]["wer"] == 0.5 and worst[1]["errors"] == 2


def test_worst_utterances_skips_perfect_rows():
    assert [w["id"] for w in worst_utterances(_rows(), n=10)] == ["u4", "u2", "u1"]


def test_a_control_rise_of_exactly_the_limit_passes_the_gate():
    from asr_lora.evaluation.scoring import forgetting_gate

    for errors_base, errors_adapted, n in ((40, 42, 1000), (60, 63, 100), (120, 126, 2000)):
        gate = forgetting_gate({"control": {"wer": errors_base / n}}, {"control": {"wer": errors_adapted / n}}, 0.05)
        assert gate["passed"], (errors_base, errors_adapted, n, gate["relative_degradation"])
    gate = forgetting_gate({"control": {"wer": 40 / 1000}}, {"control": {"wer": 43 / 1000}}, 0.05)
    assert not gate["passed"]


def test_results_files_are_json_any_parser_reads(tmp_path):
    import json

    import numpy as np

    from asr_lora.core.io import write_json

    path = write_json(tmp_path / "m.json", {"ci": [float("nan"), np.float32(0.25)], "rel": float("inf"),
                                            "n": np.int64(3), "ok": True}, default=float)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"ci": [None, 0.25], "rel": None, "n": 3.0, "ok": True}


def test_a_gate_on_pooled_control_counts_every_part():
    from asr_lora.evaluation.scoring import forgetting_gate

    def scored(a, b):
        return {"control": {"wer": (a + b) / 200},
                "parts": {"neural": {"control": {"wer": a / 100}, "n_control": 5},
                          "seen_engine": {"control": {"wer": b / 100}, "n_control": 5}}}

    gate = forgetting_gate(scored(2, 4), scored(2, 4), 0.05)
    assert gate["decided_on"] == ["all"] and all(r["decides"] for r in gate["rows"].values())
