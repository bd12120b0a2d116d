"""An adapter is not scored on the sentences it was trained on (data/overlap.py)."""

from __future__ import annotations

import json

import pytest

from asr_lora.data.overlap import RECORD, check_not_trained_on, find_record, record_train_texts

TRAIN = ["One kopi-o kosong please.", "The bus to Bukit Timah is late."]


def run_with_adapter(tmp_path, texts=TRAIN):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    record_train_texts(run, texts)
    return run


def test_the_record_holds_digests_not_the_user_s_text(tmp_path):
    run = run_with_adapter(tmp_path)
    data = json.loads((run / RECORD).read_text())
    assert data["n"] == 2 and "kopi" not in (run / RECORD).read_text()


def test_the_record_is_found_for_a_run_s_adapter_a_seed_s_and_an_export_s(tmp_path):
    run = run_with_adapter(tmp_path)
    for adapter in (run / "adapter", run / "seed42" / "adapter", run / "export" / "ct2-int8"):
        assert find_record(adapter) == run / RECORD
    assert find_record(tmp_path / "elsewhere" / "a" / "adapter") is None


def test_scored_sentences_the_adapter_trained_on_are_refused_naming_the_first(tmp_path):
    run = run_with_adapter(tmp_path)
    scored = ["The bus to Bukit Timah is late!", "A sentence it never heard."]  # the scorer's reading matches
    with pytest.raises(ValueError, match=r"1 of the 2 scored clips .* e\.g\. t0: .*allow_train_overlap=true"):
        check_not_trained_on(run / "adapter", scored, ["t0", "t1"], allow=False)
    out = check_not_trained_on(run / "adapter", scored, ["t0", "t1"], allow=True)
    assert out["checked"] and out["n_trained_on"] == 1 and out["examples"] == ["t0"]


def test_a_sentence_the_corpus_itself_has_in_train_and_test_is_not_counted(tmp_path):
    """Real corpora have train and test speakers read one sentence: the training run scored it so too."""
    run = run_with_adapter(tmp_path)
    out = check_not_trained_on(run / "adapter", [TRAIN[0]], ["t0"], allow=False, corpus_train=[TRAIN[0]])
    assert out["n_trained_on"] == 0


def test_without_a_record_nothing_is_refused_and_eval_json_says_it_was_not_checked(tmp_path):
    out = check_not_trained_on(tmp_path / "adapter", TRAIN, ["a", "b"], allow=False)
    assert out["checked"] is False and RECORD in out["why"]
