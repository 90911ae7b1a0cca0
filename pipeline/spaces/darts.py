"""DARTS / NAS-Bench-301 search space: genotypes (darts_genotype.py), op-on-node cell graphs, the global
encoding, sampling and mutation, cost and the networks (darts_target.py).

Encoding (METHOD.md §1, TNASP/PINAT op-on-node form), 11 nodes per cell: 0 = input c_{k-2}, 1 = input
c_{k-1}, 2 + 2j + p = op node of pair p of intermediate node j, 10 = output (concat). An op node reading
input i < 2 has the edge i -> it; reading node i >= 2 it has edges from both op nodes of node i - 2;
every op node feeds the output. Input and output types are distinct for normal and reduction cells
(`normal_input0` ...; a reduction cell's ops on inputs 0/1 have stride 2); op types are shared, so what
the GCN learns about an op carries over. No fixed blocks are needed: the reductions are searched cells,
and the stem precedes every cell identically (not encoded, z(0) = 0). Global scope: the cells of the
benchmark network in order (`encoded_cells`, NB301: 8 = N N R N N R N N); cell scope: [normal, reduction].
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.errors import ConfigError
from pipeline.settings import setting
from pipeline.spaces.base import CellGraph, SearchSpace, TargetNet
from pipeline.spaces.darts_genotype import (CELLS, NUM_NODES, OPS, Arch, Cell, canonical_cell,
                                            parse_compact, parse_genotype, parse_genotype_text, sorted_node,
                                            to_compact, to_genotype_text)

NODE_VOCAB = ("normal_input0", "normal_input1", "normal_output",
              "reduce_input0", "reduce_input1", "reduce_output") + OPS
_T = {name: i for i, name in enumerate(NODE_VOCAB)}
OUTPUT_NODE = 2 + 2 * NUM_NODES  # node index of the output in a cell graph


def reduction_positions(cells: int) -> tuple[int, int]:
    """Positions of the reduction cells in a network of `cells` cells (DARTS: L/3 and 2L/3)."""
    return cells // 3, 2 * cells // 3


def op_node(j: int, p: int) -> int:
    """Node index, in a cell graph, of pair p of intermediate node j."""
    return 2 + 2 * j + p


# -- graphs ------------------------------------------------------------------------------------------

def cell_graph(cell: Cell, kind: str) -> CellGraph:
    """Op-on-node graph of one cell (`kind`: normal | reduce); node order in the module doc."""
    types = [_T[f"{kind}_input0"], _T[f"{kind}_input1"]]
    edges = []
    for j, node in enumerate(cell):
        for p, (inp, op) in enumerate(node):
            me = op_node(j, p)
            types.append(_T[op])
            if inp < 2:
                edges.append((inp, me))
            else:
                edges += [(op_node(inp - 2, 0), me), (op_node(inp - 2, 1), me)]
            edges.append((me, OUTPUT_NODE))
    types.append(_T[f"{kind}_output"])
    return CellGraph(tuple(types), tuple(sorted(edges)))


# -- settings and the space --------------------------------------------------------------------------

@dataclass
class DartsSettings:
    """DARTS / NB301: the encoded benchmark network (counted by cost()) and the cheaper target network
    whose weights the hypernetwork generates."""

    encoded_cells: int = setting(8, "Cells of the *encoded* benchmark network, reductions at L/3 and 2L/3 "
                                    "(NB301's training network: 8).")
    benchmark_channels: int = setting(32, "Initial channels C of the benchmark network that cost() counts and "
                                          "build_benchmark_net builds (NB301: 32).")
    benchmark_classes: int = setting(10, "Classes of the benchmark network's classifier (CIFAR-10).")
    benchmark_image_size: int = setting(32, "Input side at which cost() counts the benchmark network's FLOPs.")
    target_channels: int = setting(16, "Initial channels C of the target network (stages C, 2C, 4C; the stem "
                                       "has 3C, as in DARTS).")
    target_cells: int = setting(8, "Cells of the target network, reductions at L/3 and 2L/3 (DARTS' 8-cell "
                                   "proxy network by default).")
    pool_bn: bool = setting(True, "Batch-statistics BN after the pooling ops of the target network (as DARTS' "
                                  "search network and NASLib's NB301 graph have; DARTS' final network has none).")

    def __post_init__(self) -> None:
        for key in ("encoded_cells", "target_cells"):
            if getattr(self, key) < 3:
                raise ConfigError(f"config key 'space.settings.{key}': must be >= 3 (two reduction cells and a "
                                  f"normal one), got {getattr(self, key)}")
        for key in ("benchmark_channels", "target_channels"):
            value = getattr(self, key)
            if value < 2 or value % 2:
                raise ConfigError(f"config key 'space.settings.{key}': must be even and >= 2 (FactorizedReduce "
                                  f"splits channels in halves), got {value}")
        for key in ("benchmark_classes", "benchmark_image_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'space.settings.{key}': must be >= 1, got {getattr(self, key)}")


class DartsSpace(SearchSpace):
    name = "darts"
    node_vocab = NODE_VOCAB
    cell_ops = OPS
    Settings = DartsSettings
    tiny = {"settings": {"target_channels": 4, "target_cells": 5}, "image_size": 16}

    # -- strings ---------------------------------------------------------------------------------
    def parse(self, text: str) -> Arch:
        return parse_genotype(text)

    def to_str(self, arch: Arch) -> str:
        return to_compact(arch)

    # -- the space -------------------------------------------------------------------------------
    @staticmethod
    def _sample_cell(rng: random.Random) -> Cell:
        nodes = []
        for j in range(NUM_NODES):
            a, b = rng.sample(range(j + 2), 2)
            nodes.append(sorted_node((a, rng.choice(OPS)), (b, rng.choice(OPS))))
        return tuple(nodes)

    def sample(self, rng: random.Random) -> Arch:
        """Uniform over genotypes: per node, an unordered pair of distinct inputs and an op for each."""
        return self._sample_cell(rng), self._sample_cell(rng)

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Change one op, or one input to another unused one (node 0 has no spare input: its op changes)."""
        c, j, p = rng.randrange(2), rng.randrange(NUM_NODES), rng.randrange(2)
        node = list(arch[c][j])
        inp, op = node[p]
        spare = [i for i in range(j + 2) if i not in (node[0][0], node[1][0])]
        if spare and rng.random() < 0.5:
            node[p] = (rng.choice(spare), op)
        else:
            node[p] = (inp, rng.choice([o for o in OPS if o != op]))
        cell = list(arch[c])
        cell[j] = sorted_node(*node)
        new = list(arch)
        new[c] = tuple(cell)
        return tuple(new)

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Each intermediate node of each cell from either parent (a node's validity depends on its
        position only); a child equal to a parent is mutated until it is new."""
        child = tuple(tuple(rng.choice((na, nb)) for na, nb in zip(ca, cb)) for ca, cb in zip(a, b))
        while child in (a, b):
            child = self.mutate(child, rng)
        return child

    def isomorphism_class(self, arch: Arch) -> str:
        return to_compact(tuple(canonical_cell(cell) for cell in arch))

    # -- encodings -------------------------------------------------------------------------------
    def encode(self, arch: Arch, scope: str = "global") -> list[CellGraph]:
        graphs = {kind: cell_graph(cell, kind) for kind, cell in zip(CELLS, arch)}
        if scope == "cell":
            return [graphs["normal"], graphs["reduce"]]
        if scope != "global":
            raise ValueError(f"unknown encoding scope {scope!r}")
        reductions = reduction_positions(self.settings.encoded_cells)
        return [graphs["reduce" if i in reductions else "normal"] for i in range(self.settings.encoded_cells)]

    def cost(self, arch: Arch) -> dict[str, float]:
        """Params (M) and FLOPs (M multiply-adds of convs + classifier) of DARTS' NetworkCIFAR as NB301
        trains it (C=benchmark_channels, encoded_cells cells, benchmark_classes, no auxiliary head) at
        benchmark_image_size (see darts_target.count_cost)."""
        from pipeline.spaces.darts_target import count_cost
        s = self.settings
        return count_cost(arch, s.benchmark_channels, s.encoded_cells, s.benchmark_classes, s.benchmark_image_size)

    # -- target network --------------------------------------------------------------------------
    def hyper_heads(self) -> dict[str, tuple[int, ...]]:
        """Maximal shapes over the target network (widest stage Cw = 4C). Depthwise and pointwise heads are
        2Cw high: a sep conv's two stacked layers are one generated tensor, split in halves (a node owns
        each kind once, so two slots of one kind would get the same weights)."""
        C = self.settings.target_channels
        cw = 4 * C
        return {"conv1x1": (cw, 4 * cw, 1, 1),   # preprocessing / FactorizedReduce: in up to 4 x 4C
                "pw1x1": (2 * cw, cw, 1, 1), "dw3x3": (2 * cw, 1, 3, 3), "dw5x5": (2 * cw, 1, 5, 5)}

    def build_target(self, arch: Arch, num_classes: int, device: Any = None) -> TargetNet:
        from pipeline.spaces.darts_target import DartsTargetNet
        return DartsTargetNet(arch, self, num_classes, device=device)

    def build_shared(self, num_classes: int) -> nn.Module:
        from pipeline.spaces.darts_target import DartsShared
        return DartsShared(self.settings.target_channels, self.settings.target_cells, num_classes)

    def build_benchmark_net(self, arch: Arch, num_classes: int) -> nn.Module:
        from pipeline.spaces.darts_target import DartsBenchmarkNet
        return DartsBenchmarkNet(arch, self.settings.benchmark_channels, self.settings.encoded_cells, num_classes)

    def encoded_cell_of(self, target_cell: int) -> int:
        """The encoded cell (index in the global sequence) that owns a target cell's weights: reductions map
        to reductions in order, normal cell j of n in a stage to encoded normal cell floor(j * m / n) of m in
        the same stage (the nearest earlier stage's last one when that stage has none)."""
        return _cell_map(self.settings.target_cells, self.settings.encoded_cells)[target_cell]


def _stages(cells: int) -> list[list[int]]:
    """Normal-cell positions per stage (between the reductions)."""
    r1, r2 = reduction_positions(cells)
    return [list(range(0, r1)), list(range(r1 + 1, r2)), list(range(r2 + 1, cells))]


def _cell_map(target: int, encoded: int) -> list[int]:
    out = [0] * target
    for t, e in zip(reduction_positions(target), reduction_positions(encoded)):
        out[t] = e
    enc = _stages(encoded)
    for s, cells in enumerate(_stages(target)):
        src = next(enc[k] for k in range(s, -1, -1) if enc[k])  # stage 0 always has a normal cell
        for j, pos in enumerate(cells):
            out[pos] = src[j * len(src) // len(cells)] if enc[s] else src[-1]
    return out


def cell_kinds(cells: int) -> list[str]:
    reductions = reduction_positions(cells)
    return ["reduce" if i in reductions else "normal" for i in range(cells)]


__all__ = ["DartsSpace", "DartsSettings", "OPS", "NODE_VOCAB", "cell_graph", "canonical_cell", "parse_compact",
           "parse_genotype_text", "to_compact", "to_genotype_text", "reduction_positions", "cell_kinds", "op_node"]
