"""The training loss computes logits at the label tokens only (`logits_only_at`): the same loss and the
same gradients as the model's own loss over every position."""

from __future__ import annotations

import pytest
import torch
from transformers import Seq2SeqTrainingArguments, WhisperProcessor

from asr_lora.training.term_tokens import weighted_token_loss
from asr_lora.training.distill import replay_distillation
from asr_lora.training.trainer import SpeechTrainer
from test_replay_kl import batch, lora_model, move_adapter


def trainer_for(model, tmp_path, term_loss_weight: float = 1.0, replay_kl: float = 0.0) -> SpeechTrainer:
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False)
    return SpeechTrainer(model=model, args=args, term_loss_weight=term_loss_weight, replay_kl=replay_kl)


def no_dropout(model):
    for m in model.modules():  # the LoRA dropout would draw differently in the two forwards
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


@pytest.mark.parametrize("prompt", [None, [50361, 1000, 1001, 1002, 1003, 1004, 1005]])
@pytest.mark.parametrize("weight", [1.0, 4.0])
def test_label_logits_give_the_full_logits_loss_and_gradients(tmp_path, tiny_whisper_dir, prompt, weight):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = no_dropout(lora_model(tiny_whisper_dir))
    move_adapter(model)
    model.train()
    inputs = batch(processor, ["main", "general", "main"], prompt=prompt)
    inputs.pop("distill_rows")
    labels = inputs["labels"]
    marked = torch.zeros_like(labels, dtype=torch.bool)
    marked[0, 2:4] = True  # two tokens of the first row count `weight` times
    assert (labels == -100).any()  # padding (and, prompted, the prompt) that the loss ignores

    full = model(**inputs)  # every position through the vocabulary projection
    assert full.logits.shape[:2] == labels.shape
    expect = weighted_token_loss(full.logits, labels, marked, weight)
    if weight == 1.0:
        assert float(expect.detach()) == pytest.approx(float(full.loss.detach()), rel=1e-5)
    expect.backward()
    want = grads(model)

    trainer = trainer_for(model, tmp_path, term_loss_weight=weight)
    loss, out = trainer.compute_loss(model, {**inputs, "term_tokens": marked}, return_outputs=True)
    assert out.logits.shape == (int((labels != -100).sum()), full.logits.shape[-1])  # one row per label token
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    loss.backward()
    got = grads(model)
    assert got.keys() == want.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
    # The hook is gone: outside the training loss the model returns every position's logits.
    assert model(**inputs).logits.shape == full.logits.shape


def test_the_replay_term_reads_the_same_tokens_from_label_logits(tmp_path, tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = no_dropout(lora_model(tiny_whisper_dir))  # before the first forward, or peft keeps drawing
    move_adapter(model)
    inputs = batch(processor, ["main", "general", "general", "control"], prompt=[50361, 1000, 1001])
    rows = inputs.pop("distill_rows")
    labels = inputs["labels"]
    with torch.no_grad():
        logits = model(**inputs).logits
        expect = replay_distillation(model, inputs, logits, labels, rows)
        sparse = replay_distillation(model, inputs, logits[labels != -100], labels, rows)
    assert float(expect) > 1e-4
    assert float(sparse) == pytest.approx(float(expect), rel=1e-6)

    model.train()
    trainer = trainer_for(model, tmp_path, replay_kl=2.0)
    loss = trainer.compute_loss(model, {**inputs, "distill_rows": rows})
    plain = trainer_for(model, tmp_path).compute_loss(model, dict(inputs))
    assert loss.item() == pytest.approx(plain.item() + 2.0 * expect.item(), rel=1e-5)
    trainer.log({"loss": loss.item()})  # the term is logged beside the loss, unweighted
    assert trainer.state.log_history[-1]["replay_kl"] == pytest.approx(expect.item(), rel=1e-4)
