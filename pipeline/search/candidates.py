"""Which architectures a search may propose: the oracle's pool, the cost constraints, isomorphism classes.

    cands = CandidateSpace(space, oracle.pool(), Constraints.from_search(search), where="table X")
    cands.check_satisfiable(search.queries)        # ConfigError before any query
    arch = cands.place(space.mutate(parent, rng), taken)   # None: not proposable

A search never proposes an architecture whose isomorphism class (`space.isomorphism_class`) it has
already queried (`taken`), nor one outside the cost bounds (`space.cost`, M params / M FLOPs). When the
oracle answers for a finite pool (a table), only pool members are proposable: a mutation or crossover
child outside the pool (NB101's 1,000-cell or DARTS' 725-genotype tables cover a sliver of their spaces)
is projected onto the nearest proposable pool member in standardised graph-feature space (GRAF,
pipeline/features), so evolution stays local on any table. NB201's table is the whole space: no child
is ever projected there.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Hashable, Iterator, Sequence

import numpy as np

from pipeline.errors import ConfigError

_SAMPLE_CHECK = 10_000  # samples that must contain one satisfying architecture when there is no pool


@dataclass(frozen=True)
class Constraints:
    bounds: tuple[tuple[str, float | None, float | None], ...]  # (cost key, min, max), only bounded keys

    @classmethod
    def from_search(cls, s) -> "Constraints":
        out = []
        for what in ("params", "flops"):
            lo, hi = getattr(s, f"min_{what}"), getattr(s, f"max_{what}")
            if lo is not None or hi is not None:
                out.append((what, lo, hi))
        return cls(tuple(out))

    @property
    def active(self) -> bool:
        return bool(self.bounds)

    def describe(self) -> str:
        parts = []
        for what, lo, hi in self.bounds:
            if lo is not None:
                parts.append(f"search.min_{what}={lo:g}")
            if hi is not None:
                parts.append(f"search.max_{what}={hi:g}")
        return ", ".join(parts)

    def ok(self, cost: dict[str, float]) -> bool:
        for what, lo, hi in self.bounds:
            v = cost[what]
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return False
        return True


class CandidateSpace:
    def __init__(self, space, pool: Sequence[Hashable] | None, constraints: Constraints, where: str = "the space"):
        self.space, self.constraints, self.where = space, constraints, where
        self.pool = list(pool) if pool is not None else None
        self._iso: dict[Hashable, str] = {}
        self._ok: dict[Hashable, bool] = {}
        self._features = None  # (standardised pool features, mean, std), built on the first projection
        self._nearest: dict[Hashable, np.ndarray] = {}  # out-of-pool child -> nearest eligible pool rows
        self._pool_row = {a: i for i, a in enumerate(self.pool)} if self.pool is not None else None
        self.eligible: np.ndarray | None = None  # pool rows that satisfy the constraints
        if self.pool is not None:
            self.eligible = np.asarray([i for i, a in enumerate(self.pool) if self._satisfies(a)], dtype=np.int64)
        self.projections = 0

    # -- membership ------------------------------------------------------------------------------
    def iso(self, arch: Hashable) -> str:
        c = self._iso.get(arch)
        if c is None:
            c = self._iso[arch] = self.space.isomorphism_class(arch)
        return c

    def _cost(self, arch: Hashable) -> dict[str, float]:
        cost = self.space.cost(arch)
        for what, _, _ in self.constraints.bounds:
            if what not in cost:
                raise ConfigError(f"config key 'search.max_{what}': space {self.space.name!r} reports no cost "
                                  f"{what!r} (space.cost gives {sorted(cost)})")
        return cost

    def _satisfies(self, arch: Hashable) -> bool:
        if not self.constraints.active:
            return True
        ok = self._ok.get(arch)
        if ok is None:
            ok = self._ok[arch] = self.constraints.ok(self._cost(arch))
        return ok

    # -- before any query ------------------------------------------------------------------------
    def check_satisfiable(self, budget: int) -> None:
        """ConfigError naming the constraint and the cost range seen when nothing satisfies it, or when
        the pool holds fewer proposable isomorphism classes than the budget."""
        if self.pool is not None:
            archs, source = self.pool, f"{self.where} ({len(self.pool)} architectures)"
        elif self.constraints.active:
            rng = random.Random(0)
            archs, source = [self.space.sample(rng) for _ in range(_SAMPLE_CHECK)], f"{_SAMPLE_CHECK} samples of {self.where}"
        if self.constraints.active:
            n_ok = len(self.eligible) if self.eligible is not None else sum(self._satisfies(a) for a in archs)
            if n_ok == 0:
                costs = [self._cost(a) for a in archs]
                seen = "; ".join(f"{what} {min(c[what] for c in costs):.4g}–{max(c[what] for c in costs):.4g} M"
                                 for what, _, _ in self.constraints.bounds)
                raise ConfigError(f"{self.constraints.describe()}: no architecture of {source} satisfies the "
                                  f"cost constraint (seen there: {seen})")
        if self.pool is not None:
            classes = len({self.iso(self.pool[i]) for i in self.eligible})
            if classes < budget:
                what = " within the cost constraints" if self.constraints.active else ""
                raise ConfigError(f"config key 'search.queries': the budget of {budget} exceeds the {classes} "
                                  f"isomorphism classes of {source}{what}")

    # -- sampling --------------------------------------------------------------------------------
    def sample_stream(self, rng: random.Random) -> Iterator[Hashable]:
        """Proposable architectures in a seeded random order: a permutation of the eligible pool, or
        the space's own samples that satisfy the constraints."""
        if self.pool is not None:
            for i in rng.sample(range(len(self.eligible)), len(self.eligible)):
                yield self.pool[self.eligible[i]]
            return
        misses = 0
        while True:
            a = self.space.sample(rng)
            if self._satisfies(a):
                misses = 0
                yield a
            else:
                misses += 1
                if misses > 100 * _SAMPLE_CHECK:
                    raise ConfigError(f"{self.constraints.describe()}: {misses} samples in a row violated the "
                                      f"cost constraint")

    def fresh(self, stream: Iterator[Hashable], k: int, taken: set[str]) -> list[Hashable]:
        """The next `k` architectures of `stream` whose classes are neither in `taken` nor repeated
        (`taken` is updated). Fewer only when the stream runs dry."""
        out: list[Hashable] = []
        if k <= 0:
            return out
        # the space's own samples never run dry: bound the draws so a small exhausted space ends the loop
        budget = None if self.pool is not None else 100 * k + _SAMPLE_CHECK
        for draws, a in enumerate(stream):
            if budget is not None and draws >= budget:
                break
            c = self.iso(a)
            if c not in taken:
                taken.add(c)
                out.append(a)
                if len(out) == k:
                    break
        return out

    # -- children --------------------------------------------------------------------------------
    def place(self, child: Hashable, taken: set[str]) -> Hashable | None:
        """`child` itself when proposable and of an untaken class; a child outside the pool is projected
        onto the nearest proposable pool member; None when neither works (the caller draws another)."""
        if self._pool_row is not None and child not in self._pool_row:
            return self._project(child, taken)
        if not self._satisfies(child) or self.iso(child) in taken:
            return None
        return child

    def _project(self, child: Hashable, taken: set[str]) -> Hashable | None:
        from pipeline.features import compute_features
        if self._features is None:
            pool_rows = [self.pool[i] for i in self.eligible]
            x = compute_features(["graf"], self.space, pool_rows).values
            mean, std = x.mean(0), x.std(0)
            std[std == 0] = 1.0
            self._features = ((x - mean) / std, mean, std)
        z, mean, std = self._features
        order = self._nearest.get(child)
        if order is None:  # evolution breeds the same out-of-pool child again and again: remember its ranking
            f = (compute_features(["graf"], self.space, [child]).values[0] - mean) / std
            order = self._nearest[child] = np.argsort(((z - f) ** 2).sum(1), kind="stable")[:256]
        for j in order:  # the nearest few hundred; beyond that the move is no longer local
            a = self.pool[self.eligible[j]]
            if self.iso(a) not in taken:
                self.projections += 1
                return a
        return None
