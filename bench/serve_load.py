"""Load test of `asr_lora.serve` on loopback: bounded concurrent clients, half `base`, half an adapter.

    .venv/bin/python bench/serve_load.py                       # bundled tiny.en, random adapter, spoken clips
    .venv/bin/python bench/serve_load.py --requests 64 --concurrency 16 --device cuda
    .venv/bin/python bench/serve_load.py --tiny --requests 8   # random tiny Whisper (smoke)

Three servers, each a real uvicorn on 127.0.0.1 fed by the same fixed list of requests:

- `mixed batching`         one base + the adapter; requests arriving together decoded in ONE
                           generate with peft's `adapter_names` per row (the server's default)
- `per-request switching`  the same model, one request at a time, `set_adapter`/`disable_adapter` before each
- `merged`                 the adapter merged into the base, one model serving every request (batched the
                           same way); the throughput a dedicated deployment of one adapter gets

Throughput is audio seconds per wall second over the whole run; latency is per request (client side).
Every response is checked: a request that errors or never answers counts as lost, and the mixed
server's transcripts must equal the switching server's for the same clip and model.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _spoken_clips(out_dir: Path) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, text in enumerate(common.SENTENCES):
        path = out_dir / f"say{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        clips.append({"id": f"say{i}", "text": text, "audio_path": str(path)})
    return clips


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_variant(name: str, engine, requests: list[tuple[bytes, float, str]], concurrency: int, max_batch: int,
                window_ms: float) -> tuple[dict, list]:
    import httpx

    from asr_lora.serving.app import ServerThread, create_app
    from asr_lora.serving.batcher import Batcher

    batcher = Batcher(engine, max_batch=max_batch, window_ms=window_ms)
    with ServerThread(create_app(batcher)) as srv, httpx.Client(timeout=600, limits=httpx.Limits(
            max_connections=concurrency)) as client:
        def call(req):
            data, _, model = req
            t0 = time.perf_counter()
            try:
                r = client.post(srv.url + "/v1/audio/transcriptions", files={"file": ("clip.wav", data)},
                                data={"model": model})
                ok = r.status_code == 200
                return ok, time.perf_counter() - t0, r.json().get("text") if ok else None
            except httpx.HTTPError:
                return False, time.perf_counter() - t0, None

        for model in sorted({m for _, _, m in requests}):  # warm-up, untimed
            call((requests[0][0], 0, model))
        n_batches0 = len(engine.batches)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(call, requests))
        wall = time.perf_counter() - t0
    batcher.close()
    ok = [r for r in results if r[0]]
    lat = [r[1] * 1000 for r in ok]
    sizes = [len(b) for b in engine.batches[n_batches0:]]
    audio_s = sum(req[1] for req, r in zip(requests, results) if r[0])
    row = {"variant": name, "requests": len(requests), "ok": len(ok), "lost": len(requests) - len(ok),
           "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 2),
           "p50_ms": round(statistics.median(lat), 1) if lat else None,
           "p95_ms": round(_pct(lat, 0.95), 1) if lat else None,
           "mean_batch": round(statistics.mean(sizes), 2) if sizes else None}
    return row, [r[2] for r in results]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled:tiny.en")
    ap.add_argument("--tiny", action="store_true", help="random tiny Whisper + tones (smoke run)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--window-ms", type=float, default=20.0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--device", default=None)
    ap.add_argument("--name", default="serve_load")
    a = ap.parse_args(argv)
    common.quiet()
    import soundfile as sf

    from asr_lora.inference.engine import Engine

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        if a.tiny:
            base = str(common.make_tiny_whisper(tmp / "tiny-whisper"))
            clips = common.load_clips(common.tone_clips(6, tmp / "tones"))
            tokens = min(a.max_new_tokens, 8)
        else:
            base, tokens = a.model, a.max_new_tokens
            clips = common.load_clips(_spoken_clips(tmp / "spoken"))
        adapter = common.random_adapter(base, tmp / "adapter", seed=1)
        merged = common.merged_hf_dir(base, adapter, tmp / "merged")
        blobs = []
        for c in clips:
            buf = io.BytesIO()
            sf.write(buf, c["audio"], common.SR, format="WAV", subtype="PCM_16")
            blobs.append((buf.getvalue(), c["duration"]))
        requests = [(*blobs[i % len(blobs)], "base" if i % 2 == 0 else "sg") for i in range(a.requests)]

        rows, texts = [], {}
        for name, mode, batch in (("mixed batching", "mixed", a.max_batch), ("per-request switching", "switch", 1)):
            eng = Engine(base, {"sg": adapter}, device=a.device, mode=mode, max_new_tokens=tokens)
            row, texts[name] = run_variant(name, eng, requests, a.concurrency, batch, a.window_ms if batch > 1 else 0)
            rows.append(row)
            del eng
        eng = Engine(str(merged), {}, device=a.device, max_new_tokens=tokens)
        row, _ = run_variant("merged", eng, [(d, s, "base") for d, s, _ in requests], a.concurrency, a.max_batch,
                             a.window_ms)
        rows.append(row)
    mismatches = sum(x != y for x, y in zip(texts["mixed batching"], texts["per-request switching"]))
    by = {r["variant"]: r for r in rows}
    ratios = {"mixed / switching throughput": round(by["mixed batching"]["throughput"]
                                                    / by["per-request switching"]["throughput"], 2),
              "mixed / merged throughput": round(by["mixed batching"]["throughput"] / by["merged"]["throughput"], 2),
              "mixed vs switching transcript mismatches": mismatches,
              "lost requests": sum(r["lost"] for r in rows)}
    common.print_results(rows, ["variant", "requests", "ok", "lost", "audio_s", "wall_s", "throughput", "p50_ms",
                                "p95_ms", "mean_batch"], ratios)
    path = common.write_result(a.name, {"machine": common.machine_info(), "args": vars(a), "base": "tiny-random"
                                        if a.tiny else a.model, "rows": rows, "ratios": ratios})
    print(f"\nwrote {path}")
    return 0 if ratios["lost requests"] == 0 and mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
