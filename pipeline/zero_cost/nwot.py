"""NASWOT / NWOT (Mellor et al. 2021, v2 of the paper; BayesWatch/nas-without-training, NASLib's `nwot`).

Each ReLU splits a batch's units into active / inactive: a binary code c_i per image. The kernel
K_ij = sum over ReLUs of the units where images i and j agree (N_A - Hamming distance), and
score = log|det K|. Hooks go on nn.ReLU modules only (never on every module, which would count
convolution and BN outputs), read the ReLU's *input* (> 0 = active), and stay on for exactly one forward
of the main batch in training mode (batch-statistics BN, as NASLib copies the net). A singular K
(no ReLU sees a varying input: an all-'none' cell) scores NO_SIGNAL.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.zero_cost.context import ArchContext
from pipeline.zero_cost.registry import NO_SIGNAL, register


def relu_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.ReLU)]


def add_code_kernel(kernel: torch.Tensor, pre_activation: torch.Tensor) -> None:
    """kernel += x x^T + (1-x)(1-x)^T for the binary codes x of one ReLU's input, in place.

    (1-x)(1-x)^T = D - r_i - r_j + x x^T with r = row sums: one matmul instead of two. Products of 0/1
    values are exact in float32 while D < 2^24; the sum over ReLUs accumulates in float64."""
    x = (pre_activation.detach().flatten(1) > 0)
    n_units = x.shape[1]
    x = x.to(torch.float32 if n_units < 2 ** 24 else torch.float64)
    agree = (x @ x.T).double()
    r = x.sum(1, dtype=torch.float64)
    kernel += 2 * agree - r[:, None] - r[None, :] + n_units


def register_relu_hooks(net: nn.Module, kernel: torch.Tensor) -> list[torch.utils.hooks.RemovableHandle]:
    """One forward hook per nn.ReLU module, each adding its input's code kernel to `kernel`."""
    return [m.register_forward_hook(lambda mod, inp, out: add_code_kernel(kernel, inp[0]))
            for m in relu_modules(net)]


@register("nwot")
def nwot(ctx: ArchContext) -> float:
    """log|det K| of the ReLU binary-code kernel of the main batch (Mellor et al. v2; hooks on ReLUs only)."""
    net = ctx.net()
    x = ctx.data.images
    kernel = torch.zeros((x.shape[0], x.shape[0]), dtype=torch.float64, device=x.device)
    handles = register_relu_hooks(net, kernel)
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    logdet = float(logdet)
    return logdet if float(sign) != 0 and math.isfinite(logdet) else NO_SIGNAL
