"""MobileNetV3 (once-for-all) space: 5 stages of 2-4 inverted-residual blocks, each block a kernel in
{3, 5, 7} and an expansion in {3, 4, 6} (~2.2e19 architectures). Layout, text forms (canonical string
and OFA JSON) and the cost count: mobilenetv3_arch.py; the networks (timm's blocks): mobilenetv3_target.py.

Encoding (METHOD.md §1). Global scope: one graph per stage, in network order (5 graphs of 4-6 nodes):
`stage<s>_input` -> block -> ... -> block -> `stage<s>_output`, a chain; a block node's type is its
(kernel, expansion) pair, `k5_e6` (9 types, shared by all stages so what the GCN learns about a block
carries over; the stage-specific input/output types tell it where in the network a stage sits, as DARTS'
normal/reduce input types do). Graphs differ in size (depth 2-4). The stem, the fixed first block and the
head are the same in every architecture and own no generated weight, so they are not encoded (z(0) = 0,
as NB201's stem). Cell scope (NP, graph features): the whole network as one chain graph, each stage's
blocks after its `stage<s>_input` node, `stage5_output` last (7-26 nodes).

The paper's constraint is FLOPs < 500 M at 224 px; the `max_flops` setting makes sample / mutate /
crossover keep to such a budget (parse accepts every architecture of the space: tables may hold any).
"""
from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.errors import ConfigError
from pipeline.settings import setting
from pipeline.spaces.base import CellGraph, SearchSpace, TargetNet
from pipeline.spaces.mobilenetv3_arch import (DEPTHS, EXPANSIONS, KERNELS, MAX_KERNEL, NUM_STAGES, Arch, Widths,
                                              arch_def, cost_m, hidden_width, largest, parse_arch, se_width,
                                              smallest, to_ofa, to_string)

BLOCK_TYPES = tuple(f"k{k}_e{e}" for k in KERNELS for e in EXPANSIONS)
NODE_VOCAB = (tuple(f"stage{s}_input" for s in range(1, NUM_STAGES + 1))
              + tuple(f"stage{s}_output" for s in range(1, NUM_STAGES + 1)) + BLOCK_TYPES)
_T = {name: i for i, name in enumerate(NODE_VOCAB)}
DW_HEADS = ("crop7", "per_size")
SAMPLE_TRIES = 10_000  # rejection-sampling draws under max_flops before giving up


def block_type(k: int, e: int) -> int:
    return _T[f"k{k}_e{e}"]


def stage_graph(stage: int, blocks: tuple) -> CellGraph:
    """Stage `stage` (0-based) as a chain: input, its blocks, output."""
    types = (_T[f"stage{stage + 1}_input"],) + tuple(block_type(k, e) for k, e in blocks) + \
        (_T[f"stage{stage + 1}_output"],)
    return CellGraph(types, tuple((i, i + 1) for i in range(len(types) - 1)))


def network_graph(arch: Arch) -> CellGraph:
    """The whole network as one chain (cell scope)."""
    types = []
    for s, blocks in enumerate(arch):
        types += [_T[f"stage{s + 1}_input"]] + [block_type(k, e) for k, e in blocks]
    types.append(_T[f"stage{NUM_STAGES}_output"])
    return CellGraph(tuple(types), tuple((i, i + 1) for i in range(len(types) - 1)))


@functools.lru_cache(maxsize=65536)
def _cost(arch: Arch, width_mult: float, image_size: int, classes: int) -> tuple[float, float]:
    c = cost_m(arch, width_mult, image_size, classes)
    return c["params"], c["flops"]


