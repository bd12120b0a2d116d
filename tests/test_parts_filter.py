"""train.dev_part / eval.part choose rows by their voice's part; data.exclude_train_engines drops a
TTS engine's training clips (the leave-one-engine-out study). Both refuse what they cannot do."""

from __future__ import annotations

import pytest
from datasets import Dataset

from asr_lora.data.selection import eval_rows, filter_engines, keep_part, set_replay_share
from asr_lora.data.synthetic.voices import load_voices, part_of
from asr_lora.evaluation.scoring import row_parts

VOICES = load_voices()
UNSEEN = next(v for v in VOICES if v.split == "dev" and part_of(v) == "unseen_engine")
SEEN = next(v for v in VOICES if v.split == "dev" and part_of(v) == "seen_engine")


def rows(voices):
    return Dataset.from_dict({"id": [f"u{i}" for i in range(len(voices))], "voice": [v.id for v in voices],
                              "engine": [v.engine for v in voices]})


def test_keep_part_keeps_only_that_part():
    ds = rows([UNSEEN, SEEN, SEEN, UNSEEN, SEEN])
    assert keep_part(ds, "unseen_engine", "train.dev_part")["id"] == ["u0", "u3"]
    assert keep_part(ds, "seen_engine", "eval.part")["id"] == ["u1", "u2", "u4"]
    assert keep_part(ds, None, "eval.part") is ds


def test_keep_part_takes_a_list_and_real_names_the_recorded_clips():
    ds = Dataset.from_dict({"id": ["u0", "u1", "r0", "u2"], "voice": [UNSEEN.id, SEEN.id, "", UNSEEN.id],
                            "engine": [UNSEEN.engine, SEEN.engine, "", UNSEEN.engine]})
    assert keep_part(ds, ["unseen_engine", "real"], "eval.part")["id"] == ["u0", "r0", "u2"]
    assert keep_part(ds, "real", "eval.part")["id"] == ["r0"]
    assert keep_part(ds, "unseen_engine", "eval.part")["id"] == ["u0", "u2"]
    with pytest.raises(ValueError, match=r"unknown parts \['unseen'\]"):
        keep_part(ds, ["unseen", "real"], "eval.part")


def test_keep_part_refuses_a_part_the_split_lacks():
    with pytest.raises(ValueError, match=r"eval.part='unseen_engine'.*parts present: \['seen_engine'\]"):
        keep_part(rows([SEEN, SEEN]), "unseen_engine", "eval.part")


def test_keep_part_leaves_a_corpus_without_parts_whole(caplog):
    ds = Dataset.from_dict({"id": ["a", "b"], "voice": ["", ""], "engine": ["", ""]})
    assert keep_part(ds, "unseen_engine", "train.dev_part")["id"] == ["a", "b"]
    assert "no voice parts" in caplog.text


def test_rows_of_another_inventory_are_chosen_and_scored_by_the_part_they_carry():
    """A corpus built with data.voices names voices the shipped voices.json does not have: their rows
    carry their part, and eval.part used to fall back to every row of the split with a warning."""
    ds = Dataset.from_dict({"id": ["n0", "u0", "n1", "r0"], "voice": ["my-neural", "my-mbrola", "my-neural", ""],
                            "engine": ["silero", "mbrola", "silero", ""],
                            "part": ["neural", "unseen_engine", "neural", None]})
    assert keep_part(ds, "neural", "eval.part")["id"] == ["n0", "n1"]
    assert keep_part(ds, ["unseen_engine", "real"], "eval.part")["id"] == ["u0", "r0"]
    meta = [{"voice": v, "engine": e, "part": p} for v, e, p in zip(ds["voice"], ds["engine"], ds["part"])]
    assert row_parts(meta) == ["neural", "unseen_engine", "neural", "real"]


