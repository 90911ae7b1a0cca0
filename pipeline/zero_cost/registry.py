"""The zero-cost proxy registry: one small module per proxy, each registering a function of an `ArchContext`.

    @register("synflow")
    def synflow(ctx: ArchContext) -> float: ...

A proxy returns one float per architecture, higher = predicted better (the sign conventions of the
reference implementations, named in each module). A proxy that is undefined because the network
carries no signal from input to output (an all-'none' cell: zero Jacobian, singular kernel, log 0)
returns NO_SIGNAL, NASLib's value for such a network (its ZeroCost predictor maps NaN/inf to -1e8):
the lowest score, finite, so rank metrics keep the cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pipeline.registry import Registry

if TYPE_CHECKING:
    from pipeline.zero_cost.context import ArchContext

NO_SIGNAL = -1e8


@dataclass(frozen=True)
class Proxy:
    name: str
    fn: Callable[["ArchContext"], float]
    needs_net: bool = True   # False: computed from the space alone (params, flops)
    summary: str = ""        # one line: what it measures and whose recipe it follows


PROXIES: Registry[Proxy] = Registry("zero-cost proxy")


def register(name: str, *, needs_net: bool = True) -> Callable:
    """Decorator: register `fn(ctx) -> float` as proxy `name` (its docstring's first line is the summary)."""
    def add(fn: Callable[["ArchContext"], float]) -> Callable[["ArchContext"], float]:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        PROXIES.register(name)(Proxy(name, fn, needs_net, summary))
        return fn

    return add
