"""Training rows decoded after the domain-term prompt (`train.prompt_probability`): the decoder
sees what `generate(prompt_ids=...)` feeds it, and the loss falls on the transcript only."""

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from asr_lora.data.features import SpeechCollator, pad_labels, prompted_inputs


def _rows(processor, texts):
    rng = np.random.default_rng(0)
    return [{"id": f"u{i}", "labels": processor.tokenizer(t).input_ids,
             "audio": (0.1 * rng.standard_normal(16000)).astype("float32")} for i, t in enumerate(texts)]


def test_a_prompted_row_is_the_sequence_generate_decodes_with_loss_on_the_transcript(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    tok = processor.tokenizer
    start = tok.convert_tokens_to_ids("<|startoftranscript|>")
    prompt = [int(i) for i in processor.get_prompt_ids("kopi, chope, Serangoon")]
    labels = [tok("can chope the table lah").input_ids, tok("ok").input_ids]
    ids, targets = prompted_inputs(tok, labels, [prompt, None], start)
    first = ids[0].tolist()
    # generate(prompt_ids=...) decodes after exactly this prefix: the prompt, then the start token.
    assert first[: len(prompt) + 1] == prompt + [start]
    assert first[0] == tok.convert_tokens_to_ids("<|startofprev|>")
    # Teacher forcing: each scored label is the next decoder input; nothing of the prompt is scored.
    scored = targets[0] != -100
    assert not scored[: len(prompt)].any()
    assert targets[0][scored].tolist() == labels[0][1:]
    assert ids[0][1:][scored[:-1]].tolist() == labels[0][1:-1]
    # An unprompted row is what the model's own shift of `pad_labels` gives.
    plain = pad_labels(tok, labels[1:], start)[0]
    assert targets[1][: len(plain)].tolist() == plain.tolist()
    assert ids[1][0].item() == start and ids[1][1 : len(plain)].tolist() == plain[:-1].tolist()


def test_a_prompt_that_would_pass_the_decoder_s_448_positions_keeps_its_last_tokens(tiny_whisper_dir):
    """A 300-token label after a 201-token prompt made a 500-token row: IndexError at position 448."""
    tok = WhisperProcessor.from_pretrained(tiny_whisper_dir).tokenizer
    start, prev = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|startofprev|>")
    label = [start, *range(400, 698), tok.eos_token_id]  # 300 tokens, as data.max_label_tokens keeps
    prompt = [prev, *range(1000, 1200)]
    ids, targets = prompted_inputs(tok, [label, label[:10]], [prompt, prompt], start)
    assert ids.shape[1] == 448
    first = ids[0].tolist()
    cut = 448 - 299  # what is left for the prompt, start token included
    assert first[:cut] == [prev, *range(1200 - cut + 1, 1200)] and first[cut] == start  # its last tokens
    assert targets[0][targets[0] != -100].tolist() == label[1:]  # the whole transcript still scored
    assert ids[1].tolist()[: len(prompt) + 1] == prompt + [start]  # a short row keeps the whole prompt
    whole = [start, *range(400, 847), tok.eos_token_id]  # 448 tokens: no room for a prompt at all
    ids, targets = prompted_inputs(tok, [whole], [prompt], start)
    assert ids[0, 0].item() == start and targets[0].tolist() == whole[1:]


def test_unprompted_rows_keep_their_loss_and_prompted_batches_train(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    start = model.config.decoder_start_token_id
    rows = _rows(processor, ["can chope the table lah", "the kopi here very shiok", "ok lor"])
    prompt = [int(i) for i in processor.get_prompt_ids("kopi, chope")]
    plain = SpeechCollator(processor, start)(rows)
    never = SpeechCollator(processor, start, prompt_ids=prompt, prompt_probability=1e-12)(rows)
    assert set(never) == {"input_features", "labels"} and torch.equal(never["labels"], plain["labels"])
    # Built by hand with no prompt, the decoder inputs give the loss the model's own shift gives.
    ids, labels = prompted_inputs(processor.tokenizer, [r["labels"] for r in rows], [None] * 3, start)
    with torch.no_grad():
        shifted = model(input_features=plain["input_features"], labels=plain["labels"]).loss
        explicit = model(input_features=plain["input_features"], decoder_input_ids=ids, labels=labels).loss
    assert torch.allclose(shifted, explicit, atol=1e-6)
    always = SpeechCollator(processor, start, prompt_ids=prompt, prompt_probability=1.0)(rows)
    assert always["decoder_input_ids"].shape == always["labels"].shape
    assert (always["decoder_input_ids"][:, : len(prompt)] == torch.tensor(prompt)).all()
    # The transcript tokens scored are the same with or without the prompt.
    assert sorted(always["labels"][always["labels"] != -100].tolist()) == sorted(
        plain["labels"][plain["labels"] != -100].tolist())
    with torch.no_grad():
        assert torch.isfinite(model(**always).loss)


def test_prompted_share_follows_the_probability_and_the_seed(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    start = processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    rows = _rows(processor, ["can chope the table lah"] * 8)
    prompt = [int(i) for i in processor.get_prompt_ids("kopi, chope")]

    def share(seed):
        c = SpeechCollator(processor, start, seed=seed, prompt_ids=prompt, prompt_probability=0.5)
        firsts = [b["decoder_input_ids"][:, 0] for b in (c(rows) for _ in range(25)) if "decoder_input_ids" in b]
        return torch.cat(firsts).eq(prompt[0]).float().sum().item() / (25 * 8), firsts

    a, fa = share(3)
    b, fb = share(3)
    assert 0.4 < a < 0.6 and a == b and all(torch.equal(x, y) for x, y in zip(fa, fb))
