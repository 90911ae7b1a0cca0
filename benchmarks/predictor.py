"""Prediction quality of every method on the same splits: τ, τ on unseen unique cells, top of the ranking.

    python -m benchmarks.predictor [--suite configs/bench/predictor.yaml] [--sizes 78,156,469]
        [--seeds 0,1,2,3,4] [--methods np,hypernas_p,hypernas,rf] [--jobs 2] [key=value ...]

A suite (YAML, data) names a base config and its methods, each a set of config overrides (neural variants
and the baselines of pipeline/baselines alike). Every run is the one trainer (`python -m pipeline.train`) in
its own process, one torch thread each, `--jobs` at a time; a (size, seed) pair draws the same training
cells for every method (the split depends only on data.num_train and train.seed).

Runs are kept under <out>/runs/<method>-n<size>-s<seed>/. A run is reused only when it was made by the
current package code (the git tree id of `pipeline/` recorded in its env.json equals today's, and that
tree had no uncommitted edits) with the same resolved config; otherwise it is trained again. The output
says which runs were reused and which commit made them. Writes <out>/summary.md, summary.json, runs.jsonl
and tau_vs_size.png: per method and size, mean ± std over seeds of Kendall τ over all cells, τ over unique
unseen cells (one per isomorphism class without a training cell), the regret of the predicted best (test
accuracy below the optimum) and the top-10 / top-50 overlap with the truth; and paired per-seed
differences for the `pairs` the suite lists (e.g. HyperNAS − HyperNAS-P).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.config import dump_yaml, load_config
from pipeline.metrics import summarize_seeds
from pipeline.rundir import source_version
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import REPO_ROOT

METRICS = (("kendall_tau", "τ all", True), ("kendall_tau_unique", "τ unique unseen", True),
           ("top1_regret", "regret top-1 (pp)", False), ("top10_overlap_unique", "top-10 overlap", True),
           ("top50_overlap_unique", "top-50 overlap", True))


def load_suite(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"error: suite file {str(path)!r} does not exist")
    suite = yaml.safe_load(path.read_text()) or {}
    for key in ("config", "methods"):
        if key not in suite:
            raise SystemExit(f"error: suite {str(path)!r} lacks {key!r}")
    suite["config"] = str((path.parent / suite["config"]).resolve())
    for name, overrides in suite["methods"].items():
        if not isinstance(overrides, dict):
            raise SystemExit(f"error: suite {str(path)!r}: method {name!r} must map config keys to values")
        members = overrides.get("blend")
        if members is not None and (len(overrides) != 1 or not isinstance(members, list) or len(members) < 2
                                    or any(m not in suite["methods"] or "blend" in suite["methods"][m]
                                           for m in members)):
            raise SystemExit(f"error: suite {str(path)!r}: method {name!r}: `blend` must be the only key and list "
                             f">= 2 trained methods of the suite")
    paper = suite.setdefault("paper", {})  # reference τ rows: {row name: {training size: τ}}
    if not isinstance(paper, dict) or not all(isinstance(r, dict) and all(isinstance(n, int) for n in r)
                                              for r in paper.values()):
        raise SystemExit(f"error: suite {str(path)!r}: `paper` must map row names to {{training size: tau}}")
    return suite


def is_blend(suite: dict, method: str) -> bool:
    return "blend" in suite["methods"][method]


# method keys that restrict where a method runs (e.g. an expensive variant at the smallest size only)
LIMIT_KEYS = ("only_sizes", "only_seeds")


def _overrides(d: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in d.items() if k not in LIMIT_KEYS]


def runs_at(suite: dict, method: str, size: int, seed: int) -> bool:
    spec = suite["methods"][method]
    return size in spec.get("only_sizes", [size]) and seed in spec.get("only_seeds", [seed])


def run_args(suite: dict, method: str, size: int, seed: int, out: Path, extra: list[str]) -> list[str]:
    return [*_overrides(suite["methods"][method]), f"data.num_train={size}", f"train.seed={seed}",
            f"run.root={out / 'runs'}", f"run.name={method}-n{size}-s{seed}", "train.threads=1",
            "run.progress=false", *extra]


def reusable(run_dir: Path, resolved_config: str, current: dict[str, Any]) -> str | None:
    """The commit that made a finished run, when it ran today's package code with today's config."""
    try:
        env = json.loads((run_dir / "env.json").read_text())
        same_config = (run_dir / "config.yaml").read_text() == resolved_config
        finished = (run_dir / "results.json").is_file()
    except (OSError, ValueError):
        return None
    if (finished and same_config and current.get("pipeline_tree") and not current.get("git_dirty_pipeline")
            and env.get("pipeline_tree") == current["pipeline_tree"] and not env.get("git_dirty_pipeline")):
        return env.get("git_commit", "?")
    return None


def run_blend(suite: dict, method: str, size: int, seed: int, out: Path) -> dict[str, Any]:
    """An ensemble of the suite's member runs at (size, seed): z-scored predictions averaged (pipeline.ensemble)."""
    from pipeline.ensemble import ensemble_runs

    members = suite["methods"][method]["blend"]
    record: dict[str, Any] = {"method": method, "num_train": size, "seed": seed, "members": members}
    try:
        s = ensemble_runs([out / "runs" / f"{m}-n{size}-s{seed}" for m in members],
                          out / "runs" / f"{method}-n{size}-s{seed}")
    except Exception as e:  # a member failed: reported like a failed run
        return {**record, "error": f"{type(e).__name__}: {e}"}
    commits = []
    for m in members:
        env = json.loads((out / "runs" / f"{m}-n{size}-s{seed}" / "env.json").read_text())
        commits.append(env.get("git_commit"))
    record.update(commit=commits[0], reused=False)
    for key in ("kendall_tau", "spearman", "kendall_tau_unique", "top1_true", "top1_regret", "top10_overlap",
                "top50_overlap", "top10_overlap_unique", "top50_overlap_unique", "top1_regret_unique"):
        if key in s:
            record[key] = s[key]
    return record


