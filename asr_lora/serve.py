"""`python -m asr_lora.serve --adapter sg=DIR [--adapter NAME=DIR ...] [--model bundled:tiny.en]
[--beam-size N] [--adapter-prompts]
[--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch N] [--batch-window-ms MS] [--max-upload-mb MB]
[--max-audio-s S]`.

An OpenAI-compatible transcription server: one base in memory, any loaded adapter per request
(`model=base` or an adapter name), requests arriving together decoded in one mixed-adapter batch.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asr_lora.serve", description=__doc__.splitlines()[0])
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="peft LoRA adapter directory (safetensors only), loaded at start; repeat for more")
    p.add_argument("--model", default=None,
                   help="base: hub id, local dir, bundled:tiny.en, ct2:DIR (default: the adapters' recorded base, "
                        "else bundled:tiny.en)")
    p.add_argument("--beam-size", type=int, default=None,
                   help="beams for every request (default: the beam the adapters were scored with, from their "
                        "export summary or run; else 1)")
    p.add_argument("--adapter-prompts", action="store_true",
                   help="decode a request to an adapter that sends no 'prompt' with the adapter's prompt.txt, the "
                        "term prompt its export was scored with (adapted + prompt); prompt=\"\" still sends none")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("ASR_LORA_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every route but /health and / "
                        "(default: $ASR_LORA_API_KEY)")
    p.add_argument("--max-batch", type=int, default=8, help="most requests decoded in one batch")
    p.add_argument("--batch-window-ms", type=float, default=20.0, help="how long a batch waits for more requests")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted upload (413 above)")
    p.add_argument("--max-audio-s", type=float, default=1800.0,
                   help="longest accepted audio in seconds (400 above): bytes alone do not bound decoding time")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens per 30 s window")
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import uvicorn

    from asr_lora.core.logs import setup_logging
    from asr_lora.serving.app import Settings, create_app
    from asr_lora.serving.batcher import Batcher
    from asr_lora.inference.engine import AdapterSpecError, Engine, adapter_specs

    setup_logging(None, quiet=True)
    settings = Settings(api_key=args.api_key, max_upload_mb=args.max_upload_mb, max_audio_s=args.max_audio_s,
                        adapter_prompts=args.adapter_prompts)
    try:
        engine = Engine(args.model, adapter_specs(args.adapter, need_names=True), device=args.device,
                        max_new_tokens=args.max_new_tokens, beam_size=args.beam_size)
        batcher = Batcher(engine, max_batch=args.max_batch, window_ms=args.batch_window_ms)
        app = create_app(batcher, settings)
    except (AdapterSpecError, ValueError, OSError) as e:  # bad settings or paths: one line, before the port is taken
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"serving {engine.models} on http://{args.host}:{args.port} (base {engine.base_name}, "
          f"beam {engine.beam_size})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    batcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
