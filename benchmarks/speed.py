"""Speed: scoring with a trained predictor (hypernetwork off) and the cost of one training update.

    python -m benchmarks.speed [--run RUN_DIR] [--updates 10] [--profiles cpu,paper] [--spaces nb201,nb101,darts]

1. Scoring the table of a trained run (`pipeline.scoring.Scorer`, what `python -m pipeline.evaluate` and the
   search use): cold (parse + encode + PyG collation, then forward) and warm (graph table cached beside the
   table, forward only). Trained weights matter: denormal floats made a trained predictor ~20x slower
   before flush-to-zero.
2. Step time: wall time of the trainer's own update (`pipeline.train.run_update`) for HyperNAS and
   HyperNAS-P, same encoder and architectures, NB201 CPU and paper profiles; the ratio is the
   hypernetwork's cost.
3. Per space (`--spaces`): one HyperNAS update with the space's CPU profile, and scoring 10,000 sampled
   architectures (graph building included) with an initialised, untrained predictor of that profile.
Writes results/bench_speed/summary.md and summary.json.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.provenance import code_line
from pipeline import distributed
from pipeline import train as T
from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.evaluate import predict_all
from pipeline.models.predictor import VARIANTS
from pipeline.scoring import Scorer
from pipeline.spaces import space_from_config
from pipeline.utils.io import atomic_write_json, atomic_write_text
from pipeline.utils.paths import REPO_ROOT

PROFILES = {"cpu": "configs/nb201_cpu.yaml", "paper": "configs/nb201.yaml"}


def time_scoring(run_dir: Path, repeats: int = 3) -> dict:
    scorer = Scorer.from_run(run_dir)
    table = Path(scorer.cfg.data.table)
    for cache in table.parent.glob(f"{table.name}.inputs-*.pt"):
        cache.unlink()  # cold: no graph cache
    t0 = time.perf_counter()
    _, archs, pred = scorer.score_table(table)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.score_table(table)
        warm.append(time.perf_counter() - t0)
    return {"run": str(run_dir), "archs": len(archs), "cold_s": cold, "warm_s_best": min(warm),
            "warm_s_mean": float(np.mean(warm)), "pred_std": float(pred.std()), "threads": torch.get_num_threads()}


def time_updates(config: str, variant: str, updates: int, threads: int) -> float:
    """Seconds per optimizer update of the trainer's own `run_update` (after one warm-up update)."""
    cfg = load_config(REPO_ROOT / config, [f"model.variant={variant}", f"train.threads={threads}"])
    T.setup_runtime(cfg)
    space = space_from_config(cfg.space)
    data = T.load_training_data(cfg, space)
    train_idx = T.split_archs(cfg, len(data.archs)).train
    targets = torch.zeros(len(data.archs))
    features = torch.tensor(data.features.values, dtype=torch.float32) if data.features is not None else None
    objective = T.build_objective(cfg, space, data.num_classes, 0 if features is None else features.shape[1])
    opt, _ = T.build_optimizer(cfg, objective)
    rt = distributed.Runtime()
    rt.wrap(objective, opt)
    k = cfg.train.accumulate

    def update(u: int) -> None:
        rows = train_idx[(u * k) % (len(train_idx) - k):][:k]
        T.run_update(cfg, rt, objective, data, T.UpdateBatch(rows, u * k), targets, features)

    update(0)  # warm-up (allocations, template cache)
    t0 = time.perf_counter()
    for u in range(1, updates + 1):
        update(u)
    return (time.perf_counter() - t0) / updates


