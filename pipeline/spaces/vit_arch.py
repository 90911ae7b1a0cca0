"""ViT (AutoFormer) architectures as plain data: the two supernets' ranges, validation, the string and
AutoFormer-JSON forms, and the parameter / FLOP count of the benchmark network.

The space (AutoFormer, Chen et al. ICCV 2021; the HyperNAS supplement's Table 5, METHOD.md §9) is a
ViT with one embed dim for the whole network and, per transformer layer, an MLP ratio, a head count and
a Q-K-V dim; the depth is the number of layers. Ranges are (min, max, step):

|              | supernet-small | supernet-base |
|--------------|----------------|---------------|
| embed dim    | (320, 448, 64) | (528, 624, 48) |
| Q-K-V dim    | (320, 448, 64) | (512, 640, 64) |
| MLP ratio    | (3, 4, 0.5)    | (3, 4, 0.5)    |
| heads        | (5, 7, 1)      | (8, 10, 1)     |
| depth        | (12, 14, 1)    | (14, 16, 1)    |

**Q-K-V dim is per layer, 64 per head unless given.** AutoFormer's supernet sets each layer's Q-K-V dim
to `64 x heads` (`sample_q_embed_dim = num_heads * 64` in its supernet_transformer.py); the table's
Q-K-V row is exactly heads x 64, and the supplement's Table 12 architectures (heads 5/6/7 in one
network, 9/10 in the other) are only valid that way: no single Q-K-V dim is divisible by both 9 and 10
in (512, 640, 64). So an architecture that does not give the Q-K-V dim gets 64 x heads per layer; one
that does (a number for every layer, or a list) must keep it on the grid and divisible by the layer's
heads.

String form (canonical): `e384|r3.5h5|r4.0h6|...`: the embed dim, then one `r<mlp ratio>h<heads>` per
layer in network order, with `q<dim>` appended where a layer's Q-K-V dim is not 64 x heads.

JSON form (AutoFormer's): `{"depth": 13, "embed_dim": 384, "mlp_ratio": [...], "num_heads": [...],
"qkv_dim": ...}`; `qkv_dim` is optional (null/absent: 64 x heads per layer; a number: every layer; a
list: per layer), `layer_num` is accepted for `depth` and a per-layer `embed_dim` list (AutoFormer's
sampled configs) must be uniform. An MLP-ratio list shorter than the depth (the supplement's
HyperNAS-s lists 12 ratios for depth 13) is an error unless the space setting `missing_mlp_ratios`
is `repeat_last`: then the last ratio fills the missing layers, with a warning naming the architecture.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

from pipeline.errors import ArchError

HEAD_DIM = 64  # AutoFormer: Q-K-V dim per head when an architecture does not give it


class Layer(NamedTuple):
    mlp_ratio: float
    num_heads: int
    qkv_dim: int

    def hidden(self, embed_dim: int) -> int:
        """MLP hidden width, as timm's Block computes it."""
        return int(embed_dim * self.mlp_ratio)


