"""NAS-Bench-201: a 4-node cell with an op on each of its 6 edges; 5^6 = 15,625 cells.

Arch string: `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`, edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).
NASLib files use a tuple of op ids in another edge order (see `from_naslib_tuple`).

Benchmark network (what is encoded): stem, 3 stages of N cells (C, 2C, 4C channels) with a fixed
residual reduction block between stages. Its global encoding (METHOD.md §1) is 3N cell graphs plus the
two reduction graphs, in network order: 17 graphs for N = 5. The stem is the same for every
architecture and precedes the first cell, so it carries no information and is not encoded (z(0) = 0).
"""
from __future__ import annotations

import ast
import itertools
import random
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from pipeline.errors import ArchError, ConfigError
from pipeline.settings import setting
from pipeline.spaces.base import CellGraph, ParamSlot, SearchSpace, TargetNet

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (dst, src) of the 6 edges in arch-string order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
# NASLib tuple: op ids 0=skip 1=none 2=conv3x3 3=conv1x1 4=avgpool, edge order (1<-0),(2<-0),(3<-0),(2<-1),(3<-1),(3<-2)
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGE_ORDER = ((1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))

# Node vocabulary of the op-on-node graphs. Reduction-block nodes are their own types: they are the
# same in every architecture, but their embeddings (shaped by the cells before them) own the
# reduction block's weights in the target network.
NODE_VOCAB = ("input", "output", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none",
              "reduce_conv3x3_s2", "reduce_conv3x3", "reduce_avgpool", "reduce_conv1x1")
_T = {name: i for i, name in enumerate(NODE_VOCAB)}

_STRING_RE = re.compile(r"^\|(.+)\|\+\|(.+)\|\+\|(.+)\|$")

Arch = tuple  # 6 op names in arch-string edge order


def _live_edges(arch: Arch) -> tuple[bool, ...]:
    """An edge is live if its op is not `none`, its source is reachable from the input and its
    destination reaches the output through non-`none` edges: only live edges affect the cell output."""
    reach_in = {0}
    for (dst, src), op in zip(EDGES, arch):  # EDGES are in topological order of dst
        if op != "none" and src in reach_in:
            reach_in.add(dst)
    reach_out = {3}
    for (dst, src), op in sorted(zip(EDGES, arch), key=lambda e: -e[0][1]):
        if op != "none" and dst in reach_out:
            reach_out.add(src)
    return tuple(op != "none" and src in reach_in and dst in reach_out for (dst, src), op in zip(EDGES, arch))


def _reduction_graph() -> CellGraph:
    # ResNet basic block with stride 2: in -> conv3x3 s2 -> conv3x3 -> out; in -> avgpool -> conv1x1 -> out
    types = (_T["input"], _T["reduce_conv3x3_s2"], _T["reduce_conv3x3"], _T["reduce_avgpool"],
             _T["reduce_conv1x1"], _T["output"])
    return CellGraph(types, ((0, 1), (1, 2), (2, 5), (0, 3), (3, 4), (4, 5)))


REDUCTION_GRAPH = _reduction_graph()
# node index of each reduction-block conv in REDUCTION_GRAPH
_RED_NODE = {"conv_a": 1, "conv_b": 2, "shortcut": 4}


@dataclass
class NB201Settings:
    """NAS-Bench-201: the encoded benchmark network (stem, 3 stages of N cells, 2 reduction blocks) and the
    target network whose weights the hypernetwork generates, which may be cheaper than the benchmark's."""

    cells_per_stage: int = setting(5, "Cells per stage of the *encoded* benchmark network (NB201: N=5).")
    prune: bool = setting(True, "Drop 'none' ops and ops on no input->output path from cell graphs, so "
                                "functionally identical cells encode alike.")
    target_channels: int = setting(16, "Width C of the target network's first stage (stages C, 2C, 4C).")
    target_cells_per_stage: int = setting(5, "Cells per stage of the target network (independent of the "
                                             "encoded network: a cheap target can serve on a CPU).")
    batched_targets: bool = setting(False, "Run a micro-batch's target networks side by side as one grouped "
                                           "network (same result, far fewer kernel calls); false: one "
                                           "functional_call per architecture.")
    benchmark_classes: int = setting(10, "Classes of the benchmark network whose cost() is counted (CIFAR-10).")

    def __post_init__(self) -> None:
        for key in ("cells_per_stage", "target_channels", "target_cells_per_stage", "benchmark_classes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'space.settings.{key}': must be >= 1, got {getattr(self, key)}")


