"""Zero-cost proxies: scores of an untrained network that rank architectures without training them.

One small module per proxy, each registering itself in `PROXIES` (pipeline/registry.py's Registry):
synflow, nwot, snip, grasp, fisher, grad_norm, l2_norm, jacov, zen, zico, and params / flops from the
space's `cost()`. Every proxy runs on the space's own benchmark network (`space.build_benchmark_net`,
randomly initialised, not hypernetwork weights) with real images (the prepared shards), seeded.

    python -m pipeline.zero_cost --config configs/nb201_cpu.yaml --proxies synflow,nwot --sample 200
    python -m pipeline.zero_cost.crosscheck --scores TABLE.parquet      # vs NAS-Bench-Suite-Zero's values

The recipes follow NASLib's `naslib/predictors/utils/pruners/measures/` (what NAS-Bench-Suite-Zero ran:
batch 64 of CIFAR-10 at 32x32, PyTorch's default init, BN in training mode), Zen-NAS and ZiCo their own
repositories; each module's docstring gives its formula and conventions.
"""
from pipeline.zero_cost.context import ArchContext, ProxyData, load_proxy_data
from pipeline.zero_cost.registry import NO_SIGNAL, PROXIES, Proxy, register
from pipeline.zero_cost import (cost, fisher, grad_norm, grasp, jacov, l2_norm, nwot, snip,  # noqa: F401  (register)
                                synflow, zen, zico)
from pipeline.zero_cost.scoring import ScoreResult, resolve_proxies, score_archs

__all__ = ["PROXIES", "NO_SIGNAL", "Proxy", "register", "ArchContext", "ProxyData", "load_proxy_data",
           "ScoreResult", "resolve_proxies", "score_archs"]
