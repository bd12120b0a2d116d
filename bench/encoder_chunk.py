"""Encoder clips per call on CPU: a whole decode batch in one encoder call vs `CPU_ENCODER_CHUNK`.

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/encoder_chunk.py --clips 16

Bundled tiny.en, 30 s input, dev clips; both rows encode the same batch, alternating, and the
script checks that the encoder states are identical. The one-call row is the peer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="encoder_chunk")
    a = ap.parse_args()
    common.quiet()
    from asr_lora.inference.decode import CPU_ENCODER_CHUNK
    from asr_lora.model.encoder_cache import encoder_states

    model, _, feats = common.tiny_en_dev_features(a.clips)
    encoder = model.get_encoder()
    chunk = {"one_call": len(feats), f"chunk_{CPU_ENCODER_CHUNK}": CPU_ENCODER_CHUNK}
    times, states = {k: [] for k in chunk}, {}
    with torch.no_grad():
        encoder(feats[:1])  # warm-up
        for _ in range(a.repeats):
            for name, n in chunk.items():
                t = time.perf_counter()
                states[name] = encoder_states(encoder, feats, n)
                times[name].append(time.perf_counter() - t)
    med = {k: common.median(v) for k, v in times.items()}
    rows = [{"variant": k, "clips_per_call": chunk[k], "clips": len(feats), "median_s": round(m, 2),
             "s_per_clip": round(m / len(feats), 3)} for k, m in med.items()]
    a_, b_ = states.values()
    ratios = {"one_call/chunked time": round(med["one_call"] / med[f"chunk_{CPU_ENCODER_CHUNK}"], 2),
              "max |state diff|": float((a_ - b_).abs().max())}
    common.print_results(rows, ["variant", "clips_per_call", "clips", "median_s", "s_per_clip"], ratios)
    common.write_result(a.name, {"args": vars(a), "machine": common.machine_info(), "results": rows,
                                 "ratios": ratios})


if __name__ == "__main__":
    main()
