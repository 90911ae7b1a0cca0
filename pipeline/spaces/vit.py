"""ViT (AutoFormer) search space, supernet-small or -base (`space.settings.supernet`): one embed dim, and
per transformer layer an MLP ratio, a head count and a Q-K-V dim; depth = number of layers. Ranges,
string / JSON forms and the cost count: vit_arch.py; target and benchmark networks (timm blocks,
AutoFormer weight entanglement, what is shared): vit_target.py; the chunked hypernetwork the large
matrices need: pipeline/models/chunked.py.

Global encoding (METHOD.md §1), 1 + depth graphs, so sequences differ in length with depth
(pipeline/data/graphs.py pads them; the encoder leaves padding out):
- graph 0, the patch-embedding stem: input -> `embed_<E>` -> output. It is how the embed dim enters the
  encoding (a node type, not a feature beside the GCN): every layer is E wide, and the sum connectivity
  carries the stem's embedding into layer 1 and on through the sequence.
- graph 1 + i, layer i (pre-norm block x + attn(x), then + mlp(.)), in operation-on-node form:
  input(0) -> `qkv_<Q>`(1) -> `attn_h<heads>`(2); the MLP node `mlp_r<ratio>`(3) reads the residual sum
  of input and attention; the output(4) sums input, attention and MLP:
  edges 0->1, 1->2, 0->3, 2->3, 0->4, 2->4, 3->4.
  The Q-K-V node owns the layer's q, k, v matrices, the attention node proj, the MLP node fc1 and fc2.
Cell scope (NP): the layer graphs only; the embed dim is then seen only through `extra_features`.

Node types cover both supernets (one vocabulary, so a GCN's input width does not depend on the setting).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Hashable, Mapping

from torch import nn

from pipeline.errors import ArchError, ConfigError
from pipeline.settings import setting
from pipeline.spaces.base import CellGraph, SearchSpace, TargetNet
from pipeline.spaces.vit_arch import (HEAD_DIM, SUPERNETS, Layer, Supernet, ViTArch, count_cost, parse_json,
                                      parse_string, to_json, to_str, validate)


def _vocab() -> tuple[str, ...]:
    embeds = sorted({e for n in SUPERNETS.values() for e in Supernet.grid(n.embed_dim)})
    qkvs = sorted({q for n in SUPERNETS.values() for q in Supernet.grid(n.qkv_dim)})
    heads = sorted({h for n in SUPERNETS.values() for h in Supernet.grid(n.num_heads)})
    ratios = sorted({r for n in SUPERNETS.values() for r in Supernet.grid(n.mlp_ratio)})
    return (("input", "output") + tuple(f"embed_{e}" for e in embeds) + tuple(f"qkv_{q}" for q in qkvs)
            + tuple(f"attn_h{h}" for h in heads) + tuple(f"mlp_r{r:.1f}" for r in ratios))


NODE_VOCAB = _vocab()
_T = {name: i for i, name in enumerate(NODE_VOCAB)}
LAYER_EDGES = ((0, 1), (1, 2), (0, 3), (2, 3), (0, 4), (2, 4), (3, 4))


def stem_graph(embed_dim: int) -> CellGraph:
    return CellGraph((_T["input"], _T[f"embed_{embed_dim}"], _T["output"]), ((0, 1), (1, 2)))


def layer_graph(layer: Layer) -> CellGraph:
    types = (_T["input"], _T[f"qkv_{layer.qkv_dim}"], _T[f"attn_h{layer.num_heads}"],
             _T[f"mlp_r{layer.mlp_ratio:.1f}"], _T["output"])
    return CellGraph(types, LAYER_EDGES)


@dataclass
class ViTSettings:
    """ViT (AutoFormer): the supernet whose ranges define the space, the target network's input size and
    patch, the chunked hypernetwork, and the benchmark network that cost() counts."""

    supernet: str = setting("small", "AutoFormer supernet (the HyperNAS supplement's Table 5): small "
                                     "(embed 320-448, depth 12-14, 14-34 M params) or base (embed 528-624, "
                                     "depth 14-16, 42-75 M).")
    target_image_size: int = setting(224, "Input side of the target network (must equal model.hyper.image_size).")
    target_patch_size: int = setting(16, "Patch side of the target network (a divisor of target_image_size).")
    missing_mlp_ratios: str = setting("error", "An AutoFormer JSON with fewer MLP ratios than its depth (the "
                                               "supplement's HyperNAS-s: 12 for depth 13): error, or repeat_last "
                                               "(the last ratio fills the missing layers, with a warning).")
    chunk_size: int = setting(64, "Side of the square tiles the hypernetwork generates the weight matrices in.")
    chunk_embedding_dim: int = setting(32, "Width of the learned tile-position embedding of the chunked "
                                           "hypernetwork.")
    checkpoint_blocks: bool = setting(False, "Recompute each target block in backward (activation "
                                             "checkpointing): ~1/8 of the saved activations (largest ViT-base at "
                                             "224 px: 8.3 instead of 68.8 MiB per image) for one more target "
                                             "forward; for several ViT-base targets per forward on a GPU.")
    benchmark_image_size: int = setting(224, "Input side at which cost() counts the benchmark network.")
    benchmark_patch_size: int = setting(16, "Patch side of the benchmark network.")
    benchmark_classes: int = setting(1000, "Classes of the benchmark network's head (ImageNet).")

    def __post_init__(self) -> None:
        if self.supernet not in SUPERNETS:
            raise ConfigError(f"config key 'space.settings.supernet': must be one of {', '.join(SUPERNETS)}, "
                              f"got {self.supernet!r}")
        if self.missing_mlp_ratios not in ("error", "repeat_last"):
            raise ConfigError(f"config key 'space.settings.missing_mlp_ratios': must be error or repeat_last, "
                              f"got {self.missing_mlp_ratios!r}")
        for key in ("target_image_size", "target_patch_size", "chunk_size", "chunk_embedding_dim",
                    "benchmark_image_size", "benchmark_patch_size", "benchmark_classes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'space.settings.{key}': must be >= 1, got {getattr(self, key)}")
        for prefix in ("target", "benchmark"):
            side, patch = getattr(self, f"{prefix}_image_size"), getattr(self, f"{prefix}_patch_size")
            if side % patch:
                raise ConfigError(f"config key 'space.settings.{prefix}_patch_size': {patch} does not divide "
                                  f"{prefix}_image_size={side}")


class ViTSpace(SearchSpace):
    name = "vit"
    node_vocab = NODE_VOCAB
    cell_ops = tuple(n for n in NODE_VOCAB if n.startswith(("qkv_", "attn_", "mlp_")))  # what cell graphs hold
    Settings = ViTSettings
    # the contract test's flavour: supernet-small at full width, 16 px images in 8 px patches (5 tokens)
    tiny = {"settings": {"supernet": "small", "target_image_size": 16, "target_patch_size": 8}, "image_size": 16}

    @property
    def supernet(self) -> Supernet:
        return SUPERNETS[self.settings.supernet]

    # -- strings ---------------------------------------------------------------------------------
    def parse(self, text: Any) -> ViTArch:
        if isinstance(text, ViTArch):
            arch = text
        elif isinstance(text, Mapping):
            arch = parse_json(text, self.settings.missing_mlp_ratios)
        elif isinstance(text, str):
            s = text.strip()
            arch = parse_json(s, self.settings.missing_mlp_ratios) if s.startswith("{") else parse_string(s)
        else:
            raise ArchError(f"ViT arch must be a string or an AutoFormer mapping, got {type(text).__name__}: {text!r}")
        return validate(arch, self.supernet, text)

    def to_str(self, arch: ViTArch) -> str:
        return to_str(arch)

    def to_json(self, arch: ViTArch) -> dict:
        return to_json(arch)

    # -- the space -------------------------------------------------------------------------------
    def _layer(self, rng: random.Random) -> Layer:
        net = self.supernet
        h = rng.choice(Supernet.grid(net.num_heads))
        return Layer(rng.choice(Supernet.grid(net.mlp_ratio)), h, HEAD_DIM * h)

    def sample(self, rng: random.Random) -> ViTArch:
        """Uniform over AutoFormer's choices: embed dim, depth, and per layer MLP ratio and heads (Q-K-V dim
        64 x heads, as AutoFormer's supernet samples them)."""
        net = self.supernet
        depth = rng.choice(Supernet.grid(net.depth))
        return ViTArch(rng.choice(Supernet.grid(net.embed_dim)), tuple(self._layer(rng) for _ in range(depth)))

    def mutate(self, arch: ViTArch, rng: random.Random) -> ViTArch:
        """One edit: the embed dim, the depth (+1: a random last layer; -1: drop the last), or one layer's
        MLP ratio or heads (its Q-K-V dim follows: 64 x heads, or kept when given and still divisible)."""
        net = self.supernet
        what = rng.choice(("embed", "depth", "ratio", "heads"))
        layers = list(arch.layers)
        if what == "embed":
            return arch._replace(embed_dim=rng.choice([e for e in Supernet.grid(net.embed_dim) if e != arch.embed_dim]))
        if what == "depth":
            grow = arch.depth < net.depth[1] and (arch.depth == net.depth[0] or rng.random() < 0.5)
            return arch._replace(layers=tuple(layers + [self._layer(rng)]) if grow else tuple(layers[:-1]))
        i = rng.randrange(arch.depth)
        layer = layers[i]
        if what == "ratio":
            layers[i] = layer._replace(mlp_ratio=rng.choice([r for r in Supernet.grid(net.mlp_ratio)
                                                             if r != layer.mlp_ratio]))
        else:
            h = rng.choice([h for h in Supernet.grid(net.num_heads) if h != layer.num_heads])
            keep = layer.qkv_dim != HEAD_DIM * layer.num_heads and layer.qkv_dim % h == 0
            layers[i] = Layer(layer.mlp_ratio, h, layer.qkv_dim if keep else HEAD_DIM * h)
        return arch._replace(layers=tuple(layers))

    def crossover(self, a: ViTArch, b: ViTArch, rng: random.Random) -> ViTArch:
        """Embed dim and depth each from either parent, layer i from either parent that has one; a child
        equal to a parent is mutated until it is new."""
        depth = rng.choice((a.depth, b.depth))
        layers = tuple(rng.choice([p.layers[i] for p in (a, b) if i < p.depth]) for i in range(depth))
        child = ViTArch(rng.choice((a.embed_dim, b.embed_dim)), layers)
        while child in (a, b):
            child = self.mutate(child, rng)
        return child

    def isomorphism_class(self, arch: ViTArch) -> str:
        """The canonical string: no two architectures of the space compute the same function."""
        return to_str(arch)

    # -- encodings -------------------------------------------------------------------------------
    def encode(self, arch: ViTArch, scope: str = "global") -> list[CellGraph]:
        layers = [layer_graph(layer) for layer in arch.layers]
        if scope == "cell":
            return layers
        if scope != "global":
            raise ValueError(f"unknown encoding scope {scope!r}")
        return [stem_graph(arch.embed_dim)] + layers

    def extra_features(self, arch: ViTArch) -> dict[str, float]:
        n = arch.depth
        return {"embed_dim": float(arch.embed_dim), "depth": float(n),
                "mean_mlp_ratio": sum(layer.mlp_ratio for layer in arch.layers) / n,
                "mean_heads": sum(layer.num_heads for layer in arch.layers) / n,
                "mean_qkv_dim": sum(layer.qkv_dim for layer in arch.layers) / n}

    def cost(self, arch: ViTArch) -> dict[str, float]:
        """Params (M) and FLOPs (M multiply-adds) of the benchmark ViT (vit_arch.count_cost), by default at
        224 px, patch 16, 1000 classes."""
        s = self.settings
        return count_cost(arch, s.benchmark_image_size, s.benchmark_patch_size, s.benchmark_classes)

    # -- target network --------------------------------------------------------------------------
    def hyper_heads(self) -> dict[str, tuple[int, ...]]:
        """Maximal (out, in) matrices of the supernet: Q-K-V dim Q, embed dim E, MLP hidden H = 4 E."""
        net = self.supernet
        E, Q, H = net.embed_dim[1], net.qkv_dim[1], net.max_hidden
        return {"vit_q": (Q, E), "vit_k": (Q, E), "vit_v": (Q, E), "vit_proj": (E, Q),
                "vit_fc1": (H, E), "vit_fc2": (E, H)}

    def build_hypernet(self, dim_in: int, hidden: int, layers: int, init: str = "kaiming") -> nn.Module:
        """The chunked hypernetwork (ViT-base's maximal heads alone would hold 0.6 B parameters at hidden 128)."""
        from pipeline.models.chunked import ChunkedHyperNetwork
        return ChunkedHyperNetwork(dim_in, hidden, layers, self.hyper_heads(), chunk=self.settings.chunk_size,
                                   pos_dim=self.settings.chunk_embedding_dim, init=init)

    def build_target(self, arch: ViTArch, num_classes: int, device: Any = None) -> TargetNet:
        from pipeline.spaces.vit_target import ViTTargetNet
        s = self.settings
        return ViTTargetNet(arch, self.supernet, s.target_image_size, s.target_patch_size, num_classes,
                            first_layer_graph=1, checkpoint_blocks=s.checkpoint_blocks, device=device)

    def build_shared(self, num_classes: int) -> nn.Module:
        from pipeline.spaces.vit_target import ViTShared
        return ViTShared(self.supernet, self.settings.target_image_size, self.settings.target_patch_size,
                         num_classes)

    # -- benchmark network (zero-cost proxies) ---------------------------------------------------
    def build_benchmark_net(self, arch: Hashable, num_classes: int) -> nn.Module:
        """An ordinary randomly initialised timm-block ViT of the architecture (vit_target.ViTBenchmarkNet)
        at benchmark_image_size / benchmark_patch_size; its parameter count is cost()'s for that many classes."""
        from pipeline.spaces.vit_target import ViTBenchmarkNet
        s = self.settings
        return ViTBenchmarkNet(arch, num_classes, s.benchmark_image_size, s.benchmark_patch_size)
