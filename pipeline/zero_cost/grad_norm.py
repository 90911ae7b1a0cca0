"""Gradient norm (Abdelfattah et al. 2021 / NASLib `grad_norm`).

score = sum over conv/linear layers of ||dL/dW||_2 (one L2 norm per layer, summed: NASLib's recipe, not
the norm of the whole gradient), L = cross-entropy of the main batch, BN in training mode. The gradient
pass is the shared one (ArchContext.loss_gradients).
"""
from __future__ import annotations

from pipeline.zero_cost.context import ArchContext
from pipeline.zero_cost.registry import register


@register("grad_norm")
def grad_norm(ctx: ArchContext) -> float:
    """sum over conv/linear layers of the L2 norm of dL/dW, cross-entropy of the main batch (NASLib)."""
    return float(sum(g.norm() for g in ctx.loss_gradients().weight_grads if g is not None))
