"""The NB201 benchmark network: NAS-Bench-201's parameter count, regular BN, the cell's wiring."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from pipeline.spaces import get_space
from zc_cells import ALL_CONV3, ALL_NONE, ALL_SKIP, MIXED

KNOWN = {  # NAS-Bench-Suite-Zero's `params` column (M) for these cells
    "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|": 0.129306,
    "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|": 0.587386,
}


def n_params(net: nn.Module) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


@pytest.mark.parametrize("arch", [ALL_CONV3, ALL_NONE, MIXED, *KNOWN])
def test_param_count_equals_cost(arch):
    space = get_space("nb201")
    a = space.parse(arch)
    assert n_params(space.build_benchmark_net(a, 10)) == pytest.approx(space.cost(a)["params"], abs=1e-12)
    if arch in KNOWN:
        assert space.cost(a)["params"] == pytest.approx(KNOWN[arch], abs=1e-9)


def test_param_count_equals_cost_on_random_cells_and_depths():
    rng = random.Random(0)
    for n in (1, 2, 5):
        space = get_space("nb201", cells_per_stage=n)
        for _ in range(5):
            a = space.sample(rng)
            assert n_params(space.build_benchmark_net(a, 10)) == pytest.approx(space.cost(a)["params"], abs=1e-12)


def test_regular_batchnorm_and_logits_shape():
    space = get_space("nb201", cells_per_stage=1)
    net = space.build_benchmark_net(space.parse(MIXED), 7)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.affine and m.track_running_stats for m in bns)
    assert net.training
    x = torch.randn(4, 3, 32, 32)
    assert net(x).shape == (4, 7)
    assert net.forward_features(x).shape == (4, 64, 8, 8)


def test_all_none_cell_output_is_zero_and_skip_cell_is_identity():
    space = get_space("nb201", cells_per_stage=1)
    x = torch.randn(2, 16, 8, 8)
    none_cell = space.build_benchmark_net(space.parse(ALL_NONE), 10).cells[0]
    assert torch.equal(none_cell(x), torch.zeros_like(x))
    # 3 <- 0, 3 <- 1 <- 0, 3 <- 2 <- {0, 1 <- 0}: node 3 = x + x + (x + x) = 4x
    skip_cell = space.build_benchmark_net(space.parse(ALL_SKIP), 10).cells[0]
    assert torch.allclose(skip_cell(x), 4 * x)