def test_the_part_a_manifest_row_carries_reaches_the_prepared_rows(tmp_path, tiny_whisper_dir):
    """What build_corpus writes for a data.voices inventory: the part goes from the manifest through
    the reader and the prepared dataset to eval.part (the reader used to file it under `extra`)."""
    import json

    import numpy as np
    import soundfile as sf
    from omegaconf import OmegaConf
    from transformers import WhisperTokenizer

    from asr_lora.config import DataConfig
    from asr_lora.data.splits import prepare_data

    t = np.arange(24000) / 16000
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype("float32"), 16000)
    rows = [("n0", "my-neural", "neural"), ("u0", "my-mbrola", "unseen_engine"), ("n1", "my-neural", "neural")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(
        {"id": i, "audio_filepath": "a.wav", "text": "the kopi is hot", "split": "test", "engine": "tts",
         "voice": v, "part": p}) + "\n" for i, v, p in rows))
    dcfg = OmegaConf.structured(DataConfig(name="parts", source="jsonl", path=str(tmp_path / "m.jsonl")))
    splits, _ = prepare_data(dcfg, WhisperTokenizer.from_pretrained(tiny_whisper_dir), tmp_path / "cache",
                             progress=False)
    assert eval_rows(splits["test"], ["neural"])["id"] == ["n0", "n1"]


def test_eval_rows_refuse_a_choice_that_leaves_only_control_clips():
    """The real clips are general-English control only: scoring them alone used to train first and
    then stop on a KeyError when the report looked for accented WER."""
    ds = Dataset.from_dict({"id": ["u0", "c0", "r0"], "voice": [UNSEEN.id, UNSEEN.id, ""],
                            "engine": [UNSEEN.engine, UNSEEN.engine, ""], "subset": ["main", "control", "control"]})
    assert eval_rows(ds, ["unseen_engine", "real"])["id"] == ["u0", "c0", "r0"]
    with pytest.raises(ValueError, match=r"eval.part='real'.*1 rows left are all general-English control clips"):
        eval_rows(ds, "real")


def test_a_subsample_of_control_clips_only_or_of_nothing_is_refused_before_decoding():
    """data.max_eval_samples=1 on a split of one accented and three control clips: a draw of control
    clips alone used to decode, then stop on a KeyError ('norm') in the report."""
    from asr_lora.data.selection import scored_rows

    ds = Dataset.from_dict({"id": ["u0", "c0", "c1", "c2"], "voice": [""] * 4, "engine": [""] * 4,
                            "subset": ["main", "control", "control", "control"]})
    outcomes = set()
    for seed in range(8):
        try:
            outcomes.add(tuple(scored_rows(ds, max_samples=1, seed=seed)["id"]))
        except ValueError as e:
            assert "data.max_eval_samples=1: the 1 rows left are all general-English control clips" in str(e)
            outcomes.add("refused")
    assert "refused" in outcomes and ("u0",) in outcomes, outcomes
    assert scored_rows(ds, max_samples=None)["id"] == ["u0", "c0", "c1", "c2"]
    with pytest.raises(ValueError, match=r"data.max_eval_samples=0: score at least one clip"):
        scored_rows(ds, max_samples=0)


def test_filter_engines_drops_or_keeps_that_engines_rows():
    train = [v for v in VOICES if v.split == "train"]
    ds = rows(train)
    kept = filter_engines(ds, ["espeak"], "data.exclude_train_engines")
    assert len(kept) == sum(v.engine != "espeak" for v in train) and "espeak" not in set(kept["engine"])
    assert filter_engines(ds, [], "x") is ds
    only = filter_engines(ds, ["festival", "flite"], "eval.engines", keep=True)
    assert sorted(set(only["engine"])) == ["festival", "flite"]
    assert len(only) == sum(v.engine in ("festival", "flite") for v in train)


def test_filter_engines_refuses_an_engine_with_no_rows():
    with pytest.raises(ValueError, match=r"engines \['pico'\] have no rows"):
        filter_engines(rows([v for v in VOICES if v.split == "train"]), ["pico"], "data.exclude_train_engines")


