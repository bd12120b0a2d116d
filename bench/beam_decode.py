"""Beam-search decoding time: transformers' decoder cache vs `model/beam_cache.py` (cache, folded attention).

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/beam_decode.py --clips 16 --beams 5

transformers' `EncoderDecoderCache` index-selects the cross-attention states after every beam step,
though every beam of a clip holds the same ones; `BeamSearchCache` reorders only the self-attention
states (row `beam_search_cache`, the cache passed to one `generate` call). With the model folded
(`fold_beam_search`, row `beam_folded`, what evaluation and `inference/decode.py` run), keys and
values are also projected and kept once per clip instead of once per beam. All decode the same
batch of dev clips (bundled tiny.en, 30 s input, one `generate` call), alternating, and the script
checks that the tokens are identical. Greedy decoding is the peer row.

With `--prompt` (the prompt baseline's way of decoding: Whisper's `prompt_ids`, here the recipe's
Singapore term list, ~200 tokens), three more rows decode the folded model with the prompt: as
evaluation runs it (`beam_folded_prompt`: the first step runs the prompt once per clip, and
`LastPositionHead`), with the first step run once per beam as transformers does
(`beam_folded_prompt_per_beam`), and with the stock head that projects every prompt position onto
the vocabulary at the first step (`beam_folded_prompt_all_logits`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def recipe_prompt(tokenizer) -> str:
    """The prompt the recipe's evaluation decodes with: the terms `build_terms` derives from the
    embedded corpus's train split (domain rows and general-English rows, as the job reads them)."""
    from asr_lora.data.synthetic.corpus import build_corpus, load_manifest
    from asr_lora.evaluation.terms import terms_for_split

    train = [r for r in load_manifest(build_corpus(progress=False)) if r.split == "train"]
    return terms_for_split({"text": [r.text for r in train], "subset": [r.subset for r in train]}, tokenizer).prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--name", default="beam_decode")
    ap.add_argument("--prompt", action="store_true", help="also time prompted decoding (three more rows)")
    a = ap.parse_args()
    common.quiet()
    from transformers.cache_utils import DynamicCache

    from asr_lora.model.beam_cache import BeamSearchCache, fold_beam_search

    model, processor, feats = common.tiny_en_dev_features(a.clips)
    folded = copy.deepcopy(model)
    assert fold_beam_search(folded) == len(folded.model.decoder.layers)
    kw = dict(max_new_tokens=128, do_sample=False)
    runs = {"greedy": lambda: model.generate(input_features=feats, num_beams=1, **kw),
            "beam_stock_cache": lambda: model.generate(input_features=feats, num_beams=a.beams, **kw),
            "beam_search_cache": lambda: model.generate(input_features=feats, num_beams=a.beams, **kw,
                                                        cache=BeamSearchCache(DynamicCache(), DynamicCache())),
            "beam_folded": lambda: folded.generate(input_features=feats, num_beams=a.beams, **kw)}
    if a.prompt:
        from torch import nn

        all_logits = copy.deepcopy(folded)
        all_logits.proj_out.__class__ = nn.Linear
        per_beam = copy.deepcopy(folded)
        del per_beam.forward  # fold_beam_search's first-step wrapper: back to the class's forward
        prompt = torch.as_tensor(processor.get_prompt_ids(recipe_prompt(processor.tokenizer)))
        for name, m in (("beam_folded_prompt", folded), ("beam_folded_prompt_per_beam", per_beam),
                        ("beam_folded_prompt_all_logits", all_logits)):
            runs[name] = lambda m=m: m.generate(input_features=feats, num_beams=a.beams, prompt_ids=prompt, **kw)
    times, tokens = {k: [] for k in runs}, {}
    with torch.no_grad():
        for _ in range(a.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                tokens[name] = fn()
                times[name].append(time.perf_counter() - t)
    med = {k: common.median(v) for k, v in times.items()}
    rows = [{"variant": k, "clips": len(feats), "beams": 1 if k == "greedy" else a.beams,
             "median_s": round(m, 2), "s_per_clip": round(m / len(feats), 3)} for k, m in med.items()]
    identical = all(torch.equal(tokens["beam_stock_cache"], tokens[k]) for k in ("beam_search_cache", "beam_folded"))
    ratios = {"beam_stock_cache/beam_search_cache time": round(med["beam_stock_cache"] / med["beam_search_cache"], 2),
              "beam_search_cache/beam_folded time": round(med["beam_search_cache"] / med["beam_folded"], 2),
              "beam_stock_cache/beam_folded time": round(med["beam_stock_cache"] / med["beam_folded"], 2),
              "beam_folded/greedy time": round(med["beam_folded"] / med["greedy"], 2),
              "tokens identical": identical}
    if a.prompt:
        ratios["beam_folded_prompt_all_logits/beam_folded_prompt time"] = round(
            med["beam_folded_prompt_all_logits"] / med["beam_folded_prompt"], 2)
        ratios["beam_folded_prompt_per_beam/beam_folded_prompt time"] = round(
            med["beam_folded_prompt_per_beam"] / med["beam_folded_prompt"], 2)
        ratios["beam_folded_prompt/beam_folded time"] = round(med["beam_folded_prompt"] / med["beam_folded"], 2)
        ratios["prompted tokens identical"] = all(
            torch.equal(tokens["beam_folded_prompt"], tokens[k])
            for k in ("beam_folded_prompt_all_logits", "beam_folded_prompt_per_beam"))
        identical = identical and ratios["prompted tokens identical"]
    common.print_results(rows, ["variant", "clips", "beams", "median_s", "s_per_clip"], ratios)
    common.write_result(a.name, {"args": vars(a), "machine": common.machine_info(), "results": rows,
                                 "ratios": ratios})
    if not identical:
        raise SystemExit("BeamSearchCache, the folded cross-attention, the first step run once per clip or the "
                         "last-position head changed the tokens")


if __name__ == "__main__":
    main()
