"""What a proxy sees: the architecture, its freshly initialised benchmark network, and the data batches.

`ProxyData` is built once per run and shared by every architecture (the batches live on the device
already). `ArchContext.net()` hands each proxy its own copy of one seeded network, so proxies that
rewrite weights (synflow's absolute values, zen's Gaussian re-init) or update BN running statistics
never leak into the next proxy, and every proxy of an architecture starts from the same weights.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProxyData:
    """Labelled image batches (normalised float (B, C, H, W), int64 (B,)); `batches[0]` is the main one."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    num_classes: int
    seed: int

    @property
    def images(self) -> torch.Tensor:
        return self.batches[0][0]

    @property
    def labels(self) -> torch.Tensor:
        return self.batches[0][1]

    @property
    def device(self) -> torch.device:
        return self.images.device


def load_proxy_data(shard_dir: Any, split: str, dataset: str | None, batch_size: int, num_batches: int,
                    seed: int, device: Any = "cpu") -> ProxyData:
    """`num_batches` un-augmented batches of the prepared shards, drawn by `seed` (step k = batch k)."""
    from pipeline.data.images import AuxBatches
    aux = AuxBatches.from_shards(shard_dir, split, dataset=dataset, augment=False)
    batches = []
    for step in range(num_batches):
        x, y = aux.batch(step, batch_size, seed)
        batches.append((x.to(device), y.to(device)))
    return ProxyData(batches, aux.num_classes, seed)


@dataclass
class LossGradients:
    """One forward/backward of the main batch's cross-entropy on a private copy of the network."""

    layers: list[nn.Module]                 # conv/linear layers (weight_layers order)
    weight_grads: list[torch.Tensor | None]  # dL/dW per layer (None: the layer does not reach the loss)
    channel_act_grad: list[torch.Tensor | None]  # per layer (N, C_out): sum over positions of output * dL/doutput


@dataclass
class ArchContext:
    space: Any
    arch: Hashable
    data: ProxyData | None     # None when only space-level proxies (params, flops) are asked for
    seed: int
    _pristine: nn.Module | None = field(default=None, repr=False)
    _loss_grads: LossGradients | None = field(default=None, repr=False)
    # Work several proxies share is computed once per architecture; its seconds are kept apart so each
    # proxy's own time and its standalone time (own + the shared work it used) can both be reported.
    shared_seconds: dict[str, float] = field(default_factory=dict)
    shared_used: set[str] = field(default_factory=set)

    def pristine(self) -> nn.Module:
        """The seeded, never-run benchmark network (read it, do not change it: use `net()` for that)."""
        if self._pristine is None:
            if self.data is None:
                raise RuntimeError("this proxy needs the network, but no data was loaded")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = self.space.build_benchmark_net(self.arch, self.data.num_classes)
            self._pristine = net.to(self.data.device).train()
        return self._pristine

    def net(self) -> nn.Module:
        """A private copy of the seeded network, in training mode (batch-statistics BN)."""
        return copy.deepcopy(self.pristine()).train()

    def loss_gradients(self) -> LossGradients:
        """Gradients of the main batch's cross-entropy (BN in training mode) w.r.t. every conv/linear weight
        and output, computed once per architecture: snip, grad_norm, fisher and zico's first batch share it."""
        self.shared_used.add("loss_gradients")
        if self._loss_grads is None:
            t0 = time.perf_counter()
            net = self.net()
            layers = weight_layers(net)
            outputs: dict[nn.Module, torch.Tensor] = {}
            handles = [m.register_forward_hook(lambda mod, inp, out: outputs.setdefault(mod, out)) for m in layers]
            try:
                loss = F.cross_entropy(net(self.data.images), self.data.labels)
            finally:
                for h in handles:
                    h.remove()
            reached = [m for m in layers if m in outputs]
            grads = torch.autograd.grad(loss, [m.weight for m in layers] + [outputs[m] for m in reached],
                                        allow_unused=True)
            out_grads = dict(zip(reached, grads[len(layers):]))
            products: list[torch.Tensor | None] = []
            for m in layers:
                g = out_grads.get(m)
                if g is None:
                    products.append(None)
                    continue
                prod = outputs[m].detach() * g
                products.append(prod.sum(tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod)
            self._loss_grads = LossGradients(layers, [None if g is None else g.detach() for g in grads[:len(layers)]],
                                             products)
            self.shared_seconds["loss_gradients"] = time.perf_counter() - t0
        return self._loss_grads

    def rng(self, salt: int = 0) -> torch.Generator:
        """A CPU generator seeded by the run seed (and `salt`): random inputs equal on every device."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)


# -- helpers the proxies share ---------------------------------------------------------------------

def weight_layers(net: nn.Module) -> list[nn.Module]:
    """Conv and linear layers in module order: the parameters every reference scores ("prunable" layers)."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def replace_modules(net: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]) -> int:
    """Swap every submodule `m` with match(m) for make(m), in place; returns how many were swapped."""
    swapped = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, name, make(child))
                swapped += 1
    return swapped


def features_before_pool(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature map entering the network's global pool: `net.forward_features` when the benchmark net
    has it, else the input of its last AdaptiveAvgPool2d (what NASLib's zen hooks)."""
    if hasattr(net, "forward_features"):
        return net.forward_features(x)
    pools = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise TypeError(f"{type(net).__name__} has neither forward_features nor an AdaptiveAvgPool2d")
    seen: list[torch.Tensor] = []
    handle = pools[-1].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return seen[-1]


def cross_entropy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(net(x), y)
