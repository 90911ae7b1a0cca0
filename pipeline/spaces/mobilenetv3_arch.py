"""MobileNetV3 (once-for-all) architectures as plain data: the layout, the text forms, timm's block strings
and the cost count. No torch, no timm here: the space's CLI and the table builders parse and count
architectures without loading either.

Layout (OFA's `OFAMobileNetV3`, MobileNetV3-Large's widths, strides, activations and SE placement):

  stem        conv 3x3 stride 2, 16 channels, BN, hard-swish
  first block depthwise-separable 3x3, 16 -> 16, ReLU, residual (fixed, not searched)
  stage 1..5  2-4 inverted-residual blocks each: widths 24, 40, 80, 112, 160; first-block strides
              2, 2, 2, 1, 2; ReLU in stages 1-2, hard-swish in 3-5; squeeze-excite in stages 2, 4, 5
  head        1x1 conv to 960 + BN + hard-swish, global average pool, 1x1 conv to 1280 (no BN, no bias)
              + hard-swish, dropout, linear classifier

A block is (kernel, expansion), kernel in {3, 5, 7}, expansion in {3, 4, 6}; its hidden width is
make_divisible(in_channels x expansion, 8), its SE width make_divisible(hidden / 4, 8) (OFA and timm agree
for every width of this space). An architecture is a tuple of 5 stages, each a tuple of its 2-4 blocks:

  canonical string  k3e4-k5e6|k3e3-k3e3-k7e6|k5e4-k5e4|k3e6-k3e6-k3e6-k3e6|k7e3-k5e3
                    (stages split by '|', blocks by '-')
  OFA JSON          {"ks": [20 kernels], "e": [20 expansions], "d": [5 depths]}: entry 4 s + i is block i
                    of stage s; entries beyond a stage's depth are ignored, as OFA ignores them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pipeline.errors import ArchError

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)
DEPTHS = (2, 3, 4)
MAX_DEPTH = max(DEPTHS)
MAX_KERNEL = max(KERNELS)
CHANNEL_DIVISOR = 8
SE_RATIO = 0.25


@dataclass(frozen=True)
class StageSpec:
    width: int   # output channels at width multiplier 1.0
    stride: int  # stride of the stage's first block
    act: str     # "relu" | "hard_swish"
    se: bool     # squeeze-excite in every block


STAGES = (StageSpec(24, 2, "relu", False), StageSpec(40, 2, "relu", True), StageSpec(80, 2, "hard_swish", False),
          StageSpec(112, 1, "hard_swish", True), StageSpec(160, 2, "hard_swish", True))
NUM_STAGES = len(STAGES)
STEM_WIDTH = 16
FIRST_BLOCK_WIDTH = 16
FINAL_EXPAND_WIDTH = 960
HEAD_WIDTH = 1280

Block = tuple[int, int]             # (kernel, expansion)
Arch = tuple[tuple[Block, ...], ...]  # 5 stages of 2-4 blocks

_BLOCK_RE = re.compile(r"^k(\d+)e(\d+)$")
_OFA_KEYS = ("ks", "e", "d")


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round to the nearest multiple of `divisor`, never below divisor or 10 % below `value` (OFA's and
    timm's `make_divisible`: the channel rounding of every MobileNet)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


@dataclass(frozen=True)
class Widths:
    """Channel widths of a network at one width multiplier (OFA's rule: every width scaled and rounded)."""

    stem: int
    first: int
    stages: tuple[int, ...]
    final: int
    head: int

    @classmethod
    def at(cls, mult: float) -> "Widths":
        md = lambda c: make_divisible(c * mult)  # noqa: E731
        return cls(md(STEM_WIDTH), md(FIRST_BLOCK_WIDTH), tuple(md(s.width) for s in STAGES),
                   md(FINAL_EXPAND_WIDTH), md(HEAD_WIDTH))

    def block_in(self, stage: int, block: int) -> int:
        """Input channels of block `block` of stage `stage`."""
        if block > 0:
            return self.stages[stage]
        return self.first if stage == 0 else self.stages[stage - 1]


def hidden_width(in_channels: int, expansion: int) -> int:
    return make_divisible(in_channels * expansion)


def se_width(hidden: int) -> int:
    return make_divisible(hidden * SE_RATIO)


# -- text forms ------------------------------------------------------------------------------------

def _where(text: Any) -> str:
    return f"MobileNetV3 architecture {text if isinstance(text, str) else json.dumps(text)!r}"


def check_arch(stages: Any, text: Any) -> Arch:
    """Validate 5 stages of (kernel, expansion) blocks; ArchError naming `text` and the violated range."""
    if len(stages) != NUM_STAGES:
        raise ArchError(f"{_where(text)}: has {len(stages)} stages, the space has {NUM_STAGES}")
    for s, blocks in enumerate(stages, 1):
        if len(blocks) not in DEPTHS:
            raise ArchError(f"{_where(text)}: stage {s} has depth {len(blocks)}, outside the space's depths "
                            f"{DEPTHS[0]}..{DEPTHS[-1]}")
        for i, (k, e) in enumerate(blocks, 1):
            if k not in KERNELS:
                raise ArchError(f"{_where(text)}: stage {s} block {i} has kernel {k}, not one of the space's "
                                f"kernels {', '.join(map(str, KERNELS))}")
            if e not in EXPANSIONS:
                raise ArchError(f"{_where(text)}: stage {s} block {i} has expansion {e}, not one of the space's "
                                f"expansions {', '.join(map(str, EXPANSIONS))}")
    return tuple(tuple((int(k), int(e)) for k, e in blocks) for blocks in stages)


def parse_string(text: str) -> Arch:
    groups = text.split("|")
    if len(groups) != NUM_STAGES:
        raise ArchError(f"{_where(text)}: expected {NUM_STAGES} stages separated by '|' "
                        f"(e.g. 'k3e4-k5e6|k3e3-k3e3|...'), got {len(groups)}")
    stages = []
    for s, group in enumerate(groups, 1):
        blocks = []
        for item in group.strip().split("-"):
            m = _BLOCK_RE.match(item.strip())
            if not m:
                raise ArchError(f"{_where(text)}: stage {s} block {item!r} is not of the form 'k<kernel>e<expansion>' "
                                f"(e.g. 'k5e6')")
            blocks.append((int(m.group(1)), int(m.group(2))))
        stages.append(tuple(blocks))
    return check_arch(stages, text)


def _int_list(obj: Mapping[str, Any], key: str, length: int, text: Any) -> list[int]:
    values = obj[key]
    if not isinstance(values, list) or len(values) != length:
        got = f"{len(values)} entries" if isinstance(values, list) else f"a {type(values).__name__}"
        what = "one depth per stage" if key == "d" else f"{NUM_STAGES} stages x {MAX_DEPTH} blocks"
        raise ArchError(f"{_where(text)}: {key!r} must be a list of {length} integers ({what}), got {got}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ArchError(f"{_where(text)}: {key}[{i}] = {v!r} is not an integer")
        out.append(v)
    return out


def parse_ofa(obj: Any, text: Any = None) -> Arch:
    """OFA's `{"ks": [20], "e": [20], "d": [5]}` (a dict or its JSON text)."""
    text = obj if text is None else text
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise ArchError(f"{_where(text)}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ArchError(f"{_where(text)}: OFA JSON must be an object with keys ks, e, d")
    missing = [k for k in _OFA_KEYS if k not in obj]
    extra = sorted(set(obj) - set(_OFA_KEYS))
    if missing or extra:
        hint = " (the resolution is not part of the architecture: it is the space setting benchmark_image_size)" \
            if "r" in extra else ""
        raise ArchError(f"{_where(text)}: OFA JSON needs exactly the keys ks, e, d"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(map(repr, extra))}{hint}" if extra else ""))
    n = NUM_STAGES * MAX_DEPTH
    ks, es, ds = _int_list(obj, "ks", n, text), _int_list(obj, "e", n, text), _int_list(obj, "d", NUM_STAGES, text)
    for s, d in enumerate(ds):
        if d not in DEPTHS:
            raise ArchError(f"{_where(text)}: d[{s}] = {d} (stage {s + 1}) is outside the space's depths "
                            f"{DEPTHS[0]}..{DEPTHS[-1]}")
    stages = [tuple((ks[MAX_DEPTH * s + i], es[MAX_DEPTH * s + i]) for i in range(d)) for s, d in enumerate(ds)]
    return check_arch(stages, text)


def parse_arch(text: Any) -> Arch:
    """The canonical string or OFA JSON (text or dict); an already parsed arch passes through validated."""
    if isinstance(text, dict):
        return parse_ofa(text)
    if isinstance(text, tuple):
        try:
            return check_arch(text, str(text))
        except (TypeError, ValueError):
            raise ArchError(f"{_where(str(text))}: not 5 stages of (kernel, expansion) pairs") from None
    if not isinstance(text, str):
        raise ArchError(f"MobileNetV3 architecture must be a string or OFA JSON object, got "
                        f"{type(text).__name__}: {text!r}")
    s = text.strip()
    if s.startswith("{"):
        return parse_ofa(s, text)
    return parse_string(s)


def to_string(arch: Arch) -> str:
    return "|".join("-".join(f"k{k}e{e}" for k, e in blocks) for blocks in arch)


def to_ofa(arch: Arch) -> dict[str, list[int]]:
    """OFA's dict; the unused entries of a stage repeat its last block (any value would do: OFA ignores them)."""
    ks, es = [], []
    for blocks in arch:
        padded = list(blocks) + [blocks[-1]] * (MAX_DEPTH - len(blocks))
        ks += [k for k, _ in padded]
        es += [e for _, e in padded]
    return {"ks": ks, "e": es, "d": [len(b) for b in arch]}


# -- timm block strings ----------------------------------------------------------------------------

def stage_block_strings(arch: Arch) -> list[list[str]]:
    """timm `arch_def` rows of the 5 searched stages, e.g. 'ir_r1_k5_s2_e3_c40_se0.25_nre'."""
    rows = []
    for spec, blocks in zip(STAGES, arch):
        row = []
        for i, (k, e) in enumerate(blocks):
            s = spec.stride if i == 0 else 1
            row.append(f"ir_r1_k{k}_s{s}_e{e}_c{spec.width}" + ("_se0.25" if spec.se else "")
                       + ("_nre" if spec.act == "relu" else ""))
        rows.append(row)
    return rows


def arch_def(arch: Arch) -> list[list[str]]:
    """The whole network's timm `arch_def` (what timm's `_gen_mobilenet_v3` builds from): the fixed first
    block, the 5 stages and the final 1x1 expansion; default activation hard-swish ('_nre' = ReLU)."""
    return ([[f"ds_r1_k3_s1_e1_c{FIRST_BLOCK_WIDTH}_nre"]] + stage_block_strings(arch)
            + [[f"cn_r1_k1_s1_c{FINAL_EXPAND_WIDTH}"]])


# -- cost ------------------------------------------------------------------------------------------

def _conv_out(side: int, stride: int) -> int:
    return -(-side // stride)  # odd kernels with k // 2 padding: ceil(side / stride)


def count_cost(arch: Arch, width_mult: float, image_size: int, classes: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of the benchmark network, batch 1: every conv and linear weight and bias,
    BN affine; multiply-adds of convolutions (SE's 1x1 convs on the pooled map included) and linear layers,
    i.e. what torch's FlopCounterMode counts, halved. BN, activations, pooling, SE's gating product and the
    residual additions are not counted (the convention of OFA's and the MobileNet papers' FLOPs)."""
    w = Widths.at(width_mult)
    side = _conv_out(image_size, 2)
    params = 3 * w.stem * 9 + 2 * w.stem
    macs = 3 * w.stem * 9 * side * side
    params += w.stem * 9 + 2 * w.stem + w.stem * w.first + 2 * w.first    # depthwise-separable first block
    macs += (w.stem * 9 + w.stem * w.first) * side * side
    cin = w.first
    for s, (spec, blocks) in enumerate(zip(STAGES, arch)):
        cout = w.stages[s]
        for i, (k, e) in enumerate(blocks):
            out = _conv_out(side, spec.stride if i == 0 else 1)
            mid = hidden_width(cin, e)
            params += cin * mid + 2 * mid + mid * k * k + 2 * mid + mid * cout + 2 * cout
            macs += cin * mid * side * side + (mid * k * k + mid * cout) * out * out
            if spec.se:
                rd = se_width(mid)
                params += 2 * mid * rd + rd + mid
                macs += 2 * mid * rd
            side, cin = out, cout
    params += cin * w.final + 2 * w.final + w.final * w.head + w.head * classes + classes
    macs += cin * w.final * side * side + w.final * w.head + w.head * classes
    return params, macs


def cost_m(arch: Arch, width_mult: float, image_size: int, classes: int) -> dict[str, float]:
    params, macs = count_cost(arch, width_mult, image_size, classes)
    return {"params": params / 1e6, "flops": macs / 1e6}


def smallest() -> Arch:
    return tuple(((KERNELS[0], EXPANSIONS[0]),) * DEPTHS[0] for _ in STAGES)


def largest() -> Arch:
    return tuple(((KERNELS[-1], EXPANSIONS[-1]),) * DEPTHS[-1] for _ in STAGES)


def space_size() -> int:
    per_stage = sum((len(KERNELS) * len(EXPANSIONS)) ** d for d in DEPTHS)
    return per_stage ** NUM_STAGES


__all__ = ["KERNELS", "EXPANSIONS", "DEPTHS", "STAGES", "StageSpec", "Widths", "Arch", "make_divisible",
           "parse_arch", "to_string", "to_ofa", "arch_def", "stage_block_strings", "count_cost", "cost_m",
           "smallest", "largest", "space_size", "hidden_width", "se_width"]
