"""Zero-cost proxies on NB201 CIFAR-10: rank correlation with the test label, cross-check, time per architecture.

    python -m benchmarks.zero_cost [--sample 2000 | --all] [--seed 0] [--proxies synflow,nwot,...]
        [--device cpu] [--threads 1] [--out results/bench_zero_cost] [--chunk 50] [key=value ...]

Scores a seeded sample of the config's table (default 2,000 of the 15,625 NB201 cells; --all for every
cell) with every registered proxy (pipeline/zero_cost; NAS-Bench-Suite-Zero's recipe: batch 64 of
CIFAR-10 at 32x32, default init), and writes to --out:
  scores.parquet (+ .md, .json)   the scored rows and the `python -m pipeline.zero_cost` report
  summary.md, summary.json        per proxy: Spearman / Kendall vs data.eval_label, Spearman vs
                                  NAS-Bench-Suite-Zero's values on the shared cells (the cross-check), seconds
                                  per architecture; beside them the project's predictors at 156 training
                                  cells (from --predictor-summary, when it exists) and the paper's numbers
  kendall.png                     bar chart of Kendall per proxy
The work is cut into chunks of --chunk architectures, each saved under --cache (runs/bench_zero_cost/chunks)
as soon as it is scored, keyed by everything that changes a score, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.provenance import code_line
from pipeline.errors import UserError
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import repo_relative
from pipeline.zero_cost import PROXIES
from pipeline.zero_cost import cli
from pipeline.zero_cost.scoring import ScoreResult, concat_results, score_archs

# METHOD.md: supplement Table 6 (ParZC setup), NB201 CIFAR-10, Spearman / Kendall
PAPER = {"HyperNAS (paper)": (0.96, 0.85), "nwot (paper)": (0.77, 0.58), "synflow (paper)": (0.73, 0.54),
         "zico (paper)": (0.74, 0.54)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.zero_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/nb201_cpu.yaml")
    p.add_argument("--sample", type=int, default=2000, help="cells in the seeded sample (default 2000)")
    p.add_argument("--all", action="store_true", help="score all cells of the table instead of a sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample, the network init and the batches")
    p.add_argument("--proxies", default=",".join(PROXIES.names()), help="comma-separated (default: all registered)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the shared 2-core machine)")
    p.add_argument("--chunk", type=int, default=50, help="architectures per saved chunk (resume granularity)")
    p.add_argument("--out", default="results/bench_zero_cost")
    p.add_argument("--cache", default="runs/bench_zero_cost/chunks", help="where scored chunks are kept (resume)")
    p.add_argument("--predictor-summary", default="results/bench_predictor/summary.json",
                   help="`just bench-predictor` summary whose 156-cell results are shown beside the proxies")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p.parse_intermixed_args(argv)


def cli_args(args: argparse.Namespace, out: Path) -> argparse.Namespace:
    argv = ["--config", args.config, "--proxies", args.proxies, "--seed", str(args.seed), "--batch-size",
            str(args.batch_size), "--batches", str(args.batches), "--device", args.device, "--threads",
            str(args.threads), "--crosscheck", "--out", str(out / "scores.parquet"), *args.overrides]
    if not args.all:
        argv += ["--sample", str(args.sample)]
    if args.no_progress:
        argv.append("--no-progress")
    return cli.build_parser().parse_intermixed_args(argv)


def chunk_key(plan: cli.Plan, a: argparse.Namespace, archs: list[str]) -> str:
    """Everything a score depends on: proxies, seed, batches, images, space settings, device, the cells."""
    from pipeline.data.images import read_manifest
    manifest = read_manifest(plan.cfg.data.aux_shards, plan.cfg.data.aux_dataset)
    ident = {"proxies": [p.name for p in plan.proxies], "seed": a.seed, "batch_size": a.batch_size,
             "batches": a.batches, "split": a.split or plan.cfg.data.aux_split, "device": a.device,
             "images": manifest.get("source"), "space": plan.cfg.space.name,
             "settings": dict(sorted(vars(plan.space.settings).items())), "archs": archs}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def score_chunked(plan: cli.Plan, a: argparse.Namespace, data: Any, chunk: int, cache: Path,
                  progress: bool) -> tuple[ScoreResult, float, int]:
    """Score in chunks saved under `cache` (reused when their key matches); (result, seconds, reused)."""
    from tqdm import tqdm
    names = [p.name for p in plan.proxies]
    parts: list[tuple[int, ScoreResult]] = []
    wall, reused = 0.0, 0
    bar = tqdm(total=len(plan.archs), desc="zero-cost", disable=not progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    for start in range(0, len(plan.archs), chunk):
        strs = plan.arch_strs[start:start + chunk]
        path = cache / f"{chunk_key(plan, a, strs)}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            res = ScoreResult({k: np.asarray(v, dtype=np.float64) for k, v in saved["scores"].items()},
                              saved["seconds"], saved["standalone_seconds"], saved["nonfinite"])
            reused += 1
        else:
            t0 = time.perf_counter()
            res = score_archs(plan.space, plan.archs[start:start + chunk], names, data, a.seed)
            saved = {"archs": strs, "scores": {k: v.tolist() for k, v in res.scores.items()},
                     "seconds": res.seconds, "standalone_seconds": res.standalone_seconds,
                     "nonfinite": res.nonfinite, "wall_s": time.perf_counter() - t0}
            atomic_write_json(path, saved)
        wall += saved["wall_s"]
        parts.append((len(strs), res))
        bar.update(len(strs))
    bar.close()
    return concat_results(parts), wall, reused


def predictor_rows(path: Path, size: int = 156) -> list[tuple[str, float, float, float, int]]:
    """(variant, mean Spearman, mean Kendall, std Kendall, seeds) at `size` training cells, from the
    predictor benchmark's records (over all 15,625 cells); [] when the file is absent or unreadable."""
    try:
        records = json.loads(path.read_text())["records"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    by: dict[str, list[dict]] = {}
    for r in records:
        if isinstance(r, dict) and r.get("num_train") == size and "kendall_tau" in r:
            by.setdefault(str(r.get("variant", r.get("method", "?"))), []).append(r)
    rows = []
    for name, rs in sorted(by.items()):
        taus = np.array([r["kendall_tau"] for r in rs], dtype=np.float64)
        rhos = np.array([r.get("spearman", np.nan) for r in rs], dtype=np.float64)
        rows.append((name, float(np.mean(rhos)), float(np.mean(taus)),
                     float(np.std(taus, ddof=1)) if len(taus) > 1 else 0.0, len(rs)))
    return rows


def summary_markdown(s: dict[str, Any]) -> str:
    lab = s["label"]
    what = "all" if not s["sampled"] else f"a seeded sample (seed {s['seed']}) of"
    lines = [f"# Zero-cost proxies on NB201 CIFAR-10 ({s['n']} cells)", "",
             f"{s['n']} cells: {what} the {s['table_rows']:,} cells of `{s['table']}`; label `{lab}`. Each proxy on "
             f"the NAS-Bench-201 network (C=16, N=5, PyTorch default init), batch {s['batch_size']} x "
             f"{s['num_batches']} of un-augmented CIFAR-10 training images at {s['image_size']}x{s['image_size']} "
             f"(`{s['shards']}`), seed {s['seed']}; device {s['device']}, {s['threads']} thread(s).", "",
             f"| proxy | Spearman | Kendall | ρ vs NAS-Bench-Suite-Zero (cells) | ρ vs label on those cells: ours / "
             f"Suite-Zero's | s/arch (own) | s/arch (standalone) |",
             "|---|---|---|---|---|---|---|"]
    for name, e in sorted(s["proxies"].items(), key=lambda kv: -np.nan_to_num(kv[1]["kendall"], nan=-9)):
        x = e.get("crosscheck_spearman")
        cross = "—" if x is None else f"{x:.3f} ({e['crosscheck_n']})"
        both = "—" if x is None else f"{e['ours_vs_label_shared']:.3f} / {e['reference_vs_label']:.3f}"
        lines.append(f"| {name} | {e['spearman']:.3f} | {e['kendall']:.3f} | {cross} | {both} | "
                     f"{e['seconds_own']:.4f} | {e['seconds_standalone']:.4f} |")
    if s.get("not_scored"):
        lines += ["", "Registered proxies not scored by this run: " + ", ".join(s["not_scored"]) + "."]
    lines += ["", f"Time per architecture, all proxies together: {s['seconds_per_arch_total']:.3f} s (shared work: "
              + ", ".join(f"{k} {v:.4f} s" for k, v in s["shared_seconds_per_arch"].items())
              + "). *own* = the proxy's own work; *standalone* = own + the shared work it uses. Wall seconds "
              "on a shared machine: compare them with each other, not across machines."]
    if s["predictors_156"]:
        lines += ["", f"Project predictors trained on 156 cells (`{s['predictor_summary']}`; over all 15,625 cells, "
                  "mean over seeds; that file names the commits of its runs):", "", "| predictor | Spearman | Kendall | seeds |", "|---|---|---|---|"]
        lines += [f"| {n} | {rho:.3f} | {tau:.3f} ± {sd:.3f} | {k} |" for n, rho, tau, sd, k in s["predictors_156"]]
    lines += ["", "Paper (supplement Table 6, ParZC setup), Spearman / Kendall: "
              + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in PAPER.items()) + "."]
    if s["reused_chunks"]:
        lines += ["", f"{s['reused_chunks']} of {s['chunks']} chunks were reused from an earlier run of the same settings."]
    lines += ["", f"Command: `{s['command']}`", "", s.get("code", "Code: not recorded") + ".", ""]
    return "\n".join(lines)


