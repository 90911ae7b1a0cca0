"""ViT (AutoFormer) space: ranges and bad input, string / JSON forms, the supplement's architectures and cost,
the global encoding (variable length), the chunked hypernetwork, target and benchmark networks."""
import json
import math
import random

import pytest
import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

import pipeline.models.predictor as predictor
from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.errors import ArchError, ConfigError
from pipeline.models.chunked import ChunkedHyperNetwork
from pipeline.spaces import SHARED_PREFIX, get_space
from pipeline.spaces.vit import NODE_VOCAB
from pipeline.spaces.vit_arch import SUPERNETS, Layer, ViTArch, count_cost, extremes

# The HyperNAS supplement's Table 12 (METHOD.md §9). HyperNAS-s lists 12 MLP ratios for depth 13.
HYPERNAS_S = {"depth": 13, "embed_dim": 384,
              "mlp_ratio": [3.5, 4.0, 3.5, 4.0, 4.0, 3.5, 4.0, 4.0, 4.0, 4.0, 3.5, 3.5],
              "num_heads": [5, 5, 7, 6, 6, 5, 7, 6, 5, 7, 6, 5, 6]}
HYPERNAS_B = {"depth": 14, "embed_dim": 576,
              "mlp_ratio": [3.0, 3.5, 3.5, 3.5, 4.0, 3.5, 4.0, 3.0, 3.5, 4.0, 4.0, 3.5, 4.0, 3.5],
              "num_heads": [9, 9, 9, 10, 9, 9, 10, 10, 10, 10, 9, 9, 10, 10]}
T = {name: i for i, name in enumerate(NODE_VOCAB)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def vit(supernet="small", **settings):
    return get_space("vit", supernet=supernet, **settings)


@pytest.fixture
def space_hypernet(monkeypatch):
    """A small model of the space (the model asks the space for its hypernetwork: ViT's is chunked)."""
    def build(space, **overrides):
        keys = {"model.encoder.hidden": 16, "model.encoder.layers": 2, "model.hyper.hidden": 16,
                "model.hyper.layers": 2, "model.encoder.dropout": 0, **overrides}
        cfg = load_config(None, [f"{k}={v}" for k, v in keys.items()] + ["space.name=vit"])
        torch.manual_seed(0)
        return predictor.HyperNASModel(cfg.model, space, num_classes=10)
    return build


# -- architectures, ranges, bad input -------------------------------------------------------------------

def test_string_form_is_canonical_and_json_round_trips():
    space = vit()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(30)]
    # a layer with a Q-K-V dim that is not 64 x heads is spelled out with q
    archs.append(ViTArch(384, (Layer(3.0, 5, 320),) + (Layer(4.0, 6, 384),) * 12))
    assert space.to_str(archs[-1]).startswith("e384|r3.0h5|r4.0h6|")
    for arch in archs:
        text = space.to_str(arch)
        assert space.parse(text) == arch and space.to_str(space.parse(text)) == text
        assert space.parse(json.dumps(space.to_json(arch))) == arch
        assert space.parse(space.to_json(arch)) == arch
    # AutoFormer's own sampled-config spelling: layer_num, a per-layer embed_dim list, one qkv_dim for all
    cfg = {"layer_num": 12, "embed_dim": [448] * 12, "mlp_ratio": [4] * 12, "num_heads": [7] * 12}
    assert space.parse(cfg) == ViTArch(448, (Layer(4.0, 7, 448),) * 12)
    assert space.parse({**cfg, "qkv_dim": 448}) == space.parse(cfg)
    assert space.to_str(space.parse(cfg)) == "e448|" + "|".join(["r4.0h7"] * 12)


