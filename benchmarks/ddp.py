"""Throughput of 2 ranks vs 1 rank for the same total work (architectures per second of training).

    python -m benchmarks.ddp [--nproc 2] [--num-train 48] [--epochs 2] [--deepspeed] [--out results/bench_ddp]

Same config, same architectures, same number of updates: 1 rank (plain python) vs N ranks (torchrun; and the
deepspeed launcher with --deepspeed), one torch thread per rank, micro_batch = accumulate / N in every run (so all runs form the same
micro-batches and reach the same parameters). Throughput = training architectures processed /
the trainer's own train_time_s (data loading, start-up and the final evaluation excluded). Writes summary.md,
summary.json and throughput.png under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.utils.paths import REPO_ROOT as REPO, repo_relative

BIN = Path(sys.executable).parent


def run_one(label: str, cmd: list[str], run_dir: Path, log_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    (log_dir / f"{label}.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{label} failed (exit {out.returncode}); see {log_dir / (label + '.log')}")
    res = json.loads((run_dir / "results.json").read_text())
    return {"label": label, "train_time_s": res["train_time_s"], "wall_s": time.time() - t0,
            "kendall_tau": res.get("kendall_tau"), "archs": res["num_train"] * res["epochs"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "nb201_cpu.yaml"))
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--num-train", type=int, default=48)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--accumulate", type=int, default=8)
    p.add_argument("--deepspeed", action="store_true", help="also time the deepspeed launcher (ZeRO-1)")
    p.add_argument("--out", default=str(REPO / "results" / "bench_ddp"))
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    root = out / "runs"
    common = ["--config", args.config, f"data.num_train={args.num_train}", f"train.epochs={args.epochs}",
              f"train.accumulate={args.accumulate}", f"train.micro_batch={args.accumulate // args.nproc}",
              "train.threads=1", "eval.every=0", "data.val_archs=0",
              "run.tensorboard=false", "run.resume=false", f"run.root={root}", *args.overrides]
    n = args.nproc
    runs = [("1 rank (python)", [sys.executable, "pipeline/train.py", *common, "run.name=r1"], root / "r1"),
            (f"{n} ranks (torchrun)", [str(BIN / "torchrun"), "--nproc_per_node", str(n), "pipeline/train.py",
                                       *common, f"run.name=r{n}"], root / f"r{n}")]
    if args.deepspeed:
        runs.append((f"{n} ranks (deepspeed ZeRO-1)",
                     [str(BIN / "deepspeed"), "--num_gpus", str(n), "pipeline/train.py", *common, f"run.name=ds{n}",
                      "--deepspeed_config", str(REPO / "configs" / "deepspeed" / "zero1.json")], root / f"ds{n}"))
    rows = []
    for label, cmd, run_dir in runs:
        print(f"running {label} ...", flush=True)
        r = run_one(label.split(" (")[0].replace(" ", "_") + ("_ds" if "deepspeed" in label else ""), cmd, run_dir,
                    out / "logs")
        r["label"] = label
        r["archs_per_s"] = r["archs"] / r["train_time_s"]
        rows.append(r)
        print(f"  {r['archs_per_s']:.2f} archs/s (train {r['train_time_s']:.1f} s, wall {r['wall_s']:.1f} s)")
    base = rows[0]["archs_per_s"]
    for r in rows:
        r["speedup"] = r["archs_per_s"] / base
    load = os.getloadavg()
    (out / "summary.json").write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(), "loadavg": load,
                                                  "args": {**vars(args), "config": repo_relative(args.config),
                                                           "out": repo_relative(args.out)}}, indent=2))
    lines = [f"# Data-parallel throughput: {n} ranks vs 1 rank", "",
             f"`python -m benchmarks.ddp --nproc {n} --num-train {args.num_train} --epochs {args.epochs} "
             f"--accumulate {args.accumulate}{' --deepspeed' if args.deepspeed else ''}`; "
             f"config `{Path(args.config).name}`, one torch thread per rank, "
             f"{os.cpu_count()} CPUs, load average at the end {load[0]:.2f} (other jobs on the machine count).", "",
             "| launcher | archs/s | speed-up | train s | wall s | Kendall τ |", "|---|---|---|---|---|---|"]
    for r in rows:
        tau = f"{r['kendall_tau']:.4f}" if r["kendall_tau"] is not None else "-"
        lines.append(f"| {r['label']} | {r['archs_per_s']:.2f} | {r['speedup']:.2f}× | {r['train_time_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {tau} |")
    lines += ["", "Goal: ≥ 1.5× with 2 ranks. Same total work: every run trains the same architectures for the same "
              "updates (the N-rank runs reach the same parameters, see tests/test_distributed.py).", "",
              "![throughput](throughput.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([r["label"] for r in rows], [r["archs_per_s"] for r in rows], color=["#888", "#2a7", "#27a"][:len(rows)])
    for i, r in enumerate(rows):
        ax.text(i, r["archs_per_s"], f"{r['speedup']:.2f}×", ha="center", va="bottom")
    ax.set_ylim(0, 1.15 * max(r["archs_per_s"] for r in rows))
    ax.set_ylabel("training architectures / s")
    ax.set_title(f"same work, {os.cpu_count()} CPUs")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=120)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
