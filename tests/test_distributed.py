"""Multi-process training with torchrun on CPU (gloo), on the tiny random Whisper.

One fixture runs the real command line twice on the same data and seed:

    python -m asr_lora.train ...                                  1 process  x batch 4
    torchrun --standalone --nproc_per_node=2 -m asr_lora.train ... 2 processes x batch 2

and the tests check that

* the loss and gradient-norm curves agree step by step (relative tolerance 1e-4, see below);
* rank 0 alone writes the run's outputs (metrics, data report, adapter, checkpoints), and rank 1
  creates nothing in the run directory or the data cache except Hydra's own copy of the config.

Why the curves can agree to float precision. The Trainer samples with one seeded random sampler
and Accelerate shards it by *batches*: with 2 processes, rank 0 takes batches 0, 2, 4, ... and
rank 1 batches 1, 3, 5, ... of size 2, so global step k sees exactly the 4 clips that the single
process sees at step k (the same permutation, same seed). DDP averages the two ranks' gradients of
their mean losses, which equals the gradient of the 4-clip mean loss when both halves hold the same
number of label tokens, so every label here has the same token count (checked). LoRA dropout is
off (its random masks would differ), the encoder is frozen and cached, and the runs are fp32
(train.bf16=false: bf16 autocast rounds each product to 8 bits of mantissa, and kernels blocked for
a batch of 4 or of 2 round differently). What remains is the order of float32 sums (all-reduce
vs one batched reduction), about 1e-7 relative per step, carried through 6 AdamW steps: 1e-4
leaves two orders of magnitude of margin and still catches a wrong batch split
(loss differs by ~1e-2) or a gradient scaled by the world size (factor 2).

Rank 1's writes are recorded by a Python audit hook (a `sitecustomize` on PYTHONPATH, active only
where RANK != 0): every `open` for writing, `mkdir` of a new directory, rename, remove and rmtree
under the watched roots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lora.config import REPO_ROOT

pytestmark = pytest.mark.slow

# Every sentence is 8 tokens long (tiny.en tokenizer), so both halves of a global batch hold the
# same number of label tokens and the mean of the two ranks' mean losses is the global mean.
SENTENCES = ["chope the table first", "the food is very nice", "the bus is late again", "I want to eat now",
             "the void deck is quiet", "the rain is heavy today"]
N_TRAIN, STEPS, GLOBAL_BATCH, RTOL = 24, 6, 4, 1e-4

AUDIT_HOOK = r'''
import atexit, json, os, sys

_roots = [r for r in os.environ.get("ASR_LORA_AUDIT_ROOTS", "").split(os.pathsep) if r]
_out = os.environ.get("ASR_LORA_AUDIT_OUT")
if _roots and _out and os.environ.get("RANK", "0") != "0":
    _events, _busy = [], [False]

    def _under(p):
        try:
            p = os.path.abspath(os.fsdecode(p))
        except TypeError:
            return None
        return p if any(p == r or p.startswith(r + os.sep) for r in _roots) else None

    def _hook(event, args):
        if _busy[0]:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            if isinstance(path, int):
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            if not writing:
                return
        elif event == "os.mkdir":
            path = args[0]
            if isinstance(path, (str, bytes, os.PathLike)) and os.path.isdir(path):
                return  # mkdir(exist_ok=True) of a directory that is already there changes nothing
        elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink", "os.truncate"):
            path = args[1] if event in ("os.rename", "os.symlink") else args[0]
        else:
            return
        p = _under(path) if not isinstance(path, int) else None
        if p:
            _events.append([event, p])

    def _dump():
        _busy[0] = True
        with open(_out + "." + os.environ.get("RANK", "x"), "w") as f:
            json.dump({"rank": os.environ.get("RANK"), "events": _events}, f)

    sys.addaudithook(_hook)
    atexit.register(_dump)
'''


def make_equal_length_corpus(root: Path, n: int = N_TRAIN, n_dev: int = 0) -> Path:
    """`n` train clips of 1 s, then `n_dev` dev clips (the runs encode those up front)."""
    rows, rng = [], np.random.default_rng(0)
    for i in range(n + n_dev):
        wav = root / "audio" / f"u{i}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(16000) / 16000
        x = 0.2 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.01 * rng.standard_normal(16000)
        sf.write(wav, x.astype("float32"), 16000)
        rows.append({"audio_filepath": f"audio/u{i}.wav", "text": SENTENCES[i % len(SENTENCES)], "id": f"u{i}",
                     "speaker": f"spk{i % 4}" if i < n else "spk_dev", "split": "train" if i < n else "dev"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def overrides(model_dir: Path, manifest: Path, cache: Path, run_dir: Path, batch: int) -> list[str]:
    return [
        "+recipe=sg_english_decoder", f"model.name_or_path={model_dir}", "data=jsonl", f"data.path={manifest}",
        f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}",  # one run dir for every rank
        "lora.r=4", "lora.alpha=8", "lora.dropout=0.0", "train.bf16=false", f"train.max_steps={STEPS}",
        "train.warmup_steps=0", f"train.per_device_train_batch_size={batch}", "train.logging_steps=1",
        "train.save_steps=1000",
        "train.eval_steps=1000", "logger=none", "export.enabled=false", "eval.before_training=false",
    ]


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", **extra)
    env.setdefault("ASR_LORA_CACHE", str(tmp_path / "asr_lora_cache"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def torchrun(log_dir: Path, *args: str) -> list[str]:
    """torchrun with each rank's output teed to its own file under `log_dir`: when one rank fails,
    the launcher's stderr holds mostly the *other* rank's secondary error (a closed gloo pair)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--log-dir={log_dir}", "--tee=3", *args]


