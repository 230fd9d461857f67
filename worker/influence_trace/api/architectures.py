"""Model shapes: the preset table and the traced Linear modules' sizes, without torch.

The memory model and the operator need the shapes of every traced module before any weight is
loaded; the worker reads the same shapes from the loaded model and checks they agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shapes:
    """The dimensions of a Qwen2/Qwen3/Llama-style decoder that the traced modules depend on."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = False  # Qwen2 has biases on q/k/v; they do not change traced shapes

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each traced Linear, by suffix."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_key_value_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        return {
            "self_attn.q_proj": (h, q_out),
            "self_attn.k_proj": (h, kv_out),
            "self_attn.v_proj": (h, kv_out),
            "self_attn.o_proj": (q_out, h),
            "mlp.gate_proj": (h, i),
            "mlp.up_proj": (h, i),
            "mlp.down_proj": (i, h),
        }

    def parameter_count(self) -> int:
        """Parameters of the whole model (embeddings, blocks, norms, LM head)."""
        per_layer = sum(i * o for i, o in self.module_shapes().values()) + 2 * self.hidden_size
        if self.attention_bias:
            per_layer += (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + head + self.num_layers * per_layer + self.hidden_size


def _qwen2(h: int, i: int, layers: int, heads: int, kv: int, vocab: int, tied: bool) -> Shapes:
    return Shapes(h, i, layers, heads, kv, h // heads, vocab, tied, attention_bias=True)


def _qwen3(h: int, i: int, layers: int, heads: int, kv: int, vocab: int, tied: bool) -> Shapes:
    return Shapes(h, i, layers, heads, kv, 128, vocab, tied)


# Exact shapes from each model's published config.json.
PRESETS: dict[str, Shapes] = {
    "qwen2.5-0.5b": _qwen2(896, 4864, 24, 14, 2, 151936, True),
    "qwen2.5-1.5b": _qwen2(1536, 8960, 28, 12, 2, 151936, True),
    "qwen2.5-3b": _qwen2(2048, 11008, 36, 16, 2, 151936, True),
    "qwen2.5-7b": _qwen2(3584, 18944, 28, 28, 4, 152064, False),
    "qwen3-0.6b": _qwen3(1024, 3072, 28, 16, 8, 151936, True),
    "qwen3-1.7b": _qwen3(2048, 6144, 28, 16, 8, 151936, True),
    "qwen3-4b": _qwen3(2560, 9728, 36, 32, 8, 151936, True),
    "qwen3-8b": _qwen3(4096, 12288, 36, 32, 8, 151936, False),
    "llama-3.1-8b": Shapes(4096, 14336, 32, 32, 8, 128, 128256, False),
}


def shapes_from_config(config: dict) -> Shapes:
    """Shapes from a Hugging Face config.json dictionary (Qwen2/Qwen3/Llama field names)."""
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    return Shapes(
        hidden_size=hidden,
        intermediate_size=int(config["intermediate_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        vocab_size=int(config["vocab_size"]),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
    )


def read_config_shapes(model_dir: str | Path) -> Shapes | None:
    """Shapes from ``model_dir/config.json`` when it exists and has the needed fields."""
    path = Path(model_dir) / "config.json"
    try:
        return shapes_from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class ModuleDims:
    """One traced module's sizes: its Linear's in/out features and the projected k_in, k_out."""

    name: str
    in_features: int
    out_features: int
    k_in: int
    k_out: int

    @property
    def dim(self) -> int:
        """D = k_in * k_out, the side of this module's Hessian."""
        return self.k_in * self.k_out


def projection_dims(
    in_features: int, out_features: int, factor: int, max_hessian_dim: int
) -> tuple[int, int]:
    """(k_in, k_out) per docs/algorithm.md ("Traced modules and projections"): width // factor (at
    least 1), then capped by maxHessianDim.

    The cap decrements the larger of the two (k_in on a tie) until k_in * k_out fits.
    """
    if factor == 1:
        k_in, k_out = in_features, out_features
    else:
        k_in, k_out = max(1, in_features // factor), max(1, out_features // factor)
    while max_hessian_dim > 0 and k_in * k_out > max_hessian_dim:
        if k_in >= k_out:
            k_in -= 1
        else:
            k_out -= 1
    return k_in, k_out


def traced_module_dims(
    shapes: Shapes, suffixes: list[str] | tuple[str, ...], factor: int, max_hessian_dim: int
) -> list[ModuleDims]:
    """Every traced module of the model, in layer order, as the worker will find them."""
    per_suffix = shapes.module_shapes()
    unknown = [s for s in suffixes if s not in per_suffix]
    if unknown:
        raise ValueError(f"modules {unknown} are not traced Linear suffixes of this architecture")
    dims = []
    for layer in range(shapes.num_layers):
        for suffix in suffixes:
            fin, fout = per_suffix[suffix]
            k_in, k_out = projection_dims(fin, fout, factor, max_hessian_dim)
            dims.append(ModuleDims(f"model.layers.{layer}.{suffix}", fin, fout, k_in, k_out))
    return dims


def shapes_and_dtype(model) -> tuple[Shapes, str]:
    """A loaded Hugging Face model's shapes and dtype name, as the memory model's sizing rules take them.

    Duck-typed (``model.config`` and ``model.parameters()``) so this module stays free of torch.
    """
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return shapes_from_config(model.config.to_dict()), dtype
