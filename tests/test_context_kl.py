"""train.context_kl: the base distilled into the adapter on the domain rows' tokens that spell none of
the domain's own words."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from transformers import WhisperProcessor

from asr_lora.data.features import SpeechCollator
from asr_lora.training.distill import distillation
from asr_lora.training.term_tokens import TermTokenMarker
from test_replay_kl import distillation_is_logged_and_refused, lora_model, move_adapter, trained_lora
from test_term_loss import TERMS, label_ids
from test_train_e2e import tiny_cfg

TEXTS = [(" the kopi at serangoon is nice", "main"), (" a quiet morning in the park", "general"),
         (" meet me at bukit timah lah", "main")]


def batch(processor, texts=TEXTS):
    rng = np.random.default_rng(0)
    rows = [{"id": f"u{i}", "audio": (0.1 * rng.standard_normal(8000)).astype("float32"), "subset": subset,
             "labels": label_ids(processor.tokenizer, text)} for i, (text, subset) in enumerate(texts)]
    return SpeechCollator(processor, 50257, mark_replay=True,
                          own_marker=TermTokenMarker(processor.tokenizer, TERMS))(rows)


def per_token_kl(model, inputs, adapted_logits) -> list[torch.Tensor]:
    """Each row's KL(base || adapted) at its label tokens, the base run on the whole batch."""
    with torch.no_grad(), model.disable_adapter():
        base = model(**inputs).logits
    out = []
    for r, row in enumerate(inputs["labels"]):
        keep = row != -100
        p, q = base[r][keep].log_softmax(-1), adapted_logits[r][keep].log_softmax(-1)
        out.append((p.exp() * (p - q)).sum(-1))
    return out