def run_one(suite: dict, method: str, size: int, seed: int, out: Path, extra: list[str],
            current: dict[str, Any], finished_only: bool = False) -> dict[str, Any]:
    args = run_args(suite, method, size, seed, out, extra)
    run_dir = out / "runs" / f"{method}-n{size}-s{seed}"
    resolved = dump_yaml(load_config(suite["config"], args))
    record: dict[str, Any] = {"method": method, "num_train": size, "seed": seed}
    commit = reusable(run_dir, resolved, current)
    if commit is None and finished_only:
        return {**record, "not_run": True}
    if commit is None:
        if run_dir.exists():  # made by other code or another config: start over, never resume across code
            import shutil
            shutil.rmtree(run_dir)
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "pipeline.train", "--config", suite["config"], *args],
                              cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            return {**record, "error": proc.stderr[-3000:]}
        print(f"[bench] {method} n={size} seed={seed}: {time.time() - t0:.0f} s", flush=True)
        env = json.loads((run_dir / "env.json").read_text())
        record.update(commit=env.get("git_commit"), reused=False)
    else:
        record.update(commit=commit, reused=True)
    s = json.loads((run_dir / "results.json").read_text())
    for key in ("kendall_tau", "spearman", "kendall_tau_unique", "top1_true", "top1_regret", "top10_overlap",
                "top50_overlap", "top10_overlap_unique", "top50_overlap_unique", "top1_regret_unique",
                "train_time_s", "total_time_s", "update_time_s", "score_time_s"):
        if key in s:
            record[key] = s[key]
    return record


def _stat(records: list[dict], method: str, size: int, key: str) -> dict | None:
    vals = [r[key] for r in records if r["method"] == method and r["num_train"] == size and key in r]
    return {**summarize_seeds(vals), "values": vals} if vals else None