class ViTArch(NamedTuple):
    embed_dim: int
    layers: tuple[Layer, ...]

    @property
    def depth(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class Supernet:
    """One supernet's ranges, each (min, max, step), and the params range (M) the supplement states."""

    name: str
    embed_dim: tuple[int, int, int]
    qkv_dim: tuple[int, int, int]
    mlp_ratio: tuple[float, float, float]
    num_heads: tuple[int, int, int]
    depth: tuple[int, int, int]
    params_range_m: tuple[float, float]

    @staticmethod
    def grid(rng: tuple) -> list:
        lo, hi, step = rng
        n = int(round((hi - lo) / step))
        return [type(lo)(lo + k * step) if isinstance(lo, int) else lo + k * step for k in range(n + 1)]

    @property
    def max_hidden(self) -> int:
        return int(self.embed_dim[1] * self.mlp_ratio[1])


SUPERNETS = {
    "small": Supernet("small", (320, 448, 64), (320, 448, 64), (3.0, 4.0, 0.5), (5, 7, 1), (12, 14, 1), (14, 34)),
    "base": Supernet("base", (528, 624, 48), (512, 640, 64), (3.0, 4.0, 0.5), (8, 10, 1), (14, 16, 1), (42, 75)),
}


def _fmt_range(rng: tuple) -> str:
    return "(" + ", ".join(f"{v:g}" for v in rng) + ")"


def _on_grid(value: float, rng: tuple) -> bool:
    lo, hi, step = rng
    k = (value - lo) / step
    return lo - 1e-9 <= value <= hi + 1e-9 and abs(k - round(k)) < 1e-9


def validate(arch: ViTArch, net: Supernet, text: Any) -> ViTArch:
    """`arch` itself if it lies in `net`'s ranges; else an ArchError naming `text` and the violated range."""
    where = f"ViT arch {text if isinstance(text, str) else str(text)!r}"
    sn = f"supernet-{net.name}"
    if not _on_grid(arch.depth, net.depth):
        raise ArchError(f"{where}: depth {arch.depth} is outside {sn}'s depth range {_fmt_range(net.depth)}")
    if not _on_grid(arch.embed_dim, net.embed_dim):
        raise ArchError(f"{where}: embed dim {arch.embed_dim} is not in {sn}'s embed dim range "
                        f"{_fmt_range(net.embed_dim)} (min, max, step)")
    for i, layer in enumerate(arch.layers):
        if not _on_grid(layer.mlp_ratio, net.mlp_ratio):
            raise ArchError(f"{where}: layer {i}: MLP ratio {layer.mlp_ratio:g} is not in {sn}'s MLP ratio range "
                            f"{_fmt_range(net.mlp_ratio)}")
        if not _on_grid(layer.num_heads, net.num_heads):
            raise ArchError(f"{where}: layer {i}: {layer.num_heads} heads are outside {sn}'s head range "
                            f"{_fmt_range(net.num_heads)}")
        if not _on_grid(layer.qkv_dim, net.qkv_dim):
            raise ArchError(f"{where}: layer {i}: Q-K-V dim {layer.qkv_dim} is not in {sn}'s Q-K-V dim range "
                            f"{_fmt_range(net.qkv_dim)}")
        if layer.qkv_dim % layer.num_heads:
            raise ArchError(f"{where}: layer {i}: {layer.num_heads} heads do not divide the Q-K-V dim "
                            f"{layer.qkv_dim} ({sn}: heads {_fmt_range(net.num_heads)}, Q-K-V dim "
                            f"{_fmt_range(net.qkv_dim)})")
    return arch


def _ratio(value: Any, where: str, i: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArchError(f"{where}: layer {i}: MLP ratio {value!r} is not a number")
    # one decimal is the grid's resolution (step 0.5): 4 and 4.0 are one ratio
    return round(float(value), 6)


def _int(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ArchError(f"{where}: {what} {value!r} is not an integer")
    return int(value)


# -- string form ------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^r(\d+(?:\.\d+)?)h(\d+)(?:q(\d+))?$")


def to_str(arch: ViTArch) -> str:
    parts = [f"e{arch.embed_dim}"]
    for layer in arch.layers:
        q = "" if layer.qkv_dim == HEAD_DIM * layer.num_heads else f"q{layer.qkv_dim}"
        parts.append(f"r{layer.mlp_ratio:.1f}h{layer.num_heads}{q}")
    return "|".join(parts)


def parse_string(text: str) -> ViTArch:
    parts = text.strip().split("|")
    head = parts[0]
    if not (head.startswith("e") and head[1:].isdigit()) or len(parts) < 2:
        raise ArchError(f"malformed ViT arch string {text!r}: expected 'e<embed dim>|r<mlp ratio>h<heads>|...' "
                        f"(e.g. 'e384|r3.5h6|r4.0h6q384'), or AutoFormer JSON")
    layers = []
    for i, part in enumerate(parts[1:]):
        m = _LAYER_RE.match(part)
        if not m:
            raise ArchError(f"malformed ViT arch string {text!r}: layer {i} is {part!r}, expected "
                            f"'r<mlp ratio>h<heads>' with an optional 'q<Q-K-V dim>'")
        r, h, q = float(m.group(1)), int(m.group(2)), m.group(3)
        if h < 1:
            raise ArchError(f"ViT arch {text!r}: layer {i} has {h} heads")
        layers.append(Layer(round(r, 6), h, int(q) if q else HEAD_DIM * h))
    return ViTArch(int(head[1:]), tuple(layers))


# -- AutoFormer JSON --------------------------------------------------------------------------------

def to_json(arch: ViTArch) -> dict:
    """AutoFormer's config form, Q-K-V dims spelled out per layer (parse(json.dumps(to_json(a))) == a)."""
    return {"depth": arch.depth, "embed_dim": arch.embed_dim,
            "mlp_ratio": [layer.mlp_ratio for layer in arch.layers],
            "num_heads": [layer.num_heads for layer in arch.layers],
            "qkv_dim": [layer.qkv_dim for layer in arch.layers]}


_JSON_KEYS = {"depth", "layer_num", "embed_dim", "mlp_ratio", "num_heads", "qkv_dim"}


def parse_json(obj: Mapping | str, missing_mlp_ratios: str = "error") -> ViTArch:
    """An AutoFormer-style mapping (or its JSON text) -> ViTArch (not yet range-checked)."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    where = f"ViT arch {text!r}"
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError as e:
            raise ArchError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(obj, Mapping):
        raise ArchError(f"{where}: expected a JSON object with depth, embed_dim, mlp_ratio, num_heads")
    unknown = sorted(set(obj) - _JSON_KEYS)
    if unknown:
        raise ArchError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; keys: "
                        f"{', '.join(sorted(_JSON_KEYS))}")
    for key in ("embed_dim", "mlp_ratio", "num_heads"):
        if key not in obj:
            raise ArchError(f"{where}: missing {key!r}")
    if "depth" not in obj and "layer_num" not in obj:
        raise ArchError(f"{where}: missing 'depth'")
    depth = _int(obj.get("depth", obj.get("layer_num")), where, "depth")
    if "depth" in obj and "layer_num" in obj and _int(obj["layer_num"], where, "layer_num") != depth:
        raise ArchError(f"{where}: depth {depth} and layer_num {obj['layer_num']} disagree")
    if depth < 1:
        raise ArchError(f"{where}: depth {depth} must be >= 1")
    embed = obj["embed_dim"]
    if isinstance(embed, (list, tuple)):  # AutoFormer's sampled configs repeat it per layer
        if not embed or len(set(embed)) != 1:
            raise ArchError(f"{where}: a per-layer embed_dim list must hold one value (the space has one embed "
                            f"dim per network), got {list(embed)}")
        embed = embed[0]
    embed = _int(embed, where, "embed_dim")
    heads = obj["num_heads"]
    if not isinstance(heads, (list, tuple)) or len(heads) != depth:
        raise ArchError(f"{where}: num_heads must list {depth} head counts (one per layer, depth {depth}), got "
                        f"{heads!r}" + (f" ({len(heads)} values)" if isinstance(heads, (list, tuple)) else ""))
    ratios = obj["mlp_ratio"]
    if not isinstance(ratios, (list, tuple)) or not ratios:
        raise ArchError(f"{where}: mlp_ratio must list {depth} MLP ratios (one per layer), got {ratios!r}")
    ratios = list(ratios)
    if len(ratios) > depth:
        raise ArchError(f"{where}: mlp_ratio lists {len(ratios)} MLP ratios for depth {depth}")
    if len(ratios) < depth:
        missing = depth - len(ratios)
        if missing_mlp_ratios != "repeat_last":
            raise ArchError(f"{where}: mlp_ratio lists {len(ratios)} MLP ratios for depth {depth}; to reuse the "
                            f"last ratio for the missing {missing} layer(s), set space.settings."
                            f"missing_mlp_ratios=repeat_last")
        warnings.warn(f"{where}: mlp_ratio lists {len(ratios)} MLP ratios for depth {depth}; the last one "
                      f"({ratios[-1]}) fills the missing {missing} layer(s) (space.settings.missing_mlp_ratios="
                      f"repeat_last)", UserWarning, stacklevel=3)
        ratios += [ratios[-1]] * missing
    heads = [_int(h, where, "num_heads entry") for h in heads]
    qkv = obj.get("qkv_dim")
    if qkv is None:
        qkv = [HEAD_DIM * h for h in heads]
    elif isinstance(qkv, (list, tuple)):
        if len(qkv) != depth:
            raise ArchError(f"{where}: qkv_dim lists {len(qkv)} values for depth {depth}")
        qkv = [_int(q, where, "qkv_dim entry") for q in qkv]
    else:
        qkv = [_int(qkv, where, "qkv_dim")] * depth
    for i, h in enumerate(heads):
        if h < 1:
            raise ArchError(f"{where}: layer {i} has {h} heads")
    layers = tuple(Layer(_ratio(r, where, i), h, q) for i, (r, h, q) in enumerate(zip(ratios, heads, qkv)))
    return ViTArch(embed, layers)


# -- cost of the benchmark network -------------------------------------------------------------------

def count_cost(arch: ViTArch, image_size: int = 224, patch_size: int = 16, num_classes: int = 1000) -> dict[str, float]:
    """Params (M) and FLOPs (M multiply-adds) of the ViT: patch embedding, cls token, position embedding,
    pre-norm blocks (LayerNorm, qkv with bias, attention, proj, MLP fc1-GELU-fc2), final LayerNorm, head
    on the cls token. FLOPs count the matmuls/convolution (attention's q k^T and attn v included; norms,
    softmax, GELU not), as AutoFormer's and timm's counters do for the dominant terms."""
    E = arch.embed_dim
    grid = image_size // patch_size
    n = grid * grid
    tokens = n + 1
    params = 3 * patch_size ** 2 * E + E + E + tokens * E   # patch conv + bias, cls token, position embedding
    flops = n * 3 * patch_size ** 2 * E
    for layer in arch.layers:
        q, H = layer.qkv_dim, layer.hidden(E)
        params += 2 * E + (3 * q * E + 3 * q) + (q * E + E) + 2 * E + (E * H + H) + (H * E + E)
        flops += tokens * (3 * q * E + q * E + 2 * E * H) + 2 * tokens * tokens * q
    params += 2 * E + E * num_classes + num_classes
    flops += E * num_classes
    return {"params": params / 1e6, "flops": flops / 1e6}


def extremes(net: Supernet) -> tuple[ViTArch, ViTArch]:
    """The smallest and the largest architecture of a supernet (every range at its min / max)."""
    def uniform(i: int) -> ViTArch:
        h = net.num_heads[i]
        q = HEAD_DIM * h if _on_grid(HEAD_DIM * h, net.qkv_dim) else net.qkv_dim[i]
        return ViTArch(net.embed_dim[i], (Layer(float(net.mlp_ratio[i]), h, q),) * net.depth[i])
    return uniform(0), uniform(1)

