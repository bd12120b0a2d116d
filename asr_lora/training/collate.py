"""What the training collator is given: the columns it reads, its settings from the train config
section, and the dev collator beside it."""

from __future__ import annotations

from asr_lora.data.features import SpeechCollator, encoder_mask_settings
from asr_lora.training.term_tokens import own_word_marker, term_marker


def collator_columns(cache, column_names, timestamp_probability: float, encoder_time_mask: float = 0.0,
                     distils: bool = False) -> list[str]:
    """The train columns the collator reads. Audio goes unless the cache already holds every clip's
    encoder output; a lazily filled cache encodes each clip from its audio on first use."""
    keep = ["id", "labels"] + (["audio"] if cache is None or cache.lazy else [])
    # None: a streamed split, whose rows are {id, labels, audio, subset} (data/streaming.stream_train)
    names = ["id", "labels", "audio", "subset"] if column_names is None else list(column_names)
    keep += ["subset"] if distils and "subset" in names else []  # which rows are replay
    keep += ["input_features"] if "input_features" in names else []
    # The clip's end, for the timestamp targets and the encoder masks (which stay inside speech); a
    # streamed clip's is measured from its audio.
    keep += ["duration"] if (timestamp_probability > 0 or encoder_time_mask > 0) and "duration" in names else []
    return keep


def make_collators(t, seed: int, processor, start: int, augmenter, cache, terms=None):
    """The training collator for the train config section `t`, and the dev one when training batches
    differ from clean ones (None: the same): dev batches get clean audio and encoder outputs,
    <|notimestamps|> targets, no prompt."""
    collator = SpeechCollator(processor, start, augmenter, cache, seed, t.timestamp_probability,
                              prompt_ids=training_prompt(t.prompt_probability, terms, processor),
                              prompt_probability=t.prompt_probability,
                              encoder_mask=encoder_mask_settings(t, cache is not None),
                              mark_replay=t.replay_kl > 0 or t.context_kl > 0,
                              term_marker=term_marker(t.term_loss_weight, terms, processor.tokenizer),
                              own_marker=own_word_marker(terms, processor.tokenizer) if t.context_kl > 0 else None)
    plain = augmenter is None and not (t.timestamp_probability or t.prompt_probability or t.encoder_time_mask
                                       or t.replay_kl or t.context_kl or t.term_loss_weight != 1)
    return collator, None if plain else SpeechCollator(processor, start, None, cache, seed)


def training_prompt(probability: float, terms, processor) -> list[int] | None:
    """The token ids of the domain-term prompt the training rows are prompted with, if any."""
    if probability <= 0:
        return None
    if terms is None or not terms.prompt:
        raise ValueError("train.prompt_probability > 0 needs domain terms (eval.terms=PATH, or training text "
                         "with words general English does not use)")
    return [int(i) for i in processor.get_prompt_ids(terms.prompt)]
