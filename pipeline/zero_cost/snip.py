"""SNIP (Lee et al. 2019) as a network score (Abdelfattah et al. 2021 / NASLib).

score = sum over conv/linear weights of |w * dL/dw|, L = cross-entropy of the main batch, BN in training
mode. (NASLib multiplies each weight by a mask of ones and reads the mask's gradient: that gradient is
w * dL/dw, so the weights are used directly here.) The gradient pass is the shared one
(ArchContext.loss_gradients).
"""
from __future__ import annotations

from pipeline.zero_cost.context import ArchContext
from pipeline.zero_cost.registry import register


@register("snip")
def snip(ctx: ArchContext) -> float:
    """sum |w * dL/dw| over conv/linear weights, cross-entropy of the main batch (NASLib)."""
    lg = ctx.loss_gradients()
    return float(sum((m.weight.detach() * g).abs().sum() for m, g in zip(lg.layers, lg.weight_grads)
                     if g is not None))