@pytest.mark.parametrize("arch, supernet, needle", [
    ({"depth": 11, "embed_dim": 384, "mlp_ratio": [4.0] * 11, "num_heads": [6] * 11}, "small",
     "depth 11 is outside supernet-small's depth range (12, 14, 1)"),
    ({"depth": 17, "embed_dim": 576, "mlp_ratio": [4.0] * 17, "num_heads": [9] * 17}, "base",
     "depth 17 is outside supernet-base's depth range (14, 16, 1)"),
    ({"depth": 12, "embed_dim": 400, "mlp_ratio": [4.0] * 12, "num_heads": [6] * 12}, "small",
     "embed dim 400 is not in supernet-small's embed dim range (320, 448, 64)"),
    ({"depth": 12, "embed_dim": 384, "mlp_ratio": [4.0] * 12, "num_heads": [6] * 12, "qkv_dim": 448}, "small",
     "layer 0: 6 heads do not divide the Q-K-V dim 448"),
    ({"depth": 14, "embed_dim": 576, "mlp_ratio": [4.0] * 14, "num_heads": [9] * 14, "qkv_dim": 640}, "base",
     "layer 0: 9 heads do not divide the Q-K-V dim 640 (supernet-base: heads (8, 10, 1), Q-K-V dim (512, 640, 64))"),
    ({"depth": 12, "embed_dim": 384, "mlp_ratio": [4.0] * 12, "num_heads": [6] * 11 + [8]}, "small",
     "layer 11: 8 heads are outside supernet-small's head range (5, 7, 1)"),
    ({"depth": 12, "embed_dim": 384, "mlp_ratio": [4.0] * 11 + [4.5], "num_heads": [6] * 12}, "small",
     "layer 11: MLP ratio 4.5 is not in supernet-small's MLP ratio range (3, 4, 0.5)"),
    ({"depth": 12, "embed_dim": 384, "mlp_ratio": [4.0] * 12, "num_heads": [6] * 13}, "small",
     "num_heads must list 12 head counts"),
    ({"depth": 12, "embed_dim": 384, "mlp_ratio": [4.0] * 13, "num_heads": [6] * 12}, "small",
     "mlp_ratio lists 13 MLP ratios for depth 12"),
    ({"depth": 12, "embed_dim": 384, "mlp_ratio": [4.0] * 12, "num_heads": [6] * 12, "heads": 3}, "small",
     "unknown key(s) 'heads'"),
    ("e384|r4.0h6|r4.0x6", "small", "layer 1 is 'r4.0x6'"),
    ("384|r4.0h6", "small", "expected 'e<embed dim>|r<mlp ratio>h<heads>|...'"),
    ('{"depth": 12,', "small", "is not valid JSON"),
])
def test_out_of_range_and_malformed_architectures_are_named(arch, supernet, needle):
    with pytest.raises(ArchError) as e:
        vit(supernet).parse(arch if isinstance(arch, str) else json.dumps(arch))
    msg = str(e.value)
    assert needle in msg
    assert "ViT arch" in msg and (arch if isinstance(arch, str) else '"depth"') in msg  # names the architecture


def test_a_short_mlp_ratio_list_is_an_error_unless_repeat_last_is_set():
    with pytest.raises(ArchError, match="mlp_ratio lists 12 MLP ratios for depth 13.*missing_mlp_ratios=repeat_last"):
        vit().parse(HYPERNAS_S)
    with pytest.warns(UserWarning, match=r"the last one \(3.5\) fills the missing 1 layer"):
        arch = vit(missing_mlp_ratios="repeat_last").parse(HYPERNAS_S)
    assert arch.depth == 13 and [layer.mlp_ratio for layer in arch.layers] == HYPERNAS_S["mlp_ratio"] + [3.5]
    assert [layer.qkv_dim for layer in arch.layers] == [64 * h for h in HYPERNAS_S["num_heads"]]
    with pytest.raises(ConfigError, match="space.settings.missing_mlp_ratios"):
        vit(missing_mlp_ratios="pad")


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="'space.settings.supernet': must be one of small, base"):
        vit("tiny")
    with pytest.raises(ConfigError, match="'space.settings.target_patch_size': 16 does not divide "
                                          "target_image_size=40"):
        vit(target_image_size=40)


