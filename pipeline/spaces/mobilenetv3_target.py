"""MobileNetV3 networks on timm's blocks: the target network (generated weights), its shared part, the
benchmark network, and a FLOPs count with torch's FlopCounterMode (the cross-check of cost()).

Both networks decode the architecture's timm block strings (mobilenetv3_arch.arch_def) with timm's
`decode_arch_def` and build the stages with `EfficientNetBuilder`: `InvertedResidual` blocks with timm's
`SqueezeExcite` (hard-sigmoid gate, ReLU inside, width from the hidden channels) and hard-swish / ReLU as
MobileNetV3-Large has them, channel rounding `round_channels(c, width_mult)` (= OFA's make_divisible).

Target network (`MobileNetV3TargetNet`, run with functional_call). Generated per block, from the block's
node of its stage graph: the expand 1x1, the depthwise kxk, the project 1x1, SE's two 1x1 convs and their
biases. BN inside searched blocks uses batch statistics and has **no affine** (decision): a block's BN
widths change with its expansion and position, so a shared affine would need slicing per architecture,
and a generated gamma would start at the hypernetwork's zero-mean scale instead of 1; the conv after each
BN absorbs the scale (as in DARTS' search network). The stem, the fixed first block, the final 960 expand
and the head have the same shapes in every architecture: they are `shared.` parameters, their BN with a
(shared) affine and batch statistics. Depthwise kernels (`dw_heads`):
- `crop7`: the block holds a 7x7 kernel; the forward uses its centre kxk, multiplied by 7/k so the crop
  keeps the Kaiming scale the hypernetwork gives a 7x7 fan-in (OFA's kernel sharing, without its learned
  transform matrices);
- `per_size`: timm's own kxk conv, from a head per kernel size.

Benchmark network (`build_benchmark_net`): timm's `MobileNetV3` class itself, with the same block strings,
ordinary BN (affine, running statistics), OFA's head (final 1x1 expand + BN, pooled 1x1 conv without bias
or BN, dropout 0.1, linear) and timm's initialisation.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spaces.base import ParamSlot, TargetNet
from pipeline.spaces.mobilenetv3_arch import (MAX_KERNEL, STEM_WIDTH, Arch, Widths, arch_def,
                                              make_divisible, stage_block_strings)

# target-parameter name inside a block -> hypernetwork head kind ("dw" gets its size below)
_SLOT_KINDS = {"conv_pw.weight": "pw_expand", "conv_dw.weight": "dw", "conv_pwl.weight": "pw_project",
               "se.conv_reduce.weight": "se_reduce", "se.conv_reduce.bias": "se_reduce_bias",
               "se.conv_expand.weight": "se_expand", "se.conv_expand.bias": "se_expand_bias"}
BENCHMARK_DROPOUT = 0.1  # OFAMobileNetV3's dropout_rate


def _timm():
    """timm's pieces (imported on first use: timm's import takes a second, the space's CLI needs none)."""
    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, SqueezeExcite
    from timm.models._efficientnet_builder import EfficientNetBuilder, decode_arch_def, round_channels
    return get_act_layer, ConvBnAct, DepthwiseSeparableConv, SqueezeExcite, EfficientNetBuilder, \
        decode_arch_def, round_channels


def _se_layer():
    _, _, _, SqueezeExcite, _, _, round_channels = _timm()
    # timm's MobileNetV3 SE: hard-sigmoid gate, ReLU whatever the block's activation, width rounded to 8
    return functools.partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU,
                             rd_round_fn=round_channels)


def _batch_stat_bn(affine: bool):
    """BN that always normalises with the batch's statistics (no running buffers: nothing to predict)."""
    return functools.partial(nn.BatchNorm2d, affine=affine, track_running_stats=False)


def build_stages(arch: Arch, width_mult: float, norm_layer: Any) -> list[nn.Sequential]:
    """The 5 searched stages as timm builds them (one nn.Sequential of InvertedResidual blocks each)."""
    get_act_layer, _, _, _, EfficientNetBuilder, decode_arch_def, round_channels = _timm()
    builder = EfficientNetBuilder(output_stride=32, pad_type="", round_chs_fn=functools.partial(round_channels,
                                  multiplier=width_mult), se_from_exp=True, act_layer=get_act_layer("hard_swish"),
                                  norm_layer=norm_layer, se_layer=_se_layer())
    return builder(Widths.at(width_mult).first, decode_arch_def(stage_block_strings(arch)))


