"""GPU check: the paper profile (configs/nb201.yaml) for a fixed number of updates; step time, peak memory and the
projected wall time of the paper's 200 epochs at 156 architectures (paper: 0.2 GPU-days; goal: < 1 GPU-hour).

    scripts/gpu_check.sh                      # on a GPU node: bf16, 30 timed updates per setting (< 5 min on an H100)
    python scripts/gpu_check.py --device cpu --config configs/nb201_tiny.yaml --steps 2 --warmup 1   # logic smoke test

Each setting runs the trainer's own pieces (data, Objective, Runtime.forward/backward/step from
pipeline/distributed.py) on one device: the paper's one-arch-per-step protocol (micro_batch=1) and several target
networks per step (micro_batch=10, batched_targets=true: same gradient, fewer kernel launches).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline import distributed  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.spaces import space_from_config  # noqa: E402
from pipeline.train import (UpdateBatch, _epoch_order, build_objective, build_optimizer,  # noqa: E402
                            load_training_data, run_update, setup_runtime, split_archs)

PAPER_EPOCHS, PAPER_ARCHS = 200, 156


def measure(cfg, device: torch.device, steps: int, warmup: int) -> dict:
    """Median wall time of the trainer's own update (`run_update`) on one device."""
    setup_runtime(cfg)
    space = space_from_config(cfg.space)
    data = load_training_data(cfg, space)
    train_idx = split_archs(cfg, len(data.archs)).train
    y = data.labels[cfg.data.train_label]
    targets_all = torch.tensor((y - y[train_idx].mean()) / (y[train_idx].std() or 1.0), dtype=torch.float32)
    features = torch.tensor(data.features.values, dtype=torch.float32) if data.features is not None else None
    objective = build_objective(cfg, space, data.num_classes, 0 if features is None else features.shape[1])
    opt, _ = build_optimizer(cfg, objective)
    rt = distributed.Runtime(device=device, precision=cfg.train.precision, grad_clip=cfg.train.grad_clip)
    rt.wrap(objective, opt)
    acc, micro = cfg.train.accumulate, cfg.train.micro_batch or cfg.train.accumulate
    order = np.concatenate([_epoch_order(train_idx, cfg.train.seed, e) for e in range(4)])
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for u in range(warmup + steps):
        chunk = order[(u * acc) % (len(order) - acc):][:acc]
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        run_update(cfg, rt, objective, data, UpdateBatch(chunk, u * acc), targets_all, features)
        if cuda:
            torch.cuda.synchronize(device)
        if u >= warmup:
            times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    updates = PAPER_EPOCHS * math.ceil(PAPER_ARCHS / acc)
    return {"accumulate": acc, "micro_batch": micro, "batched_targets": cfg.space.settings.get("batched_targets"),
            "precision": cfg.train.precision,
            "update_s_median": step, "update_s_mean": float(np.mean(times)), "steps": len(times),
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"),
            "projected_200ep_h": step * updates / 3600, "updates_200ep": updates}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/nb201.yaml")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--settings", default="1:false,10:true", help="micro_batch:batched_targets,...")
    p.add_argument("--out", default="")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a smoke test)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for s in a.settings.split(","):
        micro, batched = s.split(":")
        cfg = load_config(a.config, [f"train.precision={a.precision}", f"train.micro_batch={micro}",
                                     f"space.settings.batched_targets={batched}", f"train.device={device.type}",
                                     *a.overrides])
        r = measure(cfg, device, a.steps, a.warmup)
        rows.append(r)
        print(f"[{name}] micro_batch={r['micro_batch']:>2} batched_targets={str(r['batched_targets']):5} "
              f"{r['precision']}: {r['update_s_median'] * 1000:8.1f} ms/update ({r['accumulate']} archs), peak "
              f"{r['peak_mem_gib']:.2f} GiB, projected {PAPER_EPOCHS} epochs x {PAPER_ARCHS} archs "
              f"({r['updates_200ep']} updates): {r['projected_200ep_h']:.2f} h "
              f"(paper 0.2 GPU-days = 4.8 h; goal < 1 h: {'MET' if r['projected_200ep_h'] < 1 else 'not met'})",
              flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"device": name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
