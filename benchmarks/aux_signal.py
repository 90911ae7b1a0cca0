"""How much ranking signal the auxiliary task carries, by target-network fidelity (HyperNAS-H).

    python -m benchmarks.aux_signal [--profiles cpu,c16,c16x2] [--epochs 50] [--seeds 0] [--archs 200]

HyperNAS-H trains the hypernetwork task alone; its evaluation generates the weights of `--archs` sampled
architectures, runs them on held-out aux images and ranks the architectures by the generated networks'
accuracy (and loss) against the true test accuracy (Kendall τ). A profile is a target network (width,
cells per stage) and its aux batch (images per architecture, resolution): if the generated networks cannot
rank architectures at a fidelity, the auxiliary task gives the GCN little architecture-quality signal there.
Each run is the one trainer in its own process; the update time comes from the run. Writes
results/bench_aux_signal/summary.md, summary.json and tau_vs_fidelity.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


from benchmarks.provenance import code_line
from pipeline.metrics import summarize_seeds
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import REPO_ROOT

# name -> (target channels, target cells per stage, images per arch, image size)
PROFILES = {
    "cpu": (8, 1, 16, 16),      # configs/nb201_cpu.yaml
    "c16": (16, 1, 32, 32),
    "c16x2": (16, 2, 64, 32),
    "paper": (16, 5, 128, 32),  # configs/nb201.yaml
}


def overrides(profile: str) -> list[str]:
    c, n, imgs, side = PROFILES[profile]
    return [f"space.settings.target_channels={c}", f"space.settings.target_cells_per_stage={n}",
            f"model.hyper.images_per_arch={imgs}", f"model.hyper.image_size={side}"]


def run(profile: str, seed: int, epochs: int, archs: int, size: int, out: Path) -> dict:
    name = f"{profile}-n{size}-s{seed}-e{epochs}"
    run_dir = out / "runs" / name
    if not (run_dir / "results.json").is_file():
        cmd = [sys.executable, "-m", "pipeline.train", "--config", "configs/nb201_cpu.yaml", "model.variant=hypernas_h",
               *overrides(profile), f"train.epochs={epochs}", f"train.seed={seed}", f"data.num_train={size}",
               f"eval.hyper_archs={archs}", f"run.root={out / 'runs'}", f"run.name={name}", "train.threads=1",
               "run.progress=false"]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    s = json.loads((run_dir / "results.json").read_text())
    env = json.loads((run_dir / "env.json").read_text())
    made_by = str(env.get("git_commit") or "unknown")[:10] + (" (uncommitted edits)" if env.get("git_dirty_pipeline") else "")
    return {"profile": profile, "name": name, "made_by": made_by, "seed": seed, "tau_acc": s["kendall_tau_generated_acc"],
            "tau_loss": s["kendall_tau_generated_loss"], "aux_acc": s["generated_aux_acc_mean"],
            "update_time_s": s["update_time_s"], "archs": s["hyper_archs"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", default="cpu,c16,c16x2")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seeds", default="0")
    p.add_argument("--archs", type=int, default=200, help="architectures whose generated networks are ranked")
    p.add_argument("--size", type=int, default=156, help="training architectures")
    p.add_argument("--out", default="results/bench_aux_signal")
    args = p.parse_args(argv)
    out = REPO_ROOT / args.out
    profiles = args.profiles.split(",")
    unknown = [x for x in profiles if x not in PROFILES]
    if unknown:
        print(f"error: unknown profile(s) {unknown}; known: {sorted(PROFILES)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [run(pr, s, args.epochs, args.archs, args.size, out) for pr in profiles for s in seeds]
    lines = ["# Auxiliary-task signal by target fidelity (HyperNAS-H, NB201)", "",
             f"`python -m benchmarks.aux_signal --profiles {args.profiles} --epochs {args.epochs} --seeds {args.seeds} "
             f"--archs {args.archs} --size {args.size}`", "",
             f"HyperNAS-H trained {args.epochs} epochs on {args.size} cells; the generated networks of {args.archs} "
             "sampled cells are scored on held-out CIFAR-10 images. τ: Kendall τ of the generated networks' "
             "accuracy (loss: of minus their cross-entropy) against the cells' true test accuracy.", "",
             code_line() + "; a run whose results.json exists is reused: "
             + ", ".join(f"{r['name']} made by {r['made_by']}" for r in rows) + ".", "",
             "| profile | target C, cells/stage, images, px | τ (generated accuracy) | τ (generated loss) | "
             "generated aux accuracy | s/update (10 archs) |", "|---|---|---|---|---|---|"]
    summary = {}
    for pr in profiles:
        rs = [r for r in rows if r["profile"] == pr]
        agg = {k: summarize_seeds([r[k] for r in rs]) for k in ("tau_acc", "tau_loss", "aux_acc", "update_time_s")}
        summary[pr] = agg
        fmt = lambda k, d=3: f"{agg[k]['mean']:.{d}f}" + (f" ± {agg[k]['std']:.{d}f}" if agg[k]["n"] > 1 else "")
        lines.append(f"| {pr} | {', '.join(map(str, PROFILES[pr]))} | {fmt('tau_acc')} | {fmt('tau_loss')} | "
                     f"{fmt('aux_acc')} | {fmt('update_time_s', 2)} |")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", {"rows": rows, "summary": summary, "profiles": {k: PROFILES[k] for k in profiles}})
    atomic_write_text(out / "summary.md", "\n".join(lines + ["", "![tau vs fidelity](tau_vs_fidelity.png)", ""]))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    cost = [summary[pr]["update_time_s"]["mean"] for pr in profiles]
    for key, label in (("tau_acc", "generated accuracy"), ("tau_loss", "generated loss")):
        ax.errorbar(cost, [summary[pr][key]["mean"] for pr in profiles], yerr=[summary[pr][key]["std"] for pr in profiles],
                    marker="o", capsize=3, label=label)
    for pr, x, y in zip(profiles, cost, [summary[pr]["tau_acc"]["mean"] for pr in profiles]):
        ax.annotate(pr, (x, y), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("s per update (CPU, 1 thread)")
    ax.set_ylabel("Kendall τ vs test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "tau_vs_fidelity.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
