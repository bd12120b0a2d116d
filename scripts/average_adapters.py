"""Average the LoRA updates of several adapters of one base (for instance one recipe trained under
several seeds) into one adapter directory that `evaluate`, `export` and `serve` take as `adapter=`.

    python scripts/average_adapters.py OUT RUN1/adapter RUN2/adapter RUN3/adapter [--weights 0.5 0.25 0.25] [--force]
"""

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the averaged adapter's directory (new, or replaced with --force)")
    ap.add_argument("adapters", nargs="+", type=Path, help="peft adapter directories, at least two")
    ap.add_argument("--weights", nargs="+", type=float, help="one per adapter; equal by default")
    ap.add_argument("--force", action="store_true", help="replace an adapter already at OUT")
    args = ap.parse_args()
    if (args.out / "adapter_config.json").is_file() and not args.force:
        # the usual slip is a forgotten OUT, which makes the first adapter the output
        raise SystemExit(f"average_adapters: {args.out} already holds an adapter; name a new OUT first "
                         "(or pass --force to replace it)")
    from asr_lora.core.logs import quiet_libraries
    from asr_lora.model.adapters import average_adapters

    quiet_libraries()
    try:
        out = average_adapters(args.adapters, args.out, args.weights)
    except (ValueError, OSError) as e:  # bad input, or a base that cannot load here: the reason, not a traceback
        raise SystemExit(f"average_adapters: {e}") from None
    print(f"{out}: the mean update of {len(args.adapters)} adapters")


if __name__ == "__main__":
    main()