def plot(s: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    items = sorted(s["proxies"].items(), key=lambda kv: np.nan_to_num(kv[1]["kendall"], nan=-9))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.6))
    ax.barh([k for k, _ in items], [e["kendall"] for _, e in items], color="tab:blue")
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for k, (n, _rho, tau, _sd, _seeds) in enumerate(s["predictors_156"]):
        ax.axvline(tau, ls=styles[k % len(styles)], lw=1.2, color=f"C{k + 1}", label=f"{n} @ 156 cells (τ {tau:.3f})")
    ax.axvline(0, color="k", lw=0.8)
    if s["predictors_156"]:
        ax.legend(loc="lower right", fontsize=8, title="predictors (all cells)", title_fontsize=8)
    ax.set_xlabel(f"Kendall τ vs {s['label']}")
    ax.set_title(f"Zero-cost proxies, NB201 CIFAR-10, {s['n']} cells (seed {s['seed']})")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    out = Path(args.out)
    a = cli_args(args, out)
    if args.chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {args.chunk}")
    plan = cli.make_plan(a)
    label = plan.cfg.data.eval_label
    data = cli.load_data(plan, a)
    result, wall, reused = score_chunked(plan, a, data, args.chunk, Path(args.cache), not args.no_progress)
    report = cli.finish(plan, a, result, data, wall)
    from pipeline.data.tables import load_table
    proxies = {}
    for name, e in report["proxies"].items():
        c = e["correlations"][label]
        x = report["crosscheck"].get(name)
        proxies[name] = {"spearman": c["spearman"], "kendall": c["kendall"], "n": c["n"],
                         "crosscheck_spearman": None if x is None else x["spearman"],
                         "crosscheck_n": None if x is None else x["n"],
                         "reference_vs_label": None if x is None else x.get("reference_vs_label"),
                         "ours_vs_label_shared": None if x is None else x.get("ours_vs_label"),
                         "seconds_own": e["seconds_per_arch"], "seconds_standalone": e["standalone_seconds_per_arch"]}
    pred_path = Path(args.predictor_summary)
    summary = {"label": label, "n": report["n"], "sampled": report["sampled"], "seed": args.seed,
               "table": report["table"], "table_rows": len(load_table(plan.cfg.data.table)),
               "batch_size": args.batch_size, "num_batches": args.batches, "image_size": report["image_size"],
               "shards": report["shards"], "device": args.device, "threads": report["threads"], "proxies": proxies,
               "seconds_per_arch_total": report["seconds_per_arch_total"],
               "shared_seconds_per_arch": report["shared_seconds_per_arch"], "wall_s": wall,
               "chunks": -(-report["n"] // args.chunk), "reused_chunks": reused,
               "predictor_summary": repo_relative(pred_path), "predictors_156": predictor_rows(pred_path),
               "paper": PAPER, "crosscheck_reference": report["crosscheck_reference"],
               "not_scored": [n for n in PROXIES.names() if n not in proxies], "code": code_line(),
               "command": "python -m benchmarks.zero_cost " + " ".join(argv)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    plot(summary, out / "kendall.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        summary = run(args, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_markdown(summary))
    print(f"wrote {Path(args.out) / 'summary.md'}, summary.json, kendall.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
