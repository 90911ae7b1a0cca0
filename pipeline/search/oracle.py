"""The oracle: what a query costs and returns. A search only ever sees labels through `Oracle.query`.

    oracle = ORACLES.get(search.oracle).from_config(cfg, space)   # "table": data.train_label of data.table
    labels = oracle.query(archs)                                  # (k,) float64, label units

A space without a table plugs in an oracle that trains the architectures (the label stage of
data_prep/label.py): a subclass registered with `@ORACLES.register(name)` implementing `from_config`,
`query`, and optionally `pool` (None: any architecture of the space may be asked for) and `evaluate`
(the eval label, read once after the last query for the report; None when the oracle has none).
`search.oracle=<name>` selects it.
"""
from __future__ import annotations

import abc
from typing import Hashable, Sequence

import numpy as np

from pipeline.errors import DataError
from pipeline.registry import Registry


class Oracle(abc.ABC):
    label: str  # the name of what `query` returns (e.g. cifar10_valid_val_200ep)

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg, space) -> "Oracle":
        """Build from the run config; raise UserError on bad input (this runs before any query)."""

    @abc.abstractmethod
    def query(self, archs: Sequence[Hashable]) -> np.ndarray:
        """The label of each architecture (float64, label units). Every call is a spend of the budget."""

    def pool(self) -> list[Hashable] | None:
        """The architectures this oracle can answer for when that is a finite set (a table), else None."""
        return None

    def evaluate(self, archs: Sequence[Hashable], label: str) -> np.ndarray | None:
        """`label` (data.eval_label) of architectures for the final report, never to choose; None if unknown."""
        return None

    def describe(self) -> str:
        return type(self).__name__


ORACLES: Registry[type] = Registry("search oracle")


@ORACLES.register("table")
class TableOracle(Oracle):
    """Looks `label` up in a prepared table (any table, any numeric column)."""

    def __init__(self, table, space, label: str, eval_label: str | None = None):
        self.table, self.space, self.label = table, space, label
        self._values = table.label(label)  # DataError naming the table's label columns when absent
        if eval_label is not None:
            table.label(eval_label)  # checked now, read only by `evaluate` after the last query
        self._archs = space.parse_many(table.archs)

    @classmethod
    def from_config(cls, cfg, space) -> "TableOracle":
        from pipeline.data.loading import ensure_prepared
        from pipeline.data.tables import load_table
        ensure_prepared(cfg, space, need_images=False)  # builds a missing default table (data.prepare)
        return cls(load_table(cfg.data.table), space, cfg.data.train_label, cfg.data.eval_label)

    def describe(self) -> str:
        from pipeline.utils.paths import repo_relative
        return f"table {repo_relative(self.table.path)}"

    def evaluate(self, archs: Sequence[Hashable], label: str) -> np.ndarray:
        return lookup_label(self.table, self.space, archs, label)

    def pool(self) -> list[Hashable]:
        return self._archs

    def query(self, archs: Sequence[Hashable]) -> np.ndarray:
        rows = self.table.rows([self.space.to_str(a) for a in archs])
        values = self._values[rows]
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"table {self.table.path}: label {self.label!r} of {self.space.to_str(archs[i])!r} "
                            f"is {values[i]}")
        return values.astype(np.float64)


def lookup_label(table, space, archs: Sequence[Hashable], label: str) -> np.ndarray:
    """`label` of architectures from the table, for reporting after a search (never used to choose)."""
    return table.label(label)[table.rows([space.to_str(a) for a in archs])]
