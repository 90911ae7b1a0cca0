"""MobileNetV3 (OFA) space: text forms and their validation, cost against torch's FlopCounterMode, the
encoding, sampling / mutation, and the target network (generated weights, timm blocks) against the
benchmark network."""
import json
import random

import pytest
import torch
from torch.func import functional_call

from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.errors import ArchError, ConfigError
from pipeline.models.predictor import HyperNASModel
from pipeline.spaces import get_space
from pipeline.spaces.mobilenetv3 import NODE_VOCAB
from pipeline.spaces.mobilenetv3_arch import (Widths, count_cost, largest, make_divisible, parse_arch, smallest,
                                              space_size, to_ofa, to_string)
from pipeline.spaces.mobilenetv3_target import flop_counter_macs

T = {name: i for i, name in enumerate(NODE_VOCAB)}
ARCH = "k3e4-k5e6|k3e3-k3e3-k7e6|k5e4-k5e4|k3e6-k3e6-k3e6-k3e6|k7e3-k5e3"


@pytest.fixture(scope="module")
def space():
    return get_space("mobilenetv3")


def tiny(**settings):
    return get_space("mobilenetv3", **{"width_mult": 0.25, **settings})


# -- text forms --------------------------------------------------------------------------------------

def test_canonical_string_and_ofa_json_are_one_architecture(space):
    arch = space.parse(ARCH)
    assert arch[0] == ((3, 4), (5, 6)) and len(arch[3]) == 4
    assert space.to_str(arch) == ARCH
    ofa = json.loads(space.to_json(arch))
    assert len(ofa["ks"]) == len(ofa["e"]) == 20 and ofa["d"] == [2, 3, 2, 4, 2]
    assert space.parse(space.to_json(arch)) == arch
    assert space.parse(ofa) == arch  # a dict as well as its text


def test_ofa_entries_beyond_a_stage_depth_are_ignored(space):
    ofa = to_ofa(space.parse(ARCH))
    other = dict(ofa, ks=list(ofa["ks"]), e=list(ofa["e"]))
    other["ks"][2], other["e"][3] = 7, 3  # stage 1 has depth 2: blocks 3 and 4 are not in the network
    assert space.parse(json.dumps(other)) == space.parse(json.dumps(ofa))
    other["ks"][1] = 7  # block 2 is
    assert space.parse(json.dumps(other)) != space.parse(json.dumps(ofa))


@pytest.mark.parametrize("text, match", [
    ("k4e4-k5e6|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", r"stage 1 block 1 has kernel 4, not one of .*3, 5, 7"),
    ("k3e3-k3e3|k3e5-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", r"stage 2 block 1 has expansion 5, not one of .*3, 4, 6"),
    ("k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", r"stage 1 has depth 1, outside the space's depths 2..4"),
    ("k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3-k3e3-k3e3-k3e3", r"stage 5 has depth 5, outside .*2..4"),
    ("k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", r"expected 5 stages"),
    ("k3e3-k3e3|k3e3-kxe3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", r"stage 2 block 'kxe3' is not of the form"),
    ('{"ks": [3], "e": [3], "d": [2, 2, 2, 2, 2]}', r"'ks' must be a list of 20 integers .*got 1 entries"),
    ('{"ks": [3]*20}', r"not valid JSON"),
    ('{"ks": ' + json.dumps([3] * 20) + ', "e": ' + json.dumps([3] * 20) + ', "d": [2, 2, 1, 2, 2]}',
     r"d\[2\] = 1 \(stage 3\) is outside the space's depths 2..4"),
    ('{"ks": ' + json.dumps([4] * 20) + ', "e": ' + json.dumps([3] * 20) + ', "d": [2, 2, 2, 2, 2]}',
     r"stage 1 block 1 has kernel 4"),
    ('{"ks": ' + json.dumps([3] * 20) + ', "e": ' + json.dumps([3] * 20) + ', "d": [2, 2, 2, 2, 2], "r": [224]}',
     r"unknown 'r'.*benchmark_image_size"),
])
def test_bad_architectures_are_named_with_the_violated_range(space, text, match):
    with pytest.raises(ArchError, match=match) as err:
        space.parse(text)
    assert "MobileNetV3 architecture" in str(err.value) and text[:10] in str(err.value)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"space\.settings\.dw_heads.*crop7, per_size"):
        get_space("mobilenetv3", dw_heads="crop5")
    with pytest.raises(ConfigError, match=r"space\.settings\.width_mult.*> 0"):
        get_space("mobilenetv3", width_mult=0.0)


def test_a_flops_budget_no_architecture_meets_is_refused_with_the_space_range():
    with pytest.raises(ConfigError, match=r"max_flops.*no architecture meets max_flops=100 M.*"
                                          r"k3e3-k3e3\|.*121\.3 M FLOPs at 224 px.*121\.3-566\.2 M"):
        get_space("mobilenetv3", max_flops=100)


# -- cost --------------------------------------------------------------------------------------------

