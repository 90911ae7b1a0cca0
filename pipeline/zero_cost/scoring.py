"""Score many architectures with many proxies: one data batch for all, one seeded network per architecture.

    data = load_proxy_data(shards, "train", "cifar10", batch_size=64, num_batches=2, seed=0)
    result = score_archs(space, archs, ["synflow", "nwot"], data, seed=0)
    result.scores["synflow"]        # float64 (n,), table order
    result.seconds["synflow"]       # seconds per architecture (mean)

The batches are drawn and moved to the device once; per architecture the only work is building its
seeded network once (`build` time) and running each proxy on a private copy of it. Every score is a
pure function of (space settings, arch, proxy, seed, batch size, number of batches): the same seed
gives the same scores, in any order and subset of architectures.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from pipeline.zero_cost.context import ArchContext, ProxyData
from pipeline.zero_cost.registry import PROXIES, Proxy


def resolve_proxies(names: Sequence[str]) -> list[Proxy]:
    """Registered proxies by name, duplicates dropped; ConfigError listing the registered ones otherwise."""
    return [PROXIES.get(n) for n in dict.fromkeys(names)]


@dataclass
class ScoreResult:
    """Scores and mean wall seconds per architecture.

    `seconds`: each proxy's own work, plus the work done once per architecture for all of them ("build":
    the seeded network; "loss_gradients": the shared gradient pass); the values add up to the run's
    time per architecture. `standalone_seconds`: what each proxy costs on its own (its work plus the
    shared work it uses, network build excluded)."""

    scores: dict[str, np.ndarray]              # proxy -> (n,) float64, NaN where a proxy failed to give a number
    seconds: dict[str, float]
    standalone_seconds: dict[str, float]
    nonfinite: dict[str, list[int]] = field(default_factory=dict)  # proxy -> positions with non-finite scores


def score_archs(space: Any, archs: Sequence[Hashable], proxy_names: Sequence[str], data: ProxyData | None,
                seed: int, progress: bool = False, desc: str = "zero-cost") -> ScoreResult:
    proxies = resolve_proxies(proxy_names)
    if data is None and any(p.needs_net for p in proxies):
        raise ValueError("proxies that run the network need ProxyData")
    n = len(archs)
    scores = {p.name: np.full(n, np.nan) for p in proxies}
    spent = {p.name: 0.0 for p in proxies}
    spent["build"] = 0.0
    alone = {p.name: 0.0 for p in proxies}
    nonfinite: dict[str, list[int]] = {}
    sync = data is not None and data.device.type == "cuda"
    from tqdm import tqdm
    # a log file (no terminal) gets a line every 30 s instead of a carriage-return stream
    bar = tqdm(archs, desc=desc, disable=not progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    for i, arch in enumerate(bar):
        ctx = ArchContext(space, arch, data, seed)
        if any(p.needs_net for p in proxies):
            t0 = time.perf_counter()
            ctx.pristine()
            spent["build"] += time.perf_counter() - t0
        for p in proxies:
            ctx.shared_used = set()
            shared_before = sum(ctx.shared_seconds.values())
            t0 = time.perf_counter()
            value = float(p.fn(ctx))
            if sync:
                torch.cuda.synchronize()
            own = time.perf_counter() - t0 - (sum(ctx.shared_seconds.values()) - shared_before)
            spent[p.name] += own
            alone[p.name] += own + sum(ctx.shared_seconds[k] for k in ctx.shared_used)
            if not math.isfinite(value):
                nonfinite.setdefault(p.name, []).append(i)
                value = math.nan
            scores[p.name][i] = value
        for k, v in ctx.shared_seconds.items():
            spent[k] = spent.get(k, 0.0) + v
    seconds = {k: v / max(n, 1) for k, v in spent.items()}
    if not any(p.needs_net for p in proxies):
        seconds.pop("build")
    return ScoreResult(scores, seconds, {k: v / max(n, 1) for k, v in alone.items()}, nonfinite)


def concat_results(parts: Sequence[tuple[int, ScoreResult]]) -> ScoreResult:
    """One result from consecutive parts [(n_archs, result), ...]: scores concatenated, seconds averaged
    per architecture, non-finite positions shifted."""
    total = sum(n for n, _ in parts)
    names = list(parts[0][1].scores) if parts else []
    scores = {k: np.concatenate([r.scores[k] for _, r in parts]) for k in names}
    keys = dict.fromkeys(k for _, r in parts for k in r.seconds)
    seconds = {k: sum(n * r.seconds.get(k, 0.0) for n, r in parts) / max(total, 1) for k in keys}
    alone = {k: sum(n * r.standalone_seconds.get(k, 0.0) for n, r in parts) / max(total, 1) for k in names}
    nonfinite: dict[str, list[int]] = {}
    offset = 0
    for n, r in parts:
        for k, pos in r.nonfinite.items():
            nonfinite.setdefault(k, []).extend(offset + i for i in pos)
        offset += n
    return ScoreResult(scores, seconds, alone, nonfinite)