def test_samples_mutations_and_crossovers_stay_in_the_space():
    for supernet in ("small", "base"):
        space, rng = vit(supernet), random.Random(3)
        net = SUPERNETS[supernet]
        depths = set()
        for _ in range(60):
            a, b = space.sample(rng), space.sample(rng)
            depths.add(a.depth)
            m = space.mutate(a, rng)
            assert m != a and space.parse(space.to_str(m)) == m
            # one edit: the embed dim, or the depth by one, or one layer
            if m.depth == a.depth:
                changed = sum(x != y for x, y in zip(m.layers, a.layers)) + (m.embed_dim != a.embed_dim)
                assert changed == 1
            else:
                common = min(m.depth, a.depth)
                assert abs(m.depth - a.depth) == 1 and m.layers[:common] == a.layers[:common]
            c = space.crossover(a, b, rng)
            assert c not in (a, b) and space.parse(space.to_str(c)) == c
        assert depths == set(range(net.depth[0], net.depth[1] + 1))


# -- cost: the supplement's architectures and the extremes ------------------------------------------------

def test_table12_architectures_fall_in_their_supernets_params_range():
    with pytest.warns(UserWarning):
        small = vit(missing_mlp_ratios="repeat_last").parse(HYPERNAS_S)
    base = vit("base").parse(HYPERNAS_B)
    for supernet, arch, params in (("small", small, 22.742248), ("base", base, 54.359176)):
        lo, hi = SUPERNETS[supernet].params_range_m
        cost = vit(supernet).cost(arch)
        assert cost["params"] == pytest.approx(params, abs=1e-6)
        assert lo <= cost["params"] <= hi
    assert vit().cost(small)["flops"] == pytest.approx(4754.313728, abs=1e-6)


def test_extremes_are_counted_like_timms_network_and_near_the_stated_ranges():
    """The stated Params Range (14-34 M, 42-75 M) is rounded: the exact count of the smallest and largest
    architecture is 12.97 / 34.68 M (small) and 39.69 / 76.76 M (base), within 10 % of it (AutoFormer's own
    supernet-tiny range, 4-9 M, is just as approximate: its extremes count 5.27 / 10.41 M)."""
    expected = {"small": (12.96516, 34.68292), "base": (39.685336, 76.759384)}
    for supernet, (p_min, p_max) in expected.items():
        space = vit(supernet)
        lo, hi = SUPERNETS[supernet].params_range_m
        smallest, largest = extremes(space.supernet)
        for arch, params in ((smallest, p_min), (largest, p_max)):
            assert space.cost(arch)["params"] == pytest.approx(params, abs=1e-6)
            with torch.device("meta"):
                net = space.build_benchmark_net(arch, 1000)
            assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(params, abs=1e-6)
        assert 0.9 * lo <= p_min < lo and hi < p_max <= 1.1 * hi
        # every architecture lies between the extremes
        rng = random.Random(0)
        assert all(p_min <= space.cost(space.sample(rng))["params"] <= p_max for _ in range(50))


def test_flops_match_torchs_flop_counter_on_the_benchmark_network():
    space = vit(benchmark_image_size=64, benchmark_classes=10)
    arch = space.sample(random.Random(1))
    net = space.build_benchmark_net(arch, 10)
    for block in net.blocks:  # torch's flop counter does not see the CPU's fused attention kernel: unfuse it
        block.attn.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 10)
    assert counter.get_total_flops() / 2 / 1e6 == pytest.approx(space.cost(arch)["flops"], rel=1e-9)
    assert space.cost(arch) == count_cost(arch, 64, 16, 10)
    # CIFAR-sized inputs (zero-cost proxies): the position embedding is resampled to the grid
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# -- encoding ---------------------------------------------------------------------------------------------

def test_global_encoding_is_a_stem_then_one_graph_per_layer():
    space = vit()
    arch = space.parse("e384|" + "|".join(["r3.5h6"] * 12 + ["r4.0h7"]))
    graphs = space.encode(arch)
    assert len(graphs) == 14 and space.encode(arch, "cell") == graphs[1:]
    assert graphs[0].node_types == (T["input"], T["embed_384"], T["output"])
    assert graphs[13].node_types == (T["input"], T["qkv_448"], T["attn_h7"], T["mlp_r4.0"], T["output"])
    assert set(graphs[1].edges) == {(0, 1), (1, 2), (0, 3), (2, 3), (0, 4), (2, 4), (3, 4)}