class CroppedDepthwise(nn.Module):
    """A depthwise kxk conv whose weight is the centre of a generated 7x7 kernel (see the module doc)."""

    def __init__(self, channels: int, kernel: int, stride: int):
        super().__init__()
        self.channels, self.kernel, self.stride = channels, kernel, stride
        self.weight = nn.Parameter(torch.empty(channels, 1, MAX_KERNEL, MAX_KERNEL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, off = self.kernel, (MAX_KERNEL - self.kernel) // 2
        w = self.weight[:, :, off:off + k, off:off + k] * (MAX_KERNEL / k)
        return F.conv2d(x, w, stride=self.stride, padding=k // 2, groups=self.channels)


class MobileNetV3Shared(nn.Module):
    """Target parameters no encoded node owns: stem, fixed first block, final expand, head, classifier."""

    def __init__(self, width_mult: float, num_classes: int):
        super().__init__()
        get_act_layer, ConvBnAct, DepthwiseSeparableConv, _, _, _, _ = _timm()
        w = Widths.at(width_mult)
        hswish, bn = get_act_layer("hard_swish"), _batch_stat_bn(affine=True)
        self.stem = ConvBnAct(3, w.stem, 3, stride=2, act_layer=hswish, norm_layer=bn)
        self.first_block = DepthwiseSeparableConv(w.stem, w.first, 3, 1, act_layer=nn.ReLU, norm_layer=bn)
        self.final_expand = ConvBnAct(w.stages[-1], w.final, 1, act_layer=hswish, norm_layer=bn)
        self.head = nn.Conv2d(w.final, w.head, 1, bias=False)
        self.classifier = nn.Linear(w.head, num_classes)

    def features_in(self, x: torch.Tensor) -> torch.Tensor:
        return self.first_block(self.stem(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        return self.classifier(F.hardswish(self.head(x)).flatten(1))


class MobileNetV3TargetNet(TargetNet):
    """The architecture's target network at `width_mult`; block i of stage s is owned by node i + 1 of
    stage graph s (node 0 is the stage's input node)."""

    def __init__(self, arch: Arch, width_mult: float, dw_heads: str, num_classes: int, device: Any = None):
        super().__init__()
        with torch.device(device or "cpu"):
            self.shared = MobileNetV3Shared(width_mult, num_classes)
            self.stages = nn.ModuleList(build_stages(arch, width_mult, _batch_stat_bn(affine=False)))
            if dw_heads == "crop7":
                for stage in self.stages:
                    for block in stage:
                        dw = block.conv_dw
                        block.conv_dw = CroppedDepthwise(dw.in_channels, dw.kernel_size[0], dw.stride[0])
        self.param_slots: list[ParamSlot] = []
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage):
                for pname, p in block.named_parameters():
                    kind = _SLOT_KINDS.get(pname)
                    if kind is None:  # a timm change we do not know how to generate: fail loudly
                        raise RuntimeError(f"MobileNetV3 target: unexpected parameter {pname!r} in stage {s} block {i}")
                    if kind == "dw":
                        kind = f"dw{p.shape[-1]}x{p.shape[-1]}"
                    self.param_slots.append(ParamSlot(f"stages.{s}.{i}.{pname}", s, i + 1, kind, tuple(p.shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's depthwise convolutions run several times faster in it on a CPU (measured:
        # ~4x for the benchmark network, ~1.3x for a whole HyperNAS step); same values
        x = self.shared.features_in(x.contiguous(memory_format=torch.channels_last))
        for stage in self.stages:
            x = stage(x)
        return self.shared.logits(x)


def build_benchmark_net(arch: Arch, num_classes: int, width_mult: float = 1.0) -> nn.Module:
    """timm's MobileNetV3 from the architecture's block strings (see the module doc)."""
    from timm.models.mobilenetv3 import MobileNetV3
    get_act_layer, _, _, _, _, decode_arch_def, round_channels = _timm()
    return MobileNetV3(decode_arch_def(arch_def(arch)), num_classes=num_classes, stem_size=STEM_WIDTH,
                       fix_stem=False, num_features=make_divisible(1280 * width_mult), head_bias=False,
                       round_chs_fn=functools.partial(round_channels, multiplier=width_mult),
                       act_layer=get_act_layer("hard_swish"), se_layer=_se_layer(), se_from_exp=True,
                       norm_layer=nn.BatchNorm2d, drop_rate=BENCHMARK_DROPOUT)


def flop_counter_macs(net: nn.Module, image_size: int) -> int:
    """Multiply-adds of one image through `net`, counted by torch's FlopCounterMode (it counts 2 FLOPs per
    multiply-add of convolutions and matrix products; nothing else)."""
    from torch.utils.flop_counter import FlopCounterMode
    was = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 3, image_size, image_size))
    finally:
        net.train(was)
    return counter.get_total_flops() // 2


__all__ = ["MobileNetV3TargetNet", "MobileNetV3Shared", "CroppedDepthwise", "build_benchmark_net", "build_stages",
           "flop_counter_macs"]
