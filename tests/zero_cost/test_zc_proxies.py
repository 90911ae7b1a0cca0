"""Every proxy: a finite, seed-deterministic score; and the conventions each reference pins down."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.zero_cost import NO_SIGNAL, PROXIES, ArchContext, score_archs
from pipeline.zero_cost.nwot import register_relu_hooks, relu_modules
from zc_cells import ALL_CONV3, ALL_NONE, ALL_SKIP, MIXED, ONE_CONV3

EXPECTED = {"synflow", "nwot", "snip", "grasp", "fisher", "grad_norm", "l2_norm", "jacov", "zen", "zico",
            "params", "flops"}


def scores(space, data, archs, names, seed=0):
    return score_archs(space, [space.parse(a) for a in archs], names, data, seed).scores


def test_registry_holds_every_proxy():
    assert set(PROXIES.names()) == EXPECTED


@pytest.fixture(scope="module")
def all_scores(small_space, small_data):
    """Every proxy on three cells, twice with seed 0 and once with seed 1."""
    archs = [ALL_CONV3, MIXED, ALL_NONE]
    names = PROXIES.names()
    return (scores(small_space, small_data, archs, names, seed=0), scores(small_space, small_data, archs, names, seed=0),
            scores(small_space, small_data, archs, names, seed=1))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_proxy_is_finite_and_deterministic_for_a_seed(all_scores, name):
    first, again, _ = all_scores
    assert all(math.isfinite(v) for v in first[name]), first[name]
    assert first[name].tolist() == again[name].tolist()


@pytest.mark.parametrize("name", ["synflow", "nwot", "snip", "grasp", "fisher", "grad_norm", "l2_norm", "jacov",
                                  "zen", "zico"])
def test_seed_changes_the_network_or_the_batch(all_scores, name):
    first, _, other_seed = all_scores
    assert first[name][:2].tolist() != other_seed[name][:2].tolist()


def test_the_same_score_in_any_subset_and_order(small_space, small_data, all_scores):
    alone = scores(small_space, small_data, [ALL_NONE, MIXED], ["nwot", "zico", "fisher"])
    for name in ("nwot", "zico", "fisher"):
        assert alone[name].tolist() == all_scores[0][name][[2, 1]].tolist()


def test_params_and_flops_are_the_space_cost(small_space, all_scores):
    for i, arch in enumerate([ALL_CONV3, MIXED, ALL_NONE]):
        cost = small_space.cost(small_space.parse(arch))
        assert all_scores[0]["params"][i] == cost["params"]
        assert all_scores[0]["flops"][i] == cost["flops"]


def test_a_network_without_signal_scores_lowest(all_scores):
    first = all_scores[0]
    for name in ("synflow", "nwot", "jacov", "zen"):
        assert first[name][2] == NO_SIGNAL
    for name in ("snip", "grad_norm", "grasp", "zico"):
        assert first[name][2] == 0.0  # gradients of an input-independent network are zero
    for name in EXPECTED - {"grasp"}:  # grasp's sign is free: -w Hg may be negative on real networks
        assert first[name][2] < min(first[name][:2]), name


def test_synflow_grows_with_conv_paths_on_a_log_scale(small_space, small_data):
    s = scores(small_space, small_data, [ALL_CONV3, ONE_CONV3, ALL_SKIP], ["synflow"])["synflow"]
    assert s[0] > s[1] > s[2] > NO_SIGNAL
    # a log of a sum of |w * dR/dw|: tens, not the e^40-sized raw sum (that overflows float32 on deep nets)
    assert 5 < s[2] < s[0] < 200


def test_synflow_runs_in_float64_without_batchnorm(small_space, small_data, monkeypatch):
    seen = {}
    original = nn.Conv2d.forward

    def spy(self, x):
        seen["dtype"] = x.dtype
        return original(self, x)

    monkeypatch.setattr(nn.Conv2d, "forward", spy)
    monkeypatch.setattr(nn.BatchNorm2d, "forward", lambda self, x: pytest.fail("synflow ran a BatchNorm"))
    ctx = ArchContext(small_space, small_space.parse(MIXED), small_data, seed=0)
    PROXIES.get("synflow").fn(ctx)
    assert seen["dtype"] == torch.float64


def test_nwot_hooks_only_relus_and_its_kernel_counts_relu_units(small_space, small_data):
    net = small_space.build_benchmark_net(small_space.parse(MIXED), 10)
    relus = relu_modules(net)
    x = small_data.images
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64)
    handles = register_relu_hooks(net, kernel)
    assert len(handles) == len(relus) == sum(isinstance(m, nn.ReLU) for m in net.modules())
    hooked = [m for m in net.modules() if m._forward_hooks]
    assert hooked and all(isinstance(m, nn.ReLU) for m in hooked)
    units = []
    probe = [m.register_forward_hook(lambda mod, inp, out: units.append(inp[0][0].numel())) for m in relus]
    with torch.no_grad():
        net(x)
    for h in handles + probe:
        h.remove()
    # K_ii = every unit agrees with itself: the ReLU units of one image, and no other module's outputs
    assert torch.all(kernel.diagonal() == sum(units))
    assert torch.equal(kernel, kernel.T) and kernel.min() >= 0


def test_jacov_is_bounded_by_minus_the_batch_size(all_scores, small_data):
    n = len(small_data.images)
    assert all(v <= -n + 1e-3 for v in all_scores[0]["jacov"][:2])


def test_zico_needs_two_batches(small_space, small_data):
    from pipeline.zero_cost.context import ProxyData
    one = ProxyData(small_data.batches[:1], small_data.num_classes, 0)
    with pytest.raises(ValueError, match="2 batches"):
        PROXIES.get("zico").fn(ArchContext(small_space, small_space.parse(MIXED), one, seed=0))


def test_zen_leaves_the_pristine_network_untouched(small_space, small_data):
    ctx = ArchContext(small_space, small_space.parse(MIXED), small_data, seed=0)
    before = {k: v.clone() for k, v in ctx.pristine().state_dict().items()}
    for name in ("zen", "synflow", "grasp", "nwot"):
        PROXIES.get(name).fn(ctx)
    after = ctx.pristine().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
