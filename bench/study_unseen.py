"""Recipe study chosen on voices of engines training never heard, and the leave-one-engine-out table.

    python bench/study_unseen.py variants        # the recipe variants (below), scored on dev
    python bench/study_unseen.py loo --base NAME [--steps N]  # train without engine E, score on E's dev voices
    python bench/study_unseen.py table           # study.md / study.json from the runs present
    python bench/study_unseen.py loo-table --base NAME [--with-all DIR]  # loo.md: E's voices, with vs without E
    python bench/study_unseen.py engines RUN_DIR # per-engine table of any run (its eval/per_utterance.csv)

Every run is `python -m asr_lora.train +recipe=sg_english <variant>` with export off, checkpoints
chosen on the unseen-engine dev part (`train.dev_part=unseen_engine`, 48 of its clips) and the final
scoring on the dev split (`eval.split=dev`): the test split is never looked at, so the recipe it
picks can still be judged there. A run whose metrics.json exists is reused (the study resumes).
Tables come from each run's eval/per_utterance.csv (norm), grouped by part, engine and subset.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr_lora.core.io import write_json, write_text  # noqa: E402
from asr_lora.evaluation.report import render_markdown_table  # noqa: E402

# One dev evaluation, at the last step: on 2 cores each costs ~2.5 min, and the final scoring of
# the unseen-engine dev part is what the study compares anyway.
COMMON = ["export.enabled=false", "logger=none", "eval.split=dev", "train.dev_part=unseen_engine",
          "train.eval_steps=128", "train.save_steps=128",
          # The configuration this study compares: q/v, short encoder context, 128 steps in fp32,
          # without the term prompt, the term weight or the replay term that +recipe=sg_english adds.
          "lora.target_modules=[q_proj,v_proj]", "train.encoder_context=batch", "train.prompt_probability=0",
          "eval.adapted_prompt=false", "train.max_steps=128", "train.warmup_steps=12",
          "train.term_loss_weight=1", "train.replay_kl=0", "train.bf16=false"]
DECODER = "lora.scope=[decoder_self,decoder_cross]"
ENCODER_DECODER = "lora.scope=[encoder,decoder_self,decoder_cross]"
# The frozen encoder's 30 s outputs could be cached for decoder-only runs, but filling that cache
# costs one 30 s encoder pass per training clip (~1.1 s each on 2 cores, ~40 min here), more than
# the whole encoder + decoder run; so decoder-only runs also train on the short context.
NO_CACHE = "train.cache_encoder_outputs=false"


def steps(n: int) -> list[str]:
    """Train for n steps, warm up for a tenth of them and evaluate/save once, at the end."""
    return [f"train.max_steps={n}", f"train.warmup_steps={max(1, n // 10)}", f"train.eval_steps={n}",
            f"train.save_steps={n}"]


# name -> overrides on top of +recipe=sg_english and COMMON (128 steps x 8 clips, lr 2e-3, q/v r=8).
# The plain variants train without timestamp targets (TIMESTAMP_VARIANTS below add them).
NO_TS = "train.timestamp_probability=0.0"
# Every variant trains on the corpus voices.json defines. bench/results/study_unseen.md's runs used the
# 18-train-voice corpus, except encdec_vox (`encdec` on 20 voices: festival rab and don added),
# encdec_do, encdec_voiceaug and encdec_replay* (20 voices) and encdec_rhv (`encdec` on 19ca580's 25
# voices, RHVoice added).
VARIANTS = {
    "encdec": [NO_TS],
    "encdec_aug": [NO_TS, "augment=default"],
    "dec_aug": [NO_TS, DECODER, "augment=default", NO_CACHE],
    "dec": [NO_TS, DECODER, NO_CACHE],
    # Steps and rank (384 steps fit the training engines harder).
    "encdec_s64": [NO_TS, *steps(64)],
    "dec_s256": [NO_TS, DECODER, NO_CACHE, *steps(256)],
    "encdec_r16": [NO_TS, "lora.r=16", "lora.alpha=32"],
    # 20 train voices: LoRA dropout, and augmentation that varies the voice only (tempo,
    # pitch, EQ, gain, SpecAugment), without the channel effects (room, noise, telephone, codec) that
    # the clean unseen-engine speech never has.
    "encdec_do": [NO_TS, "lora.dropout=0.1"],
    "encdec_voiceaug": [NO_TS, "augment=default", *(f"augment.{k}.enabled=false" for k in
                                                    ("room", "noise", "telephone", "codec")),
                        *(f"augment.{k}.prob=0.5" for k in ("tempo", "pitch", "eq"))],
    # The general-English replay share (the corpus as built has 28%).
    "encdec_replay0": [NO_TS, "data.replay_share=0.0"],
    "encdec_replay50": [NO_TS, "data.replay_share=0.5"],
    # One pre-rendered augmented take of each clip beside the clean clip (as Kaldi keeps 1.0x).
    "encdec_augclean": [NO_TS, "augment=default", "augment.copies=1", "augment.keep_clean=true"],
}
# Each variant again with a share of timestamp targets (train.timestamp_probability, bench/timestamps.py);
# encdec_ts scored better on dev but broke long-form decoding (bench/timestamps.py), so the recipe is encdec.
TIMESTAMP_VARIANTS = {f"{k}_ts": [*v[1:], "train.timestamp_probability=0.5"] for k, v in VARIANTS.items()}
LOO_ENGINES = ("espeak", "festival", "flite")  # piper has no dev voice to score on


def run(name: str, overrides: list[str], out: Path, eval_part: str | None) -> Path:
    run_dir = out / name
    if (run_dir / "metrics.json").is_file():
        print(f"[study] {name}: reusing {run_dir}", flush=True)
        return run_dir
    scope = [] if any(o.startswith("lora.scope=") for o in overrides) else [ENCODER_DECODER]
    cmd = [sys.executable, "-m", "asr_lora.train", "+recipe=sg_english", *COMMON, *scope, *overrides,
           f"eval.part={eval_part or 'null'}", f"run_dir={run_dir}", "quiet=true"]
    print("[study]", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    write_json(run_dir / "study_overrides.json", {"name": name, "overrides": overrides, "eval_part": eval_part})
    return run_dir


def wer_groups(run_dir: Path) -> dict[tuple, dict[str, float]]:
    """{(system, part, engine, subset): {"err": ..., "n": ...}}, engine "*" for the whole part."""
    from asr_lora.data.synthetic.voices import voice_parts

    parts = voice_parts()  # scoring leaves "part" empty when the set has no unseen-engine rows
    sums: dict[tuple, dict[str, float]] = defaultdict(lambda: {"err": 0.0, "n": 0.0})
    with open(run_dir / "eval" / "per_utterance.csv", newline="") as f:
        for r in csv.DictReader(f):
            e, n = int(r["sub"]) + int(r["del"]) + int(r["ins"]), int(r["n_ref"])
            for engine in (r["engine"] or "real", "*"):
                g = sums[(r["system"], r["part"] or parts.get(r["voice"], "real"), engine, r["subset"])]
                g["err"] += e
                g["n"] += n
    return sums


def wer(sums, *key) -> float | None:
    g = sums.get(key)
    return g["err"] / g["n"] if g and g["n"] else None


def fmt(b: float | None, a: float | None) -> str:
    if a is None:
        return "n/a"
    if b is None:
        return f"{100 * a:.2f}%"
    return f"{100 * b:.2f} -> {100 * a:.2f}% ({100 * (a - b) / b:+.0f}%)" if b else f"{100 * a:.2f}%"


def table(out: Path) -> str:
    # Training runs only: an evaluate directory kept under --out (loo --with-all) has no metrics.json.
    runs = sorted(p.parent.parent for p in out.glob("*/eval/per_utterance.csv")
                  if (p.parent.parent / "metrics.json").is_file())
    summary, rows, engine_rows = {}, [], []
    for d in runs:
        m = json.loads((d / "metrics.json").read_text())
        meta = json.loads((d / "study_overrides.json").read_text()) if (d / "study_overrides.json").is_file() else {}
        s = wer_groups(d)
        figs = {f"{system}/{part}/{subset}": wer(s, system, part, "*", subset)
                for system in ("base", "adapted") for part in ("unseen_engine", "seen_engine")
                for subset in ("main", "control")}
        per_engine = {f"{system}/{part}/{engine}/{subset}": wer(s, system, part, engine, subset)
                      for (system, part, engine, subset) in s if engine != "*"}
        summary[d.name] = {"overrides": meta.get("overrides"), "train_seconds": m["train"]["seconds"],
                           "best_dev_wer": m["train"]["best_dev_wer"], "steps": m["train"]["steps"],
                           "params": m["params"], "wer": figs, "per_engine": per_engine}
        g = lambda sy, p, su: figs[f"{sy}/{p}/{su}"]  # noqa: E731
        rows.append([d.name, " ".join(meta.get("overrides") or []) or "(recipe)",
                     f"{m['train']['seconds']:.0f} s", f"{100 * (m['train']['best_dev_wer'] or 0):.2f}%",
                     fmt(g("base", "unseen_engine", "main"), g("adapted", "unseen_engine", "main")),
                     fmt(g("base", "unseen_engine", "control"), g("adapted", "unseen_engine", "control")),
                     fmt(g("base", "seen_engine", "main"), g("adapted", "seen_engine", "main")),
                     fmt(g("base", "seen_engine", "control"), g("adapted", "seen_engine", "control"))])
        for (system, part, engine, subset) in sorted(k for k in s if k[0] == "adapted" and k[2] != "*"):
            engine_rows.append([d.name, part, engine, subset, fmt(wer(s, "base", part, engine, subset),
                                                                  wer(s, system, part, engine, subset))])
    md = ["# Study on the dev split, chosen on the unseen-engine part (bench/study_unseen.py)", "",
          render_markdown_table(rows, ["run", "overrides", "train time", "best dev WER (unseen part)",
                                       "unseen-engine SG English", "unseen-engine control",
                                       "training-engine SG English", "training-engine control"]),
          "", "## Per engine (dev voices; zero-shot -> adapted)", "",
          render_markdown_table(engine_rows, ["run", "part", "engine", "subset", "WER"])]
    text = "\n".join(md) + "\n"
    write_text(out / "study.md", text)
    write_json(out / "study.json", summary)
    return text


def loo_table(out: Path, tag: str, with_all: Path | None) -> str:
    """Per left-out engine E, on E's dev voices: zero-shot, adapted on every engine, adapted without E.
    `with_all` is the every-engine run or an evaluate of its adapter on the training-engine dev part
    (with --skip-all no `<tag>_all` run exists)."""
    all_dir = with_all or out / f"{tag}_all"
    every = wer_groups(all_dir)
    rows, summary = [], {}
    for d in sorted(out.glob(f"{tag}_no_*/eval/per_utterance.csv")):
        run_dir, engine = d.parent.parent, d.parent.parent.name.removeprefix(f"{tag}_no_")
        s = wer_groups(run_dir)
        for subset in ("main", "control"):
            zs, a_all, a_no = (wer(s, "base", "seen_engine", engine, subset),
                               wer(every, "adapted", "seen_engine", engine, subset),
                               wer(s, "adapted", "seen_engine", engine, subset))
            if zs is None:
                continue
            n = int(s[("base", "seen_engine", engine, subset)]["n"])
            summary[f"{engine}/{subset}"] = {"zero_shot": zs, "adapted_all_engines": a_all, "adapted_without": a_no,
                                             "n_ref_words": n}
            share = (f"{100 * (zs - a_no) / (zs - a_all):.0f}%" if a_all is not None and a_no is not None
                     and zs - a_all > 0 else "n/a")
            rows.append([engine, "SG English" if subset == "main" else "control", n, f"{100 * zs:.2f}%",
                         fmt(zs, a_all), fmt(zs, a_no), share])
    md = [f"# Leave-one-engine-out ({tag}; bench/study_unseen.py loo)", "",
          f"Each row: the dev voices of engine E only. 'every engine' is {all_dir}; 'without E' trained with "
          "data.exclude_train_engines=[E]. The last column is the share of the every-engine gain on E that "
          "survives when E is not heard in training.", "",
          render_markdown_table(rows, ["engine E", "subset", "ref words", "zero-shot", "adapted, every engine",
                                       "adapted, without E", "gain kept without E"])]
    text = "\n".join(md) + "\n"
    write_text(out / "loo.md", text)
    write_json(out / "loo.json", summary)
    return text


def engine_table(run_dir: Path) -> str:
    """Per part / engine / subset, zero-shot -> adapted, for any run or evaluate directory."""
    s = wer_groups(run_dir)
    rows = [[part, engine, subset, fmt(wer(s, "base", part, engine, subset), wer(s, "adapted", part, engine, subset))]
            for (system, part, engine, subset) in sorted(k for k in s if k[0] == "adapted" and k[2] != "*")]
    return render_markdown_table(rows, ["part", "engine", "subset", "WER (zero-shot -> adapted)"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["variants", "loo", "table", "engines", "loo-table"])
    ap.add_argument("runs", nargs="*", type=Path, help="engines: run or evaluate directories")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "study_unseen")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    ap.add_argument("--base", default="encdec_aug", help="loo: the variant every leave-one-out run starts from")
    ap.add_argument("--steps", type=int, help="loo: train this many steps (one dev evaluation, at the end)")
    ap.add_argument("--engines", nargs="*", help=f"loo: engines to leave out (default {list(LOO_ENGINES)})")
    ap.add_argument("--with-all", type=Path,
                    help="loo-table: the every-engine run or evaluate directory (default <out>/loo_<base>_all)")
    ap.add_argument("--skip-all", action="store_true",
                    help="loo: no with-every-engine run (score the variant's own adapter with evaluate instead)")
    args = ap.parse_args()
    if args.what == "variants":
        for name in args.only or VARIANTS:
            run(name, (VARIANTS | TIMESTAMP_VARIANTS)[name], args.out, "unseen_engine")
    elif args.what == "loo":
        # Leave-one-engine-out: the same variant trained on every engine, then without engine E,
        # both scored on the training-engine dev voices (the no-E runs on E's voices only).
        base = VARIANTS[args.base] + ([f"train.max_steps={args.steps}", f"train.eval_steps={args.steps}",
                                       f"train.save_steps={args.steps}"] if args.steps else [])
        tag = f"loo_{args.base}" + (f"_{args.steps}" if args.steps else "")
        if not args.skip_all:
            run(f"{tag}_all", base, args.out, "seen_engine")
        for e in args.engines or LOO_ENGINES:
            run(f"{tag}_no_{e}", [*base, f"data.exclude_train_engines=[{e}]", f"eval.engines=[{e}]"], args.out,
                "seen_engine")
    if args.what == "loo-table":
        print(loo_table(args.out, f"loo_{args.base}" + (f"_{args.steps}" if args.steps else ""), args.with_all))
        return
    if args.what == "engines":
        for d in args.runs:
            print(f"## {d}\n\n{engine_table(d)}\n")
        return
    print(table(args.out))


if __name__ == "__main__":
    main()
