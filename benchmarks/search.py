"""Search under a query budget: the config's predictor against random search, regularized evolution and the
random-forest predictor, same budget, same seeds (METHOD.md §8: NB201, 156 queries, 94.37 CIFAR-10 test).

    python -m benchmarks.search [--config configs/search/nb201_cpu.yaml] [--methods hypernas,random,evolution,rf]
        [--seeds 0,1,2,3,4] [--queries 156] [--threshold 94.3] [--jobs 1] [--out results/bench_search]
        [--fresh] [key=value ...]

Every (method, seed) is one `python -m pipeline.search` process (one torch thread, `--jobs` at a time) in
<out>/runs/<method>-s<seed>/; an interrupted benchmark re-run continues each search where it stopped (the
search's own resume), `--fresh` starts them over. The eval label (NB201: CIFAR-10 test accuracy) is looked
up for reporting only; every search chooses by `data.train_label` alone. Writes <out>/summary.md,
summary.json and best_so_far.png (per method, the eval label of the best-by-train-label architecture
so far, mean ± std over seeds, against queries).

Reported per method (mean ± std over seeds): the eval label of the architecture the search ends with;
its train label; how many queries until that best-so-far first reaches --threshold, and until any queried
architecture does; how many seeds ended on the eval optimum, queried it, and queried the train-label
optimum. The last row also gives the eval label of the table's best-by-train-label architecture: a search
ends on that value once it has queried that architecture (NB201 with the validation label: 94.30, not
94.37); one that has not can end higher or lower, since it selects by train label among what it queried.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.provenance import code_line
from pipeline.metrics import summarize_seeds
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import REPO_ROOT, repo_relative

PAPER = {"nb201": {"cifar10_test_200ep": (94.37, 0.00)}}  # METHOD.md §8, 156 queries


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/search/nb201_cpu.yaml")
    p.add_argument("--methods", default="hypernas,random,evolution,rf")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--queries", type=int, default=156)
    p.add_argument("--threshold", type=float, default=94.3, help="eval-label level whose first reach is counted")
    p.add_argument("--jobs", type=int, default=1, help="searches at a time (default 1: the shared 2-core machine)")
    p.add_argument("--out", default="results/bench_search")
    p.add_argument("--fresh", action="store_true", help="delete existing search runs first instead of continuing them")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every search (e.g. search.retrain_epochs=50)")
    return p.parse_args(argv)


def run_one(args, method: str, label: str, seed: int, out: Path) -> dict[str, Any]:
    """One search; `label` names it (the predictor variant for method hypernas, e.g. hypernas_p)."""
    name = f"{label}-s{seed}"
    run_dir = out / "runs" / name
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    done_before = _queries_done(run_dir)
    cmd = [sys.executable, "-m", "pipeline.search", "--config", args.config, f"search.method={method}",
           f"search.queries={args.queries}", f"train.seed={seed}", f"run.root={out / 'runs'}", f"run.name={name}",
           "train.threads=1", "run.progress=false", *args.overrides]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    log = out / "logs" / f"{name}.log"
    atomic_write_text(log, proc.stdout + proc.stderr)
    record = {"method": label, "seed": seed, "run_dir": repo_relative(run_dir), "queries_done_before": done_before,
              "wall_s": round(time.time() - t0, 1)}
    if proc.returncode != 0:
        return {**record, "error": (proc.stderr or proc.stdout)[-3000:]}
    print(f"[bench] {label} seed {seed}: {proc.stdout.strip().splitlines()[-1]} ({record['wall_s']:.0f} s)", flush=True)
    return record


def _queries_done(run_dir: Path) -> int:
    path = run_dir / "trajectory.parquet"
    if not path.is_file():
        return 0
    import pyarrow.parquet as pq
    return pq.read_metadata(path).num_rows


def reference(args) -> dict[str, Any]:
    """Optima, and the eval label of the train-label optimum, over the architectures the searches may
    propose (the constraints applied)."""
    from pipeline.search.config import load_search_config
    from pipeline.search.loop import prepare
    # method random checks nothing of its own: each method's checks run in main, the data's here
    cfg, search = load_search_config(REPO_ROOT / args.config, [f"search.queries={args.queries}", *args.overrides,
                                                               "search.method=random"])
    space, oracle, cands = prepare(cfg, search)
    table = oracle.table  # the reference needs the table oracle (the only one that knows the eval label)
    rows = table.rows([space.to_str(cands.pool[i]) for i in cands.eligible])
    ev, tr = table.label(cfg.data.eval_label)[rows], table.label(cfg.data.train_label)[rows]
    return {"space": cfg.space.name, "train_label": cfg.data.train_label, "eval_label": cfg.data.eval_label,
            "table": repo_relative(cfg.data.table), "eval_optimum": float(ev.max()), "train_optimum": float(tr.max()),
            "train_optimum_eval": float(ev[np.argmax(tr)]), "pool": int(len(rows)), "table_obj": table, "space_obj": space,
            "cfg_obj": cfg, "search_obj": search}


def read_run(record: dict, ref: dict, threshold: float) -> dict:
    import pyarrow.parquet as pq
    run = REPO_ROOT / record["run_dir"]
    s = json.loads((run / "search.json").read_text())
    t = pq.read_table(run / "trajectory.parquet").to_pydict()
    table, space = ref["table_obj"], ref["space_obj"]
    own_eval = table.label(ref["eval_label"])[table.rows(t["arch"])]
    best_eval = np.asarray(t["best_so_far_eval"], dtype=np.float64)

    def first(mask: np.ndarray) -> int | None:
        return int(np.argmax(mask)) + 1 if mask.any() else None

    rounds = json.loads((run / "rounds.json").read_text()) if (run / "rounds.json").is_file() else []
    return {**record, "best_eval": s["best_eval"], "best_train_label": s["best_train_label"],
            "best_found_at": s["best_found_at"], "queries_used": s["queries_used"],
            "reach_best": first(best_eval >= threshold), "reach_any": first(own_eval >= threshold),
            "selected_optimum": bool(s["best_eval"] >= ref["eval_optimum"] - 1e-9),
            "queried_optimum": bool((own_eval >= ref["eval_optimum"] - 1e-9).any()),
            "queried_train_optimum": bool((np.asarray(t["label"]) >= ref["train_optimum"] - 1e-9).any()),
            "train_time_s": s.get("train_time_s", 0.0), "search_time_s": round(sum(r.get("time_s", 0.0) for r in rounds), 1),
            "curve": best_eval.tolist()}


def _ms(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    st = summarize_seeds(values)
    if st["n"] == 1:  # one seed has no spread to show
        return f"{st['mean']:.{digits}f}"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f}"


def _reach(values: list[int | None]) -> str:
    hit = [v for v in values if v is not None]
    return f"{_ms(hit, 0)} ({len(hit)}/{len(values)})" if hit else f"never (0/{len(values)})"


def summarize(records: list[dict], methods: list[str], ref: dict, threshold: float) -> tuple[dict, str]:
    table: dict[str, Any] = {}
    ev, tl = ref["eval_label"], ref["train_label"]
    lines = [f"| method | best {ev} | its {tl} | queries until best-so-far {ev} ≥ {threshold:g} | queries until "
             f"any queried ≥ {threshold:g} | seeds ending on the {ev} optimum | seeds that queried it | seeds that "
             f"queried the {tl} optimum | search time per seed (s) |", "|---|" + "---|" * 8]
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        if not rs:
            continue
        n = len(rs)
        table[m] = {"best_eval": summarize_seeds([r["best_eval"] for r in rs]),
                    "best_train_label": summarize_seeds([r["best_train_label"] for r in rs]),
                    "reach_best": [r["reach_best"] for r in rs], "reach_any": [r["reach_any"] for r in rs],
                    "selected_optimum": sum(r["selected_optimum"] for r in rs),
                    "queried_optimum": sum(r["queried_optimum"] for r in rs),
                    "queried_train_optimum": sum(r["queried_train_optimum"] for r in rs), "seeds": n,
                    "per_seed": {r["seed"]: r["best_eval"] for r in rs}}
        lines.append(f"| {m} | {_ms([r['best_eval'] for r in rs])} | {_ms([r['best_train_label'] for r in rs])} | "
                     f"{_reach([r['reach_best'] for r in rs])} | {_reach([r['reach_any'] for r in rs])} | "
                     f"{table[m]['selected_optimum']}/{n} | {table[m]['queried_optimum']}/{n} | "
                     f"{table[m]['queried_train_optimum']}/{n} | {_ms([r['search_time_s'] for r in rs], 1)} |")
    paper = PAPER.get(ref["space"], {}).get(ev)
    if paper:
        lines.append(f"| paper HyperNAS | {paper[0]:.2f} ± {paper[1]:.2f} | | | | | | | |")
    lines.append(f"| optimum / the {tl} optimum's | {ref['eval_optimum']:.2f} / {ref['train_optimum_eval']:.2f} | "
                 f"{ref['train_optimum']:.2f} "
                 f"| | | | | | |")
    seeds = sorted({r["seed"] for r in records})
    lines += ["", f"Per seed, best {ev}:", "", "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for m in table:
        lines.append(f"| {m} | " + " | ".join(f"{table[m]['per_seed'][s]:.2f}" if s in table[m]["per_seed"] else "–"
                                              for s in seeds) + " |")
    return table, "\n".join(lines) + "\n"


def plot(records: list[dict], methods: list[str], ref: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for m in methods:
        curves = [r["curve"] for r in records if r["method"] == m]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        arr = np.asarray([c[:n] for c in curves])
        x = np.arange(1, n + 1)
        mean, std = arr.mean(0), arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(n)
        ax.step(x, mean, where="post", label=f"{m} ({len(arr)} seeds)")
        ax.fill_between(x, mean - std, mean + std, step="post", alpha=0.15)
    ax.axhline(ref["eval_optimum"], color="k", ls=":", lw=1, label=f"optimum {ref['eval_optimum']:.2f}")
    ax.axhline(ref["train_optimum_eval"], color="grey", ls="--", lw=1,
               label=f"best-by-{ref['train_label']} cell {ref['train_optimum_eval']:.2f}")
    ax.set_ylim(ref["eval_optimum"] - 2.0, ref["eval_optimum"] + 0.3)
    ax.set_xlabel("queries")
    ax.set_ylabel(ref["eval_label"])
    ax.set_title(f"{ref['space']}: {ref['eval_label']} of the best-by-{ref['train_label']} cell so far\n"
                 f"(mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = Path(args.out) if Path(args.out).is_absolute() else REPO_ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    from pipeline.errors import UserError
    try:
        ref = reference(args)  # bad config / unknown method / missing label: one error before any search
        from pipeline.search.methods import METHODS
        for m in methods:
            METHODS.get(m).check_config(ref["search_obj"], ref["cfg_obj"])
        labels = {m: METHODS.get(m).label(m, ref["cfg_obj"]) for m in methods}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = [(m, labels[m], s) for s in seeds for m in methods]  # every method at a seed before the next seed
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda j: run_one(args, *j, out), jobs))
    methods = [labels[m] for m in methods]
    errors = [r for r in records if "error" in r]
    for r in errors:
        print(f"[bench] FAILED {r['method']} seed {r['seed']}:\n{r['error']}", file=sys.stderr)
    records = [read_run(r, ref, args.threshold) for r in records if "error" not in r]
    table, md = summarize(records, methods, ref, args.threshold)
    cmd = " ".join(["python -m benchmarks.search", f"--config {args.config}", f"--methods {args.methods}",
                    f"--seeds {','.join(map(str, seeds))}", f"--queries {args.queries}",
                    f"--threshold {args.threshold:g}", *args.overrides])
    finished = [r for r in records if r["queries_done_before"] >= args.queries]
    resumed = [r for r in records if 0 < r["queries_done_before"] < args.queries]

    def names(rs: list[dict]) -> str:
        return ", ".join(f"{r['method']}-s{r['seed']}" for r in rs)

    header = [f"# Search benchmark: {ref['space']}, {args.queries} queries", "", f"`{cmd}`", "",
              f"Table `{ref['table']}` ({ref['pool']} proposable architectures); every search chooses by "
              f"`{ref['train_label']}`, `{ref['eval_label']}` is looked up for this report only. Best = the "
              f"architecture with the highest `{ref['train_label']}` among the queried ones. Mean ± std (ddof 1) "
              f"over seeds; reach columns: mean ± std over the seeds that reached it (how many did). A search "
              f"that has queried the table's best-by-`{ref['train_label']}` cell ends on its `{ref['eval_label']}`"
              f" ({ref['train_optimum_eval']:.2f}); one that has not can end higher or lower. Search time: the "
              f"search's own rounds (training, evolution, queries; rounds.json), without process start-up.", "",
              code_line()
              + (f"; {len(finished)} of {len(records)} searches were finished by an earlier invocation and "
                 f"are reported from their run directories ({names(finished)})" if finished else "")
              + (f"; {len(resumed)} continued an interrupted search ({names(resumed)})" if resumed else "")
              + ("; every search ran from scratch in this invocation" if not finished and not resumed else "")
              + ".", "", ""]
    if errors:
        header += [f"{len(errors)} searches FAILED (see stderr and {repo_relative(out / 'logs')}).", ""]
    text = "\n".join(header) + md + "\n![best so far](best_so_far.png)\n"
    atomic_write_text(out / "summary.md", text)
    ref_out = {k: v for k, v in ref.items() if not k.endswith("_obj")}
    atomic_write_json(out / "summary.json", {"command": cmd, "methods": methods, "seeds": seeds, "queries": args.queries,
                                             "threshold": args.threshold, "reference": ref_out, "table": table,
                                             "records": [{k: v for k, v in r.items() if k != "curve"} for r in records]})
    plot(records, methods, ref, out / "best_so_far.png")
    print(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