def test_channel_rounding_is_timms(space):
    from timm.layers import make_divisible as timm_make_divisible
    for mult in (0.1, 0.25, 0.35, 0.5, 0.75, 1.0, 1.3):
        for c in (16, 24, 40, 80, 112, 160, 960, 1280, 72, 120):
            assert make_divisible(c * mult) == timm_make_divisible(c * mult)


@pytest.mark.parametrize("arch, params, flops", [(smallest(), 3.410792, 121.278672),
                                                 (largest(), 7.66476, 566.170656)])
def test_cost_of_the_smallest_and_largest_at_224_px_matches_flop_counter_and_module(space, arch, params, flops):
    cost = space.cost(arch)
    assert cost == pytest.approx({"params": params, "flops": flops}, abs=1e-6)
    net = space.build_benchmark_net(arch, 1000)
    assert sum(p.numel() for p in net.parameters()) == round(params * 1e6)
    assert flop_counter_macs(net, 224) == round(flops * 1e6)


def test_cost_of_random_architectures_at_other_settings_matches_flop_counter():
    rng = random.Random(3)
    for wm, side, classes in ((0.5, 160, 10), (1.0, 97, 1000)):
        sp = get_space("mobilenetv3", benchmark_width_mult=wm, benchmark_image_size=side, benchmark_classes=classes)
        arch = sp.sample(rng)
        net = sp.build_benchmark_net(arch, classes)
        params, macs = count_cost(arch, wm, side, classes)
        assert sum(p.numel() for p in net.parameters()) == params
        assert flop_counter_macs(net, side) == macs
        assert sp.cost(arch)["flops"] == pytest.approx(macs / 1e6)


def test_the_benchmark_network_is_timms_mobilenetv3_with_the_arch_blocks(space):
    from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite
    from timm.models.mobilenetv3 import MobileNetV3
    arch = space.parse(ARCH)
    net = space.build_benchmark_net(arch, 1000)
    assert isinstance(net, MobileNetV3)
    stages = list(net.blocks)[1:6]
    assert [len(s) for s in stages] == [2, 3, 2, 4, 2]
    for s, (stage, blocks) in enumerate(zip(stages, arch)):
        for block, (k, e) in zip(stage, blocks):
            assert isinstance(block, InvertedResidual)
            assert block.conv_dw.kernel_size == (k, k)
            assert block.conv_pw.out_channels == make_divisible(block.conv_pw.in_channels * e)
            assert isinstance(block.se, SqueezeExcite) == (s in (1, 3, 4))  # SE in stages 2, 4, 5
    assert [s[0].conv_dw.stride[0] for s in stages] == [2, 2, 2, 1, 2]
    assert net.conv_head.out_channels == 1280 and net.conv_head.bias is None


# -- the space -------------------------------------------------------------------------------------

def test_two_architectures_differing_in_one_block_encode_differently(space):
    a = space.parse(ARCH)
    b = space.parse(ARCH.replace("k5e4-k5e4", "k5e4-k7e4"))
    ga, gb = space.encode(a), space.encode(b)
    assert len(ga) == 5 and ga[:2] == gb[:2] and ga[3:] == gb[3:] and ga[2] != gb[2]
    assert ga[2].node_types == (T["stage3_input"], T["k5_e4"], T["k5_e4"], T["stage3_output"])
    assert gb[2].node_types[2] == T["k7_e4"] and ga[2].edges == ((0, 1), (1, 2), (2, 3))
    assert space.encode(a, "cell") != space.encode(b, "cell")
    (cell,) = space.encode(a, "cell")
    assert len(cell.node_types) == 5 + 13 + 1 and cell.node_types[-1] == T["stage5_output"]


def test_graph_sizes_follow_the_depths(space):
    arch = space.parse(ARCH)
    table = build_graph_table(space, [arch, largest(), smallest()])
    batch = table.select(torch.arange(3))
    assert batch.node_types.shape[1] == 5  # five stage graphs each
    assert (batch.node_types[0] >= 0).sum(-1).tolist() == [4, 5, 4, 6, 4]
    assert (batch.node_types[1] >= 0).sum(-1).tolist() == [6] * 5


def test_sample_mutate_crossover_stay_in_the_space(space):
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(200)]
    assert len(set(archs)) == 200 and {len(s) for a in archs for s in a} == {2, 3, 4}
    for a, b in zip(archs, archs[1:]):
        m = space.mutate(a, rng)
        changed = [s for s in range(5) if m[s] != a[s]]
        assert len(changed) == 1
        sa, sm = a[changed[0]], m[changed[0]]
        if len(sa) == len(sm):  # one block, one of its two choices
            diff = [(x, y) for x, y in zip(sa, sm) if x != y]
            assert len(diff) == 1 and sum(u != v for u, v in zip(*diff[0])) == 1
        else:
            assert abs(len(sa) - len(sm)) == 1 and sa[:min(len(sa), len(sm))] == sm[:min(len(sa), len(sm))]
        c = space.crossover(a, b, rng)
        assert c not in (a, b) and space.parse(space.to_str(c)) == c
    assert space_size() > 10**19


