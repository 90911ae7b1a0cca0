"""Zen-score (Lin et al. 2021, idstcv/ZenNAS `compute_zen_score.py`; NASLib's `zen`).

With every conv/linear weight re-drawn from N(0, 1) (biases 0, BN weight 1 / bias 0), BN in training
mode and no gradients, two Gaussian inputs x and x + 0.01 x' go through the network up to the global
pool (the feature map f entering it):
    score = log( mean_n sum_chw |f(x) - f(x + 0.01 x')| ) + sum over BN2d of log sqrt(mean(running_var))
The running variances are the modules' own after those two forwards from fresh statistics (momentum as
built), exactly what both references read. The inputs are Gaussian (no data), shaped like the main batch.
A feature map that does not move (an all-'none' cell) scores NO_SIGNAL.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.zero_cost.context import ArchContext, features_before_pool
from pipeline.zero_cost.registry import NO_SIGNAL, register

MIXUP_GAMMA = 1e-2


def gaussian_init(net: nn.Module) -> None:
    """Zen-NAS's `network_weight_gaussian_init`, plus fresh BN running statistics."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
                    m.reset_running_stats()


@register("zen")
def zen(ctx: ArchContext) -> float:
    """log of the pre-pool response to a 0.01 Gaussian perturbation + BN scaling, N(0,1) weights (Zen-NAS)."""
    net = ctx.net()
    gen = ctx.rng(salt=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        gaussian_init(net)
    shape = tuple(ctx.data.images.shape)
    x = torch.randn(shape, generator=gen).to(ctx.data.device)
    x2 = torch.randn(shape, generator=gen).to(ctx.data.device)
    with torch.no_grad():
        f = features_before_pool(net, x)
        f_mix = features_before_pool(net, x + MIXUP_GAMMA * x2)
        response = float((f - f_mix).abs().sum(tuple(range(1, f.dim()))).mean())
        bn_scale = sum(float(torch.log(torch.sqrt(m.running_var.mean()))) for m in net.modules()
                       if isinstance(m, nn.BatchNorm2d) and m.running_var is not None)
    if not response > 0:
        return NO_SIGNAL
    score = math.log(response) + bn_scale
    return score if math.isfinite(score) else NO_SIGNAL
