"""The recipe's training step with its prompted and plain rows in one padded batch against two
narrower ones (train.split_prompted_rows, asr_lora/training/row_groups.py).

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/split_rows.py --batch-size 8 --steps 8

`SpeechTrainer.compute_loss` of `+recipe=sg_english` (term prompt on half the rows, term tokens
weighted 3, replay distillation on 2 rows of each batch) forward and backward on the same batches,
alternating, under the autocast `train.bf16=auto` picks on this CPU. Batches without both kinds of
row are not split and not counted. Reports the median step of each, their ratio, and how far the
split step's loss and LoRA gradients are from the padded one's.
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
    ap.add_argument("--steps", type=int, default=8, help="batches, each timed twice per variant")
    ap.add_argument("--name", default="split_rows")
    a = ap.parse_args()
    common.quiet()
    from asr_lora.core.runtime import use_bf16
    from asr_lora.training.row_groups import row_groups

    model, processor, cfg = label_logits.recipe_model()
    data = label_logits.batches(model, processor, cfg, a.steps, a.batch_size, replay_rows=2)
    trainer = label_logits.recipe_trainer(model, cfg, replay_kl=1.0)
    bf16 = use_bf16("auto", on_cpu=True)
    modes = {"padded": False, "split": True}
    step_s = {k: [] for k in modes}
    worst, widths = 0.0, []
    for batch in data:
        groups = row_groups(batch["labels"])
        if groups is None:
            continue
        widths.append((batch["labels"].shape[1], len(groups[0])))
        for rep in range(2):  # the first pass over the first batch warms kernels up; both are kept otherwise
            grads = {}
            for name, split in modes.items():
                trainer.split_rows = split
                model.zero_grad()
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = trainer.compute_loss(model, dict(batch))
                loss.backward()
                step_s[name].append(time.perf_counter() - t)
                grads[name] = (float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None])
            (lp, gp), (ls, gs) = grads.values()
            worst = max(worst, abs(lp - ls) / abs(lp), *(float((x - y).norm() / (x.norm() + 1e-12))
                                                         for x, y in zip(gp, gs)))
    med = {k: common.median(v[1:] or v) for k, v in step_s.items()}
    rows = [{"variant": k, "batches": len(widths), "batch_size": a.batch_size, "bf16": bf16,
             "step_median_s": round(s, 3)} for k, s in med.items()]
    ratios = {"padded/split step time": round(med["padded"] / med["split"], 2),
              "prompted rows per batch (mean)": round(sum(n for _, n in widths) / max(len(widths), 1), 2),
              "batch width (mean positions)": round(sum(w for w, _ in widths) / max(len(widths), 1), 1),
              "largest relative difference (loss, gradient norms)": f"{worst:.1e}"}
    common.print_results(rows, ["variant", "batches", "batch_size", "bf16", "step_median_s"], ratios)
    common.write_result(a.name, {"args": vars(a), "machine": common.machine_info(), "results": rows,
                                 "ratios": ratios})


if __name__ == "__main__":
    main()
