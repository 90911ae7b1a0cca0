"""The contract every search space fulfils, and the plain data it hands to the model.

A space is a small module over plain data (strings, tuples): it parses and validates architecture
strings, enumerates/samples/mutates, gives a canonical isomorphism class, encodes an architecture as
the *sequence of cell graphs of its whole network* (METHOD.md §1), counts its cost, and builds the
target network whose weights the hypernetwork generates.
"""
from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Any, Hashable, Iterator, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class CellGraph:
    """One cell in operation-on-node form: node types (indices into the space's vocabulary) and
    directed edges (src, dst) with src < dst (topological order, upper-triangular adjacency)."""

    node_types: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        n = len(self.node_types)
        for s, d in self.edges:
            if not (0 <= s < d < n):
                raise ValueError(f"edge {(s, d)} is not forward within {n} nodes")


@dataclass(frozen=True)
class ParamSlot:
    """A target-network parameter owned by one encoded node: the hypernetwork generates it from that
    node's embedding with the head `kind`, sliced to `shape`."""

    name: str           # parameter name in the target module (for functional_call)
    graph: int          # index of the graph in the encoded sequence
    node: int           # node index within that graph
    kind: str           # hypernetwork head, e.g. "conv3x3"
    shape: tuple[int, ...]


class TargetNet(nn.Module):
    """A target network: an ordinary module whose `param_slots` say which parameters come from the
    hypernetwork; every other parameter name is in `shared_names` and comes from the shared pool."""

    param_slots: list[ParamSlot]


class SearchSpace(abc.ABC):
    name: str
    node_vocab: tuple[str, ...]  # node type names; CellGraph.node_types index into it

    # -- strings ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def parse(self, text: str) -> Hashable:
        """Parse and validate an architecture string; raise ArchError naming it and the problem."""

    @abc.abstractmethod
    def to_str(self, arch: Hashable) -> str:
        """The space's canonical string form (the table's `arch` column)."""

    # -- the space -------------------------------------------------------------------------------
    def enumerate(self) -> Iterator[Hashable]:
        raise NotImplementedError(f"space {self.name!r} is not enumerable")

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Hashable: ...

    @abc.abstractmethod
    def mutate(self, arch: Hashable, rng: random.Random) -> Hashable:
        """A different architecture one edit away."""

    @abc.abstractmethod
    def isomorphism_class(self, arch: Hashable) -> str:
        """Canonical id: architectures that compute the same function share it."""

    # -- encodings -------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, arch: Hashable, scope: str = "global") -> list[CellGraph]:
        """`global`: the cell-graph sequence of the whole benchmark network; `cell`: one cell (NP)."""

    @abc.abstractmethod
    def cost(self, arch: Hashable) -> dict[str, float]:
        """Cost of the benchmark network: at least `params` (M) and `flops` (M)."""

    # -- target network --------------------------------------------------------------------------
    @abc.abstractmethod
    def hyper_heads(self, channels: int) -> dict[str, tuple[int, ...]]:
        """Hypernetwork head kinds and the maximal parameter shape each generates."""

    @abc.abstractmethod
    def build_target(self, arch: Hashable, channels: int, cells_per_stage: int, num_classes: int,
                     device: Any = None) -> TargetNet:
        """The architecture's target network; its `param_slots` map generated weights to encoded nodes."""

    @abc.abstractmethod
    def build_shared(self, channels: int, num_classes: int) -> nn.Module:
        """A module holding the target parameters no encoded node owns (stem, classifier...).
        Its `named_parameters()` names match the target network's `shared` names."""

    def parse_many(self, texts: Sequence[str]) -> list[Hashable]:
        return [self.parse(t) for t in texts]