def test_architectures_that_differ_in_one_layer_encode_differently(space_hypernet):
    space = vit()
    base = space.parse("e384|" + "|".join(["r3.5h6"] * 13))
    layer5_ratio = base._replace(layers=base.layers[:5] + (Layer(4.0, 6, 384),) + base.layers[6:])
    layer5_heads = base._replace(layers=base.layers[:5] + (Layer(3.5, 5, 320),) + base.layers[6:])
    embed = base._replace(embed_dim=448)
    archs = [base, layer5_ratio, layer5_heads, embed]
    model = space_hypernet(space).eval()
    h, _ = model.encode(build_graph_table(space, archs).select(torch.arange(4)))
    for i in range(1, 4):
        assert space.encode(archs[i]) != space.encode(base)
        assert not torch.allclose(h[i], h[0], atol=1e-6), space.to_str(archs[i])


def test_sequences_of_different_depth_are_padded_and_encode_as_alone(space_hypernet):
    space = vit("base")
    rng = random.Random(5)
    archs = [space.sample(rng) for _ in range(12)]
    depths = {a.depth for a in archs}
    assert len(depths) > 1
    table = build_graph_table(space, archs)
    batch = table.select(torch.arange(len(archs)))
    assert batch.node_types.shape[1] == 1 + max(depths)
    assert [int(r.sum()) for r in batch.cell_mask] == [1 + a.depth for a in archs]
    model = space_hypernet(space).eval()
    h_all, nodes_all = model.encode(batch)
    for k, arch in enumerate(archs):
        h_one, nodes_one = model.encode(build_graph_table(space, [arch]).select(torch.tensor([0])))
        assert torch.allclose(h_all[k], h_one[0], atol=1e-5)
        assert torch.allclose(nodes_all[k, :1 + arch.depth], nodes_one[0], atol=1e-5)


# -- the chunked hypernetwork -----------------------------------------------------------------------------

def test_chunked_generation_reproduces_a_known_slice():
    torch.manual_seed(0)
    heads = {"w": (150, 100), "u": (64, 64)}
    hyper = ChunkedHyperNetwork(dim_in=8, hidden=16, layers=2, heads=heads, chunk=32, pos_dim=4)
    assert hyper.grids == {"w": (5, 4), "u": (2, 2)}
    emb = torch.randn(1, 1, 2, 8)
    from pipeline.spaces.base import ParamSlot
    full = hyper.generate(emb, [[ParamSlot("full", 0, 1, "w", (150, 100))]])[0]["full"]
    part = hyper.generate(emb, [[ParamSlot("part", 0, 1, "w", (70, 45)), ParamSlot("other", 0, 0, "w", (70, 45))]])[0]
    gain = lambda fan_in: math.sqrt(2.0 / fan_in)  # noqa: E731
    # weight entanglement: the narrow matrix is the corner of the wide one (up to the real fan-in's gain)
    assert torch.allclose(part["part"] / gain(45), full[:70, :45] / gain(100), atol=1e-6)
    assert not torch.allclose(part["other"], part["part"])  # another node, other weights
    # tile (row 2, col 1) of kind w, computed by hand: head_w(trunk([node ; pos[w, 2, 1]]))
    pos = hyper.pos_embed[hyper.pos_offset["w"] + 2 * 4 + 1]
    x = torch.cat([emb[0, 0, 1], pos])
    tile = hyper.heads["w"](hyper.rest(hyper.first(x))).view(32, 32)
    assert torch.allclose(full[64:96, 32:64] / gain(100), tile, atol=1e-6)
    # the last, partial tile row: rows 128..149 are the first 22 rows of tile (4, 3)
    pos = hyper.pos_embed[hyper.pos_offset["w"] + 4 * 4 + 3]
    tile = hyper.heads["w"](hyper.rest(hyper.first(torch.cat([emb[0, 0, 1], pos])))).view(32, 32)
    assert torch.allclose(full[128:150, 96:100] / gain(100), tile[:22, :4], atol=1e-6)
    with pytest.raises(ValueError, match="cannot slice"):
        hyper.generate(emb, [[ParamSlot("big", 0, 1, "u", (65, 64))]])


