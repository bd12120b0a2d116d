"""Distilling the frozen base into the adapter (Learning without Forgetting): the per-token KL
divergence from the base's next-token distribution to the adapted model's, added to the loss.

- train.replay_kl weighs it on the general-English replay rows: the reference text gives one token
  per position, the base's distribution all it knew of general English there.
- train.context_kl weighs it on the domain rows' tokens that spell none of the domain's own words
  (the terms, and the other words the general-English text never uses: `Terms.own_words`): the adapter is
  free on the domain's words and held to the base around them, so what it learns is the words, not
  how the training engines sound on the general English between them.

The base is the same model with its adapters switched off (peft's `disable_adapter`), run without
gradients, and always without the term prompt: a prompted row is compared token for token with the
base decoding the plain transcript, because the prompt itself costs the base general English (the
prompt baseline's control WER), which the adapter must not learn. Hand-written: neither the Trainer
nor peft has a distillation loss.
"""

from __future__ import annotations

import logging

import torch
from transformers.models.whisper.modeling_whisper import shift_tokens_right

from asr_lora.core.runtime import sum_over_ranks
from asr_lora.training.label_logits import logits_only_at
from asr_lora.training.row_groups import take_rows
from asr_lora.training.term_tokens import own_word_marker

log = logging.getLogger(__name__)


def check_replay_kl(t, train_ds, streaming: bool) -> float:
    """The replay distillation weight this run trains with. It needs an adapter to switch off
    (refused without one), and a train split without replay rows (a corpus of the user's own
    recordings) has nothing to distil on, so the term is off there, said once in the log, rather
    than the recipe refusing it."""
    if t.replay_kl < 0:
        raise ValueError(f"train.replay_kl={t.replay_kl}: a loss weight, must be >= 0")
    if t.replay_kl == 0:
        return 0.0
    if t.mode != "lora":
        raise ValueError(f"train.replay_kl distils the base with the adapter switched off; train.mode={t.mode} "
                         "has no adapter (use train.mode=lora, or train.replay_kl=0)")
    if not streaming and not has_replay_rows(train_ds):
        log.warning("train.replay_kl=%s: the train split has no general-English replay rows (subset 'general') "
                    "to distil on, so this run trains without the term (give the corpus general sentences, "
                    "or raise data.replay_share, to use it)", t.replay_kl)
        return 0.0
    return float(t.replay_kl)


def check_context_kl(t, terms, tokenizer, train_ds, streaming: bool) -> None:
    """Refuses a context distillation weight that is negative, has no adapter to switch off or no
    domain words to leave free, and says when the free words are not what the term means: without
    general-English training text every domain word counts as the domain's own (little is held);
    without readable training text only the terms do (the Singapore particles, say, are held)."""
    if t.context_kl < 0:
        raise ValueError(f"train.context_kl={t.context_kl}: a loss weight, must be >= 0")
    if not t.context_kl:
        return
    if t.mode != "lora":
        raise ValueError(f"train.context_kl distils the base with the adapter switched off; train.mode={t.mode} "
                         "has no adapter (use train.mode=lora, or train.context_kl=0)")
    own_word_marker(terms, tokenizer)
    if not terms.own_words:
        log.warning("train.context_kl=%s: the training text cannot be read here (streamed), so only the %d terms "
                    "stay free of the base; the domain's other words are held to it", t.context_kl, len(terms.terms))
    elif not streaming and not has_replay_rows(train_ds):
        log.warning("train.context_kl=%s: the train split has no general-English sentences, so every domain word "
                    "counts as the domain's own and the term holds only short words and punctuation", t.context_kl)


def has_replay_rows(train_ds) -> bool:
    """Whether the (readable) train split holds general-English replay rows (subset "general")."""
    return "subset" in train_ds.column_names and "general" in set(train_ds["subset"])


