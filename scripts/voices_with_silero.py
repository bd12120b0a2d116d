"""Write the sg_english voice inventory with Silero speakers added, for `data.voices=OUT`: the study
rows of recipes/RESULTS_sg_english.md.

    python scripts/voices_with_silero.py 10 voices_silero12.json   # en_0, en_10, ... en_110 as train voices
    python scripts/voices_with_silero.py --held-out voices_silero_heldout.json

--held-out puts Silero in piper joe's place as the natural-voice part of dev and test instead
(three dev speakers, two of them reading every dev sentence, and two test speakers, as joe's part
has): a second neural engine, with its own text front end, that no training voice shares.
"""

import argparse
import json
from pathlib import Path

INVENTORY = Path(__file__).resolve().parents[1] / "data" / "sg_english" / "voices.json"

# Far apart in Silero's speaker list, which is not ordered by voice; dev's first is dealt a share
# of the sentences, the other two read all of them, as piper joe's dev speakers do.
HELD_OUT = {"dev": (5, 37, 71), "test": (20, 90)}


def silero(i: int, split: str, **extra) -> dict:
    return {"id": f"silero-en{i}", "engine": "silero", "voice": f"en_{i}", "options": {},
            "speaker": f"silero-en-{i}", "accent": "en-us", "split": split, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", type=int, nargs="?", help="train voices: speakers en_0, en_STEP, en_2*STEP, ... (1-117)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--held-out", action="store_true", help="Silero as the dev/test natural-voice part, not in train")
    args = ap.parse_args()
    if args.out.is_dir() or not args.out.parent.is_dir():
        ap.error(f"out: {args.out} is a directory" if args.out.is_dir() else
                 f"out: no folder {args.out.parent} to write {args.out.name} in")
    inv = json.loads(INVENTORY.read_text(encoding="utf-8"))
    if args.held_out:
        if args.step is not None:
            ap.error("--held-out takes no step")
        inv["voices"] = [v for v in inv["voices"] if v["engine"] != "piper"]
        inv["voices"] += [silero(i, split, part="neural", **({"reads_all": True} if split == "dev" and k else {}))
                          for split, ids in HELD_OUT.items() for k, i in enumerate(ids)]
        where = "the natural-voice part of dev and test"
        n = sum(map(len, HELD_OUT.values()))
    else:
        if args.step is None or not 1 <= args.step <= 117:
            ap.error(f"step must be in 1..117, got {args.step}")
        speakers = range(0, 118, args.step)
        inv["voices"] += [silero(i, "train") for i in speakers]
        where, n = "train", len(speakers)
    args.out.write_text(json.dumps(inv, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(inv['voices'])} voices, {n} of them Silero ({where})")


if __name__ == "__main__":
    main()
