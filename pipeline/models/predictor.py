"""The variants (METHOD.md §6) and the model that composes encoder, regressor and hypernetwork.

Variants are data: which encoding scope and which tasks. Adding one means registering a spec.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pipeline.data.graphs import GraphBatch
from pipeline.models.encoder import GraphSequenceEncoder
from pipeline.models.regressor import Regressor
from pipeline.registry import Registry
from pipeline.spaces.base import SHARED_PREFIX, SearchSpace, TargetNet


@dataclass(frozen=True)
class VariantSpec:
    scope: str    # "cell" (one cell, NP) or "global" (the whole network's cell-graph sequence)
    predict: bool  # accuracy regression task (L_pred)
    hyper: bool    # hypernetwork auxiliary task (L_hyper)

    @property
    def tasks(self) -> list[str]:
        return [t for t, on in (("pred", self.predict), ("hyper", self.hyper)) if on]


VARIANTS: Registry[VariantSpec] = Registry("predictor variant")
VARIANTS.register("np")(VariantSpec(scope="cell", predict=True, hyper=False))
VARIANTS.register("hypernas_p")(VariantSpec(scope="global", predict=True, hyper=False))
VARIANTS.register("hypernas_h")(VariantSpec(scope="global", predict=False, hyper=True))
VARIANTS.register("hypernas")(VariantSpec(scope="global", predict=True, hyper=True))


class HyperNASModel(nn.Module):
    """GCN encoder + (regressor) + (hypernetwork and the target parameters no node owns)."""

    def __init__(self, model_cfg, space: SearchSpace, num_classes: int, num_features: int = 0):
        super().__init__()
        self.variant = VARIANTS.get(model_cfg.variant)
        self.space = space
        enc = model_cfg.encoder
        self.encoder = GraphSequenceEncoder(len(space.node_vocab), enc.hidden, enc.layers, enc.dropout,
                                            enc.connectivity)
        reg = model_cfg.regressor
        self.num_features = num_features
        self.regressor = Regressor(enc.hidden + num_features, reg.hidden, reg.layers, reg.dropout) \
            if self.variant.predict else None
        # Feature standardisation (training cells' mean and std), saved with the model.
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.hyper_cfg = hyp = model_cfg.hyper
        self.num_classes = num_classes
        if self.variant.hyper:
            self.hypernet = space.build_hypernet(enc.hidden, hyp.hidden, hyp.layers, hyp.init)
            self.target_shared = space.build_shared(num_classes)
        else:
            self.hypernet = None
            self.target_shared = None
        # Target networks are stateless templates on the meta device (every tensor comes from
        # functional_call), built once per architecture.
        self._templates: OrderedDict[Hashable, TargetNet] = OrderedDict()
        self._max_templates = 4096

    # -- encoder / regressor ---------------------------------------------------------------------
    def encode(self, graphs: GraphBatch, drop_seeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h, nodes, _ = self.encoder(graphs, drop_seeds)
        return h, nodes

    @torch.no_grad()
    def set_feature_stats(self, values: torch.Tensor) -> None:
        """Standardise features with the mean / std of `values` (the training cells' raw features)."""
        self.feature_mean.copy_(values.mean(0))
        std = values.std(0, unbiased=False)
        self.feature_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def regress(self, h: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.regressor is None:
            raise RuntimeError("variant without a regressor cannot predict accuracy")
        if self.num_features:
            if features is None:
                raise ValueError(f"this predictor takes {self.num_features} features per architecture; none given")
            h = torch.cat([h, (features.to(h.dtype) - self.feature_mean) / self.feature_std], -1)
        return self.regressor(h)

    def embed(self, graphs: GraphBatch) -> torch.Tensor:
        """Architecture embeddings (B, D) for scoring: no node embeddings kept, no dropout streams."""
        h, _, _ = self.encoder(graphs, keep_nodes=False)
        return h

    def predict(self, graphs: GraphBatch, features: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised accuracy predictions (B,); the hypernetwork is not involved."""
        return self.regress(self.embed(graphs), features)

    # -- hypernetwork / target network -----------------------------------------------------------
    def template(self, arch: Hashable) -> TargetNet:
        net = self._templates.get(arch)
        if net is None:
            net = self.space.build_target(arch, self.num_classes, device="meta")
            self._templates[arch] = net
            if len(self._templates) > self._max_templates:
                self._templates.popitem(last=False)
        return net

    def target_params(self, archs: Sequence[Hashable], nodes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Generated + shared parameters of each architecture's target network."""
        templates = [self.template(a) for a in archs]
        generated = self.hypernet.generate(nodes, [t.param_slots for t in templates])
        shared = {f"{SHARED_PREFIX}{n}": p for n, p in self.target_shared.named_parameters()}
        return [{**shared, **g} for g in generated]

    def run_target(self, arch: Hashable, params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template(arch), params, (images,), strict=True)

    def hyper_losses(self, archs: Sequence[Hashable], nodes: torch.Tensor, images: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy (B,) and accuracy (B,) of each architecture's generated network on its own
        image batch: images (B, n, C, H, W), labels (B, n)."""
        params = self.target_params(archs, nodes)
        logits = self.space.run_targets([self.template(a) for a in archs], list(archs), params, images)
        B, n, classes = logits.shape
        ce = F.cross_entropy(logits.reshape(B * n, classes), labels.reshape(B * n), reduction="none")
        acc = (logits.argmax(-1) == labels).float().mean(1)
        return ce.view(B, n).mean(1), acc.detach()
