"""What `/v1/models` says about each adapter: rank, alpha, targets, base, the WER and beam size it
was exported with (the `export_summary.json` beside it), and the term prompt it was also scored
with (its `prompt.txt`), for clients to send as the request's `prompt`."""

from __future__ import annotations

import json
from pathlib import Path

from asr_lora.model.adapters import BUNDLED_HUB_IDS, adapter_base, adapter_prompt, export_summary, scored_beam_size


def adapter_card(adapter_dir: str | Path) -> dict:
    adapter_dir = Path(adapter_dir)
    conf = json.loads((adapter_dir / "adapter_config.json").read_text())
    targets = conf.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    base = adapter_base(adapter_dir)
    wer = (export_summary(adapter_dir) or {}).get("wer")
    export_wer = ({k: round(float(v), 4) for k, v in wer.items() if isinstance(v, (int, float))}
                  if isinstance(wer, dict) else None)
    return {"base": base, "base_hub_id": BUNDLED_HUB_IDS.get(base or ""), "rank": conf.get("r"),
            "alpha": conf.get("lora_alpha"), "targets": sorted({t.rsplit(".", 1)[-1] for t in targets}),
            "n_adapted_modules": len(targets), "export_wer": export_wer, "beam_size": scored_beam_size(adapter_dir),
            "prompt": adapter_prompt(adapter_dir)}
