"""Write the sg_english voice inventory plus Silero training voices (every STEP-th of its 118
speakers) to OUT, for `data.voices=OUT`: the study rows of recipes/RESULTS_sg_english.md.

    python scripts/voices_with_silero.py 10 voices_silero12.json   # en_0, en_10, ... en_110
"""

import argparse
import json
from pathlib import Path

INVENTORY = Path(__file__).resolve().parents[1] / "data" / "sg_english" / "voices.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", type=int, help="take speakers en_0, en_STEP, en_2*STEP, ... (1-117)")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    if not 1 <= args.step <= 117:
        ap.error(f"step must be in 1..117, got {args.step}")
    inv = json.loads(INVENTORY.read_text(encoding="utf-8"))
    speakers = range(0, 118, args.step)
    inv["voices"] += [{"id": f"silero-en{i}", "engine": "silero", "voice": f"en_{i}", "options": {},
                       "speaker": f"silero-en-{i}", "accent": "en-us", "split": "train"} for i in speakers]
    args.out.write_text(json.dumps(inv, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(inv['voices'])} voices, {len(speakers)} of them Silero (train)")


if __name__ == "__main__":
    main()