def base_divergence(peft_model, inputs: dict, logits: torch.Tensor, labels: torch.Tensor,
                    rows: torch.Tensor) -> torch.Tensor:
    """KL(base || adapted) at each transcript token of the flagged `rows`, in the order of
    `labels[rows][labels[rows] != -100]`. `logits` are the adapted model's: one row per label token
    of the batch (`logits_only_at`) or the full batch x positions x vocabulary."""
    rows = rows.to(logits.device)
    picked = take_rows({k: v for k, v in inputs.items() if k not in ("labels", "decoder_input_ids")}, rows)
    targets = labels[rows]
    positions = targets != -100
    # Each row's transcript tokens, left-aligned: the labels of the same row decoded without a prompt,
    # only as wide as the longest transcript (the batch's width is set by its prompted rows).
    plain = torch.full_like(targets[:, : int(positions.sum(1).max())], -100)
    for i, keep in enumerate(positions):
        plain[i, : int(keep.sum())] = targets[i][keep]
    whisper = peft_model.get_base_model()
    start = shift_tokens_right(plain, whisper.config.pad_token_id, whisper.config.decoder_start_token_id)
    with torch.no_grad(), peft_model.disable_adapter(), logits_only_at(whisper.get_output_embeddings(), plain != -100):
        teacher = peft_model(**picked, decoder_input_ids=start).logits  # one row per transcript token
    if logits.dim() == 2:  # one row per label token of the batch, in batch order
        at = labels != -100
        if logits.shape[0] != int(at.sum()):
            raise ValueError(f"{logits.shape[0]} logit rows for {int(at.sum())} label tokens: "
                             "the logits must be the label tokens' (logits_only_at) or the whole batch's")
        student = logits[rows[at.nonzero(as_tuple=True)[0]]]
    else:
        student = logits[rows][positions]
    student = torch.log_softmax(student.float(), dim=-1)
    base = torch.log_softmax(teacher.float(), dim=-1)
    return torch.nn.functional.kl_div(student, base, log_target=True, reduction="none").sum(-1)


def replay_distillation(peft_model, inputs: dict, logits: torch.Tensor, labels: torch.Tensor,
                        rows: torch.Tensor) -> torch.Tensor:
    """The mean per-token KL(base || adapted) over the transcript tokens of the flagged `rows`."""
    return base_divergence(peft_model, inputs, logits, labels, rows).mean()


def distillation(peft_model, inputs: dict, logits: torch.Tensor, labels: torch.Tensor, replay: torch.Tensor,
                 own_tokens: torch.Tensor | None, replay_kl: float, context_kl: float) -> dict[str, torch.Tensor]:
    """{"replay_kl": the mean KL on the replay rows' tokens, "context_kl": the mean KL on the other
    rows' tokens that `own_tokens` (the domain's own words) does not mark}, each present when its
    weight is set and the batch has such tokens. One base pass serves both."""
    if context_kl and own_tokens is None:
        raise ValueError("train.context_kl needs the domain's own words marked (the collator's own_marker)")
    replay = replay.to(labels.device)
    # The rows the base decodes: the domain rows for the context term, the replay rows for their own.
    rows = (torch.ones_like(replay) if replay_kl else ~replay) if context_kl else replay
    if not bool(rows.any()):
        return {}
    kl = base_divergence(peft_model, inputs, logits, labels, rows).to(labels.device)
    at = labels[rows] != -100  # the transcript tokens of the decoded rows, in kl's order
    on_replay = replay[rows.nonzero(as_tuple=True)[0][at.nonzero(as_tuple=True)[0]]]
    terms = {}
    if replay_kl and bool(on_replay.any()):
        terms["replay_kl"] = kl[on_replay].mean()
    if context_kl:
        around = ~on_replay & ~own_tokens.to(labels.device)[rows][at]
        if bool(around.any()):
            terms["context_kl"] = kl[around].mean()
    return terms


def means_over_ranks(totals: dict, weights: dict[str, float]) -> dict[str, float]:
    """Each weighted term's mean since the last logged step, from `totals` ({name: [sum, count]}),
    over every rank as the Trainer's loss is (each rank saw its own rows). Every weighted term is
    summed, even one this rank had no rows for: the sum is a collective, and a rank that skipped it
    would hang the others."""
    names = [n for n in sorted(weights) if weights[n]]
    sums = sum_over_ranks([v for n in names for v in totals.get(n, (0.0, 0))])
    return {n: round(sums[2 * i] / sums[2 * i + 1], 6) for i, n in enumerate(names) if sums[2 * i + 1]}