def replay_rows(n_main, n_general):
    return Dataset.from_dict({"id": [f"m{i}" for i in range(n_main)] + [f"g{i}" for i in range(n_general)],
                              "subset": ["main"] * n_main + ["general"] * n_general})


def test_replay_share_samples_general_rows_down_to_the_share():
    ds = replay_rows(6, 6)
    kept = set_replay_share(ds, 0.25, seed=0)
    ids = kept["id"]
    assert [i for i in ids if i.startswith("m")] == [f"m{i}" for i in range(6)]
    assert sum(i.startswith("g") for i in ids) == 2 and len(set(ids)) == 8
    assert set_replay_share(ds, 0.25, seed=0)["id"] == ids  # seeded
    assert set_replay_share(ds, 0.0, seed=0)["id"] == [f"m{i}" for i in range(6)]
    assert set_replay_share(ds, None, seed=0) is ds


def test_replay_share_repeats_general_rows_when_it_asks_for_more_than_there_are():
    kept = set_replay_share(replay_rows(6, 2), 0.6, seed=1)["id"]  # 0.6 * 6 / 0.4 = 9 general rows
    general = [i for i in kept if i.startswith("g")]
    assert len(general) == 9 and len(set(general)) == 9  # each copy its own id: caches key on it
    copies = [i.split("#")[0] for i in general]
    assert sorted(set(copies)) == ["g0", "g1"] and {"g0#2", "g1#2"} <= set(general)
    assert abs(copies.count("g0") - copies.count("g1")) == 1  # whole copies first, then a sample
    assert len(kept) == 15


@pytest.mark.parametrize("share, match", [(1.0, "below 1"), (-0.1, "at least 0"), (0.3, "no general-English")])
def test_replay_share_refuses_what_it_cannot_do(share, match):
    ds = replay_rows(4, 0) if share == 0.3 else replay_rows(4, 4)
    with pytest.raises(ValueError, match=rf"data.replay_share={share}.*{match}"):
        set_replay_share(ds, share, seed=0)


def test_export_checks_the_exported_model_on_the_rows_the_evaluation_scored(monkeypatch, tmp_path):
    """export_from_run hands export_run only the eval.part rows' accented clips (it used to decode the
    whole split's, twice, whatever the run had scored)."""
    import numpy as np
    from omegaconf import OmegaConf

    import asr_lora.export.run as export_run_module
    from asr_lora.export.job import export_from_run

    voices = [UNSEEN, SEEN, UNSEEN, SEEN]
    test = Dataset.from_dict({
        "id": [f"t{i}" for i in range(5)], "voice": [v.id for v in voices] + [""],
        "engine": [v.engine for v in voices] + [""], "subset": ["main", "main", "control", "main", "control"],
        "text": ["a", "b", "c", "d", "e"], "audio": [np.zeros(160, dtype=np.float32)] * 5})
    seen = {}
    monkeypatch.setattr(export_run_module, "export_run", lambda *a, **kw: seen.update(kw) or {
        "paths": {}, "sizes_bytes": {}, "wer": {}})
    cfg = OmegaConf.create({"data": {"max_eval_samples": None},
                            "eval": {"split": "test", "part": ["unseen_engine", "real"], "engines": [],
                                     "beam_size": 1, "batch_size": 2, "max_new_tokens": 4},
                            "export": {"ct2_eval": True, "formats": ["hf"], "quantization": [], "force": False,
                                       "probe_size": 2},
                            "model": {"name_or_path": "unused"}, "lora": {"scope": ["encoder"]}})
    export_from_run(cfg, tmp_path, tmp_path / "adapter", None, {"test": test}, processor=object())
    assert seen["test_refs"] == ["a"]  # unseen-engine main only: seen-engine and control rows are not decoded
    assert seen["prompt"] is None  # no evaluation, no prompt scored

    # The term prompt goes with the export only when the evaluation scored the adapter with it.
    ev = {"terms": {"prompt": "kopi, chope"}, "systems": {"base": {}, "adapted": {}}}
    export_from_run(cfg, tmp_path, tmp_path / "adapter", ev, {"test": test}, processor=object())
    assert seen["prompt"] is None
    ev["systems"]["adapted_prompt"] = {}
    export_from_run(cfg, tmp_path, tmp_path / "adapter", ev, {"test": test}, processor=object())
    assert seen["prompt"] == "kopi, chope"

    # A refusal names the setting a command-line user passes to override it.
    from asr_lora.export.merge import ExportRefused

    def refuse(*a, **kw):
        raise ExportRefused(["forgetting gate failed: +21.7% > 5.0%"])

    monkeypatch.setattr(export_run_module, "export_run", refuse)
    with pytest.raises(ExportRefused, match=r"gate failed: \+21\.7% > 5\.0% \(export\.force=true exports anyway\)"):
        export_from_run(cfg, tmp_path, tmp_path / "adapter", None, {"test": test}, processor=object())


