"""Kendall τ of NP / HyperNAS-P / HyperNAS over training sizes and seeds, on the same splits.

    python -m benchmarks.predictor --config configs/nb201_cpu.yaml --sizes 78,156,469 --seeds 0,1,2 \
        --variants np,hypernas_p,hypernas --jobs 2 [key=value ...]

Every run is the one trainer (`python -m pipeline.train`) in its own process, one torch thread each,
`--jobs` at a time. A given (size, seed) draws the same training cells for every variant (the split
depends only on data.num_train and train.seed). Finished runs are skipped on a re-run, so the
benchmark resumes. Writes to --out (default results/bench_predictor/): runs.jsonl (one line per run),
summary.json, summary.md (mean ± std τ per variant and size, beside the paper's numbers and the
floors measured in METHOD.md) and tau_vs_size.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.metrics import summarize_seeds
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
PAPER = {  # METHOD.md §7, NB201 CIFAR-10
    "hypernas": {39: 0.667, 78: 0.677, 156: 0.765, 469: 0.836},
    "np": {39: 0.655, 78: 0.626, 156: 0.696, 469: 0.757},
}
FLOOR_PARAMS = 0.623  # parameter count alone, METHOD.md


def load_records(path: Path) -> dict[tuple, dict]:
    """Finished runs recorded by an earlier invocation (run dirs are not committed; runs.jsonl is)."""
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["variant"], r["num_train"], r["seed"]): r for r in records if "kendall_tau" in r}


def run_one(config: str, variant: str, size: int, seed: int, out: Path, overrides: list[str],
            summarize_only: bool = False, recorded: dict | None = None) -> dict:
    name = f"{variant}-n{size}-s{seed}"
    run_dir = out / "runs" / name
    results = run_dir / "results.json"
    if not results.is_file() and recorded and (variant, size, seed) in recorded:
        return recorded[(variant, size, seed)]
    if not results.is_file() and summarize_only:
        return {"variant": variant, "num_train": size, "seed": seed, "missing": True}
    if not results.is_file():
        cmd = [sys.executable, "-m", "pipeline.train", "--config", config, f"model.variant={variant}",
               f"data.num_train={size}", f"train.seed={seed}", f"run.root={out / 'runs'}", f"run.name={name}",
               "train.threads=1", "run.progress=false", *overrides]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"variant": variant, "num_train": size, "seed": seed, "error": proc.stderr[-2000:]}
        print(f"[bench] {name}: {time.time() - t0:.0f} s", flush=True)
    s = json.loads(results.read_text())
    return {"variant": variant, "num_train": size, "seed": seed, "kendall_tau": s["kendall_tau"],
            "spearman": s["spearman"], "train_time_s": s["train_time_s"], "update_time_s": s["update_time_s"],
            "score_time_s": s["score_time_s"]}


def summarize(records: list[dict], variants: list[str], sizes: list[int]) -> tuple[dict, str]:
    table: dict = {}
    for v in variants:
        for n in sizes:
            taus = [r["kendall_tau"] for r in records if r["variant"] == v and r["num_train"] == n and "kendall_tau" in r]
            if taus:
                table.setdefault(v, {})[n] = {**summarize_seeds(taus), "values": taus}
    lines = ["| variant | " + " | ".join(f"{n} cells" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for v in variants:
        cells = []
        for n in sizes:
            s = table.get(v, {}).get(n)
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})" if s else "–")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    for v, ref in PAPER.items():
        lines.append(f"| paper {v} | " + " | ".join(f"{ref[n]:.3f}" if n in ref else "–" for n in sizes) + " |")
    lines.append(f"| params-count floor | " + " | ".join(f"{FLOOR_PARAMS:.3f}" for _ in sizes) + " |")
    return table, "\n".join(lines) + "\n"


def plot(table: dict, sizes: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for v, by_size in table.items():
        ns = [n for n in sizes if n in by_size]
        ax.errorbar(ns, [by_size[n]["mean"] for n in ns], yerr=[by_size[n]["std"] for n in ns], marker="o",
                    capsize=3, label=v)
    for v, ref in PAPER.items():
        ns = [n for n in sizes if n in ref]
        ax.plot(ns, [ref[n] for n in ns], ls="--", marker="x", alpha=0.6, label=f"paper {v}")
    ax.axhline(FLOOR_PARAMS, color="grey", ls=":", label="params-count floor")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("training cells")
    ax.set_ylabel("Kendall τ vs test accuracy (all cells)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/nb201_cpu.yaml")
    p.add_argument("--sizes", default="78,156,469")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="np,hypernas_p,hypernas")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="results/bench_predictor")
    p.add_argument("--summarize-only", action="store_true",
                   help="only aggregate the runs already finished under --out (start none)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # cheap runs first so partial results cover every cell of the table early
    jobs = [(v, n, s) for s in seeds for n in sizes for v in variants]
    recorded = load_records(out / "runs.jsonl")
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(
            lambda j: run_one(args.config, *j, out, args.overrides, args.summarize_only, recorded), jobs))
    missing = [r for r in records if r.get("missing")]
    records = [r for r in records if not r.get("missing")]
    # keep what earlier invocations recorded outside this grid, so the table only grows
    done = {(r["variant"], r["num_train"], r["seed"]) for r in records}
    records += [r for k, r in recorded.items() if k not in done]
    sizes = sorted({*sizes, *(r["num_train"] for r in records)})
    variants += [v for v in dict.fromkeys(r["variant"] for r in records) if v not in variants]
    errors = [r for r in records if "error" in r]
    for r in errors:
        print(f"[bench] FAILED {r['variant']} n={r['num_train']} seed={r['seed']}:\n{r['error']}", file=sys.stderr)
    atomic_write_text(out / "runs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    table, md = summarize(records, variants, sizes)
    header = (f"# Predictor benchmark\n\n`python -m benchmarks.predictor --config {args.config} --sizes {args.sizes} "
              f"--seeds {args.seeds} --variants {args.variants} {' '.join(args.overrides)}`\n\n"
              f"Kendall τ (mean ± std over seeds) against `test` accuracy over all cells, trained on validation "
              f"accuracy (METHOD.md §7). Same training cells for every variant at a given size and seed.\n\n")
    if missing:
        header += ("Not run: " + ", ".join(f"{r['variant']} n={r['num_train']} seed={r['seed']}" for r in missing)
                   + ".\n\n")
    atomic_write_text(out / "summary.md", header + md)
    atomic_write_json(out / "summary.json", {"table": table, "records": records})
    plot(table, sizes, out / "tau_vs_size.png")
    print(header + md)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
