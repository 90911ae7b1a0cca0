"""L2 norm of the initial weights (NAS-Bench-Suite-Zero's `l2_norm` baseline).

score = sum over conv/linear layers of ||W||_2 at initialisation: no data, no forward pass; with PyTorch's
default init it is a function of the layer shapes (a size proxy).
"""
from __future__ import annotations

from pipeline.zero_cost.context import ArchContext, weight_layers
from pipeline.zero_cost.registry import register


@register("l2_norm")
def l2_norm(ctx: ArchContext) -> float:
    """sum over conv/linear layers of ||W||_2 of the freshly initialised network (NASLib)."""
    return float(sum(m.weight.detach().norm() for m in weight_layers(ctx.pristine())))
