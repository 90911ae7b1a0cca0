"""One HyperNAS step on the largest ViT-base architecture (AutoFormer supernet-base: embed 624, depth 16, MLP
ratio 4, 10 heads, Q-K-V 640; 76.8 M generated + shared target parameters) with the paper profile
(configs/vit.yaml: GCN 3 x 256, chunked hypernetwork 4 x 128, 128 aux images at 224 px, bf16 autocast).

    python -m benchmarks.vit_step --device cuda     # on a GPU: measured at the paper's setting (a few minutes)
    python -m benchmarks.vit_step                   # CPU: measured at lower settings, projected (< ~5 min)

A step is what the trainer does per architecture-step with train.micro_batch=1: encode, regress, generate the
target's weights, run it on the images, the adaptive loss, backward and the Adam step (pipeline.distributed's
Runtime forward/backward/step on the trainer's own Objective).

On a GPU: median wall time of `--steps` steps after `--warmup`, and torch.cuda.max_memory_allocated.
On the CPU (no GPU here), at the paper's architecture and model but fewer images and lower resolutions:
- time: 5 points (images, side) = (1, 224), (2, 224), (4, 224), (2, 112), (2, 160), each the median of
  `--steps` steps in this process's CPU seconds (a shared machine's wall time measures the other jobs too);
  fitted by least squares as t = a + c * images * F(side), F = the target's forward FLOPs per image at that
  side (vit_arch.count_cost), so `a` is the per-step cost that does not grow with the images (GCN, weight
  generation, Adam), then extrapolated to (128, 224). The residuals say how well that holds.
- FLOPs of a step: torch's FlopCounterMode over forward + backward at (1, 224) and (2, 224) (linear in the
  images), plus attention's q k^T and attn v (the CPU's fused attention kernel is invisible to the counter:
  counted as 3 x forward), extrapolated to 128 images. The GPU time is then FLOPs / (MFU x peak): an
  *assumption* (MFU 0.25-0.5 of the bf16 dense peak), not a measurement.
- memory: bytes of the tensors autograd saves in the forward (bf16 autocast on the CPU; parameters excluded,
  each storage once) at 1, 2, 4 images, fitted linearly in the images and extrapolated to 128, plus fp32
  parameters, gradients and Adam's two moments (16 bytes per predictor parameter). Transient buffers of the
  backward and the allocator's slack come on top.
Paper schedule: 200 epochs x N training architectures, one step each (N / 10 updates per epoch).
Writes results/bench_vit/summary.md and summary.json.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.provenance import code_line
from pipeline import distributed
from pipeline import train as T
from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.objective import MicroBatch
from pipeline.spaces import space_from_config
from pipeline.spaces.base import SearchSpace
from pipeline.spaces.vit_arch import count_cost, extremes
from pipeline.utils.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
PAPER_EPOCHS, PAPER_GPU_DAYS = 200, 2.0
TRAIN_ARCHS = (100, 200, 500, 1000)
CPU_POINTS = ((1, 224), (2, 224), (4, 224), (2, 112), (2, 160))
# bf16 dense peak (TFLOP/s, vendor datasheets): what the GPU projection divides by
GPU_PEAK_TFLOPS = {"A100 (312 TFLOP/s)": 312.0, "H100 SXM / H200 (989 TFLOP/s)": 989.0}
MFU_RANGE = (0.25, 0.5)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(config: str, overrides: list[str], classes: int, device: torch.device):
    cfg = load_config(REPO / config, overrides)
    T.setup_runtime(cfg)
    space = space_from_config(cfg.space)
    objective = T.build_objective(cfg, space, classes)  # the space builds its hypernetwork (ViT: chunked)
    opt, _ = T.build_optimizer(cfg, objective)
    rt = distributed.Runtime(device=device, precision=cfg.train.precision, grad_clip=cfg.train.grad_clip)
    rt.wrap(objective, opt)
    return cfg, space, objective, rt


def micro_batch(space: SearchSpace, arch, images: int, side: int, classes: int, seed: int = 0) -> MicroBatch:
    g = torch.Generator().manual_seed(seed)
    return MicroBatch(graphs=build_graph_table(space, [arch]).select(torch.tensor([0])), archs=[arch],
                      targets=torch.zeros(1), images=torch.randn(1, images, 3, side, side, generator=g),
                      labels=torch.randint(0, classes, (1, images), generator=g),
                      drop_seeds=torch.tensor([seed]))


def one_step(rt: distributed.Runtime, mb: MicroBatch) -> None:
    rt.zero_grad()
    loss, _ = rt.forward(mb)
    rt.backward(loss)
    rt.step()


def time_steps(rt: distributed.Runtime, mb: MicroBatch, steps: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall seconds and this process's CPU seconds of each timed step."""
    cuda = rt.device.type == "cuda"
    wall, cpu = [], []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(rt.device)
        t0, c0 = time.perf_counter(), time.process_time()
        one_step(rt, mb)
        if cuda:
            torch.cuda.synchronize(rt.device)
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def step_flops(rt: distributed.Runtime, mb: MicroBatch, arch, side: int, patch: int) -> float:
    """FLOPs of forward + backward: the counter's (matmuls, convolution) + attention's (see the module doc)."""
    rt.zero_grad()
    with FlopCounterMode(display=False) as counter:
        loss, _ = rt.forward(mb)
        rt.backward(loss)
    tokens = (side // patch) ** 2 + 1
    attention = sum(4 * tokens * tokens * layer.qkv_dim for layer in arch.layers) * mb.images.shape[1]
    return float(counter.get_total_flops() + 3 * attention)


def saved_activation_bytes(rt: distributed.Runtime, mb: MicroBatch) -> int:
    params = {p.untyped_storage().data_ptr() for p in rt.objective.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = rt.forward(mb)
    del loss
    return sum(seen.values())


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    A = np.stack([np.ones_like(x), x], 1)
    (a, c), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(a), float(c)


def mean_flops_ratio(space: SearchSpace, samples: int = 2000) -> float:
    """Mean FLOPs of sampled architectures over the largest one's (benchmark network, 224 px)."""
    import random
    rng = random.Random(0)
    largest = space.cost(extremes(space.supernet)[1])["flops"]
    return float(np.mean([space.cost(space.sample(rng))["flops"] for _ in range(samples)]) / largest)


def gpu_days(step_s: float, archs: int) -> float:
    return PAPER_EPOCHS * archs * step_s / 86400.0


def run_measured(args, config: str, device: torch.device, overrides: tuple[str, ...] = ()) -> dict:
    """The step at the requested setting, measured (a GPU; on the CPU only as the tests' smoke check)."""
    overrides = [f"train.precision={args.precision}", f"train.device={device.type}",
                 f"space.settings.target_image_size={args.image_size}", f"model.hyper.image_size={args.image_size}",
                 f"model.hyper.images_per_arch={args.images}",
                 f"space.settings.checkpoint_blocks={str(args.checkpoint_blocks).lower()}", *overrides]
    cfg, space, objective, rt = build(config, overrides, args.classes, device)
    arch = extremes(space.supernet)[1]
    mb = micro_batch(space, arch, args.images, args.image_size, args.classes)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, _ = time_steps(rt, mb, args.steps, args.warmup)
    step = float(np.median(times))
    return {"mode": "measured", "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
            "arch": space.to_str(arch), "images": args.images, "image_size": args.image_size,
            "precision": args.precision, "checkpoint_blocks": args.checkpoint_blocks, "step_s_median": step,
            "step_s_mean": float(np.mean(times)), "steps": len(times),
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"),
            "predictor_params": sum(p.numel() for p in objective.parameters()),
            "mean_flops_ratio": mean_flops_ratio(space), "gpu_days": {n: gpu_days(step, n) for n in TRAIN_ARCHS}}


def run_cpu(args, config: str) -> dict:
    device = torch.device("cpu")
    rows = []
    flops, saved = {}, {}
    built: dict[int, tuple] = {}
    for images, side in CPU_POINTS:
        if side not in built:
            overrides = [f"train.precision={args.precision}", "train.device=cpu", f"train.threads={args.threads}",
                         f"space.settings.target_image_size={side}", f"model.hyper.image_size={side}"]
            built[side] = build(config, overrides, args.classes, device)
        cfg, space, objective, rt = built[side]
        arch = extremes(space.supernet)[1]
        patch = cfg.space.settings["target_patch_size"]
        mb = micro_batch(space, arch, images, side, args.classes)
        wall, cpu = time_steps(rt, mb, args.steps, args.warmup)
        f_img = count_cost(arch, side, patch, args.classes)["flops"] * 1e6
        rows.append({"images": images, "image_size": side, "cpu_s_median": float(np.median(cpu)), "cpu_s_all": cpu,
                     "wall_s_median": float(np.median(wall)), "target_fwd_flops": images * f_img})
        if side == args.image_size:
            saved[images] = saved_activation_bytes(rt, mb)
            if images <= 2:
                flops[images] = step_flops(rt, mb, arch, side, patch)
        print(f"[cpu] {images} images at {side} px: {np.median(cpu):.2f} CPU s/step ({np.median(wall):.2f} s wall)",
              flush=True)
    cfg, space, objective, rt = built[args.image_size]
    arch = extremes(space.supernet)[1]
    patch = cfg.space.settings["target_patch_size"]
    x = np.array([r["target_fwd_flops"] for r in rows])
    y = np.array([r["cpu_s_median"] for r in rows])
    a, c = fit_line(x, y)
    for r in rows:
        r["fit_s"] = a + c * r["target_fwd_flops"]
        r["residual_pct"] = 100.0 * (r["cpu_s_median"] - r["fit_s"]) / r["fit_s"]
    full_fwd = args.images * count_cost(arch, args.image_size, patch, args.classes)["flops"] * 1e6
    cpu_full = a + c * full_fwd
    f_per_image = flops[2] - flops[1]
    f0 = flops[1] - f_per_image
    flops_full = f0 + f_per_image * args.images
    n_img = np.array(sorted(saved), dtype=float)
    s0, s1 = fit_line(n_img, np.array([saved[int(n)] for n in n_img], dtype=float))
    saved_full = s0 + s1 * args.images
    n_params = sum(p.numel() for p in objective.parameters())
    persistent = 16 * n_params
    proj = {}
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        lo, hi = (flops_full / (m * peak * 1e12) for m in reversed(MFU_RANGE))
        proj[gpu] = {"step_s": [lo, hi], "gpu_days": {n: [gpu_days(lo, n), gpu_days(hi, n)] for n in TRAIN_ARCHS},
                     "archs_for_paper_2_gpu_days": [PAPER_GPU_DAYS * 86400 / (PAPER_EPOCHS * s) for s in (hi, lo)]}
    return {"mode": "projected from CPU", "device": cpu_name(),
            "threads": torch.get_num_threads(), "arch": space.to_str(arch), "precision": args.precision,
            "points": rows, "fit": {"a_s": a, "c_s_per_flop": c}, "cpu_step_s_projected": cpu_full,
            "flops_measured": {str(k): v for k, v in flops.items()}, "flops_step_projected": flops_full,
            "flops_step_fixed": f0, "flops_per_image": f_per_image,
            "saved_bytes_measured": {str(k): v for k, v in saved.items()},
            "saved_bytes_fit": {"intercept": s0, "per_image": s1}, "saved_bytes_projected": saved_full,
            "predictor_params": n_params, "persistent_bytes": persistent,
            "memory_gib_projected": (saved_full + persistent) / 2**30, "gpu": proj,
            "mean_flops_ratio": mean_flops_ratio(space),
            "images": args.images, "image_size": args.image_size}


def report(r: dict, argv: list[str]) -> str:
    cmd = "python -m benchmarks.vit_step " + " ".join(argv)
    lines = ["# One HyperNAS step, largest ViT-base architecture", "",
             f"`{cmd.strip()}` — {r['mode']} on {r['device']}. Architecture `{r['arch'][:40]}…` (embed 624, depth "
             f"16, MLP ratio 4, 10 heads, Q-K-V 640), paper profile (configs/vit.yaml), {r['precision']}, "
             f"{r['images']} images at {r['image_size']} px, one architecture per step.", "",
             code_line() + ".", ""]
    if r["mode"] == "measured":
        lines += [f"- step: {r['step_s_median'] * 1000:.0f} ms (median of {r['steps']}); peak memory "
                  f"{r['peak_mem_gib']:.1f} GiB (checkpoint_blocks={r['checkpoint_blocks']})",
                  f"- predictor parameters: {r['predictor_params'] / 1e6:.2f} M", "",
                  "| training archs N | GPU-days (200 epochs x N steps) |", "|---|---|"]
        lines += [f"| {n} | {d:.2f} |" for n, d in r["gpu_days"].items()]
        lines += ["", f"The largest architecture is the worst case (a sampled supernet-base architecture has "
                  f"{r['mean_flops_ratio']:.2f}x its FLOPs on average). Paper: ViT ~{PAPER_GPU_DAYS:g} GPU-days."]
        return "\n".join(lines) + "\n"
    lines += [f"No GPU here: measured on the CPU ({r['threads']} torch thread(s)) at lower settings and projected "
              f"(method: benchmarks/vit_step.py docstring).", "",
              "## CPU measurements (full architecture and model)", "",
              "| images | side | CPU s/step (median) | fit | residual | wall s/step |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['images']} | {p['image_size']} | {p['cpu_s_median']:.2f} | {p['fit_s']:.2f} | "
              f"{p['residual_pct']:+.1f} % | {p['wall_s_median']:.2f} |" for p in r["points"]]
    fit = r["fit"]
    lines += ["", "Times are this process's CPU seconds (the machine is shared: wall time measures the other jobs "
              "too). Fit t = a + c · images · F(side), F = the target's forward FLOPs per image: a = "
              f"{fit['a_s']:.2f} CPU s (GCN, weight generation, Adam), c = {fit['c_s_per_flop'] * 1e12:.1f} CPU s per "
              f"target forward TFLOP. Extrapolated CPU step at {r['images']} x {r['image_size']} px: "
              f"{r['cpu_step_s_projected']:.0f} CPU s.", "",
              "## FLOPs and memory of the full step (projected)", "",
              f"- FLOPs per step (forward + backward): {r['flops_step_projected'] / 1e12:.2f} TFLOP = "
              f"{r['flops_step_fixed'] / 1e12:.3f} TFLOP fixed (GCN, hypernetwork) + {r['images']} x "
              f"{r['flops_per_image'] / 1e12:.4f} TFLOP per image (counted at 1 and 2 images)",
              f"- saved activations: {r['saved_bytes_fit']['intercept'] / 2**30:.2f} GiB + "
              f"{r['saved_bytes_fit']['per_image'] / 2**20:.1f} MiB per image (measured at "
              f"{', '.join(r['saved_bytes_measured'])} images) -> {r['saved_bytes_projected'] / 2**30:.1f} GiB at "
              f"{r['images']} images",
              f"- predictor parameters {r['predictor_params'] / 1e6:.2f} M: fp32 weights + grads + Adam "
              f"{r['persistent_bytes'] / 2**30:.2f} GiB",
              f"- estimated peak: {r['memory_gib_projected']:.1f} GiB + backward transients and allocator slack", "",
              f"## Projected GPU time (assumed MFU {MFU_RANGE[0]}-{MFU_RANGE[1]} of the bf16 dense peak)", "",
              "| GPU | s/step | " + " | ".join(f"GPU-days N={n}" for n in TRAIN_ARCHS) + " | N for 2 GPU-days |",
              "|---|---|" + "---|" * len(TRAIN_ARCHS) + "---|"]
    for gpu, p in r["gpu"].items():
        days = " | ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in p["gpu_days"].values())
        n_lo, n_hi = p["archs_for_paper_2_gpu_days"]
        lines.append(f"| {gpu} | {p['step_s'][0]:.3f}-{p['step_s'][1]:.3f} | {days} | {n_lo:.0f}-{n_hi:.0f} |")
    lines += ["", "GPU-days = 200 epochs x N architecture-steps x s/step (N / 10 updates per epoch); the largest "
              f"architecture is the worst case (a sampled supernet-base architecture has {r['mean_flops_ratio']:.2f}x "
              f"its FLOPs on average). Paper: ViT ~{PAPER_GPU_DAYS:g} GPU-days. Measure on a GPU with "
              "`python -m benchmarks.vit_step --device cuda`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--config", default="configs/vit.yaml")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--images", type=int, default=128, help="aux images per step (the paper's 128)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=None, help="timed steps per point (default: cuda 10, cpu 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: cuda 3, cpu 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads (the machine is shared)")
    p.add_argument("--checkpoint-blocks", action="store_true", help="GPU: recompute target blocks in backward")
    p.add_argument("--out", default="results/bench_vit")
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    cuda = args.device == "cuda"
    args.steps = args.steps if args.steps is not None else (10 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible (the CPU projection runs without --device)",
              file=sys.stderr)
        return 2
    if not cuda and args.image_size != 224:
        print("error: the CPU projection measures at 224 px and below; --image-size applies to --device cuda",
              file=sys.stderr)
        return 2
    result = run_measured(args, args.config, torch.device("cuda")) if cuda else run_cpu(args, args.config)
    text = report(result, argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", result)
    atomic_write_text(out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
