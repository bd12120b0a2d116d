"""Front end, collator and the two caches (log-mel on disk, encoder outputs in memory)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from asr_lora.config import DataConfig
from asr_lora.data.features import SpeechCollator, add_features, log_mel, pad_labels, use_feature_cache
from asr_lora.model.encoder_cache import EncoderCache


def test_pad_labels_strips_decoder_start_and_pads_with_ignore_index(tiny_whisper_dir):
    tok = WhisperProcessor.from_pretrained(tiny_whisper_dir).tokenizer
    out = pad_labels(tok, [[50257, 1, 2, 3], [50257, 4], [5, 6]], 50257)
    assert out.tolist() == [[1, 2, 3], [4, -100, -100], [5, 6, -100]]


def test_feature_cache_matches_on_the_fly_and_is_reused(tmp_path, tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    rng = np.random.default_rng(0)
    rows = [{"id": f"u{i}", "audio": (0.1 * rng.standard_normal(8000 + 800 * i)).astype("float32"),
             "labels": [50257, 1, 2]} for i in range(4)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    ds = Dataset.load_from_disk(str(tmp_path / "ds"))
    with_feats = add_features(ds, processor)
    direct = log_mel(processor, [np.asarray(r["audio"], dtype=np.float32) for r in rows])
    cached = torch.tensor(np.asarray(with_feats["input_features"]))
    assert torch.equal(cached, direct)
    files = {f["filename"] for f in with_feats.cache_files}
    again = add_features(Dataset.load_from_disk(str(tmp_path / "ds")), processor)
    assert {f["filename"] for f in again.cache_files} == files  # fingerprinted cache reused
    collator = SpeechCollator(processor, 50257)
    a = collator([with_feats[i] for i in range(2)])["input_features"]
    b = collator([ds[i] for i in range(2)])["input_features"]
    assert torch.equal(a, b)


def test_feature_cache_choice_follows_the_budget():
    d = OmegaConf.structured(DataConfig(feature_cache="auto", feature_cache_budget_gb=1.0))
    assert use_feature_cache(d, 1000) and not use_feature_cache(d, 2000)
    assert not use_feature_cache(d, 1000, waveform_augmented=True)  # the collator would never read them
    d.feature_cache = "false"
    assert not use_feature_cache(d, 1)


def test_feature_cache_only_when_clips_are_read_twice():
    from asr_lora.config import TrainConfig
    from asr_lora.training.trainer import reads_per_clip

    d = OmegaConf.structured(DataConfig(feature_cache="auto", feature_cache_budget_gb=8.0))
    t = OmegaConf.structured(TrainConfig(max_steps=128, per_device_train_batch_size=8, gradient_accumulation_steps=1))
    assert reads_per_clip(t, 1594) == 128 * 8 / 1594  # the sg_english recipe: 0.64, computed per batch
    assert not use_feature_cache(d, 1594, reads_per_clip(t, 1594))
    assert use_feature_cache(d, 400, reads_per_clip(t, 400))  # 2.56 reads per clip
    t.max_steps, t.num_train_epochs = -1, 3
    assert reads_per_clip(t, 10_000) == 3.0 and use_feature_cache(d, 1000, reads_per_clip(t, 1000))
    d.feature_cache = "true"  # an explicit setting wins
    assert use_feature_cache(d, 1594, 0.64)


def test_encoder_cache_equals_a_fresh_encoder_pass(tiny_whisper_dir):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    audios = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * f).astype("float32") * 0.2 for f in (200, 300, 400)]
    cache = EncoderCache(model, processor, batch_size=2)
    cache.fill(["a", "b", "c"], audios, progress=False)
    with torch.no_grad():
        fresh = model.model.encoder(log_mel(processor, audios)).last_hidden_state
    assert torch.allclose(cache.get(["a", "b", "c"]), fresh, atol=1e-5)
    labels = [[50257, 7, 8], [50257, 9]]
    batch = SpeechCollator(processor, 50257, encoder_cache=cache)([{"id": "a", "labels": labels[0]},
                                                                    {"id": "c", "labels": labels[1]}])
    with torch.no_grad():
        via_cache = model(encoder_outputs=batch["encoder_outputs"], labels=batch["labels"]).loss
        direct = model(input_features=log_mel(processor, [audios[0], audios[2]]), labels=batch["labels"]).loss
    assert torch.allclose(via_cache, direct, atol=1e-5)


def test_a_lazily_filled_encoder_cache_equals_the_up_front_fill(tiny_whisper_dir):
    """Training rows that carry their audio fill the cache on first use, in eval mode (no dropout
    even while the model trains), with the outputs an up-front fill gives; clips no batch draws are
    never encoded."""
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir, dropout=0.5).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    audios = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * f).astype("float32") * 0.2 for f in (200, 300, 400)]
    eager = EncoderCache(model, processor, batch_size=1)
    eager.fill(["a", "b", "c"], audios, progress=False)
    model.train()
    lazy = EncoderCache(model, processor, batch_size=1)
    collate = SpeechCollator(processor, 50257, encoder_cache=lazy)
    rows = [{"id": i, "audio": a, "labels": [50257, 7]} for i, a in zip("abc", audios)]
    batch = collate([rows[2], rows[0]])
    assert set(lazy.store) == {"a", "c"} and model.training and model.model.encoder.training
    assert torch.equal(batch["encoder_outputs"].last_hidden_state, eager.get(["c", "a"]))
    first = lazy.store["a"]
    collate([rows[0]])
    assert lazy.store["a"] is first and len(lazy.store) == 2  # reused, not encoded again


def test_a_lazy_split_saves_what_it_encoded_and_the_next_run_reuses_it(tiny_whisper_dir, tmp_path):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    audios = {i: np.sin(np.arange(16000) / 16000 * 2 * np.pi * f).astype("float32") * 0.2
              for i, f in zip("abc", (200, 300, 400))}
    path = tmp_path / "train.safetensors"
    first = EncoderCache(model, processor, batch_size=1)
    first.start_lazy(path, list("abc"))
    first.get(["a", "b"], [audios["a"], audios["b"]])
    first.save_lazy()
    second = EncoderCache(model, processor, batch_size=1)
    second.start_lazy(path, list("abc"))
    assert set(second.store) == {"a", "b"} and torch.equal(second.store["a"], first.store["a"])
    second.get(["c"], [audios["c"]])
    second.save_lazy()  # now 3 entries against the file's 2: rewritten
    third = EncoderCache(model, processor, batch_size=1)
    third.start_lazy(path, list("abc"))
    assert set(third.store) == {"a", "b", "c"}


def test_timestamp_targets_replace_notimestamps_with_the_clip_as_one_segment(tiny_whisper_dir):
    from asr_lora.data.features import with_timestamps

    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    tok = processor.tokenizer
    sot, no_ts, eot = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"])
    labels = [sot, no_ts, 11, 12, 13, eot]
    assert with_timestamps(labels, 2.345, no_ts, eot) == [sot, no_ts + 1, 11, 12, 13, no_ts + 1 + 117, eot]
    assert tok.convert_ids_to_tokens([no_ts + 1, no_ts + 1 + 117]) == ["<|0.00|>", "<|2.34|>"]
    assert with_timestamps(labels, 99.0, no_ts, eot)[-2] == no_ts + 1 + 1500  # capped at <|30.00|>
    assert with_timestamps([sot, 11, eot], 1.0, no_ts, eot) == [sot, 11, eot]  # no <|notimestamps|>: as is

    rng = np.random.default_rng(0)
    rows = [{"id": f"u{i}", "audio": (0.1 * rng.standard_normal(16000 * (i + 1))).astype("float32"),
             "labels": labels} for i in range(8)]
    plain = SpeechCollator(processor, sot)(rows)["labels"]
    assert (plain == no_ts).sum() == 8
    every = SpeechCollator(processor, sot, timestamp_probability=1.0)(rows)["labels"]
    assert (every == no_ts).sum() == 0
    # each clip's end from its own length: 1 s, 2 s, ... -> <|1.00|>, <|2.00|>, ...
    assert [row[row != -100][-2].item() - (no_ts + 1) for row in every] == [50 * (i + 1) for i in range(8)]
    first = SpeechCollator(processor, sot, seed=3, timestamp_probability=0.5)(rows)["labels"]
    again = SpeechCollator(processor, sot, seed=3, timestamp_probability=0.5)(rows)["labels"]
    assert torch.equal(first, again) and 0 < (first[:, 0] == no_ts + 1).sum() < 8


def test_encoder_time_masks_stay_inside_speech_and_follow_the_seed():
    from asr_lora.data.features import mask_encoder_time

    hidden = torch.randn(4, 1500, 8) + 5  # no exact zeros to begin with
    seconds = [1.0, 2.0, 0.5, 3.0]
    masked = mask_encoder_time(hidden, seconds, np.random.default_rng(0), 1.0, 2, 0.4)
    assert not torch.equal(masked, hidden) and torch.equal(hidden, hidden)  # a new tensor; input untouched
    for row, sec in enumerate(seconds):
        zero = (masked[row] == 0).all(dim=-1)
        speech = int(np.ceil(sec / 0.02))
        assert 1 <= zero.sum() <= 2 * 20 and not zero[speech:].any()  # two spans of <= 0.4 s, inside speech
        assert torch.equal(masked[row][~zero], hidden[row][~zero])
    again = mask_encoder_time(hidden, seconds, np.random.default_rng(0), 1.0, 2, 0.4)
    assert torch.equal(masked, again)
    assert torch.equal(mask_encoder_time(hidden, seconds, np.random.default_rng(0), 0.0, 2, 0.4), hidden)
    half = mask_encoder_time(hidden.repeat(50, 1, 1), seconds * 50, np.random.default_rng(1), 0.5, 1, 0.4)
    assert 60 <= int((half == 0).all(-1).any(-1).sum()) <= 140  # about half the 200 rows


def test_the_collator_masks_cached_encoder_outputs_only_when_asked(tiny_whisper_dir):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    audios = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * f).astype("float32") * 0.2 for f in (200, 300)]
    cache = EncoderCache(model, processor, batch_size=2)
    cache.fill(["a", "b"], audios, progress=False)
    rows = [{"id": i, "labels": [50257, 7], "duration": 1.0} for i in "ab"]
    plain = SpeechCollator(processor, 50257, encoder_cache=cache)(rows)["encoder_outputs"].last_hidden_state
    masked = SpeechCollator(processor, 50257, encoder_cache=cache, encoder_mask=(1.0, 2, 0.4))(rows)
    hidden = masked["encoder_outputs"].last_hidden_state
    zero = (hidden == 0).all(-1)
    assert zero.any(-1).all() and not zero[:, 50:].any()
    assert torch.equal(hidden[~zero], plain[~zero]) and torch.equal(cache.get(["a", "b"]), plain)  # cache untouched


def test_encoder_masks_leave_the_other_random_streams_as_they_were(tiny_whisper_dir):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    audios = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * f).astype("float32") * 0.2 for f in (200, 300, 400)]
    cache = EncoderCache(model, processor, batch_size=1)
    cache.fill(list("abc"), audios, progress=False)
    tok = processor.tokenizer
    rows = [{"id": i, "labels": tok("can chope the table lah").input_ids, "duration": 1.0} for i in "abc"]
    prompt = [int(i) for i in processor.get_prompt_ids("kopi, chope")]
    kw = dict(encoder_cache=cache, seed=3, timestamp_probability=0.5, prompt_ids=prompt, prompt_probability=0.5)
    plain, masked = SpeechCollator(processor, 50257, **kw), SpeechCollator(processor, 50257, encoder_mask=(1.0, 2, 0.4),
                                                                          **kw)
    for _ in range(4):
        a, b = plain(rows), masked(rows)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a if k != "encoder_outputs")
        assert not torch.equal(a["encoder_outputs"].last_hidden_state, b["encoder_outputs"].last_hidden_state)


def test_dev_batches_are_never_masked(tiny_whisper_dir):
    from hydra import compose, initialize_config_dir

    from asr_lora.config import CONF_DIR
    from asr_lora.training.collate import make_collators

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    cache = EncoderCache(model, processor, batch_size=1)
    cache.fill(["a"], [np.sin(np.arange(16000) / 40).astype("float32") * 0.2], progress=False)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["train.encoder_time_mask=1.0"])
    train_collate, dev_collate = make_collators(cfg.train, cfg.seed, processor, 50257, None, cache)
    rows = [{"id": "a", "labels": [50257, 7], "duration": 1.0}]
    assert (train_collate(rows)["encoder_outputs"].last_hidden_state == 0).all(-1).any()
    assert torch.equal(dev_collate(rows)["encoder_outputs"].last_hidden_state, cache.get(["a"]))


def test_a_bf16_training_split_is_encoded_as_a_bf16_step_would_encode_it(tiny_whisper_dir, tmp_path):
    """Under train.bf16 the training clips' cached outputs are the encoder's under bf16 autocast (what
    the uncached run feeds the decoder), filled eagerly or lazily alike; without it they stay fp32."""
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    audios = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * f).astype("float32") * 0.2 for f in (200, 300)]
    feats = log_mel(processor, audios)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.cat([model.get_encoder()(feats[i : i + 1]).last_hidden_state.float() for i in range(2)])
    eager = EncoderCache(model, processor, batch_size=1)
    eager.fill(["a", "b"], audios, progress=False, bf16=True)
    assert torch.equal(eager.get(["a", "b"]), want)
    lazy = EncoderCache(model, processor, batch_size=1)
    lazy.start_lazy(None, ["a", "b"], bf16=True)
    assert torch.equal(lazy.get(["a", "b"], audios), eager.get(["a", "b"]))
    plain = EncoderCache(model, processor, batch_size=1)
    plain.fill(["a", "b"], audios, progress=False)
    assert not torch.equal(plain.get(["a", "b"]), want)


def test_each_torchrun_rank_draws_its_own_rows_and_rank_zero_draws_as_one_process(tiny_whisper_dir, monkeypatch):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    collator = SpeechCollator(processor, 50257, seed=3)

    def draws(rank: str | None) -> list:
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
        else:
            monkeypatch.setenv("RANK", rank)
        collator.calls.clear()
        return [collator._rng(s).random(4).tolist() for s in ("augment", "prompt", "augment")]

    alone, rank0, rank1, rank2 = draws(None), draws("0"), draws("1"), draws("2")
    assert rank0 == alone
    assert rank1 != alone and rank2 != alone and rank1 != rank2