def test_export_without_reusable_hypotheses_checks_the_evaluation_s_own_draw_of_rows(monkeypatch, tmp_path):
    """With data.max_eval_samples and no hypotheses to reuse, the exported model is checked on the
    rows the evaluation drew (subsample with the run's seed), not on the split's first rows."""
    import numpy as np
    from omegaconf import OmegaConf

    import asr_lora.export.run as export_run_module
    from asr_lora.data.selection import subsample
    from asr_lora.export.job import export_from_run

    n = 40
    test = Dataset.from_dict({
        "id": [f"t{i}" for i in range(n)], "voice": [UNSEEN.id] * n, "engine": [UNSEEN.engine] * n,
        "subset": ["control" if i % 4 == 0 else "main" for i in range(n)], "text": [f"s{i}" for i in range(n)],
        "audio": [np.zeros(160, dtype=np.float32)] * n})
    seen = {}
    monkeypatch.setattr(export_run_module, "export_run", lambda *a, **kw: seen.update(kw) or {
        "paths": {}, "sizes_bytes": {}, "wer": {}})
    cfg = OmegaConf.create({"seed": 7, "data": {"max_eval_samples": 10},
                            "eval": {"split": "test", "part": None, "engines": [], "beam_size": 1, "batch_size": 2,
                                     "max_new_tokens": 4},
                            "export": {"ct2_eval": True, "formats": ["hf"], "quantization": [], "force": False,
                                       "probe_size": 2},
                            "model": {"name_or_path": "unused"}, "lora": {"scope": ["decoder_self"]}})
    ev = {"n_utterances": 10, "systems": {"base": {}, "adapted": {}}}
    export_from_run(cfg, tmp_path, tmp_path / "adapter", ev, {"test": test}, processor=object())
    drawn = subsample(test, 10, 7)
    want = [t for t, s in zip(drawn["text"], drawn["subset"]) if s != "control"]
    first = [t for t, s in zip(test["text"], test["subset"]) if s != "control"][:10]
    assert seen["test_refs"] == want and want != first


def test_prepared_rows_are_not_reused_after_a_row_s_subset_part_or_engine_changed():
    """The prepared-data key hashed id, text, split and the audio file only: a manifest whose rows
    were marked general (for replay) or moved to another part reused rows with the old values."""
    from asr_lora.data.records import Record
    from asr_lora.data.splits import _records_signature

    row = dict(id="u1", text="hello lah", audio_path="/nonexistent.wav", split="train", subset="main", engine="x")
    base = _records_signature([Record(**row)])
    for change in ({"subset": "general"}, {"engine": "y"}, {"part": "neural"}, {"speaker": "s2"}):
        assert _records_signature([Record(**{**row, **change})]) != base, change
    assert _records_signature([Record(**row)]) == base
