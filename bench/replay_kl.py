"""What the base distillation terms (train.replay_kl, train.context_kl) add to a training step of the recipe.

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/replay_kl.py --batches 6 --replay-rows 2

The recipe's step (`+recipe=sg_english`: bundled tiny.en, decoder LoRA, half the rows after the
term prompt, encoder outputs computed once) on batches of 8 train clips of which `--replay-rows`
are general-English replay. Variants, each on the same batches, alternating:
- `no_kl`: the step without the term (the peer);
- `kl`: `SpeechTrainer.compute_loss` with replay_kl=1 (the base decodes each replay row's plain
  transcript, as wide as the longest one, and projects the transcript tokens only);
- `kl_batch_width`: the same term with the base decoding at the batch's width (which the prompted
  rows set, ~200 tokens) and projecting every position onto the vocabulary;
- `kl_context`: replay_kl=1 and context_kl=1 (the base decodes every row, not the replay rows only).
The script checks the two replay terms agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from label_logits import batches, recipe_model  # noqa: E402


def batch_width_distillation(peft_model, inputs, logits, labels, rows):
    """The per-token term with the base decoding at the batch's width and projecting every position."""
    from asr_lora.training.distill import _pick_rows

    picked = {k: _pick_rows(v, rows) for k, v in inputs.items() if k not in ("labels", "decoder_input_ids")}
    targets = labels[rows]
    positions = targets != -100
    plain = torch.full_like(targets, -100)
    for i, keep in enumerate(positions):
        plain[i, : int(keep.sum())] = targets[i][keep]
    with torch.no_grad(), peft_model.disable_adapter():
        teacher = peft_model(**picked, labels=plain).logits
    student = torch.log_softmax(logits[rows[(labels != -100).nonzero(as_tuple=True)[0]]].float(), dim=-1)
    base = torch.log_softmax(teacher[plain != -100].float(), dim=-1)
    return torch.nn.functional.kl_div(student, base, log_target=True, reduction="none").sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--replay-rows", type=int, default=2, help="general-English rows per batch (the recipe: ~28%%)")
    ap.add_argument("--batches", type=int, default=6, help="each timed twice per variant")
    ap.add_argument("--name", default="replay_kl")
    a = ap.parse_args()
    common.quiet()
    from transformers import Seq2SeqTrainingArguments

    import asr_lora.training.distill as distill_module
    import asr_lora.training.trainer as trainer_module

    model, processor, cfg = recipe_model()
    data = batches(model, processor, cfg, a.batches, a.batch_size, a.replay_rows, own_words=True)

    def trainer(weight: float, context: float = 0.0):
        return trainer_module.SpeechTrainer(
            model=model, term_loss_weight=float(cfg.train.term_loss_weight), replay_kl=weight, context_kl=context,
            args=Seq2SeqTrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[],
                                          remove_unused_columns=False))

    plain, with_kl, with_context = trainer(0.0), trainer(1.0), trainer(1.0, 1.0)
    terms: dict[str, list[float]] = {"kl": [], "kl_batch_width": []}
    kl_now = distill_module.base_divergence

    def record(name, fn):
        def run(*args):
            value = fn(*args)
            terms[name].append(float(value.detach().mean()))
            return value
        return run

    def step_with(name, fn):
        def step(batch):
            distill_module.base_divergence = record(name, fn)
            try:
                return with_kl.compute_loss(model, dict(batch))
            finally:
                distill_module.base_divergence = kl_now
        return step

    variants = {"no_kl": lambda batch: plain.compute_loss(model, dict(batch)),
                "kl": step_with("kl", kl_now), "kl_batch_width": step_with("kl_batch_width", batch_width_distillation),
                "kl_context": lambda batch: with_context.compute_loss(model, dict(batch))}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(2):
        for batch in data:
            for name, step in variants.items():
                model.zero_grad()
                t = time.perf_counter()
                step(batch).backward()
                times[name].append(time.perf_counter() - t)
    worst = max(abs(x - y) / abs(y) for x, y in zip(terms["kl"], terms["kl_batch_width"]))
    med = {k: common.median(v) for k, v in times.items()}
    rows = [{"variant": k, "batches": len(data), "batch_size": a.batch_size, "replay_rows": a.replay_rows,
             "median_s": round(m, 3)} for k, m in med.items()]
    ratios = {"kl/no_kl time": round(med["kl"] / med["no_kl"], 2),
              "kl_batch_width/no_kl time": round(med["kl_batch_width"] / med["no_kl"], 2),
              "kl_context/no_kl time": round(med["kl_context"] / med["no_kl"], 2),
              "largest relative difference of the term": f"{worst:.1e}"}
    common.print_results(rows, ["variant", "batches", "batch_size", "replay_rows", "median_s"], ratios)
    common.write_result(a.name, {"args": vars(a), "machine": common.machine_info(), "results": rows,
                                 "ratios": ratios, "raw_s": times})
    if worst > 1e-4:
        raise SystemExit("the distillation term differs between the two base decodings")


if __name__ == "__main__":
    main()
