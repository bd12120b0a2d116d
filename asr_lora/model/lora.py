"""LoRA on Whisper through peft: which matrices get W = W0 + (alpha/r)·B·A, and nothing else trains.

`q_proj`/`v_proj` name three kinds of attention in Whisper (encoder self, decoder self, decoder
cross), so the config's `scope` picks among them and the adapted modules are passed to peft as
full names. No `task_type`: peft's SEQ_2_SEQ_LM wrapper feeds `input_ids` to Whisper.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

SCOPES = ("encoder", "decoder_self", "decoder_cross")


_ATTN = {
    "encoder": re.compile(r"^model\.encoder\.layers\.\d+\.self_attn\.(\w+)$"),
    "decoder_self": re.compile(r"^model\.decoder\.layers\.\d+\.self_attn\.(\w+)$"),
    "decoder_cross": re.compile(r"^model\.decoder\.layers\.\d+\.encoder_attn\.(\w+)$"),
}


_FFN = {
    "encoder": re.compile(r"^model\.encoder\.layers\.\d+\.(fc1|fc2)$"),
    "decoder": re.compile(r"^model\.decoder\.layers\.\d+\.(fc1|fc2)$"),
}


class LoraScopeError(ValueError):
    """The LoRA settings select nothing, or name a scope/module Whisper does not have."""


def lora_alpha(lora) -> int:
    return lora.alpha if lora.alpha is not None else 2 * lora.r


def adapted_module_names(model: torch.nn.Module, target_modules, scope) -> list[str]:
    """Full names of the Linear layers the adapter will wrap, in model order."""
    bad = sorted(set(scope) - set(SCOPES))
    if bad:
        raise LoraScopeError(f"lora.scope has {bad}; choose from {list(SCOPES)}")
    targets = set(target_modules)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in targets:
            continue
        in_attn = any(_ATTN[s].match(name) for s in scope)
        in_ffn = (_FFN["encoder"].match(name) and "encoder" in scope) or (
            _FFN["decoder"].match(name) and any(s.startswith("decoder") for s in scope)
        )
        if in_attn or in_ffn:
            names.append(name)
    if not names:
        raise LoraScopeError(f"lora.target_modules={list(target_modules)} with scope={list(scope)} matches no layer")
    return names


def expected_lora_parameters(model: torch.nn.Module, names: list[str], r: int, bias: str = "none") -> int:
    """sum over adapted matrices of r·(d_in + d_out): what A (r×d_in) and B (d_out×r) hold; plus
    the biases peft trains with them (`bias`: lora_only, the adapted matrices' own; all, every one)."""
    modules = dict(model.named_modules())
    n = sum(r * (modules[m].in_features + modules[m].out_features) for m in names)
    if bias == "lora_only":
        n += sum(modules[m].bias.numel() for m in names if getattr(modules[m], "bias", None) is not None)
    elif bias == "all":
        n += sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))
    return n


def add_lora(model, lora, adapter_name: str = "default") -> PeftModel:
    """Freeze the base and wrap the selected matrices with peft LoRA adapters (`lora`: the lora
    config section: r, alpha, dropout, target_modules, scope, bias, use_rslora, use_dora)."""
    names = adapted_module_names(model, lora.target_modules, lora.scope)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora_alpha(lora),
        lora_dropout=lora.dropout,
        target_modules=names,
        bias=lora.bias,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
    )
    return get_peft_model(model, config, adapter_name=adapter_name)


def scalable_layers(model, multiplier: float, adapter_name: str = "default") -> list:
    """The LoRA layers `scale_adapter` rescales; raises what it refuses, so a run can check its
    lora.scale before training rather than after. DoRA and trained biases are refused: a DoRA
    magnitude or a bias is not part of alpha/r B A, so scaling that would not move towards W0."""
    if not multiplier >= 0:
        raise ValueError(f"lora.scale={multiplier}: the adapter's update needs a multiplier >= 0")
    conf = getattr(model, "peft_config", {}).get(adapter_name)
    if conf is not None and multiplier != 1 and (getattr(conf, "use_dora", False) or conf.bias != "none"):
        raise ValueError(f"lora.scale={multiplier} scales the B A update only; adapter {adapter_name!r} also has "
                         f"use_dora={conf.use_dora}, bias={conf.bias!r}, which it would leave as trained")
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and adapter_name in m.scaling]
    if not layers:
        raise ValueError(f"lora.scale={multiplier}: the model holds no LoRA adapter {adapter_name!r}")
    return layers


