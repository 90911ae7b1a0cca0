"""The contract every search space fulfils, and the plain data it hands to the model.

A space is a small module over plain data (strings, tuples): it parses and validates architecture
strings, enumerates/samples/mutates, gives a canonical isomorphism class, encodes an architecture as the
*sequence of cell graphs of its whole network* (METHOD.md §1; sequences may differ in length between
architectures), counts its cost, and builds the target network whose weights the hypernetwork generates.

A space owns its settings: `Settings` is a dataclass whose fields (each with a `help` text, like the run
config's) are the space's knobs (NB201: cells per stage of the encoded network, pruning, width and depth
of the target network). The run config's `space.settings` mapping is validated against it, and the space
is built as `SpaceClass(SpaceClass.Settings(**settings))`.

Target networks follow one naming rule: the parameters no encoded node owns (stem, classifier, BN
affine...) live in a submodule called `shared` (SHARED_PREFIX), built by `build_shared(num_classes)`; the
model holds one copy of that module and hands its parameters to every architecture's target network as
`shared.<name>`. Every other parameter of a target network is listed in its `param_slots` and generated
by the hypernetwork from the embedding of the node that owns it.
"""
from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Hashable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

SHARED_PREFIX = "shared."


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
    """A target network: an ordinary module (built on the meta device by the model: every tensor comes
    from `functional_call`) whose `param_slots` say which parameters the hypernetwork generates; all
    other parameters are under `shared.` (see the module doc)."""

    param_slots: list[ParamSlot]


@dataclass
class SpaceSettings:
    """A space without settings."""


class SearchSpace(abc.ABC):
    name: ClassVar[str]
    node_vocab: ClassVar[tuple[str, ...]]    # node type names; CellGraph.node_types index into it
    cell_ops: ClassVar[tuple[str, ...]] = ()  # the searchable op types among node_vocab (graph features)
    Settings: ClassVar[type] = SpaceSettings
    # The smallest useful flavour, for tests (tests/spaces/test_contract.py): settings + aux image side.
    tiny: ClassVar[dict[str, Any]] = {"settings": {}, "image_size": 16}

    def __init__(self, settings: Any = None, **kwargs: Any) -> None:
        """`settings`: an instance of `Settings` (or None for its defaults); keyword arguments override fields."""
        if settings is None:
            settings = self.Settings(**kwargs)
        elif kwargs:
            settings = type(settings)(**{**settings.__dict__, **kwargs})
        self.settings = settings

    # -- strings ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def parse(self, text: str) -> Hashable:
        """Parse and validate an architecture string; raise ArchError naming it and the problem."""

    @abc.abstractmethod
    def to_str(self, arch: Hashable) -> str:
        """The space's canonical string form (the table's `arch` column); parse(to_str(a)) == a."""

    def parse_many(self, texts: Sequence[str]) -> list[Hashable]:
        return [self.parse(t) for t in texts]

    # -- the space -------------------------------------------------------------------------------
    def enumerate(self) -> Iterator[Hashable]:
        raise NotImplementedError(f"space {self.name!r} is not enumerable")

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Hashable: ...

    @abc.abstractmethod
    def mutate(self, arch: Hashable, rng: random.Random) -> Hashable:
        """A different architecture one edit away."""

    def crossover(self, a: Hashable, b: Hashable, rng: random.Random) -> Hashable:
        """A child of two architectures; spaces without a natural crossover return a mutation of `a`."""
        return self.mutate(a, rng)

    @abc.abstractmethod
    def isomorphism_class(self, arch: Hashable) -> str:
        """Canonical id: architectures that compute the same function share it."""

    # -- encodings -------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, arch: Hashable, scope: str = "global") -> list[CellGraph]:
        """`global`: the cell-graph sequence of the whole benchmark network; `cell`: the searched cell(s)
        only (NP; graph features)."""

    def extra_features(self, arch: Hashable) -> dict[str, float]:
        """Space-specific feature values beside the graph features (pipeline/features/graf.py); none here."""
        return {}

    @abc.abstractmethod
    def cost(self, arch: Hashable) -> dict[str, float]:
        """Cost of the benchmark network: at least `params` (M) and `flops` (M)."""

    # -- target network --------------------------------------------------------------------------
    @abc.abstractmethod
    def hyper_heads(self) -> dict[str, tuple[int, ...]]:
        """Hypernetwork head kinds and the maximal parameter shape each generates."""

    def build_hypernet(self, dim_in: int, hidden: int, layers: int, init: str = "kaiming") -> nn.Module:
        """The hypernetwork for this space's heads: one maximal head per kind (pipeline/models/hypernet.py).
        Spaces with very large matrices (ViT) generate them in chunks instead (pipeline/models/chunked.py)."""
        from pipeline.models.hypernet import HyperNetwork
        return HyperNetwork(dim_in, hidden, layers, self.hyper_heads(), init)

    @abc.abstractmethod
    def build_target(self, arch: Hashable, num_classes: int, device: Any = None) -> TargetNet:
        """The architecture's target network; its `param_slots` map generated weights to encoded nodes."""

    @abc.abstractmethod
    def build_shared(self, num_classes: int) -> nn.Module:
        """The module holding the target parameters no encoded node owns (stem, classifier...); its
        parameter names are the target network's `shared.<name>` ones without the prefix."""

    def run_targets(self, targets: Sequence[TargetNet], archs: Sequence[Hashable],
                    params: Sequence[dict[str, torch.Tensor]], images: torch.Tensor) -> torch.Tensor:
        """Logits (K, n, classes) of K target networks, each on its own images (K, n, C, H, W).

        Default: one `functional_call` per architecture. A space may run them side by side (NB201's
        grouped convolutions); the result must agree (the contract test checks it).
        """
        return torch.stack([functional_call(t, p, (images[k],), strict=True)
                            for k, (t, p) in enumerate(zip(targets, params))])

    # -- benchmark network (zero-cost proxies) ---------------------------------------------------
    def build_benchmark_net(self, arch: Hashable, num_classes: int) -> nn.Module:
        """The space's own benchmark network with ordinary, randomly initialised parameters."""
        raise NotImplementedError(f"space {self.name!r} has no benchmark network")
