"""The corpus-scale data path: sharded manifests, header-level index, streamed training split with
decode-time rejects accounted for, length-aware batching, and the main job on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf
from test_train_e2e import make_corpus, tiny_cfg

from asr_lora.config import DataConfig
from asr_lora.data.readers import read
from asr_lora.data.records import Ledger, Record
from asr_lora.data.streaming import (
    LengthBuckets,
    collect_load_skips,
    index_corpus,
    load_split,
    stream_train,
    use_streaming,
)
from asr_lora.training.job import train


def shard(manifest: Path, out: Path, n: int) -> Path:
    """The same rows as `manifest`, cut into n shard files in `out` (audio paths made absolute)."""
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    out.mkdir(parents=True)
    for k in range(n):
        part = rows[k::n]
        for r in part:
            r["audio_filepath"] = str(manifest.parent / r["audio_filepath"])
        (out / f"part-{k:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return out


def dcfg(path, **kw):
    return OmegaConf.structured(DataConfig(name="t", source="jsonl", path=str(path), **kw))


def test_sharded_manifest_reads_like_one_file_and_catches_cross_shard_duplicates(tmp_path):
    manifest = make_corpus(tmp_path / "c")
    shards = shard(manifest, tmp_path / "shards", 3)
    one, many, glob = Ledger(), Ledger(), Ledger()
    ids_one = sorted(r.id for r in read("jsonl", manifest, one))
    ids_many = sorted(r.id for r in read("jsonl", shards, many))
    ids_glob = sorted(r.id for r in read("jsonl", str(shards / "part-00[01].jsonl"), glob))
    assert ids_one == ids_many and many.seen == 16 and many.balanced()
    assert len(ids_glob) == 11 and glob.seen == 11  # 6 + 5 rows in shards 0 and 1
    # the same id in two shards: the second is a recorded duplicate, not a silent overwrite
    extra = json.loads((shards / "part-000.jsonl").read_text().splitlines()[0])
    (shards / "part-002.jsonl").write_text((shards / "part-002.jsonl").read_text() + json.dumps(extra) + "\n")
    dup = Ledger()
    assert len(list(read("jsonl", shards, dup))) == 16
    assert dup.skipped_by_reason == {"duplicate_id": 1} and "part-002.jsonl:6" in dup.skips[0].detail
    with pytest.raises(FileNotFoundError, match="no manifest shards match"):
        list(read("jsonl", str(tmp_path / "nothing-*.jsonl"), Ledger()))


def test_auto_streaming_follows_the_decoded_audio_estimate():
    recs = [Record(id=str(i), text="x", audio_path="/nonexistent.wav", duration=10.0) for i in range(100)]
    # 100 x 10 s x 64 kB/s = 61 MB of float32 samples
    assert use_streaming(dcfg("m", memory_budget_gb=0.05), iter(recs)) is True
    assert use_streaming(dcfg("m", memory_budget_gb=0.1), iter(recs)) is False
    assert use_streaming(dcfg("m", streaming="true"), None) is True
    assert use_streaming(dcfg("m", streaming="false", memory_budget_gb=0.0), iter(recs)) is False
    in_memory = [Record(id="a", text="x", audio=np.zeros(16000 * 600, np.float32), sampling_rate=16000)]
    assert use_streaming(dcfg("m", memory_budget_gb=0.0), iter(in_memory)) is False


def _hostile_corpus(tmp_path: Path) -> Path:
    """The tiny corpus plus one silent train clip, one truncated train WAV, one 40 s clip and one
    label of 500 tokens: the index rejects what headers/labels show, the loader what decoding shows."""
    manifest = make_corpus(tmp_path / "c")
    audio = manifest.parent / "audio"
    sf.write(audio / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(audio / "long.wav", np.full(16000 * 40, 0.1, np.float32), 16000)
    good = (audio / "u0.wav").read_bytes()
    (audio / "cut.wav").write_bytes(good[: len(good) // 2])
    rows = [{"audio_filepath": "audio/silent.wav", "text": "nothing here", "id": "silent", "speaker": "spk0",
             "split": "train"},
            {"audio_filepath": "audio/cut.wav", "text": "half a file", "id": "cut", "speaker": "spk1",
             "split": "train"},
            {"audio_filepath": "audio/long.wav", "text": "too long", "id": "long", "speaker": "spk2",
             "split": "train"},
            {"audio_filepath": "audio/u1.wav", "text": " ".join(["word"] * 500), "id": "verbose",
             "speaker": "spk2", "split": "train"}]
    with open(manifest, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return manifest


def test_index_then_stream_accounts_for_every_row(tmp_path, tiny_whisper_dir):
    from transformers import WhisperTokenizer

    tok = WhisperTokenizer.from_pretrained(tiny_whisper_dir)
    cfg = dcfg(_hostile_corpus(tmp_path), streaming="true", shard_rows=4, shuffle_buffer=8)
    root, report = index_corpus(cfg, tok, tmp_path / "cache", progress=False)
    counts = report["counts"]
    assert counts["seen"] == 20 and counts["balanced"]
    assert counts["skipped_by_reason"] == {"too_long": 1, "label_too_long": 1}
    assert report["kept_per_split"]["train"] == {"main": 12}  # 10 good + silent + cut: headers look fine
    assert report["streaming"]["shards"]["train"] == 3  # 12 rows / 4 per shard
    assert index_corpus(cfg, tok, tmp_path / "cache", progress=False)[0] == root  # cached

    skips = tmp_path / "skips"
    ds = stream_train(root, cfg, batch_size=4, seed=0, skip_dir=skips)
    rows = list(ds)
    assert sorted(r["id"] for r in rows) == sorted(f"u{i}" for i in range(10))
    assert all(isinstance(r["audio"], (np.ndarray, list)) and len(r["audio"]) == 16000 for r in rows)
    load = collect_load_skips(skips)
    assert load["skipped_by_reason"] == {"silent": 1, "truncated": 1}
    assert {s["id"] for s in load["skips"]} == {"silent", "cut"}
    list(stream_train(root, cfg, batch_size=4, seed=0, skip_dir=skips))  # a second epoch: still one skip each
    assert collect_load_skips(skips)["skipped"] == 2
    dev = load_split(root, "dev", cfg, skips)
    assert sorted(dev["id"]) == ["u10", "u11"] and len(dev[0]["audio"]) == 16000


def test_length_buckets_keep_every_clip_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=32)
    batch = {"id": [f"c{i}" for i in range(32)], "labels": [[1] * int(n) for n in lengths]}
    out = LengthBuckets(batch_size=4, seed=1)(batch)
    assert sorted(out["id"]) == sorted(batch["id"])
    got = [len(x) for x in out["labels"]]
    chunks = [got[i : i + 4] for i in range(0, 32, 4)]
    # padding waste: each 4-clip batch pads to its longest label
    waste = lambda cs: sum(max(c) * len(c) - sum(c) for c in cs)  # noqa: E731
    random_chunks = [list(lengths[i : i + 4]) for i in range(0, 32, 4)]
    assert waste(chunks) < waste(random_chunks) / 3
    assert all(c == sorted(c) for c in chunks)  # within a batch: sorted
    assert [min(c) for c in chunks] != sorted(min(c) for c in chunks)  # batch order: shuffled
    assert LengthBuckets(batch_size=4, seed=1)(batch) == out  # deterministic


def test_main_job_streams_with_workers_and_records_load_skips(tmp_path, tiny_whisper_dir):
    manifest = _hostile_corpus(tmp_path)
    shards = shard(manifest, tmp_path / "shards", 2)
    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", f"data.path={shards}", "data.streaming=true",
                   "data.shard_rows=3", "data.length_buckets=2", "train.dataloader_num_workers=2")
    summary = train(cfg)
    run = tmp_path / "run"
    assert summary["train"]["streaming"] is True and summary["train"]["steps"] == 4
    assert summary["train"]["train_utterances"] == 12
    report = json.loads((run / "data_report.json").read_text())
    assert report["counts"]["balanced"] and report["counts"]["seen"] == 20
    assert report["load_time"]["skipped_by_reason"] == {"silent": 1, "truncated": 1}
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert np.isfinite(summary["eval"]["adapted"]["wer"])


def test_length_aware_batching_in_memory_uses_the_trainers_length_grouped_sampler(tmp_path, tiny_whisper_dir):
    from asr_lora.training.job import trainer_args

    cfg = tiny_cfg(tmp_path, tiny_whisper_dir, "logger=none", "data.length_buckets=2", "train.max_steps=2",
                   "eval.before_training=false")
    args = trainer_args(cfg, tmp_path / "ck", [], True)
    assert args.train_sampling_strategy == "group_by_length" and args.length_column_name == "n_labels"
    streaming = trainer_args(cfg, tmp_path / "ck", [], True, streaming=True)
    assert streaming.accelerator_config.dispatch_batches is False  # each rank reads its own shards
    assert train(cfg)["train"]["steps"] == 2


def test_a_streamed_train_split_keeps_which_rows_are_replay(tmp_path):
    """stream_train kept {id, labels, audio} only: replay_kl never saw a replay row, context_kl held
    general rows as domain ones, and timestamp targets asked for a duration column it did not have."""
    from asr_lora.training.collate import collator_columns

    (tmp_path / "train").mkdir()
    with open(tmp_path / "train" / "shard-00000.jsonl", "w") as f:
        for i, sub in enumerate(["main", "general"]):
            sf.write(tmp_path / f"a{i}.wav", (0.1 * np.sin(np.arange(16000) / 5)).astype("float32"), 16000)
            f.write(json.dumps({"id": f"c{i}", "labels": [50257], "subset": sub, "duration": 1.0,
                                "audio_path": str(tmp_path / f"a{i}.wav"), "split": "train"}) + "\n")
    dcfg = OmegaConf.create({"shuffle_buffer": 10, "min_seconds": 0.1, "max_seconds": 30, "silence_dbfs": -60,
                             "length_buckets": 0})
    ds = stream_train(tmp_path, dcfg, 2, 0, None)
    keep = collator_columns(None, ds.column_names, 0.5, 0.0, distils=True)
    rows = sorted(ds.select_columns(keep), key=lambda r: r["id"])
    assert [r["subset"] for r in rows] == ["main", "general"] and "duration" not in keep