def _rank_logs(log_dir: Path | None) -> str:
    if log_dir is None:
        return ""
    return "".join(f"\n--- {f.relative_to(log_dir)} ---\n{f.read_text(errors='replace')[-4000:]}"
                   for f in sorted(log_dir.rglob("*.log")))


def _run(cmd: list[str], env: dict, what: str, log_dir: Path | None = None) -> None:
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (f"{what} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}"
                                 f"{_rank_logs(log_dir)}")


def curve(run_dir: Path) -> list[dict]:
    state = json.loads((run_dir / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_whisper_dir):
    tmp = tmp_path_factory.mktemp("ddp")
    manifest = make_equal_length_corpus(tmp / "corpus", n_dev=4)
    cache = tmp / "cache"
    hook_dir = tmp / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)

    one = tmp / "one_process"
    _run([sys.executable, "-m", "asr_lora.train", *overrides(tiny_whisper_dir, manifest, cache, one,
                                                             GLOBAL_BATCH)], _env(tmp), "1-process run")
    two = tmp / "two_processes"
    # A cache of its own, cold: rank 0 prepares the data and encodes the clips while rank 1 waits,
    # then reads them; rank 1 preparing too would race rank 0 and show up in the audit.
    cache2 = tmp / "cache_two"
    audit = tmp / "audit.json"
    env = _env(tmp, PYTHONPATH=os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]),
               ASR_LORA_AUDIT_ROOTS=os.pathsep.join([str(two), str(cache2)]), ASR_LORA_AUDIT_OUT=str(audit))
    logs = tmp / "torchrun_logs"
    _run(torchrun(logs, "--standalone", "--nproc_per_node=2", "-m", "asr_lora.train",
                  *overrides(tiny_whisper_dir, manifest, cache2, two, GLOBAL_BATCH // 2)),
         env, "torchrun --nproc_per_node=2 run", logs)
    rank1 = audit.with_name(audit.name + ".1")
    assert rank1.is_file(), "the audit hook did not run in rank 1 (sitecustomize not imported?)"
    return {"one": one, "two": two, "cache": cache, "manifest": manifest, "model": tiny_whisper_dir,
            "rank1_events": json.loads(rank1.read_text())["events"]}


def test_labels_have_equal_token_counts(tiny_whisper_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_whisper_dir)
    assert len({len(tok(s).input_ids) for s in SENTENCES}) == 1


def test_two_processes_match_one_process_with_twice_the_batch(runs):
    one, two = curve(runs["one"]), curve(runs["two"])
    assert [h["step"] for h in one] == [h["step"] for h in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        for key in ("loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=RTOL), (key, a["step"], a[key], b[key])
    # the curve is a real one: the adapters learn something over 6 steps
    assert one[-1]["loss"] < one[0]["loss"]
    m1 = json.loads((runs["one"] / "metrics.json").read_text())
    m2 = json.loads((runs["two"] / "metrics.json").read_text())
    assert m1["train"]["steps"] == m2["train"]["steps"] == STEPS
    assert m2["train"]["train_loss"] == pytest.approx(m1["train"]["train_loss"], rel=RTOL)


# Hydra writes its own copy of the composed config (identical on every rank) before our code runs;
# everything else in the run dir must come from rank 0.
HYDRA_OWN = (".hydra",)


def _rank1_writes(runs, allowed=HYDRA_OWN) -> list:
    two = str(runs["two"])
    out = []
    for event, path in runs["rank1_events"]:
        rel = os.path.relpath(path, two)
        if not rel.startswith("..") and (rel == "." or rel.split(os.sep)[0] in allowed):
            continue
        parts = rel.split(os.sep)
        # The Trainer saves each rank's RNG state into the checkpoint (needed for exact resume).
        if parts[0] == "checkpoints" and (len(parts) == 2 or parts[-1].startswith("rng_state_1")):
            continue
        out.append((event, path))
    return out


def test_only_rank_0_writes_reports_adapter_checkpoints_and_cache(runs):
    two = runs["two"]
    for f in ["metrics.json", "data_report.json", "adapter/adapter_model.safetensors",
              f"checkpoints/checkpoint-{STEPS}/trainer_state.json"]:
        assert (two / f).is_file(), f
    assert sorted(p.name for p in two.rglob("metrics.json")) == ["metrics.json"]
    assert not list(two.glob("wandb")), "logger=none must not create a wandb dir"
    bad = [(e, p) for e, p in _rank1_writes(runs, HYDRA_OWN + ("asr_lora.log",))]
    assert not bad, f"rank 1 wrote: {bad}"


def test_rank_1_writes_nothing_but_hydra_config(runs):
    assert not _rank1_writes(runs), f"rank 1 wrote: {_rank1_writes(runs)}"


def test_streaming_ddp_gives_each_rank_its_own_shards(tmp_path, tiny_whisper_dir):
    """2 processes on the streaming path: Accelerate hands each rank its own manifest shards. Each
    shard holds one silent clip; the decode-time skip logs show which rank read which shard."""
    manifest = make_equal_length_corpus(tmp_path / "corpus", n=20)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    audio = tmp_path / "corpus" / "audio"
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(2):
        sf.write(audio / f"silent{k}.wav", np.zeros(16000, np.float32), 16000)
        part = rows[k::2] + [{"audio_filepath": f"audio/silent{k}.wav", "text": SENTENCES[0], "id": f"silent{k}",
                              "speaker": "spk0", "split": "train"}]
        for r in part:
            r["audio_filepath"] = str(tmp_path / "corpus" / r["audio_filepath"])
        (shards / f"part{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    run = tmp_path / "run"
    args = overrides(tiny_whisper_dir, shards, tmp_path / "cache", run, 2)
    logs = tmp_path / "torchrun_logs"
    _run(torchrun(logs, "--standalone", "--nproc_per_node=2", "-m", "asr_lora.train", *args, "data.streaming=true",
                  "data.shard_rows=11", "data.shuffle_buffer=4"), _env(tmp_path), "torchrun streaming run", logs)
    report = json.loads((run / "data_report.json").read_text())
    assert report["streaming"]["shards"]["train"] == 2 and report["counts"]["seen"] == 22
    skips = [json.loads(x) for f in (run / "load_skips").glob("skips-*.jsonl") for x in f.read_text().splitlines()]
    by_rank = {}
    for s in skips:
        by_rank.setdefault(s["rank"], set()).add(s["id"])
    # each rank read exactly one of the two shards (which one: the seeded shard-order shuffle decides)
    assert sorted(by_rank) == [0, 1] and sorted(map(sorted, by_rank.values())) == [["silent0"], ["silent1"]], by_rank
    assert report["load_time"]["skipped_by_reason"] == {"silent": 2}
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == STEPS



def test_fsdp_preset_on_two_cpu_processes_stops_instead_of_running_as_ddp(tmp_path, tiny_whisper_dir):
    manifest = make_equal_length_corpus(tmp_path / "corpus")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "asr_lora.train",
           *overrides(tiny_whisper_dir, manifest, tmp_path / "cache", tmp_path / "run", 2),
           "train=fsdp", "lora=none", "train.mode=full", "train.dataloader_num_workers=0"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert out.returncode != 0
    assert "ShardingUnavailableError" in out.stderr and "FSDP needs torchrun on 2+ GPUs" in out.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_two_nodes_with_c10d_rendezvous_match_one_process(runs, tmp_path):
    """`torchrun --nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT` as on a cluster, with the
    two "nodes" being two launchers on this machine (1 process each, sharing the run directory as
    nodes share a filesystem): same loss curve as the 1-process run at twice the batch."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "two_nodes"
    args = overrides(runs["model"], runs["manifest"], runs["cache"], run, GLOBAL_BATCH // 2)
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={k}",
         "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=asr_lora_test", "-m",
         "asr_lora.train", *args], cwd=REPO_ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    outs = [p.communicate(timeout=900) for p in launchers]
    for p, (out, err) in zip(launchers, outs):
        assert p.returncode == 0, f"node failed ({p.returncode}):\n{out[-3000:]}\n{err[-5000:]}"
    one, two = curve(runs["one"]), curve(run)
    assert [h["step"] for h in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=RTOL), (a["step"], a["loss"], b["loss"])
    assert json.loads((run / "metrics.json").read_text())["distributed"]["world_size"] == 2
