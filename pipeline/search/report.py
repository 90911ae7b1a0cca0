"""The result of a finished search: search.json, the trajectory with the eval label of the best so far, and
best_so_far.png. The eval label is looked up here, after the last query, for reporting only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.utils.io import atomic_path, atomic_write_json


def finish(ctx, oracle, method, rounds: list[dict], elapsed_s: float) -> dict[str, Any]:
    cfg, search, traj = ctx.cfg, ctx.search, ctx.traj
    best_rows = traj.best_index_so_far()
    eval_of_best = oracle.evaluate([traj.rows[i].arch for i in best_rows], cfg.data.eval_label)
    b = int(best_rows[-1])
    best = traj.rows[b]
    summary = {
        "best_arch": best.arch_str, "best_train_label": best.label,
        "best_eval": None if eval_of_best is None else float(eval_of_best[-1]),
        "queries_used": len(traj), "best_found_at": b + 1, "budget": search.queries,
        "method": search.method, "predictor": method.predictor or None, "space": cfg.space.name,
        "seed": cfg.train.seed, "train_label": cfg.data.train_label, "eval_label": cfg.data.eval_label,
        "oracle": search.oracle, "oracle_source": oracle.describe(), "constraints": ctx.cands.constraints.describe() or None,
        "oracle_calls": traj.next_round, "projected_children": ctx.cands.projections,
        "train_time_s": round(sum(r.get("train_time_s", 0.0) for r in rounds), 2),
        "elapsed_s_this_invocation": round(elapsed_s, 2), "run_dir": str(ctx.run_dir),
    }
    meta = {k: summary[k] for k in ("method", "predictor", "space", "seed", "train_label", "eval_label")}
    traj.write(eval_of_best, meta)
    plot_best_so_far(ctx.run_dir / "best_so_far.png", traj.best_so_far(), eval_of_best, cfg.data.train_label,
                     cfg.data.eval_label, f"{cfg.space.name} {method.label(search.method, cfg)}, seed {cfg.train.seed}")
    atomic_write_json(ctx.run_dir / "search.json", summary)
    return summary


def plot_best_so_far(path: Path, best_label: Sequence[float], best_eval: Sequence[float] | None, train_label: str,
                     eval_label: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.arange(1, len(best_label) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.step(n, best_label, where="post", label=f"best {train_label} (queried)")
    shown = [np.asarray(best_label, dtype=np.float64)]
    if best_eval is not None:
        ax.step(n, best_eval, where="post", ls="--", label=f"its {eval_label} (reported only)")
        shown.append(np.asarray(best_eval, dtype=np.float64))
    ax.set_xlabel("queries")
    ax.set_ylabel("label")
    values = np.concatenate(shown)
    ax.set_ylim(float(np.percentile(values, 5)) - 0.5, float(values.max()) + 0.3)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
