"""Which label tokens spell a domain term, and the token loss that counts them `term_loss_weight`
times (train.term_loss_weight).

A Singapore sentence has one or two term words among a dozen general ones, so the plain token mean
spends most of its gradient on the sentence's general English (and on its grammar: bare verbs,
particles) and little on the spellings the adapter is meant to learn. Hand-written: the Trainer's
loss is the model's plain token mean, and neither it nor peft weighs tokens.
"""

from __future__ import annotations

import logging

import torch

from asr_lora.data.text import normalize

log = logging.getLogger(__name__)


class TermTokenMarker:
    """Marks, in a batch of labels, the tokens of the words that make up a term occurrence.

    Words are read back from the tokens as Whisper writes them (a token whose text starts with a
    space starts a word; special and timestamp tokens end one), normalised as term recall normalises
    them, and matched against the terms (tuples of words); every token of a matched word is marked.
    """

    def __init__(self, tokenizer, terms: list[tuple[str, ...]]):
        self.tokenizer = tokenizer
        self.terms = {tuple(t) for t in terms if t}
        self.lengths = sorted({len(t) for t in self.terms}, reverse=True)
        self._pieces: dict[int, str | None] = {}

    def _piece(self, token_id: int) -> str | None:
        """The token's text, or None for a special or timestamp token."""
        if token_id not in self._pieces:
            tok = self.tokenizer.convert_ids_to_tokens(token_id)
            special = tok is None or (tok.startswith("<|") and tok.endswith("|>"))
            self._pieces[token_id] = None if special else self.tokenizer.convert_tokens_to_string([tok])
        return self._pieces[token_id]

    def _words(self, ids: list[int]) -> list[tuple[str, list[int]]]:
        """(normalised word, positions of its tokens) for the label positions `ids` (-100 skipped)."""
        groups: list[tuple[str, list[int]]] = []
        text, where = "", []
        for pos, token_id in enumerate(ids):
            piece = None if token_id < 0 else self._piece(token_id)
            if piece is None or piece[:1].isspace():
                if where:
                    groups.append((text, where))
                text, where = "", []
                if piece is None:
                    continue
            text, where = text + piece, where + [pos]
        if where:
            groups.append((text, where))
        # A group may normalise to several words ("bee-hoon") or none ("--"); each keeps its tokens.
        return [(w, positions) for text, positions in groups for w in normalize(text).split()]

    def row_mask(self, ids: list[int]) -> list[bool]:
        mask = [False] * len(ids)
        words = self._words(ids)
        i = 0
        while i < len(words):
            n = next((n for n in self.lengths if tuple(w for w, _ in words[i:i + n]) in self.terms), 0)
            for _, positions in words[i:i + n]:
                for p in positions:
                    mask[p] = True
            i += max(n, 1)
        return mask

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.row_mask(row) for row in labels.tolist()], dtype=torch.bool)


def weighted_token_loss(logits: torch.Tensor, labels: torch.Tensor, marked: torch.Tensor,
                        weight: float) -> torch.Tensor:
    """The token cross-entropy with the `marked` tokens counted `weight` times, divided by the
    number of label tokens: at weight 1 it is Whisper's own loss, and the other tokens' gradient
    does not shrink as the weight grows."""
    flat = labels.reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat,
                                           ignore_index=-100, reduction="none")
    w = 1.0 + (weight - 1.0) * marked.reshape(-1).to(ce.device, ce.dtype)
    valid = flat != -100
    return (ce * w)[valid].sum() / valid.sum().clamp(min=1)


def term_marker(weight: float, terms, tokenizer, label_lists=None) -> TermTokenMarker | None:
    """The marker for train.term_loss_weight=`weight`, or None at 1 (Whisper's own loss). Refuses a
    negative weight and a run without terms; given the train split's `label_lists`, also one in
    which no label spells a term, and logs the share that does."""
    if weight < 0:
        raise ValueError(f"train.term_loss_weight={weight}: a loss weight, must be >= 0")
    if weight == 1:
        return None
    if terms is None or not terms.terms:
        raise ValueError("train.term_loss_weight weighs the tokens of domain terms and needs terms (eval.terms=PATH, "
                         "or training text with words general English does not use)")
    marker = TermTokenMarker(tokenizer, terms.terms)
    if label_lists is not None:
        marked, total = count_term_tokens(marker, label_lists)
        if not marked:
            raise ValueError(f"train.term_loss_weight={weight}: none of the {total:,} training label tokens spells one "
                             f"of the {len(terms.terms)} domain terms ({terms.source}), so the weight would change "
                             "nothing")
        log.info("term tokens: %s of %s training label tokens (%.1f%%) count %g times in the loss", f"{marked:,}",
                 f"{total:,}", 100 * marked / total, weight)
    return marker


def own_word_marker(terms, tokenizer) -> TermTokenMarker:
    """The marker of the domain's own words (`Terms.own_words`: the terms, and every alphabetic word
    of three or more letters in the training domain text that its general-English sentences never
    use), which train.context_kl leaves free. Wider than the terms: a domain's words that the
    tokenizer keeps whole ("lah", "lor") are still its own, and holding them to the base would
    unteach them."""
    if terms is None or not (terms.terms or terms.own_words):
        raise ValueError("train.context_kl finds the tokens of the domain's own words in the labels and needs terms "
                         "(eval.terms=PATH, or training text with words general English does not use)")
    return TermTokenMarker(tokenizer, list(dict.fromkeys([*terms.terms, *terms.own_words])))


def count_term_tokens(marker: TermTokenMarker, label_lists) -> tuple[int, int]:
    """(term tokens, all tokens) over a split's label lists."""
    marked = total = 0
    for ids in label_lists:
        m = marker.row_mask(list(ids))
        marked, total = marked + sum(m), total + len(m)
    return marked, total
