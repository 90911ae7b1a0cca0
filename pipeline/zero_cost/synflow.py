"""SynFlow (Tanaka et al. 2020), scored as in Abdelfattah et al. 2021 / NASLib.

score = log( sum over conv/linear weights of |w * dR/dw| ),  R = sum of the logits of an all-ones input
through the network with |w| for every parameter and BN removed (NASLib's `bn=False`: BN modules act as
the identity), in float64 (R overflows float32 on deep nets). Log of the sum, not sum of logs: NASLib's
ZeroCost.query takes log(score) of the summed array, and the NAS-Bench-Suite-Zero values we cross-check
against are those. A network whose output does not depend on its input (an all-'none' cell) has
sum 0 and scores NO_SIGNAL.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.zero_cost.context import ArchContext, replace_modules, weight_layers
from pipeline.zero_cost.registry import NO_SIGNAL, register

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@register("synflow")
def synflow(ctx: ArchContext) -> float:
    """log of summed |w * dR/dw| for an all-ones input, |w|, no BN, float64 (NASLib)."""
    net = ctx.net()
    replace_modules(net, lambda m: isinstance(m, _BATCHNORM), lambda m: nn.Identity())
    net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones((1,) + tuple(ctx.data.images.shape[1:]), dtype=torch.float64, device=ctx.data.device)
    net.zero_grad(set_to_none=True)
    net(x).sum().backward()
    total = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in weight_layers(net)
                if m.weight.grad is not None)
    return math.log(total) if total > 0 else NO_SIGNAL
