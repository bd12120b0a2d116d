"""Training step time: the vocabulary logits of every position vs of the label tokens only.

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/label_logits.py --batch-size 8 --steps 6

The recipe's step (`+recipe=sg_english`): bundled tiny.en with its LoRA (decoder q/v and fc1/fc2),
a batch of train clips over their frozen 30 s encoder outputs, half the rows decoded after the
domain-term prompt (~200 tokens), the term tokens counted three times. Row `all_positions` is what
the Trainer computed before: the model's forward projects every position (prompt and padding
included) onto the 51,864-word vocabulary, and the weighted loss reads the label positions.
Row `label_positions` is `SpeechTrainer.compute_loss` (`logits_only_at`). Both run forward and
backward on the same batches, alternating; the script checks that loss and LoRA gradients agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def recipe_model():
    """Bundled tiny.en with the recipe's LoRA, in training mode, B moved off zero so gradients flow."""
    from hydra import compose, initialize_config_dir

    from asr_lora.config import CONF_DIR
    from asr_lora.model.lora import add_lora
    from asr_lora.model.whisper import load_whisper

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+recipe=sg_english"])
    model, processor = load_whisper("bundled:tiny.en", dtype=torch.float32)
    model = add_lora(model, cfg.lora)
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = 0.01 * torch.randn(p.shape, generator=g)
    return model.train(), processor, cfg


def recipe_trainer(model, cfg, **loss_terms):
    """A SpeechTrainer on the CPU around `model` with the recipe's term weight (and `loss_terms`:
    replay_kl, context_kl), for timing `compute_loss` outside a training loop."""
    import tempfile

    from transformers import Seq2SeqTrainingArguments

    from asr_lora.training.trainer import SpeechTrainer

    return SpeechTrainer(model=model, term_loss_weight=float(cfg.train.term_loss_weight), **loss_terms,
                         args=Seq2SeqTrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[],
                                                       remove_unused_columns=False))


def batches(model, processor, cfg, n_batches: int, batch_size: int, replay_rows: int = 0,
            own_words: bool = False) -> list[dict]:
    """The recipe collator's batches (prompt in half the rows, term tokens marked) over train clips,
    with their encoder outputs computed once, as the encoder cache serves them. With `replay_rows`,
    that many rows of each batch are general-English replay, flagged for the distillation term; with
    `own_words`, the domain's own words are marked too (train.context_kl)."""
    from transformers.modeling_outputs import BaseModelOutput

    from asr_lora.data.features import SpeechCollator, log_mel
    from asr_lora.evaluation.terms import terms_for_split
    from asr_lora.data.synthetic.corpus import build_corpus, load_manifest
    from asr_lora.training.term_tokens import TermTokenMarker, own_word_marker

    train = [r for r in load_manifest(build_corpus(progress=False)) if r.split == "train"]
    terms = terms_for_split({"text": [r.text for r in train], "subset": [r.subset for r in train]},
                            processor.tokenizer)
    main_n = batch_size - replay_rows
    main = common.load_clips(common.corpus_clips(n_batches * main_n, "train"))
    general = common.load_clips(common.corpus_clips(n_batches * replay_rows, "train", subset="general")
                                if replay_rows else [])
    tok = processor.tokenizer
    collate = SpeechCollator(processor, model.config.decoder_start_token_id, seed=0,
                             prompt_ids=[int(i) for i in processor.get_prompt_ids(terms.prompt)],
                             prompt_probability=cfg.train.prompt_probability, mark_replay=replay_rows > 0,
                             term_marker=TermTokenMarker(tok, terms.terms),
                             own_marker=own_word_marker(terms, tok) if own_words else None)
    out = []
    for b in range(n_batches):
        clips = [(c, "main") for c in main[b * main_n:(b + 1) * main_n]]
        clips += [(c, "general") for c in general[b * replay_rows:(b + 1) * replay_rows]]
        rows = [{"id": c["id"], "audio": np.asarray(c["audio"], dtype=np.float32), "subset": subset,
                 "labels": tok(" " + c["text"]).input_ids} for c, subset in clips]
        batch = collate(rows)
        with torch.no_grad():
            feats = log_mel(processor, [r["audio"] for r in rows])
            hidden = model.get_base_model().model.encoder(feats).last_hidden_state
        batch.pop("input_features", None)
        batch["encoder_outputs"] = BaseModelOutput(last_hidden_state=hidden)
        out.append(batch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="batches, each timed once per variant")
    ap.add_argument("--name", default="label_logits")
    a = ap.parse_args()
    common.quiet()
    from asr_lora.training.term_tokens import weighted_token_loss

    model, processor, cfg = recipe_model()
    weight = float(cfg.train.term_loss_weight)
    data = batches(model, processor, cfg, a.steps, a.batch_size)
    trainer = recipe_trainer(model, cfg)

    def all_positions(batch):
        inputs = {k: v for k, v in batch.items() if k != "term_tokens"}
        logits = model(**inputs).logits
        return weighted_token_loss(logits, batch["labels"], batch["term_tokens"], weight)

    def label_positions(batch):
        return trainer.compute_loss(model, dict(batch))

    variants = {"all_positions": all_positions, "label_positions": label_positions}
    times = {k: [] for k in variants}
    worst = 0.0
    for batch in data:
        grads = {}
        for name, step in variants.items():
            model.zero_grad()
            t = time.perf_counter()
            loss = step(batch)
            loss.backward()
            times[name].append(time.perf_counter() - t)
            grads[name] = (float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None])
        (la, ga), (lb, gb) = grads.values()
        worst = max(worst, abs(la - lb) / abs(la), *(float((x - y).abs().max() / (x.abs().max() + 1e-12))
                                                     for x, y in zip(ga, gb)))
    med = {k: common.median(v) for k, v in times.items()}
    positions = [(int(b["labels"].numel()), int((b["labels"] != -100).sum())) for b in data]
    rows = [{"variant": k, "batches": len(data), "batch_size": a.batch_size, "median_s": round(m, 3)}
            for k, m in med.items()]
    ratios = {"all_positions/label_positions time": round(med["all_positions"] / med["label_positions"], 2),
              "label tokens / positions": f"{sum(n for _, n in positions)} / {sum(t for t, _ in positions)}",
              "largest relative difference (loss, gradients)": f"{worst:.1e}"}
    common.print_results(rows, ["variant", "batches", "batch_size", "median_s"], ratios)
    common.write_result(a.name, {"args": vars(a), "machine": common.machine_info(), "results": rows,
                                 "ratios": ratios})
    if worst > 1e-3:
        raise SystemExit("the label-position loss or its gradients differ from the all-position loss")


if __name__ == "__main__":
    main()
