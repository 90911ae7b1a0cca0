"""Speed: scoring the whole space (hypernetwork off) and the hypernetwork's cost per update.

    python -m benchmarks.speed [--run RUN_DIR] [--updates 10] [--profiles cpu,paper]

1. Scoring: loads a *trained* predictor (a run directory's latest checkpoint; trained weights matter:
   denormal floats made a trained predictor ~20x slower before flush-to-zero) and times scoring every
   architecture of its table: graph building (parse + encode + PyG collation) and the forward passes.
2. Step time: per-update wall time of HyperNAS and HyperNAS-P (same encoder, same archs) for the CPU
   and paper profiles; the ratio is the hypernetwork's cost.
Writes results/bench_speed/summary.md and summary.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import train as T
from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.evaluate import predict_all
from pipeline.models.predictor import VARIANTS
from pipeline.utils.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
PROFILES = {"cpu": "configs/nb201_cpu.yaml", "paper": "configs/nb201.yaml"}


def time_scoring(run_dir: Path, repeats: int = 3) -> dict:
    cfg = load_config(run_dir / "config.yaml")
    T.setup_runtime(cfg)
    space = T.space_from_config(cfg.space)
    from pipeline.data.tables import load_table
    table = load_table(cfg.data.table)
    t0 = time.perf_counter()
    archs = space.parse_many(table.archs)
    graphs = build_graph_table(space, archs, VARIANTS.get(cfg.model.variant).scope)
    t_graphs = time.perf_counter() - t0
    objective = T.build_objective(cfg, space, num_classes=10)
    ckpt = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    objective.load_state_dict(state["objective"], strict=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = predict_all(objective.model, graphs, cfg.eval.batch_size)
        times.append(time.perf_counter() - t0)
    return {"run": str(run_dir), "checkpoint": ckpt.name, "archs": len(archs), "graph_build_s": t_graphs,
            "forward_s_best": min(times), "forward_s_mean": float(np.mean(times)),
            "total_s": t_graphs + min(times), "pred_std": float(pred.std()), "threads": torch.get_num_threads()}


def time_updates(config: str, variant: str, updates: int, threads: int) -> float:
    cfg = load_config(REPO / config, [f"model.variant={variant}", f"train.threads={threads}"])
    T.setup_runtime(cfg)
    space = T.space_from_config(cfg.space)
    data = T.load_data(cfg, space)
    objective = T.build_objective(cfg, space, data.num_classes)
    opt, _ = T.build_optimizer(cfg, objective)
    train_idx, _ = T.split_archs(cfg, len(data.archs))
    y = torch.zeros(len(data.archs))
    k = cfg.train.accumulate

    def update(u: int) -> None:
        idx = train_idx[(u * k) % len(train_idx):][:k]
        mb = T.make_micro_batch(cfg, data, idx, np.arange(len(idx)) + u * k, y[torch.as_tensor(idx)])
        loss, _ = objective(mb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    update(0)  # warm-up (allocations, template cache)
    t0 = time.perf_counter()
    for u in range(1, updates + 1):
        update(u)
    return (time.perf_counter() - t0) / updates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="results/bench_predictor/runs/hypernas-n156-s0",
                   help="run directory of a trained predictor to time scoring with")
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--paper-updates", type=int, default=3)
    p.add_argument("--profiles", default="cpu,paper")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--out", default="results/bench_speed")
    args = p.parse_args(argv)
    out = Path(args.out)
    report: dict = {}
    lines = ["# Speed benchmark", "", f"`python -m benchmarks.speed {' '.join(argv or sys.argv[1:])}` on "
             f"{torch.get_num_threads()} torch threads.", ""]
    run = Path(args.run)
    if (run / "checkpoints").is_dir():
        s = report["scoring"] = time_scoring(run)
        lines += ["## Scoring the whole space (hypernetwork off)", "",
                  f"trained predictor `{s['run']}` ({s['checkpoint']}): {s['archs']} architectures — graph building "
                  f"{s['graph_build_s']:.2f} s, forward {s['forward_s_best']:.2f} s (best of 3; mean "
                  f"{s['forward_s_mean']:.2f} s), total {s['total_s']:.2f} s (paper: 0.014 s/arch = 219 s).", ""]
    else:
        lines += [f"(no trained run at {run}: scoring not timed)", ""]
    rows = []
    for prof in args.profiles.split(","):
        n = args.updates if prof == "cpu" else args.paper_updates
        t_h = time_updates(PROFILES[prof], "hypernas", n, args.threads)
        t_p = time_updates(PROFILES[prof], "hypernas_p", n, args.threads)
        rows.append({"profile": prof, "hypernas_s": t_h, "hypernas_p_s": t_p, "ratio": t_h / t_p, "updates": n})
    report["step_time"] = rows
    lines += ["## Step time per update (10 architectures)", "", "| profile | HyperNAS s/update | HyperNAS-P s/update | ratio |",
              "|---|---|---|---|"]
    lines += [f"| {r['profile']} | {r['hypernas_s']:.3f} | {r['hypernas_p_s']:.3f} | {r['ratio']:.1f}x |" for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", report)
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
