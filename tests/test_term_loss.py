"""train.term_loss_weight: the label tokens of domain terms counted more than once in the loss."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperProcessor

from asr_lora.data.features import SpeechCollator
from asr_lora.evaluation.terms import Terms
from asr_lora.training.job import train
from asr_lora.training.term_tokens import TermTokenMarker, term_marker, weighted_token_loss
from test_replay_kl import forbid_encoding_and_decoding, trained_lora
from test_train_e2e import tiny_cfg

TERMS = [("serangoon",), ("kopi",), ("bukit", "timah"), ("lah",)]


def label_ids(tok, text: str) -> list[int]:
    return tok(text).input_ids  # <|startoftranscript|><|notimestamps|> ... <|endoftext|>


def marked_text(tok, ids, mask) -> list[str]:
    return [tok.decode([i]) for i, m in zip(ids, mask) if m]


def test_the_marker_finds_every_token_of_a_term_and_nothing_else(tiny_whisper_dir):
    tok = WhisperProcessor.from_pretrained(tiny_whisper_dir).tokenizer
    marker = TermTokenMarker(tok, TERMS)
    ids = label_ids(tok, " Drink Kopi at Serangoon, near Bukit Timah lah. The bukit is high.")
    got = "".join(marked_text(tok, ids, marker.row_mask(ids)))
    # Case and punctuation fall away as term recall's normaliser drops them; "bukit" alone is not
    # the two-word term, and the special tokens around the text are never marked.
    assert got == " Kopi Serangoon, Bukit Timah lah."
    assert len(tok(" Serangoon").input_ids) > 4  # a term split into several pieces: all are marked
    plain = label_ids(tok, " the hawker centre is crowded")
    assert not any(marker.row_mask(plain))
    # Padding and the prompt's masked positions (-100) split words and are never marked.
    assert marker.row_mask([-100, *ids[:3], -100]) == [False] * 5


def test_the_weighted_loss_is_whispers_own_at_weight_one_and_weighs_the_marked_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[3, 4, 5, 6, -100], [1, 2, 3, -100, -100]])
    marked = torch.tensor([[False, True, True, False, False], [True, False, False, False, False]])
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    assert float(weighted_token_loss(logits, labels, marked, 1.0)) == pytest.approx(float(plain), rel=1e-6)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100,
                                           reduction="none").reshape(2, 5)
    expect = (ce[labels != -100].sum() + 3 * ce[marked].sum()) / 7
    assert float(weighted_token_loss(logits, labels, marked, 4.0)) == pytest.approx(float(expect), rel=1e-6)


def test_the_weight_teaches_the_term_tokens_first(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    tok = processor.tokenizer
    rows = [{"id": f"u{i}", "audio": torch.zeros(8000).numpy(), "labels": label_ids(tok, text)}
            for i, text in enumerate([" the kopi at serangoon is nice", " a quiet void deck today"])]
    batch = SpeechCollator(processor, 50257, term_marker=TermTokenMarker(tok, TERMS))(rows)
    marked = batch.pop("term_tokens")
    assert marked[0].any() and not marked[1].any()
    term_loss = {}
    for weight in (1.0, 5.0):
        def loss_of(model, weight=weight):
            return weighted_token_loss(model(**batch).logits, batch["labels"], marked, weight)

        model = trained_lora(tiny_whisper_dir, loss_of, steps=5, lr=2e-2)
        with torch.no_grad():
            logits = model(**batch).logits
        term_loss[weight] = float(torch.nn.functional.cross_entropy(logits[marked], batch["labels"][marked]))
    assert term_loss[5.0] < 0.9 * term_loss[1.0], term_loss


def test_a_run_weighs_term_tokens_and_refuses_what_it_cannot_weigh(tmp_path, tiny_whisper_dir, monkeypatch):
    def cfg(where, *extra):
        return tiny_cfg(tmp_path / where, tiny_whisper_dir, "logger=none", "eval.before_training=false", *extra)

    weighted = train(cfg("a", "train.term_loss_weight=4"))
    assert "training label tokens (23.7%) count 4 times in the loss" in (tmp_path / "a/run/asr_lora.log").read_text()
    plain = train(cfg("b"))
    assert weighted["train"]["train_loss"] != plain["train"]["train_loss"]

    forbid_encoding_and_decoding(monkeypatch)
    nowhere = tmp_path / "terms.txt"
    nowhere.write_text("zyzzogeton\n")
    for extra, match in ((["train.term_loss_weight=-1"], "must be >= 0"),
                         ([f"eval.terms={nowhere}", "train.term_loss_weight=3"], "none of the .* training label")):
        with pytest.raises(ValueError, match=match):
            train(cfg("c", *extra))


def test_no_terms_is_a_clear_error(tiny_whisper_dir):
    tok = WhisperProcessor.from_pretrained(tiny_whisper_dir).tokenizer
    assert term_marker(1.0, None, tok) is None  # weight 1: Whisper's own loss, no terms needed
    with pytest.raises(ValueError, match="needs terms"):
        term_marker(2.0, Terms(terms=[], source="derived"), tok)