class NB201Space(SearchSpace):
    name = "nb201"
    node_vocab = NODE_VOCAB
    cell_ops = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    Settings = NB201Settings
    tiny = {"settings": {"target_channels": 4, "target_cells_per_stage": 1}, "image_size": 16}

    @property
    def cells_per_stage(self) -> int:
        return self.settings.cells_per_stage  # N of the encoded benchmark network

    @property
    def prune(self) -> bool:
        return self.settings.prune

    # -- strings ---------------------------------------------------------------------------------
    def parse(self, text: str) -> Arch:
        if isinstance(text, tuple) and len(text) == 6 and all(op in OPS for op in text):
            return text
        if not isinstance(text, str):
            raise ArchError(f"NB201 arch must be a string, got {type(text).__name__}: {text!r}")
        s = text.strip()
        if s.startswith("("):
            return self.from_naslib_tuple(s)
        m = _STRING_RE.match(s)
        if not m:
            raise ArchError(f"malformed NB201 arch string {text!r}: expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'")
        ops: list[str] = []
        for node, group in enumerate(m.groups(), start=1):
            items = group.split("|")
            if len(items) != node:
                raise ArchError(f"malformed NB201 arch string {text!r}: node {node} needs {node} inputs, "
                                f"got {len(items)} ({group!r})")
            for src, item in enumerate(items):
                op, sep, idx = item.partition("~")
                if not sep or idx != str(src):
                    raise ArchError(f"malformed NB201 arch string {text!r}: {item!r} should be 'op~{src}'")
                if op not in OPS:
                    raise ArchError(f"unknown op {op!r} in NB201 arch string {text!r}; ops: {', '.join(OPS)}")
                ops.append(op)
        return tuple(ops)

    def to_str(self, arch: Arch) -> str:
        a = arch
        return f"|{a[0]}~0|+|{a[1]}~0|{a[2]}~1|+|{a[3]}~0|{a[4]}~1|{a[5]}~2|"

    def from_naslib_tuple(self, text: str | tuple) -> Arch:
        """NASLib's `(a, b, c, d, e, f)`: op ids in edge order (1<-0),(2<-0),(3<-0),(2<-1),(3<-1),(3<-2)."""
        try:
            ids = ast.literal_eval(text) if isinstance(text, str) else tuple(text)
        except (ValueError, SyntaxError):
            raise ArchError(f"malformed NASLib NB201 tuple {text!r}") from None
        if not (isinstance(ids, tuple) and len(ids) == 6 and all(isinstance(i, int) and 0 <= i < 5 for i in ids)):
            raise ArchError(f"malformed NASLib NB201 tuple {text!r}: need 6 op ids in 0..4")
        by_edge = dict(zip(NASLIB_EDGE_ORDER, (NASLIB_OPS[i] for i in ids)))
        return tuple(by_edge[e] for e in EDGES)

    # -- the space -------------------------------------------------------------------------------
    def enumerate(self) -> Iterator[Arch]:
        """All 15,625 cells (lexicographic in OPS order; the benchmark's own index comes from its table)."""
        for ops in itertools.product(OPS, repeat=6):
            yield ops

    def sample(self, rng: random.Random) -> Arch:
        return tuple(rng.choice(OPS) for _ in EDGES)

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        edge = rng.randrange(6)
        new = list(arch)
        new[edge] = rng.choice([op for op in OPS if op != arch[edge]])
        return tuple(new)

    def isomorphism_class(self, arch: Arch) -> str:
        """NAS-Bench-201's own unique string (its API's `to_unique_str(consider_zero=True)`): each node
        is the sorted '+'-join of its inputs, an input being '#' for none or a zero source, the source
        for skip, and
        '(source)@op' otherwise. Equal strings = equivalent cells (6,466 classes)."""
        nodes = {0: "0"}
        for dst in (1, 2, 3):
            terms = []
            for (d, src), op in zip(EDGES, arch):
                if d != dst:
                    continue
                if op == "none" or nodes[src] == "#":
                    terms.append("#")
                elif op == "skip_connect":
                    terms.append(nodes[src])
                else:
                    terms.append(f"({nodes[src]})@{op}")
            nodes[dst] = "+".join(sorted(terms))
        return nodes[3]

    # -- encodings -------------------------------------------------------------------------------
    def graph_edges(self, arch: Arch) -> list[int]:
        """Edges that become op nodes (nodes 1..k, in edge order) of the cell graph."""
        keep = _live_edges(arch) if self.prune else (True,) * 6
        return [e for e in range(6) if keep[e]]

    def cell_graph(self, arch: Arch) -> CellGraph:
        """Op-on-node form: input, one node per (live) edge op, output. An op node on edge (j<-i)
        feeds every op node on an edge leaving j, or the output when j = 3."""
        kept = self.graph_edges(arch)
        index = {e: k + 1 for k, e in enumerate(kept)}
        out = len(kept) + 1
        types = (_T["input"],) + tuple(_T[arch[e]] for e in kept) + (_T["output"],)
        edges = []
        for e in kept:
            dst, src = EDGES[e]
            if src == 0:
                edges.append((0, index[e]))
            else:
                edges.extend((index[p], index[e]) for p in kept if EDGES[p][0] == src)
            if dst == 3:
                edges.append((index[e], out))
        return CellGraph(types, tuple(sorted(edges)))

    def encode(self, arch: Arch, scope: str = "global") -> list[CellGraph]:
        cell = self.cell_graph(arch)
        if scope == "cell":
            return [cell]
        if scope != "global":
            raise ValueError(f"unknown encoding scope {scope!r}")
        n = self.cells_per_stage
        return [cell] * n + [REDUCTION_GRAPH] + [cell] * n + [REDUCTION_GRAPH] + [cell] * n

    def extra_features(self, arch: Arch) -> dict[str, float]:
        """The op on each edge, one-hot (GRAF's op-on-position), dead edges included."""
        return {f"edge{dst}<-{src}={op}": float(arch[e] == op) for e, (dst, src) in enumerate(EDGES) for op in OPS}

    def slot_of(self, stage: int, cell: int) -> int:
        """Index in the global sequence of encoded cell `cell` of `stage`."""
        return stage * (self.cells_per_stage + 1) + cell

    def cost(self, arch: Arch, channels: int = 16) -> dict[str, float]:
        """Params (M) and FLOPs (M multiply-adds) of the benchmark network on 32x32 inputs, counted the way
        NAS-Bench-201 does (conv weights, BN affine, classifier), dead ops included as in the benchmark."""
        params = 0
        flops = 0
        C, hw = channels, 32 * 32
        params += 3 * C * 9 + 2 * C
        flops += 3 * C * 9 * hw
        for stage in range(3):
            if stage > 0:
                Cin, C, hw = C, 2 * C, hw // 4
                params += Cin * C * 9 + 2 * C + C * C * 9 + 2 * C + Cin * C
                flops += Cin * C * 9 * hw + C * C * 9 * hw + Cin * C * hw
            for _ in range(self.cells_per_stage):
                for op in arch:
                    k = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}.get(op)
                    if k:
                        params += C * C * k * k + 2 * C
                        flops += C * C * k * k * hw
        classes = self.settings.benchmark_classes
        params += 2 * C + C * classes + classes
        flops += C * classes
        return {"params": params / 1e6, "flops": flops / 1e6}

    # -- target network --------------------------------------------------------------------------
    def hyper_heads(self) -> dict[str, tuple[int, ...]]:
        cmax = 4 * self.settings.target_channels
        return {"conv3x3": (cmax, cmax, 3, 3), "conv1x1": (cmax, cmax, 1, 1)}

    def build_target(self, arch: Arch, num_classes: int, device: Any = None) -> TargetNet:
        from pipeline.spaces.nb201_target import NB201TargetNet
        return NB201TargetNet(arch, self.settings.target_channels, self.settings.target_cells_per_stage,
                              num_classes, self, device=device)

    def build_shared(self, num_classes: int) -> nn.Module:
        from pipeline.spaces.nb201_target import NB201Shared
        return NB201Shared(self.settings.target_channels, num_classes)

    def run_targets(self, targets: Sequence[TargetNet], archs: Sequence[Arch],
                    params: Sequence[dict[str, torch.Tensor]], images: torch.Tensor) -> torch.Tensor:
        """Logits (K, n, classes); with `batched_targets` as one grouped network (nb201_target.run_batched)."""
        if not self.settings.batched_targets:
            return super().run_targets(targets, archs, params, images)
        from pipeline.spaces.nb201_target import run_batched
        return run_batched(list(archs), list(params), images, self.settings.target_cells_per_stage)

    # -- benchmark network (zero-cost proxies) ---------------------------------------------------
    def build_benchmark_net(self, arch: Arch, num_classes: int) -> nn.Module:
        """The NAS-Bench-201 network itself (C=16, `cells_per_stage` cells per stage), PyTorch's default
        random init, in training mode (pipeline/spaces/nb201_benchmark.py); its parameter count is cost()'s."""
        from pipeline.spaces.nb201_benchmark import NB201BenchmarkNet
        return NB201BenchmarkNet(arch, num_classes, channels=16, cells_per_stage=self.cells_per_stage)
