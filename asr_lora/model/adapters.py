"""LoRA adapter directories: the one loader every job, the server and the CLIs use.

An adapter loads from safetensors only (pickle files are refused), names a base another machine can
resolve (`bundled:tiny.en`, not this machine's converted cache), and says, through the export summary
or the evaluation beside it, which beam size its figures were scored with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from asr_lora.core.io import file_sha256, read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
EXPORT_SUMMARY = "export_summary.json"  # beside an export's format folders: what it holds and scored

# Where the bundled weights come from, for model cards (the `bundled:` names work offline).
BUNDLED_HUB_IDS = {"bundled:tiny.en": "openai/whisper-tiny.en", "bundled:base": "openai/whisper-base"}
_CONVERTED_DIR = re.compile(r"^(tiny\.en|base)-[0-9a-f]{10}$")  # model/whisper.py's cache names


class UnsafeAdapterError(ValueError):
    """An adapter directory that would need pickle to load."""


class AdapterLoadError(ValueError):
    """An adapter directory whose weights do not load onto the model: a truncated file, or weights of
    another rank, targets or base than its config names."""


def check_adapter_dir(path: str | Path) -> Path:
    """Adapters load from safetensors only: refuse a directory holding pickle files."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path}: no adapter_config.json; not a peft adapter directory")
    read_json(path / "adapter_config.json", "peft adapter_config.json")  # names the file when it is broken
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeAdapterError(f"{path}: refusing pickle files {pickles}; convert the adapter to safetensors")
    if not (path / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no adapter_model.safetensors")
    return path


def adapter_sha256(path: str | Path) -> str | None:
    """sha256 of an adapter directory's weights file; None where it holds none (full weights)."""
    weights = Path(path) / "adapter_model.safetensors"
    return file_sha256(weights) if weights.is_file() else None


def load_adapter(model, path: str | Path, name: str = "default"):
    """`model` with the adapter at `path` loaded as `name`, frozen, in eval mode.

    A plain Whisper is wrapped in a `PeftModel`; a `PeftModel` gets one more adapter beside its
    others (one base, several adapters). No task_type: peft would pass `input_ids` to Whisper.
    """
    import warnings

    from peft import PeftModel
    from safetensors import SafetensorError

    path = check_adapter_dir(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if isinstance(model, PeftModel):
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
    except (SafetensorError, RuntimeError, KeyError) as e:
        first = re.search(r"size mismatch for [^\n]*", str(e))
        raise AdapterLoadError(f"{path}: its weights do not load: {first.group(0) if first else str(e).splitlines()[0]}"
                               " (a truncated copy, or weights that do not match adapter_config.json or this base)"
                               ) from None
    for w in caught:
        # peft lists the other adapters' keys as "missing" when one more is loaded beside them; only
        # keys of the adapter just loaded would be missing from it.
        missing_of = set(re.findall(r"\.lora_(?:A|B|embedding_A|embedding_B)\.([^.']+)\.", str(w.message)))
        if "missing adapter keys" in str(w.message) and missing_of and name not in missing_of:
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model.eval()


def portable_base(ref: str | None) -> str | None:
    """A base reference another machine can resolve: `bundled:tiny.en` instead of this machine's
    converted cache directory (`.../models/tiny.en-<hash>`); any other reference is kept."""
    if not ref or ref.startswith(("bundled:", "ct2:")):
        return ref
    p = Path(ref)
    if _CONVERTED_DIR.match(p.name) and p.parent.name == "models" and (p / "asr_lora_source.json").is_file():
        return "bundled:" + p.name.rsplit("-", 1)[0]
    return ref


def adapter_base(path: str | Path) -> str | None:
    """The base an adapter directory names (`base_model_name_or_path`), made portable."""
    conf = read_json(Path(path) / "adapter_config.json", "peft adapter_config.json")
    return portable_base(conf.get("base_model_name_or_path"))


def same_base(a: str, b: str) -> bool:
    """The same name, or two spellings of one local directory (`ct2:` ones included)."""
    if a.startswith("ct2:") and b.startswith("ct2:"):
        a, b = a[4:], b[4:]
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return a == b or (pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve())


def other_base(adapter_dir: str | Path, base: str) -> str | None:
    """The base an adapter names when it is not `base` (None when it is, or names none): merged into,
    scored or served on another base, it is a model nobody trained."""
    named = adapter_base(adapter_dir)
    return named if named and not same_base(named, portable_base(base)) else None


def make_adapter_portable(adapter_dir: str | Path, base: str | None = None) -> Path:
    """Rewrite `adapter_config.json` so its base is a portable reference (atomically)."""
    from asr_lora.core.io import write_json

    path = Path(adapter_dir) / "adapter_config.json"
    conf = json.loads(path.read_text())
    conf["base_model_name_or_path"] = portable_base(base or conf.get("base_model_name_or_path"))
    write_json(path, conf, sort_keys=True)
    return path


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def export_summary(adapter_dir: str | Path) -> dict | None:
    """The `export_summary.json` written beside an exported adapter (`<export>/adapter`) or a run's
    adapter (`<run>/adapter`, summary in `<run>/export/`); None when there is none."""
    d = Path(adapter_dir)
    for cand in (d.parent / EXPORT_SUMMARY, d.parent / "export" / EXPORT_SUMMARY):
        if cand.is_file() and (data := _read_json(cand)) is not None:
            return data
    return None


def scored_beam_size(adapter_dir: str | Path | None) -> int | None:
    """The beam size the adapter's figures were scored with: its export summary's, else the run's
    `eval/eval.json`; None when neither says."""
    if adapter_dir is None:
        return None
    d = Path(adapter_dir)
    summary = export_summary(d) or {}
    beam = summary.get("beam_size")
    if beam is None and (ev := _read_json(d.parent / "eval" / "eval.json")):
        beam = ev.get("beam_size")
    return int(beam) if isinstance(beam, (int, float)) and beam >= 1 else None


PROMPT_FILE = "prompt.txt"  # an export's term prompt, beside the weights it was scored with


def adapter_prompt(adapter_dir: str | Path) -> str | None:
    """The term prompt the adapter's evaluation also scored it with (its export's `prompt.txt`), or None."""
    path = Path(adapter_dir) / PROMPT_FILE
    return (path.read_text(encoding="utf-8").strip() or None) if path.is_file() else None


def average_adapters(paths: list[str | Path], out_dir: str | Path, weights: list[float] | None = None) -> Path:
    """Write to `out_dir` the adapter whose update is the weighted mean of the updates of the
    adapters at `paths` (equal weights by default): adapters of one recipe trained under several
    seeds, averaged so that what one seed's draw of rows and initial weights put into its adapter
    counts for less (a "model soup" of the LoRA updates).

    peft's `add_weighted_adapter(combination_type="cat")` stacks the factors, so the update is the
    exact mean (rank = the sum of the ranks, scaling 1), not an SVD approximation; the merged and
    exported model has no extra cost. The adapters must share their base and target modules."""
    from asr_lora.core.io import atomic_dir, write_json
    from asr_lora.model.whisper import load_whisper

    paths = [check_adapter_dir(p) for p in paths]
    if Path(out_dir).resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"{out_dir}: the output is one of the adapters averaged; it would be replaced")
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / "adapter_config.json").is_file():
        # `out_dir` is replaced whole: a run folder named by mistake would lose its evaluation and checkpoints
        raise ValueError(f"{out} is a folder that holds no adapter (e.g. {min(out.iterdir()).name}); the output "
                         "is replaced whole, so name a new one")
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two adapters, got {len(paths)}")
    weights = [1.0 / len(paths)] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weights for {len(paths)} adapters")
    # A weighted mean: "3 1" is 0.75 and 0.25, not an update four times as long (lora.scale sets strength).
    if not all(w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights {weights}: a weighted mean needs weights >= 0 that do not all vanish")
    weights = [w / sum(weights) for w in weights]

    def layout(p: Path) -> tuple:
        conf = read_json(p / "adapter_config.json", "peft adapter_config.json")
        if conf.get("use_dora"):
            raise ValueError(f"{p}: a DoRA adapter (use_dora) also holds a magnitude vector, which the mean "
                             "of the LoRA updates would not average; only plain LoRA adapters can be averaged")
        targets = conf.get("target_modules")
        return adapter_base(p), sorted(targets) if isinstance(targets, list) else targets

    first = layout(paths[0])
    for p in paths[1:]:
        if (other := layout(p)) != first:
            raise ValueError(f"{p}: its base and target modules {other!r} differ from {paths[0]}'s {first!r}; "
                             "only adapters of one base and one LoRA layout can be averaged")
    base = first[0]
    model, _ = load_whisper(base)
    names = [f"source{i}" for i in range(len(paths))]
    for name, p in zip(names, paths):
        model = load_adapter(model, p, name)  # the first wraps the base, the others join it
    model.add_weighted_adapter(names, weights, adapter_name="default", combination_type="cat")
    # "cat" folds each source's own scaling into the stacked factors and sets lora_alpha = r, scaling 1
    # only as alpha / r: the rsLoRA flag it copies from the first source would make it alpha / sqrt(r).
    model.peft_config["default"].use_rslora = False
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        make_adapter_portable(tmp, base)
        write_json(tmp / "averaged_from.json", {"adapters": [str(p) for p in paths], "weights": weights})
    return out_dir
