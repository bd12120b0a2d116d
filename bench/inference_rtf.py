"""Real-time factor (RTF = decode wall time / audio duration; lower is faster) of the unadapted base vs
a merged LoRA model, in transformers (fp32, greedy and beam 5) and faster-whisper (int8 and fp32).

    .venv/bin/python bench/inference_rtf.py                        # bundled tiny.en, 8 test clips,
                                                                   # random-LoRA merged model built here
    .venv/bin/python bench/inference_rtf.py --export outputs/sg_english/<ts>/export --clips 20
    .venv/bin/python bench/inference_rtf.py --tiny                 # random tiny Whisper + tones (smoke)

`--export DIR` is a run's export folder (`hf/` merged transformers, optionally `adapter/` and
`ct2-int8/`); missing CTranslate2 variants are converted from `hf/` into a temp dir. Without it,
a LoRA adapter with small random B (q/v, decoder self+cross, r=8) is merged into the base with
asr_lora.export, so merged != base weights but transcripts stay close.

Clips are decoded one at a time (batch 1) in every system, after one warm-up clip, with the same
greedy/beam settings on both back ends (faster-whisper: temperature 0, no previous-text
conditioning, no timestamps, no VAD). Model load time is reported separately.
The unmerged peft adapter model is included for transformers, to show what merging saves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _audio_seconds(clips) -> float:
    return sum(c["duration"] for c in clips)


def bench_transformers(label: str, load, clips, beams, batch_size: int, device: str, max_new_tokens: int) -> list[dict]:
    import torch

    from asr_lora.inference.decode import decode_ids, generate_features

    t0 = time.perf_counter()
    model, processor = load()
    model.to(device).eval()
    load_s = time.perf_counter() - t0
    audios = [c["audio"] for c in clips]
    refs = [c["text"] for c in clips]
    rows = []
    for beam in beams:
        def run(batch):
            feats = processor.feature_extractor(batch, sampling_rate=common.SR, return_tensors="pt").input_features
            return decode_ids(processor, generate_features(model, processor, feats, beam, max_new_tokens))

        run(audios[:1])  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        hyps = []
        t0 = time.perf_counter()
        for i in range(0, len(audios), batch_size):
            hyps += run(audios[i : i + batch_size])
        if device == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        rows.append({"model": label, "backend": "transformers", "precision": "fp32", "beam": beam,
                     "decode_s": round(sec, 3), "rtf": round(sec / _audio_seconds(clips), 4),
                     "load_s": round(load_s, 2), "wer": round(common.wer(refs, hyps), 4), "hyps": hyps})
    return rows


def bench_fw(label: str, ct2_dir: Path, compute_type: str, clips, beams, device: str,
             max_new_tokens: int) -> list[dict]:
    import numpy as np
    import torch
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    fw = WhisperModel(str(ct2_dir), device=device, compute_type=compute_type, local_files_only=True,
                      cpu_threads=torch.get_num_threads() if device == "cpu" else 0)
    load_s = time.perf_counter() - t0
    lang = {"language": "en"} if fw.model.is_multilingual else {}
    refs = [c["text"] for c in clips]
    rows = []
    for beam in beams:
        def run(audio):
            segments, _ = fw.transcribe(np.asarray(audio, dtype=np.float32), beam_size=beam, temperature=0.0,
                                        condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
                                        max_new_tokens=max_new_tokens, **lang)
            return " ".join(s.text.strip() for s in segments).strip()

        run(clips[0]["audio"])  # warm-up
        t0 = time.perf_counter()
        hyps = [run(c["audio"]) for c in clips]
        sec = time.perf_counter() - t0
        rows.append({"model": label, "backend": "faster-whisper", "precision": compute_type, "beam": beam,
                     "decode_s": round(sec, 3), "rtf": round(sec / _audio_seconds(clips), 4),
                     "load_s": round(load_s, 2), "wer": round(common.wer(refs, hyps), 4), "hyps": hyps})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8, help="test clips of the embedded corpus")
    ap.add_argument("--model", default="bundled:tiny.en")
    ap.add_argument("--export", type=Path, default=None, help="a run's export dir (hf/, ct2-int8/)")
    ap.add_argument("--tiny", action="store_true", help="random tiny Whisper + synthetic tones (smoke run)")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--compute-types", default="int8,float32", help="faster-whisper compute types")
    ap.add_argument("--batch-size", type=int, default=1, help="transformers batch (faster-whisper is per clip)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--no-adapter", action="store_true", help="skip the unmerged peft adapter row")
    ap.add_argument("--name", default=None)
    a = ap.parse_args(argv)
    common.quiet()
    beams = [int(b) for b in a.beams.split(",")]
    cts = [c.strip() for c in a.compute_types.split(",") if c.strip()]
    device = common.device_name()
    machine = common.machine_info()

    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from asr_lora.export.merge import load_adapter_model
    from asr_lora.inference.ct2 import convert_ct2
    from asr_lora.model.whisper import load_whisper, resolve_model_dir

    with tempfile.TemporaryDirectory(prefix="bench_rtf_") as tmp:
        tmp = Path(tmp)
        if a.tiny:
            base = str(common.make_tiny_whisper(tmp / "tiny-whisper"))
            clips = common.load_clips(common.tone_clips(a.clips, tmp / "tones"))
        else:
            base = a.model
            clips = common.load_clips(common.corpus_clips(a.clips, "test"))
        base_dir = Path(resolve_model_dir(base))
        adapter = None
        if a.export:
            merged_dir = a.export / "hf"
            if not (merged_dir / "model.safetensors").is_file():
                raise SystemExit(f"{merged_dir}: no merged transformers model (model.safetensors)")
            adapter = a.export / "adapter" if (a.export / "adapter" / "adapter_config.json").is_file() else None
            merged_label = f"merged ({a.export})"
        else:
            adapter = common.random_adapter(base, tmp / "adapter", seed=1)
            merged_dir = common.merged_hf_dir(base, adapter, tmp / "merged-hf")
            merged_label = "merged (random LoRA r=8)"

        print(f"[inference_rtf] {len(clips)} clips, {_audio_seconds(clips):.1f} s audio, device {device}", flush=True)
        rows = []

        def load_dir(d):
            return lambda: (WhisperForConditionalGeneration.from_pretrained(str(d), use_safetensors=True),
                            WhisperProcessor.from_pretrained(str(d)))

        rows += bench_transformers("base", lambda: load_whisper(base), clips, beams, a.batch_size, device,
                                   a.max_new_tokens)
        rows += bench_transformers(merged_label, load_dir(merged_dir), clips, beams, a.batch_size, device,
                                   a.max_new_tokens)
        if adapter is not None and not a.no_adapter:
            rows += bench_transformers("adapter (peft, unmerged)", lambda: load_adapter_model(base, adapter), clips,
                                       beams[:1], a.batch_size, device, a.max_new_tokens)
        conv = {}
        for label, hf in (("base", base_dir), (merged_label, merged_dir)):
            for ct in cts:
                given = a.export / f"ct2-{ct}" if a.export and label != "base" else None
                if given is not None and (given / "model.bin").is_file():
                    ct2 = given
                else:
                    ct2 = tmp / f"ct2-{'base' if label == 'base' else 'merged'}-{ct}"
                    t0 = time.perf_counter()
                    convert_ct2(hf, ct2, ct)
                    conv[f"{label}/{ct}"] = round(time.perf_counter() - t0, 1)
                rows += bench_fw(label, ct2, ct, clips, beams, device, a.max_new_tokens)

    def kind(label: str) -> str:
        return "base" if label == "base" else ("adapter" if label.startswith("adapter") else "merged")

    key = {(kind(r["model"]), r["backend"], r["precision"], r["beam"]): r for r in rows}
    ratios = {}
    for (m, be, pr, beam), r in key.items():
        if m == "merged" and ("base", be, pr, beam) in key:
            ratios[f"merged/base RTF, {be} {pr} beam {beam}"] = round(r["rtf"] / key[("base", be, pr, beam)]["rtf"], 3)
    tf1 = key.get(("base", "transformers", "fp32", 1))
    for (m, be, pr, beam), r in key.items():
        if m == "base" and be == "faster-whisper" and tf1:
            ratios[f"speed-up faster-whisper {pr} beam {beam} over transformers fp32 greedy (base)"] = round(
                tf1["rtf"] / r["rtf"], 2)
    for (m, be, pr, beam), r in key.items():
        if m == "base" and beam != 1 and ("base", be, pr, 1) in key:
            ratios[f"beam {beam}/greedy RTF, {be} {pr} (base)"] = round(r["rtf"] / key[("base", be, pr, 1)]["rtf"], 2)
    ad = key.get(("adapter", "transformers", "fp32", 1))
    mg = key.get(("merged", "transformers", "fp32", 1))
    if ad and mg:
        ratios["unmerged adapter/merged RTF, transformers greedy"] = round(ad["rtf"] / mg["rtf"], 3)

    cols = ["model", "backend", "precision", "beam", "rtf", "decode_s", "load_s", "wer"]
    print(f"\ninference RTF: model={'tiny-random' if a.tiny else a.model}, {len(clips)} clips "
          f"({_audio_seconds(clips):.1f} s audio), batch {a.batch_size}, device {device}, torch threads "
          f"{machine['torch_threads']}, load avg at start {machine.get('loadavg_at_start')}")
    common.print_results(rows, cols, ratios)
    name = a.name or ("inference_rtf_tiny" if a.tiny else "inference_rtf")
    path = common.write_result(name, {
        "benchmark": "inference_rtf", "args": {k: str(v) for k, v in vars(a).items()}, "machine": machine,
        "loadavg_at_end": list(os.getloadavg()), "audio_seconds": round(_audio_seconds(clips), 2),
        "refs": [c["text"] for c in clips], "ct2_conversion_s": conv, "results": rows, "ratios": ratios,
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