def paired(records: list[dict], a: str, b: str, size: int, key: str = "kendall_tau") -> dict | None:
    by_seed = {m: {r["seed"]: r[key] for r in records if r["method"] == m and r["num_train"] == size and key in r}
               for m in (a, b)}
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    if not seeds:
        return None
    diffs = [by_seed[a][s] - by_seed[b][s] for s in seeds]
    return {**summarize_seeds(diffs), "diffs": diffs, "seeds": seeds, "wins": sum(d > 0 for d in diffs)}


def summarize(records: list[dict], methods: list[str], sizes: list[int], pairs: list[list[str]],
              paper: dict[str, dict[int, float]]) -> tuple[dict, str]:
    table = {m: {n: {k: _stat(records, m, n, k) for k, _, _ in METRICS} for n in sizes} for m in methods}
    lines = []
    for key, title, higher in METRICS:
        arrow = "higher is better" if higher else "lower is better"
        lines += [f"### {title} ({arrow})", "", "| method | " + " | ".join(f"{n} cells" for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for m in methods:
            cells = []
            for n in sizes:
                st = table[m][n][key]
                cells.append("–" if st is None else f"{st['mean']:.3f} ± {st['std']:.3f} ({st['n']})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        if key == "kendall_tau":
            for name, ref in paper.items():
                lines.append(f"| {name} | " + " | ".join(f"{ref[n]:.3f}" if n in ref else "–" for n in sizes) + " |")
        lines.append("")
    diff_rows = {}
    if pairs:
        lines += ["### Paired differences in τ over all cells, per seed", "",
                  "| pair | " + " | ".join(f"{n} cells" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for a, b in pairs:
            cells = []
            for n in sizes:
                d = paired(records, a, b, n)
                diff_rows[f"{a} - {b}"] = {**diff_rows.get(f"{a} - {b}", {}), n: d}
                cells.append("–" if d is None else f"{d['mean']:+.3f} ± {d['std']:.3f}, {d['wins']}/{d['n']} seeds "
                             f"ahead ({', '.join(f'{x:+.3f}' for x in d['diffs'])})")
            lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
        lines.append("")
    return {"table": table, "paired": diff_rows}, "\n".join(lines)


def plot(table: dict, sizes: list[int], path: Path, paper: dict[str, dict[int, float]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for ax, (key, title, _) in zip(axes, (METRICS[0], METRICS[2])):
        for m, by_size in table.items():
            ns = [n for n in sizes if by_size[n][key]]
            if ns:
                ax.errorbar(ns, [by_size[n][key]["mean"] for n in ns], yerr=[by_size[n][key]["std"] for n in ns],
                            marker="o", capsize=3, label=m)
        if key == "kendall_tau":
            for name, ref in paper.items():
                ns = [n for n in sizes if n in ref]
                ax.plot(ns, [ref[n] for n in ns], ls="--", marker="x", alpha=0.6, label=name)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("training cells")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="configs/bench/predictor.yaml")
    p.add_argument("--sizes", default=None, help="comma-separated training sizes (default: the suite's)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the suite's)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the suite's methods")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=None, help="output directory (default: the suite's)")
    p.add_argument("--finished-only", action="store_true",
                   help="summarize the runs already finished by today's code; train nothing (missing runs are listed)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = p.parse_args(argv)
    suite_path = Path(args.suite)
    suite = load_suite(suite_path if suite_path.is_absolute() else REPO_ROOT / suite_path)
    sizes = [int(s) for s in (args.sizes or ",".join(map(str, suite.get("sizes", [78, 156, 469])))).split(",")]
    seeds = [int(s) for s in (args.seeds or ",".join(map(str, suite.get("seeds", [0, 1, 2, 3, 4])))).split(",")]
    methods = args.methods.split(",") if args.methods else list(suite["methods"])
    unknown = [m for m in methods if m not in suite["methods"]]
    if unknown:
        print(f"error: unknown method(s) {unknown}; the suite has {list(suite['methods'])}", file=sys.stderr)
        return 2
    out = Path(args.out or suite.get("out", "results/bench_predictor"))
    out = out if out.is_absolute() else REPO_ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    current = source_version()
    if current.get("git_dirty_pipeline"):
        print("[bench] pipeline/ has uncommitted edits: no run can be reused, and these runs cannot be reused "
              "later", flush=True)
    # size-major: every method and seed at a size before the next size, so a benchmark stopped early (then
    # summarized with --finished-only) has whole columns at the small sizes, where the comparisons matter most
    trained = [m for m in methods if not is_blend(suite, m)]
    missing = sorted({b for m in methods if is_blend(suite, m) for b in suite["methods"][m]["blend"]} - set(trained))
    if missing:
        print(f"error: blends need their members in --methods too: {missing}", file=sys.stderr)
        return 2
    jobs = [(m, n, s) for n in sizes for s in seeds for m in trained if runs_at(suite, m, n, s)]
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda j: run_one(suite, *j, out, args.overrides, current, args.finished_only), jobs))
    not_run = [r for r in records if r.get("not_run")]
    records = [r for r in records if not r.get("not_run")]
    done = {(r["method"], r["num_train"], r["seed"]) for r in records if "error" not in r}
    records += [run_blend(suite, m, n, s, out) for s in seeds for n in sizes for m in methods if is_blend(suite, m)
                and all((b, n, s) in done for b in suite["methods"][m]["blend"])]
    errors = [r for r in records if "error" in r]
    for r in errors:
        print(f"[bench] FAILED {r['method']} n={r['num_train']} seed={r['seed']}:\n{r['error']}", file=sys.stderr)
    records = [r for r in records if "error" not in r]
    atomic_write_text(out / "runs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    pairs = [p for p in suite.get("pairs", []) if all(m in methods for m in p)]
    table, md = summarize(records, methods, sizes, pairs, suite["paper"])
    commits = sorted({r["commit"] for r in records if r.get("commit")})
    reused = [r for r in records if r.get("reused")]
    cmd = " ".join(["python -m benchmarks.predictor", f"--suite {args.suite}", *(["--finished-only"] if args.finished_only else []), f"--sizes {','.join(map(str, sizes))}",
                    f"--seeds {','.join(map(str, seeds))}", f"--methods {','.join(methods)}", *args.overrides])
    header = [f"# Predictor benchmark: {suite.get('title', suite_path.stem)}", "", f"`{cmd}`", "",
              suite.get("description", "").strip(), "",
              f"Base config `{Path(suite['config']).relative_to(REPO_ROOT)}`; methods (overrides): "
              + "; ".join(f"**{m}** " + (f"ensemble of {' + '.join(suite['methods'][m]['blend'])}" if is_blend(suite, m)
                          else f"`{' '.join(_overrides(suite['methods'][m])) or '(base)'}`") for m in methods) + ".",
              "", f"Cells: mean ± std over seeds (number of seeds). Runs made by commit(s) {', '.join(c[:10] for c in commits)}"
              + (f"; {len(reused)} of {len(records)} runs reused from an earlier invocation with the same package "
                 f"code and config." if reused else "; every run trained by this invocation."), ""]
    if errors:
        header += [f"{len(errors)} runs FAILED (see stderr).", ""]
    if not_run:
        header += [f"Not run ({len(not_run)}, `--finished-only`): "
                   + ", ".join(f"{r['method']} n={r['num_train']} seed={r['seed']}" for r in not_run) + ".", ""]
    text = "\n".join(header) + "\n" + md
    atomic_write_text(out / "summary.md", text)
    atomic_write_json(out / "summary.json", {"command": cmd, "sizes": sizes, "seeds": seeds, "methods": methods,
                                             **table, "records": records})
    plot(table["table"], sizes, out / "tau_vs_size.png", suite["paper"])
    print(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