@dataclass
class MobileNetV3Settings:
    """MobileNetV3 / OFA: the benchmark network cost() counts and the label stage trains, and the target
    network whose weights the hypernetwork generates (the same layout at another width)."""

    width_mult: float = setting(1.0, "Width multiplier of the target network (OFA's rule: every width x mult, "
                                     "rounded to a multiple of 8, at least 8). 1.0 = the benchmark's widths.")
    dw_heads: str = setting("crop7", "How depthwise kernels are generated: crop7 = one 7x7 head, the kxk centre "
                                     "cropped (and rescaled to its fan-in, OFA's kernel sharing); per_size = one "
                                     "head per kernel size (dw3x3, dw5x5, dw7x7).")
    benchmark_width_mult: float = setting(1.0, "Width multiplier of the benchmark network that cost() counts and "
                                               "build_benchmark_net builds (the label stage trains it); OFA's "
                                               "space: 1.0.")
    benchmark_image_size: int = setting(224, "Input side at which cost() counts FLOPs (the paper: 224).")
    benchmark_classes: int = setting(1000, "Classes of the benchmark network's classifier that cost() counts "
                                           "(ImageNet: 1000).")
    max_flops: float = setting(0.0, "FLOPs budget (M, at benchmark_image_size) that sample / mutate / crossover "
                                    "keep to; 0 = none. The paper's search: 500.")

    def __post_init__(self) -> None:
        for key in ("width_mult", "benchmark_width_mult"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"config key 'space.settings.{key}': must be > 0, got {getattr(self, key)}")
        if self.dw_heads not in DW_HEADS:
            raise ConfigError(f"config key 'space.settings.dw_heads': must be one of {', '.join(DW_HEADS)}, "
                              f"got {self.dw_heads!r}")
        for key in ("benchmark_image_size", "benchmark_classes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'space.settings.{key}': must be >= 1, got {getattr(self, key)}")
        if self.max_flops < 0:
            raise ConfigError(f"config key 'space.settings.max_flops': must be >= 0 (0 = no budget), "
                              f"got {self.max_flops}")
        if self.max_flops:
            lo, hi = (self._flops(a) for a in (smallest(), largest()))
            if lo > self.max_flops:
                raise ConfigError(f"config key 'space.settings.max_flops': no architecture meets max_flops="
                                  f"{self.max_flops:g} M: the smallest, {to_string(smallest())}, has {lo:.1f} M "
                                  f"FLOPs at {self.benchmark_image_size} px (the space spans {lo:.1f}-{hi:.1f} M)")

    def _flops(self, arch: Arch) -> float:
        return _cost(arch, self.benchmark_width_mult, self.benchmark_image_size, self.benchmark_classes)[1]


