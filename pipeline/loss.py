"""Multi-task loss weightings (METHOD.md §4), behind a small name -> class registry.

A weighting is an `nn.Module`: its learnable parameters (if any) are registered on the module, so the
trainer hands them to the same optimizer as the model and they are saved in checkpoints with it.

    weighting = build_weighting("adaptive", ["pred", "hyper"], q=1.5)
    total, info = weighting({"pred": l_pred, "hyper": l_hyper})     # (B,) losses, one per architecture
    weighting.set_anchors({"pred": 0.8, "hyper": 2.1})              # after each optimizer update

**What is weighted: tasks, not architectures** (`scope="update"`, the default). The paper weights each
task's loss L_t; here L_t is the task's mean over the architectures of one optimizer update. Every
weighting is written as `term_t = α_t + β_t · L_t`, where α_t and β_t depend on the learnable parameters
and on an *anchor* a_t, a detached reading of L_t:

- for the linear weightings (fixed, uncertainty) α and β do not depend on a_t;
- for the adaptive loss the factor L^(q−1) (reading B, detached: the default) is read at a_t, and the
  non-linear forms (B without detach, reading A) are replaced by their first-order expansion around a_t,
  which has the exact value and gradients at L_t = a_t.

With `scope="update"` the anchor is the previous update's task mean (`set_anchors`, the same on every
rank; before the first update each task's chance-level loss), so the total is *linear* in the
per-architecture losses: the mean of per-architecture terms over the update is exactly the task-level
loss, however the update is split into micro-batches and ranks. With `scope="arch"` the anchor is each
architecture's own loss: every architecture gets its own weight, e.g. |e|^(2(q−1)) on a squared error e²,
which turns the regression into an |e|³ loss at q = 1.5 (how an earlier version of this project read the
paper's one-architecture steps); kept as a setting for ablations.

`forward` takes `{task_name: loss}` (scalars or `(B,)` tensors) and returns `(total, info)`: `total` has
the broadcast shape of the inputs; `info` maps `"loss/<task>"` to the task's loss (mean over B) and
`"weight/<task>"` to its effective weight β_t (mean over B), plus the raw learnable values (`"u/<task>"`,
`"log_var/<task>"`).

Single task: every weighting returns that task's loss tensor unchanged and owns no parameters. NP and
HyperNAS-P have only `L_pred`; the paper's baselines are plain predictors, so reweighting a lone loss would
make the baselines unfair.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError
from pipeline.registry import Registry

__all__ = [
    "Weighting",
    "AdaptiveWeighting",
    "UncertaintyWeighting",
    "FixedWeighting",
    "register_weighting",
    "build_weighting",
    "available_weightings",
    "DEFAULT_WEIGHTING",
    "SCOPES",
]

DEFAULT_WEIGHTING = "adaptive"
SCOPES = ("update", "arch")
# Settings every weighting takes (see Weighting.configure), besides its own.
_COMMON_SETTINGS = ("scope", "chance", "anchor_momentum")

# Floor for L_t (and anchors) before raising it to a power: for q < 1 a zero loss would give inf, and
# for q < 2 the derivative of L^(q-1) is infinite at 0.
_POWER_EPS = 1e-8

WEIGHTINGS: Registry[type["Weighting"]] = Registry("loss weighting")


def register_weighting(name: str) -> Callable[[type["Weighting"]], type["Weighting"]]:
    """Class decorator: make a `Weighting` subclass buildable as `build_weighting(name, ...)`."""
    return WEIGHTINGS.register(name)


def available_weightings() -> list[str]:
    """The registered weighting names, sorted."""
    return WEIGHTINGS.names()


def build_weighting(name: str, task_names: Sequence[str], **settings: object) -> "Weighting":
    """Instantiate the weighting registered as `name` for `task_names` with its `settings`.

    `settings` are the class's own (e.g. q, reading) plus the common ones (scope, chance,
    anchor_momentum). Raises ConfigError for an unknown name (listing the known ones), an unknown
    setting (listing the accepted ones) or an invalid setting value.
    """
    cls = WEIGHTINGS.get(name)
    common = {k: settings.pop(k) for k in _COMMON_SETTINGS if k in settings}
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "task_names")]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for loss weighting {name!r}; "
            f"accepted: {', '.join(accepted + list(_COMMON_SETTINGS))}"
        )
    return cls(task_names, **settings).configure(**common)


class Weighting(nn.Module):
    """Base class: validates inputs, short-circuits the single-task case, holds the anchors, builds `info`.

    Subclasses implement `_coefficients(anchors)`: per task (in `task_names` order) α_t and β_t of
    `term_t = α_t + β_t · L_t` (see the module doc).
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        names = list(task_names) if not isinstance(task_names, str) else [task_names]
        if not names:
            raise ConfigError("loss weighting needs at least one task name")
        if any(not isinstance(t, str) or not t for t in names):
            raise ConfigError(f"task names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate task names: {names!r}")
        self.task_names: list[str] = names
        self.scope = "update"
        self.anchor_momentum = 0.0
        # Detached task-loss readings, one per task, checkpointed with the module (see set_anchors).
        self.register_buffer("anchors", torch.ones(len(names)))

    def configure(self, scope: str = "update", chance: Mapping[str, float] | None = None,
                  anchor_momentum: float = 0.0) -> "Weighting":
        """Common settings: `scope` (update | arch), each task's `chance`-level loss (the first anchors;
        1.0 for tasks not given), `anchor_momentum` m (anchor <- m·anchor + (1−m)·update mean)."""
        if scope not in SCOPES:
            raise ConfigError(f"loss weighting scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        m = _finite_float("anchor_momentum", anchor_momentum)
        if not 0.0 <= m < 1.0:
            raise ConfigError(f"loss weighting anchor_momentum must be in [0, 1), got {m}")
        chance = dict(chance or {})
        unknown = sorted(set(chance) - set(self.task_names))
        if unknown:
            raise ConfigError(f"chance-level losses name unknown task(s) {unknown}; tasks: {self.task_names}")
        values = [_finite_float(f"chance.{t}", chance.get(t, 1.0)) for t in self.task_names]
        if any(v <= 0 for v in values):
            raise ConfigError(f"chance-level losses must be > 0, got {dict(zip(self.task_names, values))}")
        self.scope, self.anchor_momentum = scope, m
        with torch.no_grad():
            self.anchors.copy_(torch.tensor(values))
        return self

    @property
    def single_task(self) -> bool:
        return len(self.task_names) == 1

    @torch.no_grad()
    def set_anchors(self, means: Mapping[str, float]) -> None:
        """After an optimizer update: each task's mean loss over that update (all ranks together)."""
        m = self.anchor_momentum
        for i, task in enumerate(self.task_names):
            value = means.get(task)
            if value is not None and math.isfinite(value):
                self.anchors[i] = m * self.anchors[i] + (1.0 - m) * max(float(value), _POWER_EPS)

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Combine `{task: loss}` (scalars or `(B,)` tensors) into `(total, info)`; see the module doc."""
        missing = [t for t in self.task_names if t not in losses]
        extra = [t for t in losses if t not in self.task_names]
        if missing or extra:
            # A mismatch is a wiring bug in the trainer: fail loudly instead of silently dropping a task.
            raise KeyError(f"task losses {sorted(losses)} do not match the weighting's tasks {self.task_names}")

        if self.single_task:
            (task,) = self.task_names
            loss = losses[task]
            return loss, {f"loss/{task}": _mean(loss), f"weight/{task}": 1.0}

        if self.scope == "arch":
            anchors = [losses[t].detach().clamp_min(_POWER_EPS) for t in self.task_names]
        else:
            anchors = [self.anchors[i].to(losses[t].dtype) for i, t in enumerate(self.task_names)]
        alphas, betas = self._coefficients(anchors)
        total: Tensor | None = None
        info: dict[str, float] = {}
        for task, alpha, beta in zip(self.task_names, alphas, betas):
            term = alpha + beta * losses[task]
            total = term if total is None else total + term
            info[f"loss/{task}"] = _mean(losses[task])
            info[f"weight/{task}"] = _mean(beta)
        info.update(self._extra_info())
        return total, info

    def _coefficients(self, anchors: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per task (in `task_names` order): α_t and β_t, given its detached anchor a_t."""
        raise NotImplementedError

    def _extra_info(self) -> dict[str, float]:
        """Learnable values worth logging (none by default)."""
        return {}


@register_weighting("adaptive")
class AdaptiveWeighting(Weighting):
    """HyperNAS dynamic adaptive loss with preference factor q (METHOD.md §4), learnable u_t (init 1).

    reading "B" (default):  total = Σ_t  L_t^(q−1) · L_t / (2 u_t²) + ln(1 + u_t²)
    reading "A":            total = Σ_t  L_t^(q−1)       / (2 u_t²) + ln(1 + u_t²)

    The paper's transcription of this formula is inconsistent, so both readings exist and a sweep
    decides. Exactly what each computes (at L_t = a_t, see the module doc for the anchor a_t):

    - B with `detach_power` (default): L_t^(q−1) is a gradient-free weight on L_t, read at a_t:
      α = ln(1+u²), β = a^(q−1)/(2u²). Tasks with larger losses are up-weighted for q > 1. B with q = 2
      is L²/(2u²) + ln(1+u²), NOT the plain adaptive loss; B gives the plain loss at q = 1.
    - B without detach: L^q/(2u²) + ln(1+u²), whose gradient w.r.t. L is q times the detached one.
    - A: L^(q−1)/(2u²) + ln(1+u²), the task loss raised to q − 1 (q = 2: the plain adaptive loss; q = 1
      makes the term constant and the task untrained). The power term IS the task term, so detaching it
      would cut every gradient to the model: `detach_power` must be False (the default for A).

    The gradient w.r.t. u_t is −L_t^q/u_t³ + 2u_t/(1+u_t²) for B (at L_t = a_t). Losses and anchors are
    floored at 1e-8 before a power. The effective weight logged is β_t.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        q: float = 1.5,
        reading: str = "B",
        detach_power: bool | None = None,
        init: float = 1.0,
    ) -> None:
        super().__init__(task_names)
        q = _finite_float("q", q)
        if q <= 0:
            raise ConfigError(f"adaptive loss: q must be > 0, got {q}")
        if reading not in ("A", "B"):
            raise ConfigError(f"adaptive loss: reading must be 'A' or 'B', got {reading!r}")
        if detach_power is None:
            detach_power = reading == "B"
        if not isinstance(detach_power, bool):
            raise ConfigError(f"adaptive loss: detach_power must be true/false, got {detach_power!r}")
        if reading == "A" and detach_power:
            raise ConfigError(
                "adaptive loss: detach_power=True with reading 'A' would detach the whole task term "
                "(no gradient reaches the model); use detach_power=False or reading 'B'"
            )
        init = _finite_float("init", init)
        if init == 0:
            raise ConfigError("adaptive loss: init of u must be non-zero (the loss divides by u²)")
        self.q = q
        self.reading = reading
        self.detach_power = detach_power
        # One tensor, indexed in task_names order: simple to optimise, checkpoint and inspect.
        self.u = nn.Parameter(torch.full((len(self.task_names),), init)) if not self.single_task else None

    def _coefficients(self, anchors: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        q = self.q
        alphas, betas = [], []
        for i, a in enumerate(anchors):
            u2 = self.u[i].pow(2)
            reg = torch.log1p(u2)
            if self.reading == "B" and self.detach_power:       # a^(q−1) · L / (2u²): linear in L
                alphas.append(reg)
                betas.append(a.pow(q - 1.0) / (2.0 * u2))
            elif self.reading == "B":                            # L^q / (2u²), expanded around a
                alphas.append((1.0 - q) * a.pow(q) / (2.0 * u2) + reg)
                betas.append(q * a.pow(q - 1.0) / (2.0 * u2))
            else:                                                # A: L^(q−1) / (2u²), expanded around a
                alphas.append((2.0 - q) * a.pow(q - 1.0) / (2.0 * u2) + reg)
                betas.append((q - 1.0) * a.pow(q - 2.0) / (2.0 * u2))
        return alphas, betas

    def extra_repr(self) -> str:
        return (f"tasks={self.task_names}, q={self.q}, reading={self.reading!r}, detach_power={self.detach_power}, "
                f"scope={self.scope!r}")

    def _extra_info(self) -> dict[str, float]:
        return {f"u/{t}": float(v) for t, v in zip(self.task_names, self.u.detach().cpu().tolist())}


@register_weighting("uncertainty")
class UncertaintyWeighting(Weighting):
    """Kendall, Gal & Cipolla (2018) homoscedastic-uncertainty weighting, learnable s_t = log σ_t² (init 0).

    total = Σ_t exp(−s_t) · L_t / 2 + s_t / 2

    This is the paper's regression (Gaussian likelihood) form, 1/(2σ²)·L + log σ, applied to every task
    (including the cross-entropy L_hyper, as common re-implementations do); learning log σ² rather than
    σ keeps it unconstrained and numerically stable. Effective weight: exp(−s_t)/2.
    """

    def __init__(self, task_names: Sequence[str], init: float = 0.0) -> None:
        super().__init__(task_names)
        init = _finite_float("init", init)
        self.log_var = (
            nn.Parameter(torch.full((len(self.task_names),), init)) if not self.single_task else None
        )

    def _coefficients(self, anchors: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        s = self.log_var
        return [s[i] / 2.0 for i in range(len(anchors))], [torch.exp(-s[i]) / 2.0 for i in range(len(anchors))]

    def _extra_info(self) -> dict[str, float]:
        return {f"log_var/{t}": float(v) for t, v in zip(self.task_names, self.log_var.detach().cpu().tolist())}


@register_weighting("fixed")
class FixedWeighting(Weighting):
    """Constant weights: total = Σ_t w_t · L_t, `weights` maps task -> w_t (1.0 for tasks not given).

    No learnable parameters. With a single task the weight is not applied (see the module doc).
    """

    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(task_names)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ConfigError(
                f"fixed loss weights name unknown task(s) {', '.join(map(repr, unknown))}; "
                f"tasks: {', '.join(self.task_names)}"
            )
        resolved = {t: _finite_float(f"weights.{t}", weights.get(t, 1.0)) for t in self.task_names}
        negative = [t for t, w in resolved.items() if w < 0]
        if negative:
            raise ConfigError(f"fixed loss weights must be >= 0, got {', '.join(f'{t}={resolved[t]}' for t in negative)}")
        self.weights: dict[str, float] = resolved

    def _coefficients(self, anchors: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        zero = anchors[0].new_zeros(())
        return [zero for _ in self.task_names], [zero + self.weights[t] for t in self.task_names]


def _finite_float(name: str, value: object) -> float:
    """`value` as a finite float, or ConfigError naming the setting (bools are rejected: yaml `yes`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"setting {name!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"setting {name!r} must be finite, got {value}")
    return value


def _mean(x: Tensor) -> float:
    """Mean of a scalar or (B,) tensor as a Python float, for logging only."""
    return float(x.detach().float().mean())
