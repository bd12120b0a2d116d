"""Real recorded English for the test control set: Debian's pocketsphinx-testdata (5 LibriVox
sentences from one reader, 5 playing-card phrases), copied into the corpus as 16 kHz clips with
`engine` unset and `part="real"`. Optional: without the package the corpus records why and goes on."""

from __future__ import annotations

import re
from pathlib import Path

import soundfile as sf

from asr_lora.data.records import Record
from asr_lora.data.synthetic.engines import write_wav_16k
from asr_lora.data.synthetic.voices import REAL_PART

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")


def real_control_sources() -> list[tuple[str, str, Path, str]]:
    """(id, text, wav, speaker) for pocketsphinx-testdata clips that come with a transcript."""
    out = []
    for sub, transcript, speaker in (("librivox", "transcription", "librivox-austen-reader"),
                                     ("cards", "cards.transcription", "pocketsphinx-cards")):
        path = POCKETSPHINX / sub / transcript
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)", line)
            if m and (POCKETSPHINX / sub / f"{m.group(2)}.wav").is_file():
                out.append((f"psx-{sub}-{m.group(2)}", " ".join(m.group(1).split()),
                            POCKETSPHINX / sub / f"{m.group(2)}.wav", speaker))
    return out


def add_real_control(out_dir: Path) -> tuple[list[Record], dict]:
    sources = real_control_sources()
    if not sources:
        return [], {"included": False, "reason": f"pocketsphinx-testdata not found under {POCKETSPHINX} "
                    "(apt-get install pocketsphinx-testdata)"}
    records = []
    for rid, text, wav, speaker in sources:
        rel = f"audio/real/{rid}.wav"
        if not (out_dir / rel).is_file():
            x, sr = sf.read(wav, dtype="float32")
            write_wav_16k(x, sr, out_dir / rel)
        records.append(Record(id=rid, text=text, audio_path=rel, speaker=speaker, accent="unknown", split="test",
                              subset="control", engine=None, voice=None, part=REAL_PART, source=str(wav)))
    return records, {"included": True, "source": str(POCKETSPHINX), "package": "pocketsphinx-testdata",
                     "utterances": len(records)}