class MobileNetV3Space(SearchSpace):
    name = "mobilenetv3"
    node_vocab = NODE_VOCAB
    cell_ops = BLOCK_TYPES
    Settings = MobileNetV3Settings
    tiny = {"settings": {"width_mult": 0.25}, "image_size": 16}

    # -- strings ---------------------------------------------------------------------------------
    def parse(self, text: Any) -> Arch:
        """The canonical string `k3e4-k5e6|...` or OFA's JSON `{"ks": [...], "e": [...], "d": [...]}`."""
        return parse_arch(text)

    def to_str(self, arch: Arch) -> str:
        return to_string(arch)

    def to_json(self, arch: Arch) -> str:
        """OFA's JSON form (parse reads it back to the same architecture)."""
        return json.dumps(to_ofa(arch))

    def arch_def(self, arch: Arch) -> list[list[str]]:
        """timm's block strings of the whole network (mobilenetv3_arch.arch_def)."""
        return arch_def(arch)

    # -- the space -------------------------------------------------------------------------------
    def within_budget(self, arch: Arch) -> bool:
        return not self.settings.max_flops or self.settings._flops(arch) <= self.settings.max_flops

    @staticmethod
    def _random_block(rng: random.Random) -> tuple[int, int]:
        return rng.choice(KERNELS), rng.choice(EXPANSIONS)

    def _sample_any(self, rng: random.Random) -> Arch:
        return tuple(tuple(self._random_block(rng) for _ in range(rng.choice(DEPTHS))) for _ in range(NUM_STAGES))

    def sample(self, rng: random.Random) -> Arch:
        """Uniform depth per stage, then uniform kernel and expansion per block (OFA's sampler); under
        max_flops, rejection sampling."""
        for _ in range(SAMPLE_TRIES):
            arch = self._sample_any(rng)
            if self.within_budget(arch):
                return arch
        raise ConfigError(f"config key 'space.settings.max_flops': none of {SAMPLE_TRIES} random architectures "
                          f"meets max_flops={self.settings.max_flops:g} M; raise the budget")

    def _mutate_any(self, arch: Arch, rng: random.Random) -> Arch:
        s = rng.randrange(NUM_STAGES)
        blocks = list(arch[s])
        what = rng.choice(("kernel", "expansion", "depth"))
        if what == "depth":
            moves = [d for d in (len(blocks) - 1, len(blocks) + 1) if d in DEPTHS]
            if rng.choice(moves) > len(blocks):
                blocks.append(self._random_block(rng))
            else:
                blocks.pop()
        else:
            i = rng.randrange(len(blocks))
            k, e = blocks[i]
            if what == "kernel":
                blocks[i] = (rng.choice([x for x in KERNELS if x != k]), e)
            else:
                blocks[i] = (k, rng.choice([x for x in EXPANSIONS if x != e]))
        new = list(arch)
        new[s] = tuple(blocks)
        return tuple(new)

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """One edit: a block's kernel or expansion, or a stage's depth (+1: a random block appended, -1: the
        last block dropped). Under max_flops the first of 64 such edits within budget (else the last)."""
        for _ in range(64):
            new = self._mutate_any(arch, rng)
            if self.within_budget(new):
                return new
        return new

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Per stage a parent's depth, per block position either parent's block where both have one (OFA's
        evolution crosses its ks / e / d lists position by position); a child equal to a parent is mutated."""
        child = a
        for _ in range(64):
            stages = []
            for sa, sb in zip(a, b):
                depth = rng.choice((len(sa), len(sb)))
                stages.append(tuple(rng.choice([s[i] for s in (sa, sb) if i < len(s)]) for i in range(depth)))
            child = tuple(stages)
            while child in (a, b):
                child = self._mutate_any(child, rng)
            if self.within_budget(child):
                return child
        return child

    def isomorphism_class(self, arch: Arch) -> str:
        """The canonical string: blocks beyond a stage's depth are not part of an Arch, and two different
        block sequences compute different functions."""
        return to_string(arch)

    # -- encodings -------------------------------------------------------------------------------
    def encode(self, arch: Arch, scope: str = "global") -> list[CellGraph]:
        if scope == "cell":
            return [network_graph(arch)]
        if scope != "global":
            raise ValueError(f"unknown encoding scope {scope!r}")
        return [stage_graph(s, blocks) for s, blocks in enumerate(arch)]

    def cost(self, arch: Arch) -> dict[str, float]:
        """Params (M) and FLOPs (M multiply-adds, batch 1) of the benchmark network (OFA's MobileNetV3 at
        benchmark_width_mult, benchmark_classes classes) at benchmark_image_size (mobilenetv3_arch.count_cost;
        tests check it against torch's FlopCounterMode and the module's parameter count)."""
        s = self.settings
        params, flops = _cost(arch, s.benchmark_width_mult, s.benchmark_image_size, s.benchmark_classes)
        return {"params": params, "flops": flops}

    # -- target network --------------------------------------------------------------------------
    def hyper_heads(self) -> dict[str, tuple[int, ...]]:
        """Maximal shapes over the target network: the widest block is stage 5's at expansion 6 (inputs up
        to c5 = its width, hidden up to 6 c5). Expand and project 1x1 convs have their own heads (a node owns
        one tensor per kind); SE weights and biases too."""
        w = Widths.at(self.settings.width_mult)
        cin = max(w.stages)
        mid = hidden_width(cin, max(EXPANSIONS))
        rd = se_width(mid)
        heads = {"pw_expand": (mid, cin, 1, 1), "pw_project": (cin, mid, 1, 1),
                 "se_reduce": (rd, mid, 1, 1), "se_expand": (mid, rd, 1, 1),
                 "se_reduce_bias": (rd,), "se_expand_bias": (mid,)}
        if self.settings.dw_heads == "crop7":
            heads[f"dw{MAX_KERNEL}x{MAX_KERNEL}"] = (mid, 1, MAX_KERNEL, MAX_KERNEL)
        else:
            heads.update({f"dw{k}x{k}": (mid, 1, k, k) for k in KERNELS})
        return heads

    def build_target(self, arch: Arch, num_classes: int, device: Any = None) -> TargetNet:
        from pipeline.spaces.mobilenetv3_target import MobileNetV3TargetNet
        return MobileNetV3TargetNet(arch, self.settings.width_mult, self.settings.dw_heads, num_classes,
                                    device=device)

    def build_shared(self, num_classes: int) -> nn.Module:
        from pipeline.spaces.mobilenetv3_target import MobileNetV3Shared
        return MobileNetV3Shared(self.settings.width_mult, num_classes)

    def build_benchmark_net(self, arch: Arch, num_classes: int) -> nn.Module:
        """timm's own `MobileNetV3` built from the architecture's block strings (OFA's layout at
        benchmark_width_mult), randomly initialised, ordinary BN; its parameter count is cost()'s."""
        from pipeline.spaces.mobilenetv3_target import build_benchmark_net
        return build_benchmark_net(arch, num_classes, self.settings.benchmark_width_mult)


__all__ = ["MobileNetV3Space", "MobileNetV3Settings", "NODE_VOCAB", "BLOCK_TYPES", "stage_graph", "network_graph"]