def scale_adapter(model, multiplier: float, adapter_name: str = "default") -> int:
    """Multiply one adapter's update by `multiplier` in place: W0 + multiplier * (alpha/r) B A.

    peft's `rescale_adapter_scale` does this for the span of a `with` block; here it must outlive
    the block, so the adapter's config takes it too (lora_alpha and alpha_pattern times
    `multiplier`): what `save_pretrained` writes then loads, merges and exports at the same scale.
    Returns the number of LoRA layers rescaled."""
    layers = scalable_layers(model, multiplier, adapter_name)
    if multiplier == 1:
        return len(layers)
    for m in layers:
        m.scaling[adapter_name] *= multiplier
        m.lora_alpha[adapter_name] *= multiplier  # peft's set_scale / unscale_layer rebuild scaling from it
    conf = model.peft_config[adapter_name]
    conf.lora_alpha = conf.lora_alpha * multiplier
    conf.alpha_pattern = {k: v * multiplier for k, v in (conf.alpha_pattern or {}).items()}
    return len(layers)


def adapter_strength(model, adapter_name: str = "default") -> dict | None:
    """The adapter's rank and alpha as it is now, lora.scale included: the absolute strength a report
    records beside the run's own multiplier. None for a model without that adapter."""
    conf = getattr(model, "peft_config", {}).get(adapter_name)
    if conf is None:
        return None
    out = {"r": conf.r, "lora_alpha": conf.lora_alpha}
    out |= {"use_rslora": True} if conf.use_rslora else {}
    out |= {"alpha_pattern": dict(conf.alpha_pattern)} if conf.alpha_pattern else {}
    out |= {"rank_pattern": dict(conf.rank_pattern)} if conf.rank_pattern else {}
    out |= {"use_dora": True} if getattr(conf, "use_dora", False) else {}
    return out


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def lora_modules_in(model) -> list[str]:
    """Names of wrapped modules in a peft model (those holding lora_A)."""
    return [n for n, m in model.named_modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) > 0]


def touches_encoder(lora) -> bool:
    return bool(lora.enabled) and "encoder" in lora.scope


@contextlib.contextmanager
def merged_in_place(model) -> Iterator[bool]:
    """Inside: the peft model's active adapter folded into its base weights (yields True; False and
    nothing changed for a model without LoRA layers). Decoding there runs exactly the weights a merged
    export holds, and skips the LoRA branch. On exit the base weights are restored bit for bit:
    peft's `unmerge_adapter` subtracts the delta again, which rounds, so the originals are kept."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)] if isinstance(model, PeftModel) else []
    if not layers:
        yield False
        return
    saved = [(w, w.detach().clone()) for w in (m.get_base_layer().weight for m in layers)]
    model.merge_adapter(safe_merge=True)  # the arithmetic of export's merge_and_unload(safe_merge=True)
    try:
        yield True
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for w, orig in saved:
                w.copy_(orig)


def merged_weights_digest(model) -> str:
    """sha256 of the weights a merged checkpoint holds, under plain Whisper parameter names.

    The same for a peft model inside `merged_in_place` and for `merge_and_unload`'s output, so an
    export can tell whether it holds bit for bit the weights an evaluation decoded.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    named = {k.replace(".base_layer.", "."): t for k, t in base.state_dict().items() if "lora_" not in k}
    h = hashlib.sha256()
    for name in sorted(named):
        t = named[name].detach().cpu().contiguous()
        h.update(f"{name}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
