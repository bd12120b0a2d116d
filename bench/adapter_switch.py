"""Switching between two LoRA adapters on one resident base (asr_lora.inference.engine.Engine,
peft set_adapter) vs reloading a merged model from disk (WhisperForConditionalGeneration.from_pretrained).

    .venv/bin/python bench/adapter_switch.py                       # bundled tiny.en, two random adapters
    .venv/bin/python bench/adapter_switch.py --adapters runs/a/adapter runs/b/adapter --repeats 20
    .venv/bin/python bench/adapter_switch.py --tiny                # random tiny Whisper (smoke)

Per switch (alternating a, b, a, ...), median and p90 over `--repeats` switches:

- `set_adapter`           Engine with both adapters loaded; the switch is what Engine does
                          on a call with another `use=` (peft `set_adapter`)
- `load_adapter`          a resident base that hot-loads the next adapter from disk (peft
                          `load_adapter` + `set_adapter` + `delete_adapter` of the old one)
- `merged reload`         `from_pretrained` of the next merged model directory (safetensors; the OS
                          page cache is warm after the first load, so this is the best case)

The `+ 1 clip` columns add one greedy transcription after the switch (what a user waits for).
Before timing, the script checks that Engine (adapter a) and the merged model a decode the same
greedy text on the clip, so the switch really selects the adapter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _stats(xs: list[float]) -> dict:
    xs_ms = sorted(1000 * x for x in xs)
    p90 = xs_ms[min(len(xs_ms) - 1, int(round(0.9 * (len(xs_ms) - 1))))]
    return {"median_ms": round(statistics.median(xs_ms), 3), "p90_ms": round(p90, 3), "n": len(xs_ms)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled:tiny.en")
    ap.add_argument("--adapters", nargs=2, type=Path, default=None, metavar=("A", "B"))
    ap.add_argument("--repeats", type=int, default=10, help="switches per method")
    ap.add_argument("--clip-repeats", type=int, default=4, help="switches per method with one transcription")
    ap.add_argument("--tiny", action="store_true", help="random tiny Whisper + a synthetic tone (smoke run)")
    ap.add_argument("--name", default=None)
    a = ap.parse_args(argv)
    common.quiet()
    machine = common.machine_info()

    import torch
    from transformers import WhisperForConditionalGeneration

    from asr_lora.inference.decode import transcribe_arrays
    from asr_lora.inference.engine import Engine

    with tempfile.TemporaryDirectory(prefix="bench_switch_") as tmp:
        tmp = Path(tmp)
        if a.tiny:
            base = str(common.make_tiny_whisper(tmp / "tiny-whisper"))
            clip = common.load_clips(common.tone_clips(1, tmp / "tones"))[0]
        else:
            base = a.model
            clip = common.load_clips(common.corpus_clips(1, "test"))[0]
        if a.adapters:
            ad = {"a": a.adapters[0], "b": a.adapters[1]}
        else:
            ad = {"a": common.random_adapter(base, tmp / "adapter-a", seed=1),
                  "b": common.random_adapter(base, tmp / "adapter-b", seed=2)}
        merged = {k: common.merged_hf_dir(base, v, tmp / f"merged-{k}") for k, v in ad.items()}
        adapter_bytes = {k: (Path(v) / "adapter_model.safetensors").stat().st_size for k, v in ad.items()}
        merged_bytes = {k: (v / "model.safetensors").stat().st_size for k, v in merged.items()}
        order = ["a", "b"]
        audio = [clip["audio"]]

        # ---- Engine + set_adapter
        t0 = time.perf_counter()
        tr = Engine(base, adapters=dict(ad), mode="switch", beam_size=1)
        transcriber_load_s = time.perf_counter() - t0
        check = {k: tr.transcribe(audio, k)[0]["text"] for k in order}
        merged_check = {}
        for k in order:
            m = WhisperForConditionalGeneration.from_pretrained(str(merged[k]), use_safetensors=True).eval()
            merged_check[k] = transcribe_arrays(m, tr.processor, audio)[0]
        consistent = all(check[k] == merged_check[k] for k in order)
        short = {k: v[:60] for k, v in check.items()}
        print(f"[adapter_switch] adapter vs merged greedy text identical: {consistent} {short}", flush=True)

        def timed(fn, n):
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                fn(order[(i + 1) % 2])
                out.append(time.perf_counter() - t0)
            return out

        res = {}
        # Engine._select is exactly what Engine.transcribe(audio, name) does before decoding.
        res["set_adapter"] = timed(lambda k: tr._select(k), a.repeats)
        res["set_adapter + 1 clip"] = timed(lambda k: tr.transcribe(audio, k), a.clip_repeats)

        # ---- resident base, adapter hot-loaded from disk on every switch
        hot = Engine(base, adapters={"a": ad["a"]}, mode="switch", beam_size=1)
        state = {"current": "a", "n": 0}

        def hot_switch(k, transcribe=False):
            state["n"] += 1
            name = f"{k}{state['n']}"
            hot.model.load_adapter(str(ad[k]), adapter_name=name, is_trainable=False)
            hot.model.set_adapter(name)
            hot.model.delete_adapter(state["current"])
            state["current"] = name
            hot.adapter_dirs = {name: ad[k]}
            if transcribe:
                hot.transcribe(audio, name)

        res["load_adapter"] = timed(hot_switch, a.repeats)
        res["load_adapter + 1 clip"] = timed(lambda k: hot_switch(k, True), a.clip_repeats)

        # ---- merged model reloaded from disk on every switch
        holder = {}

        def reload(k, transcribe=False):
            holder.pop("m", None)
            holder["m"] = WhisperForConditionalGeneration.from_pretrained(str(merged[k]), use_safetensors=True).eval()
            if transcribe:
                transcribe_arrays(holder["m"], tr.processor, audio)

        reload("a")  # first (cold page cache) load is not a switch
        res["merged reload"] = timed(reload, a.repeats)
        res["merged reload + 1 clip"] = timed(lambda k: reload(k, True), a.clip_repeats)

    rows = [{"method": k, **_stats(v)} for k, v in res.items()]
    sa, mr = _stats(res["set_adapter"]), _stats(res["merged reload"])
    sa1, mr1 = _stats(res["set_adapter + 1 clip"]), _stats(res["merged reload + 1 clip"])
    ratios = {
        "merged reload / set_adapter (switch only, median)": round(mr["median_ms"] / sa["median_ms"], 1),
        "load_adapter / set_adapter (switch only, median)": round(
            _stats(res["load_adapter"])["median_ms"] / sa["median_ms"], 1),
        "merged reload / set_adapter (switch + 1 clip, median)": round(mr1["median_ms"] / sa1["median_ms"], 2),
    }
    print(f"\nadapter switch: model={'tiny-random' if a.tiny else a.model}, clip {clip['duration']:.1f} s, "
          f"device cpu, torch threads {torch.get_num_threads()}, load avg at start {machine.get('loadavg_at_start')}; "
          f"adapter {adapter_bytes['a'] / 1e6:.2f} MB, merged model {merged_bytes['a'] / 1e6:.1f} MB")
    common.print_results(rows, ["method", "median_ms", "p90_ms", "n"], ratios)
    name = a.name or ("adapter_switch_tiny" if a.tiny else "adapter_switch")
    path = common.write_result(name, {
        "benchmark": "adapter_switch", "args": {k: str(v) for k, v in vars(a).items()}, "machine": machine,
        "loadavg_at_end": list(os.getloadavg()), "transcriber_load_s": round(transcriber_load_s, 2),
        "adapter_bytes": adapter_bytes, "merged_bytes": merged_bytes, "adapter_matches_merged": consistent,
        "texts": {"adapter": check, "merged": merged_check}, "results": rows, "ratios": ratios,
        "raw_seconds": res,
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
