"""The space contract (pipeline/spaces/base.py), checked for every registered space in its tiny flavour."""
import random

import pytest
import torch
from torch.func import functional_call

from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.models.predictor import HyperNASModel
from pipeline.spaces import SHARED_PREFIX, SPACES
from pipeline.spaces.base import SearchSpace


def _space(name: str) -> SearchSpace:
    cls = SPACES.get(name)
    return cls(cls.Settings(**cls.tiny["settings"]))


def _archs(space: SearchSpace, n: int = 6, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.fixture(params=SPACES.names())
def space(request) -> SearchSpace:
    return _space(request.param)


def test_strings_round_trip_and_mutations_move(space):
    rng = random.Random(1)
    for arch in _archs(space, 20):
        text = space.to_str(arch)
        assert space.parse(text) == arch and space.to_str(space.parse(text)) == text
        assert space.mutate(arch, rng) != arch
        assert isinstance(space.isomorphism_class(arch), str)
        cost = space.cost(arch)
        assert cost["params"] > 0 and cost["flops"] > 0


def test_encodings_batch_into_graph_tables(space):
    archs = _archs(space)
    for scope in ("global", "cell"):
        table = build_graph_table(space, archs, scope)
        batch = table.select(torch.arange(len(archs)))
        assert batch.node_types.shape[0] == len(archs) and batch.cell_mask[:, 0].all()
        for arch, row in zip(archs, batch.cell_mask):
            assert int(row.sum()) == len(space.encode(arch, scope))


def test_every_parameter_slot_has_a_head_of_the_right_shape(space):
    heads = space.hyper_heads()
    shared = {SHARED_PREFIX + n for n, _ in space.build_shared(10).named_parameters()}
    for arch in _archs(space):
        target = space.build_target(arch, 10, device="meta")
        graphs = space.encode(arch)
        names = {n for n, _ in target.named_parameters()}
        slots = {s.name: s for s in target.param_slots}
        assert names == set(slots) | shared, "every parameter is generated or shared"
        assert not set(slots) & shared
        for slot in target.param_slots:
            assert slot.kind in heads, slot
            head = heads[slot.kind]
            assert len(head) == len(slot.shape) and all(s <= h for s, h in zip(slot.shape, head)), slot
            assert tuple(dict(target.named_parameters())[slot.name].shape) == tuple(slot.shape)
            assert 0 <= slot.graph < len(graphs) and 0 <= slot.node < len(graphs[slot.graph].node_types)


def _model(space):
    cfg = load_config(None, ["model.encoder.hidden=12", "model.encoder.layers=2", "model.hyper.hidden=10",
                             "model.hyper.layers=1", "model.encoder.dropout=0", f"space.name={space.name}"])
    torch.manual_seed(0)
    return HyperNASModel(cfg.model, space, num_classes=10)


def test_functional_call_and_run_targets_agree_and_train_the_encoder(space):
    model = _model(space)
    archs = _archs(space, 3)
    table = build_graph_table(space, archs)
    _, nodes = model.encode(table.select(torch.arange(len(archs))))
    params = model.target_params(archs, nodes)
    side = space.tiny["image_size"]
    images = torch.randn(len(archs), 4, 3, side, side)
    targets = [model.template(a) for a in archs]
    together = space.run_targets(targets, archs, params, images)
    for k, arch in enumerate(archs):
        one = functional_call(targets[k], params[k], (images[k],), strict=True)
        assert one.shape == (4, 10)
        assert torch.allclose(together[k], one, atol=1e-5)
    labels = torch.randint(0, 10, (len(archs), 4))
    ce, acc = model.hyper_losses(archs, nodes, images, labels)
    assert ce.shape == (len(archs),) and torch.isfinite(ce).all()
    ce.sum().backward()
    assert model.encoder.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.hypernet.parameters())
