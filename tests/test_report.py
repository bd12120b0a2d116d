import math

import pytest

from asr_lora.data.text import NORMALIZER_VERSION, normalize
from asr_lora.evaluation.metrics import (
    bootstrap_ci,
    corpus_cer,
    corpus_wer,
    error_analysis,
    group_breakdown,
    paired_bootstrap,
    particle_stats,
    per_utterance_errors,
    worst_utterances,
)
from asr_lora.evaluation.report import pct, render_markdown_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

UTTS = [  # id, speaker, accent, voice, subset, reference, base hyp, adapted hyp
    ("u1", "s1", "sg", "v1", "main", "can [lah] I go (uh) home", "can la i go home", "can lah i go home"),
    ("u2", "s1", "sg", "v1", "main", "the kopi-o very shiok [lor]", "the copy o very shock", "the kopi o very shiok lor"),
    ("u3", "s2", "sg", "v2", "main", "N_A_F_A got exam tomorrow", "nafa got exam tomorrow", "nafa got exam tomorrow"),
    ("u4", "s2", "sg", "v2", "main", "alamak the MRT | late again", "alarm the mrt late again", "alamak the mrt late again"),
    ("u5", "s3", "us", "v3", "control", "the weather is nice today", "the weather is nice today", "the weather is nice today"),
    ("u6", "s4", "us", "v3", "control", "please close the door", "please close the door", "please close a door"),
]


def _system(hyp_col: int) -> tuple[dict, list[dict]]:
    refs_raw = [u[5] for u in UTTS]
    hyps_raw = [u[hyp_col] for u in UTTS]
    sys_: dict = {"wer": {}, "cer": {}}
    groups = [u[1] for u in UTTS]
    for variant, f in (("raw", lambda s: s), ("norm", normalize),
                       ("norm_no_particles", lambda s: normalize(s, particles=False))):
        refs, hyps = [f(r) for r in refs_raw], [f(h) for h in hyps_raw]
        per = per_utterance_errors(refs, hyps)
        errs, nref = [p["sub"] + p["dele"] + p["ins"] for p in per], [p["n_ref"] for p in per]
        lo, hi = bootstrap_ci(errs, nref, groups, n_boot=200)
        sys_["wer"][variant] = {**corpus_wer(refs, hyps), "ci_low": lo, "ci_high": hi}
        sys_["cer"][variant] = {**corpus_cer(refs, hyps), "ci_low": None, "ci_high": None}
        if variant == "norm":
            rows = [{"id": u[0], "speaker": u[1], "accent": u[2], "voice": u[3], "subset": u[4], "ref": r,
                     "hyp": h, **p} for u, r, h, p in zip(UTTS, refs, hyps, per)]
            sys_["breakdowns"] = {k: group_breakdown(rows, k, n_boot=200) for k in ("speaker", "accent", "voice",
                                                                                     "subset")}
            sys_["errors"] = error_analysis(refs, hyps)
            sys_["particles"] = particle_stats(refs, hyps)
            sys_["worst"] = worst_utterances(rows, 5)
            norm_rows = rows
    return sys_, norm_rows


@pytest.fixture
def sample_eval() -> dict:
    base, rows_b = _system(6)
    adapted, rows_a = _system(7)
    ctl_b = base["breakdowns"]["subset"]["control"]["wer"]
    ctl_a = adapted["breakdowns"]["subset"]["control"]["wer"]

    def err(r):
        return r["sub"] + r["dele"] + r["ins"]

    paired = paired_bootstrap([err(r) for r in rows_b], [err(r) for r in rows_a], [r["n_ref"] for r in rows_b],
                              [r["speaker"] for r in rows_b], n_boot=200)
    return {
        "synthetic": True,
        "corpus": {"name": "sg-synth-mini", "description": "Six TTS utterances, four voices."},
        "normalizer_version": NORMALIZER_VERSION,
        "model": {"base": "openai/whisper-tiny.en", "adapter": "outputs/adapter (r=8)", "adapter_sha256": "abc123"},
        "systems": {"base": base, "adapted": adapted},
        "paired": {"metric": "norm", **paired},
        "forgetting": {"control_wer_base": ctl_b, "control_wer_adapted": ctl_a,
                       "relative_degradation": math.inf, "max_relative_degradation": 0.05, "passed": False},
        "data": {"kept": {"train": 120, "test": 6}, "dropped": {"too_long": 2, "missing_file": 1},
                 "hours": {"train": 0.21, "test": 0.01}},
    }


def test_write_report_files(sample_eval, tmp_path):
    paths = write_report(sample_eval, tmp_path / "out")
    assert {"report.md", "report.html", "error_types.png", "wer_by_speaker.png", "wer_by_accent.png",
            "wer_by_voice.png", "wer_by_subset.png"} <= set(paths)
    for name, p in paths.items():
        assert p.is_file() and p.stat().st_size > 0
        if name.endswith(".png"):
            assert p.read_bytes()[:8] == PNG_MAGIC
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes left no temp files


def test_html_has_numbers_and_banner(sample_eval, tmp_path):
    html_ = write_report(sample_eval, tmp_path)["report.html"].read_text()
    md = (tmp_path / "report.md").read_text()
    base_wer = sample_eval["systems"]["base"]["wer"]["norm"]["wer"]
    adapted_wer = sample_eval["systems"]["adapted"]["wer"]["norm"]["wer"]
    for doc in (html_, md):
        assert "Synthetic corpus" in doc
        assert pct(base_wer) in doc and pct(adapted_wer) in doc
        assert "Forgetting gate: FAIL" in doc
        assert NORMALIZER_VERSION in doc and "openai/whisper-tiny.en" in doc
        assert "too_long" in doc
    assert html_.count("data:image/png;base64,") == 5  # self-contained: plots inlined
    assert 'class="banner"' in html_
    assert "<script" not in html_ and "http" not in html_.replace("openai/whisper", "")


def test_no_banner_for_real_corpus(sample_eval, tmp_path):
    sample_eval["synthetic"] = False
    assert "Synthetic corpus" not in write_report(sample_eval, tmp_path)["report.html"].read_text()


def test_base_only_minimal(tmp_path):
    ev = {"systems": {"base": {"wer": {"norm": {"wer": 0.1, "sub": 1, "del": 0, "ins": 0, "hits": 9,
                                                "n_ref_words": 10, "ci_low": float("nan"), "ci_high": None}}}}}
    paths = write_report(ev, tmp_path)
    assert "10.00%" in paths["report.md"].read_text()
    assert set(paths) == {"report.md", "report.html", "error_types.png"}


def test_requires_a_system(tmp_path):
    with pytest.raises(ValueError, match="base"):
        write_report({"systems": {}}, tmp_path)


def test_render_markdown_table():
    out = render_markdown_table([{"a": 1, "b": "x|y"}, [2, None]], ["a", "b"])
    assert out.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2 |  |"]


def test_many_groups_plot_is_capped(tmp_path):
    groups = {f"spk{i:03d}": {"wer": 0.1, "n_utts": 3, "n_words": i + 1, "ci_low": 0.05, "ci_high": 0.2}
              for i in range(300)}
    ev = {"systems": {"base": {"wer": {}, "breakdowns": {"speaker": groups}}}}
    paths = write_report(ev, tmp_path)
    from PIL import Image

    with Image.open(paths["wer_by_speaker.png"]) as im:
        assert im.width < 5000
    assert paths["report.md"].read_text().count("| spk") == 300  # the table keeps every group
