"""NAS-Bench-101: cells of at most 7 vertices and 9 edges, ops conv3x3 / conv1x1 / maxpool3x3 on vertices.

The cell itself (validation, pruning, text forms, the benchmark's graph hash) is plain data in
nb101_cell.py; the networks are in nb101_target.py. An architecture is a pruned `Cell`; its canonical
string is `conv3x3,maxpool3x3,conv1x1|0>1,0>2,1>3,2>3,3>4` (interior ops, then edges; see nb101_cell),
and `parse` also reads NASLib's 56-int keys and the `{"matrix", "ops"}` JSON form. Isomorphic cells (the
same cell with its vertices in another order) are different strings with one `isomorphism_class`:
NAS-Bench-101's module hash, the key of its dataset.

Benchmark network (what is encoded): stem, 3 stacks of N cells (N = `encoded_cells_per_stack`, 3 in the
benchmark), a 2x2 max-pool between stacks. Its global encoding (METHOD.md §1) is the cell graph N times
per stack with the fixed downsampling graph (input -> max-pool 2x2 -> output) between stacks: 11 graphs
for N = 3. The downsampling node owns no weights (the channel doubling happens in the next cell's input
projections), but its embedding carries the position. The stem precedes every cell alike and is not encoded.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.errors import ArchError, ConfigError
from pipeline.settings import setting
from pipeline.spaces.base import CellGraph, SearchSpace, TargetNet
from pipeline.spaces.nb101_cell import (INPUT, KERNEL, MAX_EDGES, MAX_VERTICES, OPS, OUTPUT, Cell,
                                        cell_hash, cell_to_json, cell_to_str, make_cell, parse_cell,
                                        vertex_channels)

NODE_VOCAB = (INPUT, OUTPUT, *OPS, "downsample_maxpool2x2")
_T = {name: i for i, name in enumerate(NODE_VOCAB)}
DOWNSAMPLE_GRAPH = CellGraph((_T[INPUT], _T["downsample_maxpool2x2"], _T[OUTPUT]), ((0, 1), (1, 2)))

# The benchmark network counted by cost(): nasbench's stem_filter_size and num_stacks.
BENCHMARK_CHANNELS = 128
STACKS = 3


@dataclass
class NB101Settings:
    """NAS-Bench-101: the encoded benchmark network (3 stacks of N cells, 2 downsamplings) and the target
    network whose weights the hypernetwork generates, which may be cheaper than the benchmark's (C=128,
    3 x 3 cells)."""

    encoded_cells_per_stack: int = setting(3, "Cells per stack of the *encoded* benchmark network (NB101: 3).")
    stem_channels: int = setting(128, "Target network: stem width C (stack s has C * 2^s channels); the "
                                      "benchmark's is 128. At least 5, so that every vertex feeding the output "
                                      "gets a channel.")
    cells_per_stack: int = setting(3, "Target network: cells per stack (independent of the encoded network: "
                                      "a cheap target can serve on a CPU).")
    stacks: int = setting(3, "Target network: stacks (max-pool between them); the benchmark has 3.")
    benchmark_classes: int = setting(10, "Classes of the benchmark network whose cost() is counted (CIFAR-10).")

    def __post_init__(self) -> None:
        for key, low in (("encoded_cells_per_stack", 1), ("stem_channels", MAX_VERTICES - 2),
                         ("cells_per_stack", 1), ("stacks", 1), ("benchmark_classes", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"config key 'space.settings.{key}': must be >= {low}, got {getattr(self, key)}")


@functools.lru_cache(maxsize=65536)
def _cost(cell: Cell, channels: int, cells_per_stack: int, classes: int, side: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of the benchmark network: conv weights, BN affine and the
    classifier (nasbench's trainable variables); MACs of convolutions and the classifier."""
    params = 3 * channels * 9 + 2 * channels
    macs = 3 * channels * 9 * side * side
    n = len(cell.ops)
    cin = channels
    for s in range(STACKS):
        cout = channels * 2 ** s
        h = -(-side // 2 ** s)  # 2x2 max-pools with TF 'same' padding
        hw = h * h
        for _ in range(cells_per_stack):
            ch = vertex_channels(cell, cin, cout)
            for t in range(1, n):
                if (0, t) in cell.edges:  # 1x1 projection of the cell input
                    params += cin * ch[t] + 2 * ch[t]
                    macs += cin * ch[t] * hw
                k = KERNEL.get(cell.ops[t])
                if k:
                    params += k * k * ch[t] * ch[t] + 2 * ch[t]
                    macs += k * k * ch[t] * ch[t] * hw
            cin = cout
    params += cin * classes + classes
    macs += cin * classes
    return params, macs


class NB101Space(SearchSpace):
    name = "nb101"
    node_vocab = NODE_VOCAB
    cell_ops = OPS
    Settings = NB101Settings
    tiny = {"settings": {"stem_channels": 8, "cells_per_stack": 1}, "image_size": 16}

    # -- strings ---------------------------------------------------------------------------------
    def parse(self, text: Any) -> Cell:
        return parse_cell(text)

    def to_str(self, arch: Cell) -> str:
        return cell_to_str(arch)

    def to_json(self, arch: Cell) -> str:
        """`{"matrix": [[...]], "ops": [...]}` with nasbench's op names (parse reads it back)."""
        return cell_to_json(arch)

    # -- the space -------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Cell:
        """NAS-Bench-101's own sampler: a random 7x7 upper-triangular 0/1 matrix and random ops, redrawn
        until the pruned cell is valid. Uniform over valid 7-vertex labelled matrices, not over the
        benchmark's 423k unique cells: pruning maps many matrices onto small cells, so small cells are
        frequent (measured over 2,000 draws: 10 % are input -> output alone, 0.35 % have 7 vertices,
        against 84 % of the 1,000-cell benchmark set)."""
        n = MAX_VERTICES
        while True:
            edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.5]
            ops = [INPUT] + [rng.choice(OPS) for _ in range(n - 2)] + [OUTPUT]
            try:
                return make_cell(ops, edges, "<sampled>")
            except ArchError:
                continue

    def _edits(self, cell: Cell) -> dict[str, list[tuple]]:
        n = len(cell.ops)
        edits: dict[str, list[tuple]] = {
            "op": [("op", v, op) for v in range(1, n - 1) for op in OPS if op != cell.ops[v]],
            "edge": [("edge", i, j) for i in range(n) for j in range(i + 1, n)],
            "vertex": [],
        }
        if n < MAX_VERTICES and len(cell.edges) + 2 <= MAX_EDGES:
            # a new vertex at position p (after vertex p-1), fed by u < p, feeding w >= p (old numbering)
            edits["vertex"] = [("vertex", p, u, w, op) for p in range(1, n) for u in range(p)
                               for w in range(p, n) for op in OPS]
        return edits

    @staticmethod
    def _apply(cell: Cell, edit: tuple) -> Cell | None:
        ops, edges = list(cell.ops), set(cell.edges)
        if edit[0] == "op":
            ops[edit[1]] = edit[2]
        elif edit[0] == "edge":
            edges ^= {(edit[1], edit[2])}
        else:
            _, p, u, w, op = edit
            shift = lambda v: v + 1 if v >= p else v  # noqa: E731
            edges = {(shift(s), shift(d)) for s, d in edges} | {(u, p), (p, shift(w))}
            ops.insert(p, op)
        try:
            return make_cell(ops, sorted(edges), "<mutated>")
        except ArchError:
            return None

    def mutate(self, arch: Cell, rng: random.Random) -> Cell:
        """One edit (an edge flipped, an op changed, or a vertex inserted on a new path u -> v -> w), chosen
        by kind first, then uniformly; edits giving an invalid cell or one isomorphic to `arch` are
        skipped, so the result always computes something else. Removing an edge may drop vertices that
        lose their path (pruning), so cells shrink as well as grow."""
        parent = cell_hash(arch)
        pools = {k: v for k, v in self._edits(arch).items() if v}
        for pool in pools.values():
            rng.shuffle(pool)
        while pools:
            kind = rng.choice(sorted(pools))
            child = self._apply(arch, pools[kind].pop())
            if not pools[kind]:
                del pools[kind]
            if child is not None and cell_hash(child) != parent:
                return child
        raise ArchError(f"NB101 cell {self.to_str(arch)!r}: no valid mutation")

    def crossover(self, a: Cell, b: Cell, rng: random.Random) -> Cell:
        """Uniform crossover of the two cells padded to 7 vertices (edgeless vertices before the output):
        each interior op and each adjacency entry from either parent; redrawn until the child is valid
        and isomorphic to neither parent, else a mutation of `a`."""
        pa, pb = _padded(a), _padded(b)
        avoid = {cell_hash(a), cell_hash(b)}
        for _ in range(20):
            ops = [rng.choice((x, y)) for x, y in zip(pa[0], pb[0])]
            edges = [e for e in sorted(pa[1] | pb[1]) if (e in pa[1] and e in pb[1]) or rng.random() < 0.5]
            try:
                child = make_cell(ops, edges, "<crossover>")
            except ArchError:
                continue
            if cell_hash(child) not in avoid:
                return child
        return self.mutate(a, rng)

    def isomorphism_class(self, arch: Cell) -> str:
        return cell_hash(arch)

    # -- encodings -------------------------------------------------------------------------------
    def cell_graph(self, arch: Cell) -> CellGraph:
        """The pruned cell is already op-on-node: its vertices are the nodes."""
        return CellGraph(tuple(_T[op] for op in arch.ops), arch.edges)

    def encode(self, arch: Cell, scope: str = "global") -> list[CellGraph]:
        cell = self.cell_graph(arch)
        if scope == "cell":
            return [cell]
        if scope != "global":
            raise ValueError(f"unknown encoding scope {scope!r}")
        n = self.settings.encoded_cells_per_stack
        return [cell] * n + [DOWNSAMPLE_GRAPH] + [cell] * n + [DOWNSAMPLE_GRAPH] + [cell] * n

    def slot_of(self, stack: int, cell: int) -> int:
        """Index in the global sequence of encoded cell `cell` of encoded stack `stack`."""
        return stack * (self.settings.encoded_cells_per_stack + 1) + cell

    def cost(self, arch: Cell, side: int = 32) -> dict[str, float]:
        """Params (M) and FLOPs (M multiply-accumulates) of the benchmark network (C=128, 3 stacks of
        `encoded_cells_per_stack` cells, `benchmark_classes` outputs) on side x side inputs. Params are
        nasbench's `trainable_parameters` (conv weights, BN affine, classifier)."""
        params, macs = _cost(arch, BENCHMARK_CHANNELS, self.settings.encoded_cells_per_stack,
                             self.settings.benchmark_classes, side)
        return {"params": params / 1e6, "flops": macs / 1e6}

    # -- target network --------------------------------------------------------------------------
    def hyper_heads(self) -> dict[str, tuple[int, ...]]:
        cmax = self.settings.stem_channels * 2 ** (self.settings.stacks - 1)
        return {"conv3x3": (cmax, cmax, 3, 3), "conv1x1": (cmax, cmax, 1, 1), "proj1x1": (cmax, cmax, 1, 1)}

    def _graph_of(self, stack: int, cell: int) -> int:
        """Encoded graph owning target stack `stack`, cell `cell`: encoded stack floor(s * 3 / stacks),
        cell floor(j * N_enc / cells_per_stack)."""
        st = self.settings
        return self.slot_of(stack * STACKS // st.stacks, cell * st.encoded_cells_per_stack // st.cells_per_stack)

    def build_target(self, arch: Cell, num_classes: int, device: Any = None) -> TargetNet:
        from pipeline.spaces.nb101_target import NB101TargetNet
        st = self.settings
        return NB101TargetNet(arch, st.stem_channels, st.stacks, st.cells_per_stack, num_classes,
                              self._graph_of, device=device)

    def build_shared(self, num_classes: int) -> nn.Module:
        from pipeline.spaces.nb101_target import shared_for_target
        return shared_for_target(self.settings.stem_channels, self.settings.stacks, num_classes)

    def build_benchmark_net(self, arch: Cell, num_classes: int, channels: int = BENCHMARK_CHANNELS) -> nn.Module:
        """The benchmark network (C=128 unless `channels`, 3 stacks of `encoded_cells_per_stack` cells)."""
        from pipeline.spaces.nb101_target import NB101BenchmarkNet
        return NB101BenchmarkNet(arch, num_classes, channels, STACKS, self.settings.encoded_cells_per_stack)


def _padded(cell: Cell) -> tuple[list[str], set[tuple[int, int]]]:
    """The cell on 7 vertices: edgeless conv3x3 vertices inserted before the output (NASLib's padding)."""
    n = len(cell.ops)
    pad = MAX_VERTICES - n
    ops = list(cell.ops[:-1]) + [OPS[0]] * pad + [OUTPUT]
    edges = {(s, d + pad if d == n - 1 else d) for s, d in cell.edges}
    return ops, edges
