"""Jacobian covariance (Mellor et al. 2021, v1 of the paper; NASLib's `jacov`).

J = d(sum of logits)/d(input) per image of the main batch (BN in training mode), C = the correlation
matrix of the rows of J (N x N), and
    score = -sum_i ( log(v_i + k) + 1 / (v_i + k) ),   v = eigenvalues of C, k = 1e-5
(NASLib's form of the v1 score; higher = less correlated Jacobians). The bound is -N (all v = 1). An
image whose Jacobian is constant (an all-'none' cell: J = 0) makes C undefined: NO_SIGNAL.
"""
from __future__ import annotations

import math

import torch

from pipeline.zero_cost.context import ArchContext
from pipeline.zero_cost.registry import NO_SIGNAL, register

EPS = 1e-5


def correlation_score(jacobians: torch.Tensor) -> float:
    """-sum(log(v+k) + 1/(v+k)) over the eigenvalues v of the row correlation matrix of (N, D) jacobians."""
    j = jacobians.detach().flatten(1).double()
    j = j - j.mean(1, keepdim=True)
    norms = j.norm(dim=1)
    if bool((norms == 0).any()):
        return NO_SIGNAL
    j = j / norms[:, None]
    corr = (j @ j.T).clamp_(-1.0, 1.0)  # np.corrcoef clips the same way
    v = torch.linalg.eigvalsh(corr)
    score = float(-(torch.log(v + EPS) + 1.0 / (v + EPS)).sum())
    return score if math.isfinite(score) else NO_SIGNAL


@register("jacov")
def jacov(ctx: ArchContext) -> float:
    """-sum(log(v+k)+1/(v+k)) of the eigenvalues of the input-Jacobian correlation matrix (NASLib)."""
    net = ctx.net()
    x = ctx.data.images.clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(net(x).sum(), x)
    return correlation_score(jac)
