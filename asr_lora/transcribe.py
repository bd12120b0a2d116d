"""`python -m asr_lora.transcribe AUDIO... [--model M] [--adapter [NAME=]DIR ...] [--use NAME] [--beam-size N]
[--prompt TEXT]`.

Decodes through the server's engine (`inference/engine.py`), so a clip gets the transcript the server
gives it. The beam size defaults to the one the adapter's figures were scored with.

Bad files get a one-line error naming the file and exit code 2; the other files are still
transcribed. A bad `--adapter` or a `--prompt` that spells a special token is a one-line error and
exit code 2; a long prompt keeps its last tokens, as the server's does.
"""

from __future__ import annotations

import argparse
import json
import sys

from asr_lora.core.logs import setup_logging
from asr_lora.data.audio import AudioError, check_audio, load_audio


def parse_args(argv=None) -> argparse.Namespace:
    def _positive(text: str) -> int:
        n = int(text)
        if n < 1:
            raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
        return n

    p = argparse.ArgumentParser(prog="python -m asr_lora.transcribe", description=__doc__.splitlines()[0])
    p.add_argument("audio", nargs="+", help="audio files (any format soundfile or librosa reads)")
    p.add_argument("--model", default="auto", help="hub id, local dir, bundled:tiny.en, ct2:DIR (default: the "
                   "adapters' recorded base, else bundled:tiny.en)")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                   help="peft LoRA adapter directory; repeat to load several on one base")
    p.add_argument("--use", default=None, help="which adapter to use (default: the first; 'base' for none)")
    p.add_argument("--beam-size", type=_positive, default=None,
                   help="beams (default: the beam the adapter was scored with, from its export summary or run; else 1)")
    p.add_argument("--prompt", default=None, help="previous-text prompt, e.g. the domain words")
    p.add_argument("--output", choices=["txt", "json"], default="txt")
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # a CLI whose output is the transcript: warnings and errors only, and on stderr, so that stdout
    # stays the transcript or JSON lines even when a warning is logged
    setup_logging(None, quiet=True, stderr=True)
    from asr_lora.inference.engine import AdapterSpecError, adapter_specs

    try:
        adapters = adapter_specs(args.adapter)
    except AdapterSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    use = args.use or (next(iter(adapters)) if adapters else "base")
    if use != "base" and use not in adapters:
        print(f"error: --use {use!r}: no such adapter; loaded: {['base', *adapters]}", file=sys.stderr)
        return 2

    audios, names, failed = [], [], 0
    for path in args.audio:
        try:
            x = load_audio(path)
            reason = check_audio(x, 16000, min_s=0.0, max_s=float("inf"))
            if reason in ("nan", "silent") or len(x) == 0:
                raise AudioError(path, reason or "empty_file", f"audio is {reason or 'empty'}")
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        audios.append(x)
        names.append(path)

    if audios:
        from asr_lora.inference.decode import DecodeOptions
        from asr_lora.inference.engine import Engine, OptionError

        model = None if args.model == "auto" else args.model
        try:  # a model or device that cannot load, a prompt the server refuses: one line, not a traceback
            engine = Engine(model, adapters, device=args.device, mode="switch", beam_size=args.beam_size)
            options = engine.prepare(DecodeOptions(prompt=args.prompt))  # the server's prompt rules
        except (OSError, ValueError) as e:
            print(f"error: --{e.param}: {e}" if isinstance(e, OptionError) else f"error: {e}", file=sys.stderr)
            return 2
        results = engine.transcribe(audios, use, options)
        texts = [r["text"] for r in results]
        for name, text in zip(names, texts):
            if args.output == "json":
                print(json.dumps({"audio": name, "text": text, "adapter": None if use == "base" else use,
                                  "beam_size": engine.beam_size}, ensure_ascii=False))
            else:
                print(f"{name}\t{text}" if len(args.audio) > 1 else text)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
