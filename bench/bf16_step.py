"""Training under bf16 autocast vs fp32 on the CPU: the recipe's step, and the frozen-encoder pass
that fills the training clips' cache.

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/bf16_step.py --batch-size 8 --steps 6

The recipe's step (`+recipe=sg_english`, `SpeechTrainer.compute_loss` with the replay distillation
term on 2 rows of each batch) forward and backward, in fp32 and under `torch.autocast("cpu",
bfloat16)` as `train.bf16` runs it, on the same batches, alternating; and the encoder on one 30 s
clip at a time (the CPU cache fill), both ways. It reports the ratios and how far the bf16 loss
and LoRA gradients are from the fp32 ones. bf16 pays only where the CPU computes it natively
(AVX512-BF16 or AMX, `cpu_has_bf16` in the table): elsewhere autocast emulates it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import label_logits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="batches, each timed once per variant")
    ap.add_argument("--encoder-clips", type=int, default=8)
    ap.add_argument("--name", default="bf16_step")
    a = ap.parse_args()
    common.quiet()
    from asr_lora.core.runtime import cpu_has_bf16
    from asr_lora.data.features import log_mel

    model, processor, cfg = label_logits.recipe_model()
    data = label_logits.batches(model, processor, cfg, a.steps, a.batch_size, replay_rows=2)
    trainer = label_logits.recipe_trainer(model, cfg, replay_kl=1.0)
    modes = {"fp32": False, "bf16": True}
    step_s = {k: [] for k in modes}
    worst = 0.0
    for i, batch in enumerate(data):
        grads = {}
        for name, bf16 in modes.items():
            model.zero_grad()
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = trainer.compute_loss(model, dict(batch))
            loss.backward()
            step_s[name].append(time.perf_counter() - t)
            grads[name] = (float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None])
        (l32, g32), (l16, g16) = grads.values()
        worst = max(worst, abs(l32 - l16) / abs(l32), *(float((x - y).norm() / (x.norm() + 1e-12))
                                                        for x, y in zip(g32, g16)))
    encoder = model.get_base_model().get_encoder()
    clips = common.load_clips(common.corpus_clips(a.encoder_clips, "train"))
    feats = log_mel(processor, [c["audio"] for c in clips])
    enc_s = {k: [] for k in modes}
    with torch.no_grad():
        for f in feats:
            for name, bf16 in modes.items():
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    encoder(f[None])
                enc_s[name].append(time.perf_counter() - t)
    # The first batch and clip of each mode warm kernels and caches up.
    med = {k: (common.median(step_s[k][1:] or step_s[k]), common.median(enc_s[k][1:] or enc_s[k])) for k in modes}
    rows = [{"variant": k, "batches": len(data), "batch_size": a.batch_size, "step_median_s": round(s, 3),
             "encoder_clips": len(feats), "encoder_s_per_clip": round(e, 3)} for k, (s, e) in med.items()]
    ratios = {"cpu_has_bf16": cpu_has_bf16(),
              "fp32/bf16 step time": round(med["fp32"][0] / med["bf16"][0], 2),
              "fp32/bf16 encoder time": round(med["fp32"][1] / med["bf16"][1], 2),
              "largest relative difference (loss, gradient norms)": f"{worst:.1e}"}
    common.print_results(rows, ["variant", "batches", "batch_size", "step_median_s", "encoder_clips",
                                "encoder_s_per_clip"], ratios)
    common.write_result(a.name, {"args": vars(a), "machine": common.machine_info(), "results": rows,
                                 "ratios": ratios})


if __name__ == "__main__":
    main()
