"""Search-space registry: `get_space(name, **settings)`; one module per space (see base.py for the contract)."""
from __future__ import annotations

from typing import Any

from pipeline.registry import Registry
from pipeline.spaces.base import SHARED_PREFIX, CellGraph, ParamSlot, SearchSpace, TargetNet
from pipeline.spaces.nb201 import NB201Space
from pipeline.spaces.nb101 import NB101Space
from pipeline.spaces.darts import DartsSpace

SPACES: Registry[type[SearchSpace]] = Registry("search space")
SPACES.register("nb201")(NB201Space)
SPACES.register("nb101")(NB101Space)
SPACES.register("darts")(DartsSpace)
from pipeline.spaces.mobilenetv3 import MobileNetV3Space  # noqa: E402
SPACES.register("mobilenetv3")(MobileNetV3Space)
from pipeline.spaces.vit import ViTSpace  # noqa: E402
SPACES.register("vit")(ViTSpace)


def get_space(name: str, **settings: Any) -> SearchSpace:
    """The space `name` with its settings' defaults, overridden by `settings`."""
    return SPACES.get(name)(**settings)


def space_from_config(space_cfg: Any) -> SearchSpace:
    """The space of a run config's `space` section (name + validated settings mapping)."""
    cls = SPACES.get(space_cfg.name)
    return cls(cls.Settings(**space_cfg.settings))


__all__ = ["SPACES", "SHARED_PREFIX", "get_space", "space_from_config", "CellGraph", "ParamSlot", "SearchSpace",
           "TargetNet"]
