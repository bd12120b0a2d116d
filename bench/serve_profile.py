"""Where a serving batch's time goes: one batch decoded directly on the Engine, no HTTP.

    .venv/bin/python bench/serve_profile.py              # bundled tiny.en, batch of 8 spoken clips
    .venv/bin/python bench/serve_profile.py --cprofile   # and the hot functions of the mixed batch
    .venv/bin/python bench/serve_profile.py --tiny       # random tiny Whisper + tones (smoke)

Times one `Engine.decode` of the same 8 clips (the bench/serve_load.py sentences and random
adapter) as: a mixed batch (4 `base` + 4 `sg`, peft `adapter_names` per row), all `sg`, all `base`,
the adapter merged into the base, and the base with no adapter loaded; the encoder's share is
measured with forward hooks. bench/serve_load.py measures the servers; this says why its ratios
are what they are (on CPU: the 30 s encoder pass, not the adapters).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def timed(engine, jobs, label: str, reps: int) -> dict:
    encoder = engine.model.get_encoder()
    spans: list[float] = []
    h1 = encoder.register_forward_pre_hook(lambda m, a: spans.append(-time.perf_counter()))
    h2 = encoder.register_forward_hook(lambda m, a, o: spans.__setitem__(-1, spans[-1] + time.perf_counter()))
    engine.decode(jobs)  # warm-up, untimed
    spans.clear()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = engine.decode(jobs)
    batch_s = (time.perf_counter() - t0) / reps
    h1.remove()
    h2.remove()
    tokens = [len(engine.processor.tokenizer(o["text"]).input_ids) for o in out]
    row = {"variant": label, "batch": len(jobs), "batch_s": round(batch_s, 2),
           "encoder_s": round(sum(spans) / reps, 2), "tokens": tokens}
    print(f"{label}: {batch_s:.2f} s per batch of {len(jobs)}; encoder {row['encoder_s']:.2f} s; tokens {tokens}",
          flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled:tiny.en")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="random tiny Whisper + tones (smoke run)")
    a = ap.parse_args(argv)
    common.quiet()
    from serve_load import _spoken_clips

    from asr_lora.inference.engine import Engine, Job

    with tempfile.TemporaryDirectory(prefix="bench_serve_profile_") as tmp:
        tmp = Path(tmp)
        if a.tiny:
            base, tokens = str(common.make_tiny_whisper(tmp / "tiny-whisper")), 8
            clips = common.load_clips(common.tone_clips(6, tmp / "tones"))
        else:
            base, tokens = a.model, 64
            clips = common.load_clips(_spoken_clips(tmp / "spoken"))
        adapter = common.random_adapter(base, tmp / "adapter", seed=1)
        merged = common.merged_hf_dir(base, adapter, tmp / "merged")
        audios = [clips[i % len(clips)]["audio"] for i in range(a.batch)]
        mixed_names = ["base" if i % 2 == 0 else "sg" for i in range(a.batch)]
        mixed = Engine(base, {"sg": adapter}, mode="mixed", max_new_tokens=tokens)
        rows = [timed(mixed, [Job(x, n) for x, n in zip(audios, mixed_names)], "mixed (half base, half sg)", a.reps),
                timed(mixed, [Job(x, "sg") for x in audios], "all sg", a.reps),
                timed(mixed, [Job(x, "base") for x in audios], "all base (adapter loaded)", a.reps),
                timed(Engine(str(merged), {}, max_new_tokens=tokens), [Job(x, "base") for x in audios], "merged",
                      a.reps),
                timed(Engine(base, {}, max_new_tokens=tokens), [Job(x, "base") for x in audios], "base, no adapter",
                      a.reps)]
        if a.cprofile:
            import cProfile
            import pstats

            jobs = [Job(x, n) for x, n in zip(audios, mixed_names)]
            prof = cProfile.Profile()
            prof.runcall(mixed.decode, jobs)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    path = common.write_result("serve_profile_tiny" if a.tiny else "serve_profile",
                               {"machine": common.machine_info(), "args": vars(a), "rows": rows})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
