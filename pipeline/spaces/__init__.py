"""Search-space registry: `get_space(name, **settings)`; one module per space."""
from __future__ import annotations

from typing import Any

from pipeline.registry import Registry
from pipeline.spaces.base import CellGraph, ParamSlot, SearchSpace, TargetNet
from pipeline.spaces.nb201 import NB201Space

SPACES: Registry[type[SearchSpace]] = Registry("search space")
SPACES.register("nb201")(NB201Space)


def get_space(name: str, **settings: Any) -> SearchSpace:
    return SPACES.get(name)(**settings)


def space_from_config(space_cfg: Any) -> SearchSpace:
    return get_space(space_cfg.name, cells_per_stage=space_cfg.cells_per_stage, prune=space_cfg.prune)


__all__ = ["SPACES", "get_space", "space_from_config", "CellGraph", "ParamSlot", "SearchSpace", "TargetNet"]
