"""Multi-task loss weightings (pipeline/loss.py) against hand computation in plain Python math."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.loss import (
    AdaptiveWeighting,
    FixedWeighting,
    UncertaintyWeighting,
    available_weightings,
    build_weighting,
    register_weighting,
)

TASKS = ["pred", "hyper"]
L_PRED, L_HYPER = 0.4, 2.3


def losses(pred: float = L_PRED, hyper: float = L_HYPER, grad: bool = False) -> dict[str, torch.Tensor]:
    return {
        "pred": torch.tensor(pred, dtype=torch.float64, requires_grad=grad),
        "hyper": torch.tensor(hyper, dtype=torch.float64, requires_grad=grad),
    }


def adaptive(**settings) -> AdaptiveWeighting:
    # scope "arch" reads the formula at each loss itself: the paper's formula, checked term by term below;
    # the default scope "update" reads it at the anchors (tested further down)
    settings.setdefault("scope", "arch")
    w = build_weighting("adaptive", TASKS, **settings)
    return w.double()  # float64 so hand computations compare tightly


def set_u(w: AdaptiveWeighting, u: tuple[float, float]) -> None:
    with torch.no_grad():
        w.u.copy_(torch.tensor(u, dtype=w.u.dtype))


def hand_b(ls: tuple[float, ...], us: tuple[float, ...], q: float) -> float:
    return sum(L ** (q - 1) * L / (2 * u * u) + math.log(1 + u * u) for L, u in zip(ls, us))


def hand_a(ls: tuple[float, ...], us: tuple[float, ...], q: float) -> float:
    return sum(L ** (q - 1) / (2 * u * u) + math.log(1 + u * u) for L, u in zip(ls, us))


# ---------------------------------------------------------------- adaptive: values


@pytest.mark.parametrize("q", [1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("u", [(1.0, 1.0), (0.7, 1.8)])
def test_adaptive_reading_b_matches_hand(q: float, u: tuple[float, float]) -> None:
    w = adaptive(q=q)
    set_u(w, u)
    total, info = w(losses())
    assert total.item() == pytest.approx(hand_b((L_PRED, L_HYPER), u, q), rel=1e-12)
    assert info["loss/pred"] == pytest.approx(L_PRED)
    assert info["weight/pred"] == pytest.approx(L_PRED ** (q - 1) / (2 * u[0] ** 2))
    assert info["weight/hyper"] == pytest.approx(L_HYPER ** (q - 1) / (2 * u[1] ** 2))
    assert info["u/hyper"] == pytest.approx(u[1])


@pytest.mark.parametrize("q", [1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("u", [(1.0, 1.0), (0.7, 1.8)])
def test_adaptive_reading_a_matches_hand(q: float, u: tuple[float, float]) -> None:
    w = adaptive(q=q, reading="A")
    set_u(w, u)
    total, info = w(losses())
    assert total.item() == pytest.approx(hand_a((L_PRED, L_HYPER), u, q), rel=1e-12)
    # the effective weight is the gradient weight d term / d L = (q-1) L^(q-2) / (2u²)
    assert info["weight/hyper"] == pytest.approx((q - 1) * L_HYPER ** (q - 2) / (2 * u[1] ** 2))


def test_concrete_numbers_default() -> None:
    # q = 1.5, u = 1: 0.4^1.5/2 + 2.3^1.5/2 + 2 ln 2, written out.
    expected = 0.4 ** 1.5 / 2 + 2.3 ** 1.5 / 2 + 2 * math.log(2.0)
    total, _ = adaptive()(losses())
    assert total.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.126491 + 1.744062 + 1.386294, abs=1e-5)


def test_q2_readings_differ_as_documented() -> None:
    # A with q=2 is the plain adaptive loss L/(2u²)+ln(1+u²); B with q=2 is L²/(2u²)+ln(1+u²).
    plain = sum(L / 2 + math.log(2.0) for L in (L_PRED, L_HYPER))
    squared = sum(L * L / 2 + math.log(2.0) for L in (L_PRED, L_HYPER))
    assert adaptive(q=2.0, reading="A")(losses())[0].item() == pytest.approx(plain)
    assert adaptive(q=2.0, reading="B")(losses())[0].item() == pytest.approx(squared)
    assert adaptive(q=1.0, reading="B")(losses())[0].item() == pytest.approx(plain)


def test_default_settings() -> None:
    w = build_weighting("adaptive", TASKS)
    assert (w.q, w.reading, w.detach_power, w.scope, w.anchor_momentum) == (1.5, "B", True, "update", 0.0)
    assert torch.equal(w.u.detach(), torch.ones(2))
    assert adaptive(init=2.0).u.detach().tolist() == [2.0, 2.0]
    assert adaptive(reading="A").detach_power is False


# ---------------------------------------------------------------- adaptive: gradients


@pytest.mark.parametrize("q", [1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("detach", [True, False])
def test_adaptive_grad_u_is_analytic(q: float, detach: bool) -> None:
    u = (0.7, 1.8)
    w = adaptive(q=q, detach_power=detach)
    set_u(w, u)
    total, _ = w(losses())
    total.backward()
    # d/du [L^q/(2u²) + ln(1+u²)] = -L^q/u³ + 2u/(1+u²)
    expected = [-(L ** q) / uu ** 3 + 2 * uu / (1 + uu * uu) for L, uu in zip((L_PRED, L_HYPER), u)]
    assert w.u.grad.tolist() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("q", [1.25, 1.5, 2.0, 3.0])
def test_detach_power_changes_grad_wrt_loss(q: float) -> None:
    u = (0.7, 1.8)
    grads = {}
    for detach in (True, False):
        w = adaptive(q=q, detach_power=detach)
        set_u(w, u)
        ls = losses(grad=True)
        w(ls)[0].backward()
        grads[detach] = (ls["pred"].grad.item(), ls["hyper"].grad.item())
    for i, (L, uu) in enumerate(zip((L_PRED, L_HYPER), u)):
        # detached: L^(q-1) is a constant weight -> d/dL = L^(q-1)/(2u²)
        assert grads[True][i] == pytest.approx(L ** (q - 1) / (2 * uu * uu), rel=1e-10)
        # not detached: d/dL of L^q/(2u²) = q L^(q-1)/(2u²)
        assert grads[False][i] == pytest.approx(q * L ** (q - 1) / (2 * uu * uu), rel=1e-10)


def test_reading_a_grad_wrt_loss() -> None:
    q, u = 1.5, (0.7, 1.8)
    w = adaptive(q=q, reading="A")
    set_u(w, u)
    ls = losses(grad=True)
    w(ls)[0].backward()
    assert ls["hyper"].grad.item() == pytest.approx((q - 1) * L_HYPER ** (q - 2) / (2 * u[1] ** 2), rel=1e-10)


@pytest.mark.parametrize("q", [0.5, 1.25])
def test_zero_loss_is_finite(q: float) -> None:
    for reading, detach in (("B", True), ("B", False), ("A", False)):
        w = adaptive(q=q, reading=reading, detach_power=detach)
        ls = losses(pred=0.0, grad=True)
        total, info = w(ls)
        total.backward()
        assert math.isfinite(total.item()), (reading, detach)
        assert math.isfinite(ls["pred"].grad.item()), (reading, detach)
        assert all(math.isfinite(v) for v in info.values())
        assert torch.isfinite(w.u.grad).all()


def test_u_is_a_trainable_parameter_in_state_dict() -> None:
    w = build_weighting("adaptive", TASKS)
    assert [n for n, _ in w.named_parameters()] == ["u"]
    assert "u" in w.state_dict()
    # One optimizer step moves u (trained with the model's optimizer).
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    w({"pred": torch.tensor(0.4), "hyper": torch.tensor(2.3)})[0].backward()
    opt.step()
    assert not torch.equal(w.u.detach(), torch.ones(2))


# ---------------------------------------------------------------- other weightings


def test_uncertainty_matches_hand() -> None:
    w = build_weighting("uncertainty", TASKS).double()
    total, info = w(losses())
    assert total.item() == pytest.approx((L_PRED + L_HYPER) / 2)  # s = 0
    s = (-0.3, 0.9)
    with torch.no_grad():
        w.log_var.copy_(torch.tensor(s, dtype=torch.float64))
    total, info = w(losses())
    expected = sum(math.exp(-si) * L / 2 + si / 2 for L, si in zip((L_PRED, L_HYPER), s))
    assert total.item() == pytest.approx(expected, rel=1e-12)
    assert info["weight/pred"] == pytest.approx(math.exp(0.3) / 2)
    assert info["log_var/hyper"] == pytest.approx(0.9)
    total.backward()
    # d/ds [e^-s L/2 + s/2] = -e^-s L/2 + 1/2
    expected_grad = [-math.exp(-si) * L / 2 + 0.5 for L, si in zip((L_PRED, L_HYPER), s)]
    assert w.log_var.grad.tolist() == pytest.approx(expected_grad, rel=1e-10)


def test_fixed_matches_hand() -> None:
    w = build_weighting("fixed", TASKS, weights={"hyper": 0.25})
    assert list(w.parameters()) == []
    total, info = w(losses())
    assert total.item() == pytest.approx(1.0 * L_PRED + 0.25 * L_HYPER)
    assert info == pytest.approx({"loss/pred": L_PRED, "weight/pred": 1.0, "loss/hyper": L_HYPER, "weight/hyper": 0.25})
    assert build_weighting("fixed", TASKS)(losses())[0].item() == pytest.approx(L_PRED + L_HYPER)


# ---------------------------------------------------------------- single task, per sample


@pytest.mark.parametrize(
    "name,settings",
    [("adaptive", {}), ("adaptive", {"q": 3.0, "reading": "A"}), ("uncertainty", {}), ("fixed", {"weights": {"pred": 7.0}})],
)
def test_single_task_returns_the_loss_exactly(name: str, settings: dict) -> None:
    w = build_weighting(name, ["pred"], **settings)
    assert list(w.parameters()) == []  # nothing to train, nothing unused for DDP
    for loss in (torch.tensor(0.37, requires_grad=True), torch.tensor([0.1, 2.0, 0.0], requires_grad=True)):
        total, info = w({"pred": loss})
        assert total is loss
        assert info["weight/pred"] == 1.0
        assert info["loss/pred"] == pytest.approx(loss.mean().item())


@pytest.mark.parametrize(
    "name,settings",
    [
        ("adaptive", {}),
        ("adaptive", {"detach_power": False, "q": 3.0}),
        ("adaptive", {"reading": "A", "q": 1.25}),
        ("uncertainty", {}),
        ("fixed", {"weights": {"pred": 2.0, "hyper": 0.5}}),
    ],
)
def test_per_sample_equals_elementwise_calls(name: str, settings: dict) -> None:
    torch.manual_seed(0)
    w = build_weighting(name, TASKS, scope="arch", **settings).double()
    with torch.no_grad():
        for p in w.parameters():
            p.copy_(torch.tensor([0.8, 1.3], dtype=torch.float64))
    pred = torch.tensor([0.4, 0.05, 1.7, 0.0], dtype=torch.float64)
    hyper = torch.tensor([2.3, 1.1, 0.6, 3.0], dtype=torch.float64)
    batch, _ = w({"pred": pred, "hyper": hyper})
    assert batch.shape == (4,)
    single = [w({"pred": pred[i], "hyper": hyper[i]})[0].item() for i in range(4)]
    assert batch.tolist() == pytest.approx(single, rel=1e-12)

    # Mean over the batch has the same parameter gradient as accumulating the per-element means.
    params = list(w.parameters())
    if params:
        batch.mean().backward()
        g_batch = params[0].grad.clone()
        params[0].grad = None
        for i in range(4):
            (w({"pred": pred[i], "hyper": hyper[i]})[0] / 4).backward()
        assert torch.allclose(g_batch, params[0].grad)


def test_wrong_task_keys_raise() -> None:
    w = build_weighting("adaptive", TASKS)
    with pytest.raises(KeyError, match="hyper"):
        w({"pred": torch.tensor(1.0)})
    with pytest.raises(KeyError, match="extra"):
        w({"pred": torch.tensor(1.0), "hyper": torch.tensor(1.0), "extra": torch.tensor(1.0)})


# ---------------------------------------------------------------- registry and settings


def test_registry_lists_and_errors() -> None:
    assert {"adaptive", "uncertainty", "fixed"} <= set(available_weightings())
    assert isinstance(build_weighting("uncertainty", TASKS), UncertaintyWeighting)
    assert isinstance(build_weighting("fixed", TASKS), FixedWeighting)
    with pytest.raises(ConfigError, match=r"unknown loss weighting 'nope'.*adaptive.*fixed.*uncertainty"):
        build_weighting("nope", TASKS)
    with pytest.raises(ConfigError, match=r"'qq'.*accepted: q, reading.*scope"):
        build_weighting("adaptive", TASKS, qq=2)
    with pytest.raises(ValueError, match="already registered"):
        register_weighting("fixed")(FixedWeighting)


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"q": 0}, "q must be > 0"),
        ({"q": -1.5}, "q must be > 0"),
        ({"q": float("nan")}, "finite"),
        ({"q": "1.5"}, "must be a number"),
        ({"reading": "C"}, "reading must be 'A' or 'B'"),
        ({"reading": "b"}, "reading must be 'A' or 'B'"),
        ({"reading": "A", "detach_power": True}, "detach_power=True with reading 'A'"),
        ({"detach_power": "yes"}, "detach_power must be"),
        ({"init": 0.0}, "non-zero"),
    ],
)
def test_adaptive_bad_settings(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_weighting("adaptive", TASKS, **settings)


def test_fixed_bad_settings() -> None:
    with pytest.raises(ConfigError, match="'hyperr'"):
        build_weighting("fixed", TASKS, weights={"pred": 1.0, "hyperr": 0.5})
    with pytest.raises(ConfigError, match="'hyper'"):  # a task this run does not have, e.g. NP
        build_weighting("fixed", ["pred"], weights={"hyper": 0.5})
    with pytest.raises(ConfigError, match=">= 0"):
        build_weighting("fixed", TASKS, weights={"hyper": -1.0})


@pytest.mark.parametrize("names", [[], ["pred", "pred"], ["pred", ""]])
def test_bad_task_names(names: list[str]) -> None:
    with pytest.raises(ConfigError):
        build_weighting("fixed", names)


# ---------------------------------------------------------------- task-level weighting (scope "update")


def _update_weighting(name: str, **settings) -> "Weighting":
    w = build_weighting(name, TASKS, **settings).double()
    with torch.no_grad():
        for p in w.parameters():
            p.copy_(torch.tensor([0.8, 1.3], dtype=torch.float64))
    return w


def test_update_scope_weights_task_means_by_hand() -> None:
    # reading B, q = 1.5, u = (0.8, 1.3), anchors (previous update's means) a = (0.5, 2.0):
    # total over the update = Σ_t a_t^0.5 · mean_i(L_ti) / (2 u_t²) + ln(1 + u_t²), whatever the split.
    w = _update_weighting("adaptive")
    w.set_anchors({"pred": 0.5, "hyper": 2.0})
    pred = torch.tensor([0.1, 0.9, 2.0, 0.2], dtype=torch.float64, requires_grad=True)
    hyper = torch.tensor([2.5, 1.5, 2.2, 1.8], dtype=torch.float64, requires_grad=True)
    total, info = w({"pred": pred, "hyper": hyper})
    mean_p, mean_h = 3.2 / 4, 8.0 / 4
    hand = (0.5 ** 0.5 * mean_p / (2 * 0.64) + math.log(1.64)) + (2.0 ** 0.5 * mean_h / (2 * 1.69) + math.log(2.69))
    assert total.mean().item() == pytest.approx(hand, rel=1e-12)
    # every architecture's squared error gets the same weight (not |e|^(2(q-1)) each)
    total.mean().backward()
    assert pred.grad.tolist() == pytest.approx([0.5 ** 0.5 / (2 * 0.64) / 4] * 4, rel=1e-12)
    assert info["weight/pred"] == pytest.approx(0.5 ** 0.5 / (2 * 0.64))


@pytest.mark.parametrize("name,settings", [("adaptive", {}), ("adaptive", {"detach_power": False, "q": 3.0}),
                                           ("adaptive", {"reading": "A", "q": 1.25}), ("uncertainty", {}),
                                           ("fixed", {"weights": {"pred": 2.0, "hyper": 0.5}})])
def test_update_scope_is_linear_so_splitting_the_update_changes_nothing(name: str, settings: dict) -> None:
    w = _update_weighting(name, **settings)
    w.set_anchors({"pred": 0.7, "hyper": 1.9})
    pred = torch.tensor([0.4, 0.05, 1.7, 0.0, 0.3, 0.9], dtype=torch.float64)
    hyper = torch.tensor([2.3, 1.1, 0.6, 3.0, 2.0, 1.2], dtype=torch.float64)
    whole = w({"pred": pred, "hyper": hyper})[0].mean()
    parts = sum(w({"pred": pred[s], "hyper": hyper[s]})[0].sum() for s in (slice(0, 1), slice(1, 4), slice(4, 6))) / 6
    assert whole.item() == pytest.approx(parts.item(), rel=1e-12)
    params = list(w.parameters())
    if params:
        whole.backward()
        g_whole = params[0].grad.clone()
        params[0].grad = None
        for s in (slice(0, 1), slice(1, 4), slice(4, 6)):
            (w({"pred": pred[s], "hyper": hyper[s]})[0].sum() / 6).backward()
        assert torch.allclose(g_whole, params[0].grad)


@pytest.mark.parametrize("settings", [{"detach_power": False, "q": 3.0}, {"reading": "A", "q": 1.25}])
def test_nonlinear_forms_are_exact_when_the_mean_equals_the_anchor(settings: dict) -> None:
    arch = _update_weighting("adaptive", scope="arch", **settings)
    upd = _update_weighting("adaptive", **settings)
    upd.set_anchors({"pred": L_PRED, "hyper": L_HYPER})
    results = []
    for w in (arch, upd):
        ls = losses(grad=True)
        total, _ = w(ls)
        total.backward()
        results.append((total.item(), ls["pred"].grad.item(), ls["hyper"].grad.item(), w.u.grad.tolist()))
    assert results[0][:3] == pytest.approx(results[1][:3], rel=1e-12)
    assert results[0][3] == pytest.approx(results[1][3], rel=1e-12)


def test_first_anchors_are_the_chance_losses_and_momentum_smooths() -> None:
    w = build_weighting("adaptive", TASKS, chance={"pred": 1.0, "hyper": math.log(10)}, anchor_momentum=0.5)
    assert w.anchors.tolist() == pytest.approx([1.0, math.log(10)])
    w.set_anchors({"pred": 0.2, "hyper": 1.0})
    assert w.anchors.tolist() == pytest.approx([0.6, 0.5 * math.log(10) + 0.5])
    assert "anchors" in w.state_dict()
    with pytest.raises(ConfigError, match="anchor_momentum"):
        build_weighting("adaptive", TASKS, anchor_momentum=1.0)
    with pytest.raises(ConfigError, match="scope"):
        build_weighting("adaptive", TASKS, scope="batch")
    with pytest.raises(ConfigError, match="unknown task"):
        build_weighting("adaptive", TASKS, chance={"predd": 1.0})