def test_chunked_heads_are_small_where_maximal_heads_are_not():
    space = vit("base")
    hyper = space.build_hypernet(256, 128, 4)
    maximal = sum(math.prod(s) for s in space.hyper_heads().values()) * 128
    assert maximal > 6e8  # 0.6 B parameters of per-kind maximal heads (hypernet.HyperNetwork), 2.4 GB in fp32
    assert sum(p.numel() for p in hyper.parameters()) < 4e6
    # model.hyper.init=fan_in (the ablation scheme) is honoured: no trunk LayerNorm, gain 1/sqrt(fan_in)
    assert isinstance(hyper.rest[-1], torch.nn.LayerNorm)
    fan_in = space.build_hypernet(16, 8, 2, init="fan_in")
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in fan_in.modules())
    from pipeline.spaces.base import ParamSlot
    emb = torch.randn(1, 1, 1, 16)
    w = fan_in.generate(emb, [[ParamSlot("w", 0, 0, "vit_fc1", (96, 64))]])[0]["w"]
    tiles = fan_in.tiles(fan_in.node_part(emb[0, 0]), "vit_fc1", 96, 64)  # 2 x 1 tiles of 64 x 64
    assert tiles.shape == (1, 128, 64)
    assert torch.allclose(w, tiles[0, :96, :64] / math.sqrt(64), atol=1e-6)


# -- target network -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("supernet", ["small", "base"])
def test_smallest_and_largest_targets_run_forward_and_backward_with_generated_weights(supernet, space_hypernet):
    space = vit(supernet, target_image_size=32, target_patch_size=16)
    model = space_hypernet(space)
    archs = list(extremes(space.supernet))
    _, nodes = model.encode(build_graph_table(space, archs).select(torch.arange(2)))
    params = model.target_params(archs, nodes)
    for arch, p in zip(archs, params):
        target = model.template(arch)
        E = arch.embed_dim
        assert p["layers.0.q"].shape == (arch.layers[0].qkv_dim, E)
        assert p[f"layers.{arch.depth - 1}.fc2"].shape == (E, arch.layers[-1].hidden(E))
        assert set(p) == {n for n, _ in target.named_parameters()}
    images, labels = torch.randn(2, 3, 3, 32, 32), torch.randint(0, 10, (2, 3))
    ce, acc = model.hyper_losses(archs, nodes, images, labels)
    assert ce.shape == (2,) and torch.isfinite(ce).all()
    ce.sum().backward()
    assert model.encoder.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hypernet.parameters())
    # the shared tensors of the widest architecture's layers got a gradient; rows past its depth did not
    grad = model.target_shared.norm1_weight.grad
    assert grad[:archs[1].depth].abs().sum(1).min() > 0


def test_target_runs_timms_block_on_the_entangled_slices(space_hypernet):
    space = vit(target_image_size=32, target_patch_size=16)
    arch = space.parse("e320|" + "|".join(["r3.0h5q320", "r4.0h5"] * 6))
    model = space_hypernet(space)
    _, nodes = model.encode(build_graph_table(space, [arch]).select(torch.tensor([0])))
    params = model.target_params([arch], nodes)[0]
    target = model.template(arch)
    x = torch.randn(2, 3, 32, 32)
    out = functional_call(target, params, (x,), strict=True)
    # the same network by hand from timm's Block with ordinary parameters copied from the slices
    from pipeline.spaces.vit_target import timm_block
    sh = {k[len(SHARED_PREFIX):]: v for k, v in params.items() if k.startswith(SHARED_PREFIX)}
    E = 320
    h = torch.nn.functional.conv2d(x, sh["patch_weight"][:E], sh["patch_bias"][:E], stride=16)
    h = h.flatten(2).transpose(1, 2)
    h = torch.cat([sh["cls_token"][..., :E].expand(2, -1, -1), h], 1) + sh["pos_embed"][..., :E]
    for i, layer in enumerate(arch.layers):
        block = timm_block(E, layer)
        Q, H = layer.qkv_dim, layer.hidden(E)
        state = {"norm1.weight": sh["norm1_weight"][i, :E], "norm1.bias": sh["norm1_bias"][i, :E],
                 "attn.qkv.weight": torch.cat([params[f"layers.{i}.{n}"] for n in "qkv"]),
                 "attn.qkv.bias": sh["qkv_bias"][i, :, :Q].reshape(-1),
                 "attn.proj.weight": params[f"layers.{i}.proj"], "attn.proj.bias": sh["proj_bias"][i, :E],
                 "norm2.weight": sh["norm2_weight"][i, :E], "norm2.bias": sh["norm2_bias"][i, :E],
                 "mlp.fc1.weight": params[f"layers.{i}.fc1"], "mlp.fc1.bias": sh["fc1_bias"][i, :H],
                 "mlp.fc2.weight": params[f"layers.{i}.fc2"], "mlp.fc2.bias": sh["fc2_bias"][i, :E]}
        block.load_state_dict({k: v.detach() for k, v in state.items()})
        h = block(h)
    h = torch.nn.functional.layer_norm(h, (E,), sh["norm_weight"][:E], sh["norm_bias"][:E])
    ref = torch.nn.functional.linear(h[:, 0], sh["head_weight"][:, :E], sh["head_bias"])
    assert torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="set space.settings.target_image_size"):
        functional_call(target, params, (torch.randn(1, 3, 64, 64),), strict=True)


