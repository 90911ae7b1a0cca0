"""One search: checks before any query, the query loop, resume, and the outputs (pipeline/search/report.py).

Run directory (`run.root/run.name`, default `search-<space>-<method or predictor>-q<queries>-s<seed>`):

  config.yaml, env.json    the resolved run config with its `search:` section; versions, host, commit
  state.json               what the queried set belongs to (a re-run with another config is refused)
  trajectory.parquet       one row per query (pipeline/search/trajectory.py), rewritten after every oracle call
  rounds.json              per oracle call: what the method did (training time, candidates scored, ...)
  tables/round<k>.parquet, rounds/round<k>/   hypernas: the queried pairs and the trainer's run of round k
  search.json, best_so_far.png   the result (written when the budget is spent)
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.search.candidates import CandidateSpace, Constraints
from pipeline.search.methods import METHODS, initial_sample
from pipeline.search.trajectory import Trajectory
from pipeline.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("hypernas.search")
_STATE_VERSION = 1
_OWN_OUTPUTS = ("trajectory.parquet", "rounds.json", "search.json", "best_so_far.png", "state.json")


@dataclass
class SearchContext:
    cfg: Any
    search: Any
    space: Any
    cands: CandidateSpace
    traj: Trajectory
    run_dir: Path
    seed: int


def search_run_name(cfg, search) -> str:
    what = METHODS.get(search.method).label(search.method, cfg)
    return cfg.run.name or f"search-{cfg.space.name}-{what}-q{search.queries}-s{cfg.train.seed}"


def fingerprint(cfg, search) -> dict[str, Any]:
    """Every key that changes which architectures get queried; the budget may grow between runs."""
    from pipeline.checkpoints import config_fingerprint
    s = asdict(search)
    s.pop("queries")
    c = config_fingerprint(cfg)
    c.pop("search", None)  # once pipeline/config.py's Config holds the section itself
    return {"config": c, "search": s}


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: before {a!r}, now {b!r}"]


def open_run_dir(cfg, search, run_dir: Path) -> None:
    """Refuse to continue a queried set that another config made; start over when run.resume=false."""
    state_path = run_dir / "state.json"
    if not cfg.run.resume:
        for name in _OWN_OUTPUTS:
            (run_dir / name).unlink(missing_ok=True)
        for sub in ("rounds", "tables"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    elif state_path.is_file():
        saved = json.loads(state_path.read_text())
        diffs = _diff(saved.get("fingerprint"), json.loads(json.dumps(fingerprint(cfg, search))))
        if diffs:
            raise ConfigError(f"run directory {str(run_dir)!r} holds a search made with another config "
                              f"({'; '.join(diffs)}); use another run.name, or run.resume=false to start over")
    elif (run_dir / "trajectory.parquet").is_file():
        raise ConfigError(f"run directory {str(run_dir)!r} has a trajectory but no state.json; use another "
                          f"run.name, or run.resume=false to start over")


def ensure_images(cfg) -> None:
    """The aux-image shards a hypernetwork variant trains on (built when missing and data.prepare)."""
    from pipeline.errors import DataError
    shards = Path(cfg.data.aux_shards)
    if any(shards.glob("*-manifest.json")):
        return
    if not cfg.data.prepare:
        raise DataError(f"no shard manifest in {str(shards)!r} (data.prepare=false); build it with "
                        f"`python -m data_prep.images --source SRC --out {shards}`")
    from data_prep.images import prepare_images
    log.info("sharding aux images %s -> %s", cfg.data.aux_source, shards)
    prepare_images(cfg.data.aux_source, shards, dataset=cfg.data.aux_dataset, workers=cfg.data.prepare_workers)


def prepare(cfg, search):
    """Everything that can fail on bad input, before any query: data, labels, constraints, budget."""
    from pipeline.search.oracle import ORACLES
    from pipeline.spaces import space_from_config

    space = space_from_config(cfg.space)
    oracle = ORACLES.get(search.oracle).from_config(cfg, space)
    if METHODS.get(search.method).needs_images(cfg):
        ensure_images(cfg)
    pool = oracle.pool()
    cands = CandidateSpace(space, pool, Constraints.from_search(search),
                           where=oracle.describe() if pool is not None else f"space {space.name}")
    cands.check_satisfiable(search.queries)
    return space, oracle, cands


def run_search(cfg, search) -> dict[str, Any]:
    """Run (or continue) the search `cfg` + `search` describe; return the search.json summary."""
    from pipeline.rundir import RunDir
    from pipeline.search.config import search_tree
    from pipeline.search.report import finish

    t0 = time.time()
    space, oracle, cands = prepare(cfg, search)
    run_dir = Path(cfg.run.root) / search_run_name(cfg, search)
    open_run_dir(cfg, search, run_dir)
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    traj = Trajectory.load(run_dir / "trajectory.parquet", space)
    if len(traj) > search.queries:
        raise ConfigError(f"config key 'search.queries': run directory {str(run_dir)!r} already holds {len(traj)} "
                          f"queries, more than the budget of {search.queries}")
    atomic_write_text(run.file("config.yaml"), yaml.safe_dump(search_tree(cfg, search), sort_keys=False))
    run.write_env()
    atomic_write_json(run.file("state.json"), {"version": _STATE_VERSION, "fingerprint": fingerprint(cfg, search)})
    rounds_path = run.file("rounds.json")
    rounds = [r for r in (json.loads(rounds_path.read_text()) if rounds_path.is_file() else [])
              if r["round"] < traj.next_round]
    ctx = SearchContext(cfg, search, space, cands, traj, run_dir, cfg.train.seed)
    method = METHODS.get(search.method)(ctx)
    if len(traj):
        log.info("resuming %s: %d of %d queries done", run_dir, len(traj), search.queries)
    if not len(traj):
        archs = initial_sample(ctx)
        traj.append(archs, [cands.iso(a) for a in archs], oracle.query(archs), 0)
        rounds.append({"round": 0, "queried": len(archs), "what": "initial sample"})
        atomic_write_json(rounds_path, rounds)
    while len(traj) < search.queries:
        k = traj.next_round
        t_round = time.time()
        archs, predicted, info = method.next_batch(k, method.batch_size(search.queries - len(traj)))
        if not archs:
            raise ConfigError(f"round {k}: no proposable architecture of an unqueried class is left after "
                              f"{len(traj)} queries (search.queries={search.queries})")
        traj.append(archs, [cands.iso(a) for a in archs], oracle.query(archs), k, predicted)
        rounds.append({"round": k, "queried": len(archs), "time_s": round(time.time() - t_round, 2), **info})
        atomic_write_json(rounds_path, rounds)
        if len(archs) > 1 or len(traj) % 10 == 0 or len(traj) == search.queries:  # evolution: every 10th
            log.info("round %d: %d/%d queries, best %s so far %.4f", k, len(traj), search.queries,
                     cfg.data.train_label, traj.best_so_far()[-1])
    return finish(ctx, oracle, method, rounds, time.time() - t0)
