"""faster-whisper (CTranslate2 int8) WER of the base model and an export, greedy and at beam 5.

    ASR_LORA_CACHE=<cache> .venv/bin/python bench/ct2_beam.py --export <run>/export/ct2-int8

beam 5 is faster-whisper's own default, so it is what a user who loads the exported model without
our decode settings gets. The base model is converted to int8 the same way as the export
(export/formats.py), and both decode the test split's unseen-engine clips (Singapore English and
control) through `transcribe_ct2` (one temperature, no context, no VAD).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, type=Path, help="an export's ct2-int8 directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("--part", default="unseen_engine")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--name", default="ct2_beam")
    a = ap.parse_args()

    from asr_lora.data.text import normalize
    from asr_lora.export.formats import export_ct2, export_hf, transcribe_ct2
    from asr_lora.model.whisper import load_whisper, resolve_model_dir

    sets = {s: [c for c in common.corpus_clips(10**6, a.split, s) if c["part"] == a.part] for s in ("main", "control")}
    sets = {s: common.load_clips(c) for s, c in sets.items()}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model, processor = load_whisper("bundled:tiny.en")
        base_hf = export_hf(model, processor, resolve_model_dir("bundled:tiny.en"), Path(tmp) / "hf")
        base = export_ct2(base_hf, Path(tmp) / "ct2-int8")
        for beam in [int(b) for b in a.beams.split(",")]:
            for system, ct2 in (("base", base), ("adapted", a.export)):
                row = {"system": system, "beam": beam}
                for subset, clips in sets.items():
                    hyps = transcribe_ct2(ct2, [c["audio"] for c in clips], beam_size=beam)
                    refs = [c["text"] for c in clips]
                    row[subset] = round(common.wer([normalize(r) for r in refs], [normalize(h) for h in hyps]), 4)
                    row[f"n_{subset}"] = len(clips)
                print(row, flush=True)
                results.append(row)
    common.write_result(a.name, {"args": vars(a) | {"export": str(a.export)}, "results": results})


if __name__ == "__main__":
    main()