def test_a_flops_budget_bounds_sample_and_mutate():
    sp = get_space("mobilenetv3", max_flops=250)
    rng = random.Random(1)
    for _ in range(50):
        a = sp.sample(rng)
        assert sp.cost(a)["flops"] <= 250
        assert sp.cost(sp.mutate(a, rng))["flops"] <= 250


def test_isomorphism_class_is_the_canonical_string(space):
    arch = space.parse(ARCH)
    assert space.isomorphism_class(arch) == ARCH == to_string(parse_arch(to_ofa(arch)))


# -- target network ----------------------------------------------------------------------------------

def _model(space):
    cfg = load_config(None, ["model.encoder.hidden=16", "model.encoder.layers=2", "model.hyper.hidden=16",
                             "model.hyper.layers=1", "model.encoder.dropout=0", "space.name=mobilenetv3"])
    torch.manual_seed(0)
    return HyperNASModel(cfg.model, space, num_classes=10)


@pytest.mark.parametrize("dw_heads", ["crop7", "per_size"])
def test_forward_and_backward_with_generated_weights_for_the_smallest_and_largest(dw_heads):
    sp = tiny(dw_heads=dw_heads)
    model = _model(sp)
    archs = [smallest(), largest()]
    table = build_graph_table(sp, archs)
    _, nodes = model.encode(table.select(torch.arange(2)))
    images = torch.randn(2, 4, 3, 32, 32)
    labels = torch.randint(0, 10, (2, 4))
    ce, _ = model.hyper_losses(archs, nodes, images, labels)
    assert ce.shape == (2,) and torch.isfinite(ce).all()
    ce.sum().backward()
    assert model.encoder.embed.weight.grad.abs().sum() > 0
    kinds = {s.kind for a in archs for s in model.template(a).param_slots}
    assert kinds == {"pw_expand", "pw_project", "se_reduce", "se_expand", "se_reduce_bias", "se_expand_bias"} | \
        ({"dw7x7"} if dw_heads == "crop7" else {"dw3x3", "dw7x7"})  # per_size: no 5x5 kernel in these two
    for kind in kinds:
        assert model.hypernet.heads[kind].weight.grad.abs().sum() > 0, kind


def test_each_block_is_owned_by_its_node_of_its_stage_graph():
    sp = tiny()
    arch = sp.parse(ARCH)
    target = sp.build_target(arch, 10, device="meta")
    owners = {(s.graph, s.node) for s in target.param_slots}
    assert owners == {(g, i + 1) for g, blocks in enumerate(arch) for i in range(len(blocks))}
    se = {s.graph for s in target.param_slots if s.kind.startswith("se_")}
    assert se == {1, 3, 4}
    w = Widths.at(0.25)
    expand = [s for s in target.param_slots if s.graph == 0 and s.node == 1 and s.kind == "pw_expand"][0]
    assert expand.shape == (make_divisible(w.first * 4), w.first, 1, 1)


@pytest.mark.parametrize("dw_heads", ["crop7", "per_size"])
def test_target_network_computes_the_benchmark_network(dw_heads):
    """With the benchmark network's weights (BN at its initial affine, batch statistics, no dropout) the
    target network gives the same logits: the same timm blocks, the same layout."""
    sp = get_space("mobilenetv3", width_mult=0.5, benchmark_width_mult=0.5, dw_heads=dw_heads)
    arch = sp.parse(ARCH)
    torch.manual_seed(0)
    bench = sp.build_benchmark_net(arch, 10).train()
    bench.drop_rate = 0.0
    target = sp.build_target(arch, 10)
    b = dict(bench.named_parameters())
    params = {"shared.stem.conv.weight": b["conv_stem.weight"], "shared.stem.bn1.weight": b["bn1.weight"],
              "shared.stem.bn1.bias": b["bn1.bias"], "shared.head.weight": b["conv_head.weight"],
              "shared.classifier.weight": b["classifier.weight"], "shared.classifier.bias": b["classifier.bias"]}
    for name in dict(target.shared.first_block.named_parameters()):
        params[f"shared.first_block.{name}"] = b[f"blocks.0.0.{name}"]
    for name in dict(target.shared.final_expand.named_parameters()):
        params[f"shared.final_expand.{name}"] = b[f"blocks.6.0.{name}"]
    for slot in target.param_slots:
        _, s, i, rest = slot.name.split(".", 3)
        w = b[f"blocks.{int(s) + 1}.{i}.{rest}"]
        if dw_heads == "crop7" and rest == "conv_dw.weight":  # embed the kxk kernel in the centre of a 7x7
            k = w.shape[-1]
            full = torch.zeros(slot.shape)
            off = (7 - k) // 2
            full[:, :, off:off + k, off:off + k] = w.detach() * k / 7
            w = full
        params[slot.name] = w
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = bench(x)
        got = functional_call(target, params, (x,), strict=True)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
