"""What `/v1/models` says about each adapter: rank, alpha, targets, base, and the WER it was
exported with when the directory (or its export) carries a model card or export summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

from asr_lora.inference.decode import BUNDLED_HUB_IDS, adapter_base

_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*([0-9.]+%)[^|]*\|\s*$")


def _card_wer(readme: Path) -> dict[str, str]:
    """Rows like `| adapted | 17.9% [15.2, 20.7] |` of the model card's WER tables."""
    out = {}
    for line in readme.read_text(errors="replace").splitlines():
        if m := _ROW.match(line.strip()):
            out[m.group(1)] = m.group(2)
    return out


def _summary_wer(adapter_dir: Path) -> dict[str, float] | None:
    for cand in (adapter_dir.parent / "export_summary.json", adapter_dir.parent / "export" / "export_summary.json"):
        if cand.is_file():
            try:
                wer = json.loads(cand.read_text()).get("wer")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(wer, dict):
                return {k: round(float(v), 4) for k, v in wer.items() if isinstance(v, (int, float))}
    return None


def adapter_card(adapter_dir: str | Path) -> dict:
    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    base = adapter_base(adapter_dir)
    card = {"base": base, "base_hub_id": BUNDLED_HUB_IDS.get(base or ""), "rank": cfg.get("r"),
            "alpha": cfg.get("lora_alpha"), "targets": sorted({t.rsplit(".", 1)[-1] for t in targets}),
            "n_adapted_modules": len(targets), "export_wer": _summary_wer(adapter_dir), "card_wer": None}
    readme = adapter_dir / "README.md"
    if readme.is_file():
        card["card_wer"] = _card_wer(readme) or None
    return card
