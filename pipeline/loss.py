"""Multi-task loss weightings (METHOD.md §4), behind a small name -> class registry.

A weighting is an `nn.Module`: its learnable parameters (if any) are registered on the module, so the
trainer hands them to the same optimizer as the model and they are saved in checkpoints with it.

    weighting = build_weighting("adaptive", ["pred", "hyper"], q=1.5)
    total, info = weighting({"pred": l_pred, "hyper": l_hyper})

`forward` takes `{task_name: loss}` where every loss is a scalar or a `(B,)` tensor (one loss per
architecture) and returns `(total, info)`:

- `total` has the broadcast shape of the inputs. All formulas are elementwise, so a `(B,)` call gives
  the same per-architecture totals as B scalar calls; the trainer averages them over the micro-batch,
  which equals gradient accumulation (METHOD.md §5).
- `info` maps `"loss/<task>"` to the task's loss (mean over B) and `"weight/<task>"` to its current
  effective weight, i.e. the coefficient `w_t` such that the task's term equals `w_t * L_t` (again a
  mean over B when it depends on L), plus the raw learnable values (`"u/<task>"`, `"log_var/<task>"`).

Single task: every weighting returns that task's loss tensor unchanged and owns no parameters. NP and
HyperNAS-P have only `L_pred`; the paper's baselines are plain MSE predictors, so reweighting a lone
loss (which, for the adaptive loss with q != 2, would change the effective objective, and for the
learnable weightings only rescales the learning rate) would make the baselines unfair.
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
]

DEFAULT_WEIGHTING = "adaptive"

# Floor for L_t before raising it to (q - 1): for q < 1 a zero loss would give inf (and inf * 0 = nan),
# and for q < 2 the derivative of L^(q-1) is infinite at 0.
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

    Raises ConfigError for an unknown name (listing the known ones), an unknown setting (listing the
    accepted ones) or an invalid setting value.
    """
    cls = WEIGHTINGS.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "task_names")]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for loss weighting {name!r}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    return cls(task_names, **settings)


class Weighting(nn.Module):
    """Base class: validates inputs, short-circuits the single-task case, builds the info dict.

    Subclasses implement `_terms`, returning per task its weighted term and effective weight.
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

    @property
    def single_task(self) -> bool:
        return len(self.task_names) == 1

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

        terms, weights = self._terms(losses)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        info: dict[str, float] = {}
        for task, weight in zip(self.task_names, weights):
            info[f"loss/{task}"] = _mean(losses[task])
            info[f"weight/{task}"] = _mean(weight)
        info.update(self._extra_info())
        return total, info

    def _terms(self, losses: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per task (in `task_names` order): its term of the total, and its effective weight."""
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
    decides. Exactly what each computes:

    - B with q = 2 is L_t²/(2u_t²) + ln(1+u_t²), NOT the plain adaptive loss L_t/(2u_t²) + ln(1+u_t²);
      B gives the plain loss at q = 1. With `detach_power` (default) the factor L_t^(q−1) is a
      gradient-free weight on L_t, so the model sees the gradient of w_t·L_t with w_t = L_t^(q−1)/(2u_t²):
      tasks with larger losses are up-weighted for q > 1. Without it the model sees d/dL of L^q/(2u²),
      i.e. q times that gradient. The gradient w.r.t. u_t is −L_t^q/u_t³ + 2u_t/(1+u_t²) either way.
    - A with q = 2 is L_t¹/(2u_t²) + ln(1+u_t²), the plain adaptive loss; in general it is
      L_t^(q−1)/(2u_t²) + ln(1+u_t²), i.e. the task loss raised to q − 1 (q = 1 makes the term constant
      and the task untrained). In A the power term IS the task term, so detaching it would cut every
      gradient to the model: `detach_power` must be False (the default for A); True is a ConfigError.

    L_t is clamped at 1e-8 before the power (only for that factor), so L_t = 0 is finite for q < 1
    and its derivative finite for q < 2. The effective weight logged is L_t^(q−1)/(2u_t²) for B and
    L_t^(q−2)/(2u_t²) for A (so weight · L_t = the task term).
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

    def _terms(self, losses: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        terms, weights = [], []
        for i, task in enumerate(self.task_names):
            loss = losses[task]
            power = loss.clamp_min(_POWER_EPS).pow(self.q - 1.0)
            if self.detach_power:
                power = power.detach()
            u2 = self.u[i].pow(2)
            reg = torch.log1p(u2)
            if self.reading == "B":
                terms.append(power * loss / (2.0 * u2) + reg)
                weights.append(power / (2.0 * u2))
            else:
                terms.append(power / (2.0 * u2) + reg)
                weights.append(power / (loss.clamp_min(_POWER_EPS) * 2.0 * u2))
        return terms, weights

    def extra_repr(self) -> str:
        return f"tasks={self.task_names}, q={self.q}, reading={self.reading!r}, detach_power={self.detach_power}"

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

    def _terms(self, losses: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        terms, weights = [], []
        for i, task in enumerate(self.task_names):
            s = self.log_var[i]
            weight = torch.exp(-s) / 2.0
            terms.append(weight * losses[task] + s / 2.0)
            weights.append(weight)
        return terms, weights

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

    def _terms(self, losses: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        terms = [self.weights[t] * losses[t] for t in self.task_names]
        weights = [torch.tensor(self.weights[t]) for t in self.task_names]
        return terms, weights


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