def time_space(space_name: str, updates: int, threads: int, n_score: int = 10_000) -> dict:
    """One space's CPU profile: HyperNAS update time and scoring `n_score` sampled architectures."""
    config = f"configs/{space_name}_cpu.yaml"
    step = time_updates(config, "hypernas", updates, threads)
    cfg = load_config(REPO_ROOT / config, ["model.variant=hypernas_p", f"train.threads={threads}"])
    T.setup_runtime(cfg)
    space = space_from_config(cfg.space)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(n_score)]
    t0 = time.perf_counter()
    graphs = build_graph_table(space, archs, VARIANTS.get(cfg.model.variant).scope)
    feats = None
    if cfg.model.features:  # the profile's feature sets are part of scoring
        from pipeline.features import compute_features
        feats = torch.tensor(compute_features(cfg.model.features, space, archs).values, dtype=torch.float32)
    t_graphs = time.perf_counter() - t0
    from pipeline.data.manifest import read_manifest  # the aux images' classes, as the trainer reads them
    classes = int(read_manifest(cfg.data.aux_shards, cfg.data.aux_dataset)["num_classes"])
    model = T.build_objective(cfg, space, classes, 0 if feats is None else feats.shape[1]).model
    if feats is not None:
        model.set_feature_stats(feats)
    t0 = time.perf_counter()
    predict_all(model, graphs, cfg.eval.batch_size, features=feats)
    t_fwd = time.perf_counter() - t0
    return {"space": space_name, "config": config, "hypernas_update_s": step, "score_archs": n_score,
            "score_graphs_s": t_graphs, "score_forward_s": t_fwd, "score_total_s": t_graphs + t_fwd}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="results/bench_predictor/runs/hypernas-n156-s0",
                   help="run directory of a trained predictor to time scoring with")
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--paper-updates", type=int, default=3)
    p.add_argument("--profiles", default="cpu,paper")
    p.add_argument("--spaces", default="", help="comma-separated spaces for the per-space table (e.g. nb201,nb101,darts)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--out", default="results/bench_speed")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    report: dict = {}
    lines = ["# Speed benchmark", "", f"`python -m benchmarks.speed {' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"on {torch.get_num_threads()} torch threads.", "", code_line() + ".", ""]
    run = Path(args.run)
    if (run / "checkpoints").is_dir():
        s = report["scoring"] = time_scoring(run)
        lines += ["## Scoring the whole table (hypernetwork off)", "",
                  f"trained predictor `{s['run']}`: {s['archs']} architectures — cold (parse, encode, collate, "
                  f"forward; graph cache written) {s['cold_s']:.2f} s; warm (graph table cached) "
                  f"{s['warm_s_best']:.2f} s best of 3 (mean {s['warm_s_mean']:.2f} s).", ""]
    else:
        lines += [f"(no trained run at {run}: scoring not timed)", ""]
    rows = []
    for prof in [x for x in args.profiles.split(",") if x]:
        n = args.updates if prof == "cpu" else args.paper_updates
        t_h = time_updates(PROFILES[prof], "hypernas", n, args.threads)
        t_p = time_updates(PROFILES[prof], "hypernas_p", n, args.threads)
        rows.append({"profile": prof, "hypernas_s": t_h, "hypernas_p_s": t_p, "ratio": t_h / t_p, "updates": n})
    if rows:
        report["step_time"] = rows
        lines += ["## Step time per update (NB201, 10 architectures)", "",
                  "| profile | HyperNAS s/update | HyperNAS-P s/update | ratio |", "|---|---|---|---|"]
        lines += [f"| {r['profile']} | {r['hypernas_s']:.3f} | {r['hypernas_p_s']:.3f} | {r['ratio']:.1f}x |"
                  for r in rows] + [""]
    spaces = [time_space(sp, args.updates, args.threads) for sp in args.spaces.split(",") if sp]
    if spaces:
        report["spaces"] = spaces
        lines += ["## Per space (CPU profile)", "",
                  "| space | HyperNAS s/update | score 10,000 sampled archs: graphs s | forward s | total s |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['space']} | {r['hypernas_update_s']:.3f} | {r['score_graphs_s']:.2f} | "
                  f"{r['score_forward_s']:.2f} | {r['score_total_s']:.2f} |" for r in spaces] + [""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", report)
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
