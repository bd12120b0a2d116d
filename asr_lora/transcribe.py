"""`python -m asr_lora.transcribe AUDIO... [--model M] [--adapter [NAME=]DIR ...] [--use NAME]`.

Bad files get a one-line error naming the file and exit code 2; the other files are still
transcribed.
"""

from __future__ import annotations

import argparse
import json
import sys

from asr_lora.core.logs import setup_logging
from asr_lora.data.audio import AudioError, check_audio, load_audio


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asr_lora.transcribe", description=__doc__.splitlines()[0])
    p.add_argument("audio", nargs="+", help="audio files (any format soundfile or librosa reads)")
    p.add_argument("--model", default="bundled:tiny.en", help="hub id, local dir, bundled:tiny.en, ct2:DIR")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                   help="peft LoRA adapter directory; repeat to load several on one base")
    p.add_argument("--use", default=None, help="which adapter to use (default: the first; 'base' for none)")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--output", choices=["txt", "json"], default="txt")
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(None, quiet=True)  # a CLI whose output is the transcript: warnings and errors only
    adapters = {}
    for i, spec in enumerate(args.adapter):
        name, _, path = spec.rpartition("=")
        adapters[name or f"adapter{i}"] = path
    use = args.use or (next(iter(adapters)) if adapters else None)
    if use == "base":
        use = None

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
        from asr_lora.inference.decode import Transcriber

        t = Transcriber(args.model, adapters=adapters, device=args.device, beam_size=args.beam_size)
        texts = t.transcribe_arrays(audios, use=use)
        for name, text in zip(names, texts):
            if args.output == "json":
                print(json.dumps({"audio": name, "text": text, "adapter": use}, ensure_ascii=False))
            else:
                print(f"{name}\t{text}" if len(args.audio) > 1 else text)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