def test_context_distillation_is_the_kl_at_the_domain_rows_unmarked_tokens(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = lora_model(tiny_whisper_dir)
    move_adapter(model)
    inputs = batch(processor)
    rows, marked = inputs.pop("distill_rows"), inputs.pop("own_tokens")
    assert rows.tolist() == [False, True, False] and marked[0].any() and marked[2].any() and not marked[1].any()
    out = model(**inputs)
    terms = distillation(model, inputs, out.logits, inputs["labels"], rows, marked, 1.0, 1.0)
    kl = per_token_kl(model, inputs, out.logits.detach())
    unmarked = [kl[r][~marked[r][inputs["labels"][r] != -100]] for r in (0, 2)]
    assert terms["replay_kl"].item() == pytest.approx(kl[1].mean().item(), rel=1e-4)
    expect = torch.cat(unmarked).mean()
    assert terms["context_kl"].item() == pytest.approx(expect.item(), rel=1e-4)
    # The term tokens are left out: counted in, the mean would differ.
    assert abs(float(torch.cat([kl[0], kl[2]]).mean()) - float(expect)) > 1e-3 * float(expect)
    # Each weight asks for its own term only; one base pass serves both.
    assert set(distillation(model, inputs, out.logits, inputs["labels"], rows, marked, 1.0, 0.0)) == {"replay_kl"}
    assert set(distillation(model, inputs, out.logits, inputs["labels"], rows, marked, 0.0, 1.0)) == {"context_kl"}
    with pytest.raises(ValueError, match="own words"):
        distillation(model, inputs, out.logits, inputs["labels"], rows, None, 0.0, 1.0)


def test_the_term_holds_the_words_around_the_terms_and_lets_the_terms_move(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    inputs = batch(processor, [(text, "main") for text, _ in TEXTS])
    rows, marked = inputs.pop("distill_rows"), inputs.pop("own_tokens")
    labels = inputs["labels"]
    moved = {}
    for weight in (0.0, 5.0):
        def loss_of(model, weight=weight):
            out = model(**inputs)
            kl = distillation(model, inputs, out.logits, labels, rows, marked, 0.0, weight)
            return out.loss + weight * kl.get("context_kl", 0.0)

        model = trained_lora(tiny_whisper_dir, loss_of, steps=20, lr=5e-2)
        with torch.no_grad():
            logits = model(**inputs).logits
        kl = per_token_kl(model, inputs, logits)
        at = [marked[r][labels[r] != -100] for r in range(len(kl))]
        moved[weight] = {"around": float(torch.cat([k[~m] for k, m in zip(kl, at)]).mean()),
                         "terms": float(torch.nn.functional.cross_entropy(logits[marked], labels[marked]))}
    assert moved[5.0]["around"] < 0.5 * moved[0.0]["around"], moved
    # The term tokens are still learned, about as far as without the term.
    with torch.no_grad():
        start = trained_lora(tiny_whisper_dir, None, steps=0, lr=0.0)(**inputs).logits
    start_loss = float(torch.nn.functional.cross_entropy(start[marked], labels[marked]))
    assert moved[5.0]["terms"] < min(0.75 * start_loss, 1.25 * moved[0.0]["terms"]), (moved, start_loss)


def test_a_run_logs_the_term_and_refuses_what_it_cannot_distil(tmp_path, tiny_whisper_dir, monkeypatch):
    def cfg(where, *extra):
        return tiny_cfg(tmp_path / where, tiny_whisper_dir, "logger=none", "eval.before_training=false", *extra)

    distillation_is_logged_and_refused(tmp_path, monkeypatch, cfg, "context_kl")


def test_the_label_token_logits_give_the_same_terms_on_a_prompted_batch(tiny_whisper_dir):
    # The trainer passes one logit row per label token (logits_only_at); prompted rows shift them.
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = lora_model(tiny_whisper_dir)
    move_adapter(model)
    rng = np.random.default_rng(0)
    rows = [{"id": f"u{i}", "audio": (0.1 * rng.standard_normal(8000)).astype("float32"), "subset": subset,
             "labels": label_ids(processor.tokenizer, text)} for i, (text, subset) in enumerate(TEXTS)]
    inputs = SpeechCollator(processor, 50257, mark_replay=True, prompt_ids=[50360, 700, 701], prompt_probability=1.0,
                            own_marker=TermTokenMarker(processor.tokenizer, TERMS))(rows)
    rows_flag, own = inputs.pop("distill_rows"), inputs.pop("own_tokens")
    labels = inputs["labels"]
    assert "decoder_input_ids" in inputs and own.any()
    with torch.no_grad():
        logits = model(**inputs).logits
        full = distillation(model, inputs, logits, labels, rows_flag, own, 1.0, 1.0)
        sparse = distillation(model, inputs, logits[labels != -100], labels, rows_flag, own, 1.0, 1.0)
        with pytest.raises(ValueError, match="logit rows for"):
            distillation(model, inputs, logits[labels != -100][1:], labels, rows_flag, own, 1.0, 1.0)
    assert set(full) == set(sparse) == {"replay_kl", "context_kl"}
    for name in full:
        assert float(sparse[name]) == pytest.approx(float(full[name]), rel=1e-5) and float(full[name]) > 1e-4


def test_the_run_says_when_the_free_words_are_not_what_the_term_means(caplog, tiny_whisper_dir):
    from types import SimpleNamespace

    from datasets import Dataset

    from asr_lora.evaluation.terms import Terms, build_terms
    from asr_lora.training.distill import check_context_kl

    tok = WhisperProcessor.from_pretrained(tiny_whisper_dir).tokenizer
    t = SimpleNamespace(context_kl=1.0, mode="lora")
    terms = build_terms(["the kopi at serangoon lah"], ["the coffee at home"], tok)
    mixed = Dataset.from_dict({"id": ["a", "b"], "subset": ["main", "general"]})
    with caplog.at_level("WARNING"):
        check_context_kl(t, terms, tok, mixed, streaming=False)
        assert not caplog.text
        check_context_kl(t, terms, tok, Dataset.from_dict({"id": ["a"], "subset": ["main"]}), streaming=False)
        assert "no general-English sentences" in caplog.text
        check_context_kl(t, Terms([("kopi",)], "file"), tok, None, streaming=True)
        assert "only the 1 terms stay free" in caplog.text
    with pytest.raises(ValueError, match="needs terms"):
        check_context_kl(t, None, tok, mixed, streaming=False)
    check_context_kl(SimpleNamespace(context_kl=0.0, mode="full"), None, tok, None, streaming=True)  # off: no checks
