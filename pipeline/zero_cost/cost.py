"""`params` and `flops`: the space's own cost of the benchmark network (M parameters, M multiply-adds).

No network is built: `space.cost(arch)` counts them the benchmark's way (NB201: conv weights, BN affine
and classifier, dead ops included, as NAS-Bench-201 reports; FLOPs of convs and the classifier only,
which is why NAS-Bench-Suite-Zero's `flops` column, counted by a hook-based profiler, is a few MFLOPs
higher but ranks the cells the same way up to pooling/BN terms).
"""
from __future__ import annotations

from pipeline.zero_cost.context import ArchContext
from pipeline.zero_cost.registry import register


@register("params", needs_net=False)
def params(ctx: ArchContext) -> float:
    """parameters (M) of the benchmark network, from space.cost(arch)."""
    return float(ctx.space.cost(ctx.arch)["params"])


@register("flops", needs_net=False)
def flops(ctx: ArchContext) -> float:
    """FLOPs (M multiply-adds) of the benchmark network, from space.cost(arch)."""
    return float(ctx.space.cost(ctx.arch)["flops"])