def test_checkpointed_blocks_give_the_same_gradients(space_hypernet):
    grads = []
    for ckpt in (False, True):
        space = vit(target_image_size=32, target_patch_size=16, checkpoint_blocks=ckpt)
        arch = extremes(space.supernet)[0]
        model = space_hypernet(space)
        _, nodes = model.encode(build_graph_table(space, [arch]).select(torch.tensor([0])))
        torch.manual_seed(1)
        ce, _ = model.hyper_losses([arch], nodes, torch.randn(1, 2, 3, 32, 32), torch.tensor([[1, 2]]))
        ce.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# -- the step benchmark (benchmarks/vit_step.py) ---------------------------------------------------------------

def test_vit_step_benchmark_measures_and_its_projection_scales_as_it_assumes():
    """The benchmark's pieces at a small setting: a measured step, the FLOP count (per image 3 x the target's
    forward, as the projection assumes, less the patch convolution's unneeded input gradient) and the saved
    activations (linear in the images)."""
    import argparse
    from benchmarks import vit_step as bench
    args = argparse.Namespace(precision="fp32", image_size=32, images=2, classes=10, checkpoint_blocks=False,
                              steps=1, warmup=0)
    r = bench.run_measured(args, "configs/vit_cpu.yaml", torch.device("cpu"), ("train.threads=1",))
    assert r["arch"].startswith("e448|r4.0h7|") and r["step_s_median"] > 0 and r["predictor_params"] > 1e6
    assert "| 1000 |" in bench.report(r, [])
    cfg, space, _, rt = bench.build("configs/vit_cpu.yaml", ["train.threads=1"], 10, torch.device("cpu"))
    arch = extremes(space.supernet)[1]
    flops = {n: bench.step_flops(rt, bench.micro_batch(space, arch, n, 32, 10), arch, 32, 16) for n in (1, 2)}
    forward = count_cost(arch, 32, 16, 10)["flops"] * 2e6
    assert flops[2] - flops[1] == pytest.approx(3 * forward, rel=0.02)
    saved = [bench.saved_activation_bytes(rt, bench.micro_batch(space, arch, n, 32, 10)) for n in (1, 2, 4)]
    assert saved[0] < saved[1] < saved[2]
    assert saved[2] - saved[1] == pytest.approx(2 * (saved[1] - saved[0]), rel=0.05)


def test_describe_prints_the_supplements_architectures_and_names_bad_ones(capsys):
    from pipeline.spaces.__main__ import main
    assert main(["describe", "--space", "vit", "--set", "supernet=base", "--arch", json.dumps(HYPERNAS_B)]) == 0
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert out["arch"].startswith("e576|r3.0h9|r3.5h9|") and out["params_m"] == "54.3592"
    assert float(out["flops_m"]) == pytest.approx(vit("base").cost(vit("base").parse(HYPERNAS_B))["flops"], abs=1e-3)
    # the same network in supernet-small's ranges: exit 2, the architecture and the violated range named
    assert main(["describe", "--space", "vit", "--arch", json.dumps(HYPERNAS_B)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ViT arch ") and "embed dim 576 is not in supernet-small's embed dim range" in err
