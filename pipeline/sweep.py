"""Ray Tune sweeps over any config key: the paper's ablations as data, run on one machine or a cluster.

    python -m pipeline.sweep configs/sweeps/ablation.yaml                  # local Ray, loopback only
    python -m pipeline.sweep configs/sweeps/ablation.yaml --address auto   # an existing cluster (its token:
                                                                           # RAY_AUTH_TOKEN_PATH)
    python -m pipeline.sweep configs/sweeps/ablation.yaml --resume         # continue an interrupted sweep
    python -m pipeline.sweep report results/sweep_ablation                 # rebuild table + report only

A sweep spec (YAML, see configs/sweeps/*.yaml) names a base config, fixed overrides, `grid` axes
(every combination; the first axis varies slowest, which is also the order trials start in) and
optional `random` axes (`num_samples` draws per grid point, seeded, so a resumed sweep sees the same
trials), resources per trial, the scheduler (FIFO, or ASHA on validation tau for tuning sweeps; keep
FIFO for ablations) and where results go. Every trial config is built and validated *before* Ray
starts, so a typo in an axis key fails at once, naming the key.

Each trial runs the one trainer, `pipeline.train.train`, reporting every epoch to Tune. The sweep
directory (on a filesystem every node sees):

    <storage>/<name>/
      sweep.json          the spec and the expanded trial list (trial id, axis values)
      configs/<trial>.yaml  each trial's resolved config (absolute data paths)
      runs/<trial>/       each trial's run directory (pipeline/rundir.py), plus
                          sweep_result.json (written when the trial finished) or sweep_error.json
      tune/               Ray Tune's experiment state (used by --resume)
      results.parquet     one row per trial: axis values, status, error, kendall_tau, spearman, times,
                          run_dir (relative to the sweep directory)
      report.md           mean ± std tau over seeds: rows = setting, columns = train sizes
      tau_vs_size.png, tau_per_q.png (when loss.q is an axis)

Resuming: Tune restores its experiment state, and a trial whose run directory holds
sweep_result.json reports the stored result instead of training again, so a finished trial is never
recomputed even when the driver died before Tune recorded it; an interrupted trial continues from
its last epoch checkpoint. Failed trials stay failed unless --retry-failed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.config import Config, dump_yaml, load_config, read_yaml, replace
from pipeline.errors import ConfigError, UserError
from pipeline.metrics import summarize_seeds
from pipeline.ray_cluster import check_address, connect  # noqa: F401 (check_address: part of the API)
from pipeline.utils.extras import require
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import repo_relative

log = logging.getLogger("hypernas.sweep")

RESULT_MARKER = "sweep_result.json"
ERROR_MARKER = "sweep_error.json"
SIZE_KEY, SEED_KEY, Q_KEY, FOLD_KEY = "data.num_train", "train.seed", "loss.q", "data.cv_fold"
# Config keys holding paths; trials chdir into their Tune directory, so these are made absolute.
PATH_KEYS = (("data", "table"), ("data", "benchmark_dir"), ("data", "aux_source"), ("data", "aux_shards"))
SPEC_KEYS = {"name", "config", "overrides", "grid", "random", "num_samples", "random_seed", "resources",
             "max_concurrent", "scheduler", "storage", "cv_folds"}
RANDOM_KINDS = ("uniform", "loguniform", "randint", "choice")


# --------------------------------------------------------------------------------------------------
# The spec


@dataclass
class Trial:
    trial_id: str
    axes: dict[str, Any]          # axis key -> value (grid and random)
    overrides: list[str]          # fixed + axis overrides, applied to the base config in order


@dataclass
class Spec:
    name: str
    path: Path
    base_config: Path
    overrides: list[str]
    grid: dict[str, list]
    random: dict[str, dict]
    num_samples: int
    random_seed: int
    resources: dict[str, float]
    max_concurrent: int | None
    scheduler: dict[str, Any]
    storage: Path
    cv_folds: int = 0             # > 0: every setting also runs K cross-validation trials (selection)
    trials: list[Trial] = field(default_factory=list)
    configs: dict[str, Config] = field(default_factory=dict)

    @property
    def axis_keys(self) -> list[str]:
        return list(self.grid) + list(self.random) + ([FOLD_KEY] if self.cv_folds else [])

    @property
    def sweep_dir(self) -> Path:
        return (self.storage / self.name).resolve()


def _override(key: str, value: Any) -> str:
    # JSON is valid YAML and keeps types: "sum" stays a string, 1.5 a float, [1, 2] a list.
    return f"{key}={json.dumps(value)}"


def _as_overrides(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [_override(k, v) for k, v in raw.items()]
    if isinstance(raw, list) and all(isinstance(x, str) and "=" in x for x in raw):
        return list(raw)
    raise ConfigError(f"{where}: `overrides` must be a mapping of config keys or a list of key=value strings")


def _sample(kind_spec: dict, key: str, rng: np.random.Generator) -> Any:
    (kind, args), = kind_spec.items()
    if kind == "choice":
        return args[int(rng.integers(len(args)))]
    lo, hi = args
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return int(rng.integers(lo, hi))  # randint: [lo, hi)


def _check_random_axis(key: str, v: Any, where: str) -> None:
    if not (isinstance(v, dict) and len(v) == 1 and next(iter(v)) in RANDOM_KINDS):
        raise ConfigError(f"{where}: random axis {key!r} must be one of "
                          f"{{{' | '.join(k + ': ...' for k in RANDOM_KINDS)}}}, got {v!r}")
    (kind, args), = v.items()
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: random axis {key!r}: choice needs a non-empty list")
    elif not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
              and args[0] < args[1] and (kind != "loguniform" or args[0] > 0)):
        raise ConfigError(f"{where}: random axis {key!r}: {kind} needs [low, high] with low < high"
                          f"{' and low > 0' if kind == 'loguniform' else ''}, got {args!r}")


def _slug(value: Any) -> str:
    s = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in s)


def short_name(key: str, keys: list[str]) -> str:
    """`loss.q` -> `q` unless another axis ends the same way."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def load_spec(path: str | Path, extra_overrides: list[str] = (), storage: str | None = None,
              name: str | None = None, max_concurrent: int | None = None) -> Spec:
    """Read, expand and validate a sweep spec: every trial config is built here, before Ray starts."""
    path = Path(path)
    where = f"sweep spec {str(path)!r}"
    raw = read_yaml(path)
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(SPEC_KEYS)}")
    if "config" not in raw:
        raise ConfigError(f"{where}: `config` (the base config file) is required")
    grid = raw.get("grid") or {}
    rand = raw.get("random") or {}
    if not isinstance(grid, dict) or not isinstance(rand, dict):
        raise ConfigError(f"{where}: `grid` and `random` must be mappings of config key -> values")
    if not grid and not rand:
        raise ConfigError(f"{where}: the grid is empty (no `grid` or `random` axes): nothing to sweep")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid axis {key!r} has no values (need a non-empty list, got {values!r})")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: grid axis {key!r} repeats a value: {values!r}")
    for key, v in rand.items():
        _check_random_axis(key, v, where)
    dup = set(grid) & set(rand)
    if dup:
        raise ConfigError(f"{where}: axis {sorted(dup)[0]!r} is both a grid and a random axis")
    resources = {"cpu": 1, "gpu": 0, **(raw.get("resources") or {})}
    bad = set(resources) - {"cpu", "gpu"}
    if bad or not all(isinstance(v, (int, float)) and v >= 0 for v in resources.values()) or resources["cpu"] <= 0:
        raise ConfigError(f"{where}: `resources` must be {{cpu: >0, gpu: >=0}}, got {raw.get('resources')!r}")
    scheduler = raw.get("scheduler") or {"type": "fifo"}
    if isinstance(scheduler, str):
        scheduler = {"type": scheduler}
    if scheduler.get("type") not in ("fifo", "asha"):
        raise ConfigError(f"{where}: scheduler.type must be 'fifo' or 'asha', got {scheduler.get('type')!r}")
    asha_keys = {"type", "metric", "mode", "grace_period", "reduction_factor", "max_t"}
    if set(scheduler) - asha_keys:
        raise ConfigError(f"{where}: unknown scheduler key(s) {sorted(set(scheduler) - asha_keys)}")
    num_samples = int(raw.get("num_samples", 1))
    if num_samples < 1:
        raise ConfigError(f"{where}: num_samples must be >= 1")
    cv_folds = raw.get("cv_folds", 0)
    if not isinstance(cv_folds, int) or isinstance(cv_folds, bool) or cv_folds == 1 or cv_folds < 0:
        raise ConfigError(f"{where}: cv_folds must be 0 (off) or an integer >= 2, got {cv_folds!r}")
    if FOLD_KEY in grid or FOLD_KEY in rand or "data.cv_folds" in grid:
        raise ConfigError(f"{where}: use `cv_folds: K` instead of a {FOLD_KEY} axis")
    mc = max_concurrent if max_concurrent is not None else raw.get("max_concurrent")
    if mc is not None and (not isinstance(mc, int) or mc < 1):
        raise ConfigError(f"{where}: max_concurrent must be a positive integer or null, got {mc!r}")

    spec = Spec(name=name or raw.get("name") or path.stem, path=path.resolve(),
                base_config=(path.parent / raw["config"]).resolve(),
                overrides=_as_overrides(raw.get("overrides"), where) + list(extra_overrides),
                grid=grid, random=rand, num_samples=num_samples, random_seed=int(raw.get("random_seed", 0)),
                resources=resources, max_concurrent=mc, scheduler=scheduler,
                storage=Path(storage or raw.get("storage") or "runs/sweeps"), cv_folds=cv_folds)
    base = load_config(spec.base_config, spec.overrides)
    expand(spec, base)
    return spec


def expand(spec: Spec, base: Config) -> None:
    """The trial list (grid order, then samples) and each trial's validated config. With `cv_folds: K`
    each setting's trial is followed by its K cross-validation trials (same axes, `data.cv_fold` = k):
    they score held-out training cells on the training label, which is what the report selects by."""
    rng = np.random.default_rng(spec.random_seed)
    keys = spec.axis_keys
    points = list(itertools.product(*spec.grid.values())) if spec.grid else [()]
    seen: set[str] = set()
    for point in points:
        for _ in range(spec.num_samples if spec.random else 1):
            axes = dict(zip(spec.grid, point))
            axes.update({k: _sample(v, k, rng) for k, v in spec.random.items()})
            folds = [None] + list(range(spec.cv_folds))
            for fold in folds:
                trial_axes = dict(axes) if fold is None else {**axes, FOLD_KEY: fold}
                i = len(spec.trials)
                tid = f"t{i:03d}_" + "_".join(f"{short_name(k, keys)}={_slug(v)}" for k, v in trial_axes.items())
                if len(tid) > 120:
                    tid = f"t{i:03d}"
                assert tid not in seen
                seen.add(tid)
                overrides = [_override(k, v) for k, v in trial_axes.items()]
                if fold is not None:
                    overrides.insert(0, _override("data.cv_folds", spec.cv_folds))
                try:
                    cfg = replace(base, *overrides)
                except ConfigError as e:
                    raise ConfigError(f"sweep axis value {overrides}: {e}") from None
                spec.trials.append(Trial(tid, trial_axes, spec.overrides + overrides))
                spec.configs[tid] = cfg


def trial_config(spec: Spec, trial: Trial) -> Config:
    """The config a trial runs: data paths absolute, run dir under the sweep, threads = its CPUs."""
    cfg = spec.configs[trial.trial_id]
    abs_paths = [f"{s}.{k}={json.dumps(str(Path(getattr(getattr(cfg, s), k)).resolve()))}" for s, k in PATH_KEYS]
    threads = [f"train.threads={int(spec.resources['cpu'])}"] if cfg.train.threads == 0 else []
    return replace(cfg, *abs_paths, *threads, _override("run.root", str(spec.sweep_dir / "runs")),
                   _override("run.name", trial.trial_id), "run.progress=false", "run.resume=true")


def spec_record(spec: Spec) -> dict[str, Any]:
    return {"name": spec.name, "spec_file": repo_relative(spec.path),
            "base_config": repo_relative(spec.base_config), "overrides": spec.overrides,
            "grid": spec.grid, "random": spec.random, "num_samples": spec.num_samples,
            "random_seed": spec.random_seed, "resources": spec.resources, "max_concurrent": spec.max_concurrent,
            "scheduler": spec.scheduler, "axis_keys": spec.axis_keys,
            "trials": [{"trial_id": t.trial_id, "axes": t.axes, "overrides": t.overrides,
                        "num_train": spec.configs[t.trial_id].data.num_train,
                        "seed": spec.configs[t.trial_id].train.seed} for t in spec.trials]}


# --------------------------------------------------------------------------------------------------
# The trial (runs in a Ray worker)


def run_trial(params: dict[str, Any]) -> None:
    """Function trainable: train one config with the project's trainer, report to Tune."""
    from ray import tune

    from pipeline.train import train

    params = params.get("trial", params)
    cfg = load_config(params["config"])
    run_dir = Path(cfg.run.root) / cfg.run.name
    marker = run_dir / RESULT_MARKER
    if marker.is_file():  # finished before the sweep was interrupted: report it, never recompute
        tune.report({**json.loads(marker.read_text()), "reused": True})
        return
    # Every report carries the latest losses and val_tau: Tune checks the scheduler's metric in each one.
    last_val = {"val_tau": float("nan")}

    def on_epoch(record: dict[str, Any]) -> None:
        last_val.update({k: v for k, v in record.items() if k == "val_tau" or k.startswith("loss/")})
        tune.report({**record, **last_val})

    t0 = time.time()
    try:
        summary = train(cfg, on_epoch=on_epoch)
    except Exception as e:
        atomic_write_json(run_dir / ERROR_MARKER, {"error": f"{type(e).__name__}: {e}",
                                                   "traceback": traceback.format_exc(), "time": time.time()})
        raise
    result = {"kendall_tau": summary.get("kendall_tau", float("nan")),
              "spearman": summary.get("spearman", float("nan")), "cv_tau": summary.get("cv_tau", float("nan")),
              **last_val, "epoch": cfg.train.epochs,
              "train_time_s": summary.get("train_time_s"), "total_time_s": summary.get("total_time_s"),
              "trial_time_s": time.time() - t0, "finished_at": time.time(), "node": socket.gethostname(),
              "run_dir": str(run_dir)}
    for k in ("generated_aux_acc_mean", "kendall_tau_generated_acc"):
        if k in summary:
            result[k] = summary[k]
    (run_dir / ERROR_MARKER).unlink(missing_ok=True)
    atomic_write_json(marker, result)
    tune.report({**result, "reused": False})


# --------------------------------------------------------------------------------------------------
# Ray: connection, resources, the Tuner


def check_resources(resources: dict[str, float]) -> None:
    """Every trial must fit on at least one alive node, or Tune would wait forever."""
    import ray

    need_cpu, need_gpu = resources["cpu"], resources.get("gpu", 0)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= need_cpu and r.get("GPU", 0) >= need_gpu for r in nodes):
        return
    have = ", ".join(f"CPU {r.get('CPU', 0):g} GPU {r.get('GPU', 0):g}" for r in nodes) or "no alive nodes"
    raise UserError(f"no node of the cluster can hold one trial's resources (cpu {need_cpu:g}, gpu {need_gpu:g}); "
                    f"nodes: {have}. Lower `resources` in the spec or add nodes.")


def run_sweep(spec: Spec, address: str | None = None, resume: bool = False, retry_failed: bool = False,
              num_cpus: int | None = None) -> Path:
    """Run (or resume) the sweep; write the table and report; return the sweep directory."""
    sweep_dir = spec.sweep_dir
    record = spec_record(spec)
    saved = sweep_dir / "sweep.json"
    if saved.is_file():
        if not resume:
            raise UserError(f"sweep directory {str(sweep_dir)!r} already holds a sweep; pass --resume to "
                            f"continue it, or use another --name / --storage")
        old = json.loads(saved.read_text())
        if [t["trial_id"] for t in old["trials"]] != [t["trial_id"] for t in record["trials"]] or \
                [t["overrides"] for t in old["trials"]] != [t["overrides"] for t in record["trials"]]:
            raise UserError(f"the spec's trials differ from those of the sweep in {str(sweep_dir)!r}; "
                            f"resume with the same spec and overrides, or start a new sweep (--name)")
    elif resume:
        log.warning("nothing to resume in %s: starting the sweep", sweep_dir)

    connect(address, num_cpus)
    check_resources(spec.resources)

    from ray import tune

    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, record)
    params = []
    for t in spec.trials:
        path = sweep_dir / "configs" / f"{t.trial_id}.yaml"
        atomic_write_text(path, dump_yaml(trial_config(spec, t)))
        params.append({"trial_id": t.trial_id, "config": str(path), **t.axes})
    trainable = tune.with_resources(run_trial, {"cpu": spec.resources["cpu"], "gpu": spec.resources.get("gpu", 0)})
    tune_dir = sweep_dir / "tune"
    if resume and tune.Tuner.can_restore(str(tune_dir)):
        log.info("restoring Tune state from %s", tune_dir)
        tuner = tune.Tuner.restore(str(tune_dir), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=retry_failed)
    else:
        scheduler = None
        sched = spec.scheduler
        # The default reads only the budget's labels (the training loss); `val_tau` scores labelled cells
        # beyond the budget (data.val_archs), so stopping trials on it is a choice a real search could not make.
        metric = sched.get("metric", "loss/pred")
        mode = sched.get("mode", "min" if metric.startswith("loss") else "max")
        if sched["type"] == "asha":
            from ray.tune.schedulers import ASHAScheduler
            # Past the last epoch by default: ASHA stops a trial that reaches max_t, and a trial that
            # survives every rung must live to its final evaluation.
            max_t = sched.get("max_t") or max(c.train.epochs for c in spec.configs.values()) + 1
            scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=sched.get("grace_period", 1),
                                      reduction_factor=sched.get("reduction_factor", 3))
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(params)},  # our own expansion: order and ids are ours
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler,
                                        max_concurrent_trials=spec.max_concurrent,
                                        trial_name_creator=lambda t: t.config["trial"]["trial_id"],
                                        trial_dirname_creator=lambda t: t.config["trial"]["trial_id"]),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)))
    grid = tuner.fit()
    statuses = {}
    for r in grid:
        cfg = (r.config or {}).get("trial", {})
        tid = cfg.get("trial_id")
        if tid:
            statuses[tid] = {"tune_error": None if r.error is None else f"{type(r.error).__name__}: {r.error}"}
    atomic_write_json(sweep_dir / "tune_status.json", statuses)
    write_report(sweep_dir)
    return sweep_dir


# --------------------------------------------------------------------------------------------------
# Results: table, report, plots (from the sweep directory alone, so `report DIR` needs no Ray)


def results_table(sweep_dir: Path):
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    rec = json.loads((sweep_dir / "sweep.json").read_text())
    tune_status = {}
    if (sweep_dir / "tune_status.json").is_file():
        tune_status = json.loads((sweep_dir / "tune_status.json").read_text())
    rows = []
    for t in rec["trials"]:
        tid = t["trial_id"]
        run_dir = sweep_dir / "runs" / tid
        row: dict[str, Any] = {"trial_id": tid, **t["axes"], "num_train": t["num_train"], "seed": t["seed"],
                               "status": "not run", "error": None, "kendall_tau": float("nan"), "cv_tau": float("nan"),
                               "spearman": float("nan"), "val_tau": float("nan"), "train_time_s": float("nan"),
                               "total_time_s": float("nan"), "finished_at": float("nan"),
                               "run_dir": str(run_dir.relative_to(sweep_dir))}
        if (run_dir / RESULT_MARKER).is_file():
            res = json.loads((run_dir / RESULT_MARKER).read_text())
            row.update({k: res.get(k, row[k]) for k in ("kendall_tau", "spearman", "cv_tau", "val_tau",
                                                         "train_time_s", "total_time_s", "finished_at")})
            row["status"] = "ok"
        elif (run_dir / ERROR_MARKER).is_file():
            row.update(status="failed", error=json.loads((run_dir / ERROR_MARKER).read_text())["error"])
        elif (tune_status.get(tid) or {}).get("tune_error"):
            row.update(status="failed", error=tune_status[tid]["tune_error"])
        elif run_dir.is_dir() or tid in tune_status:
            # begun, no result: ASHA stopped it, or the sweep was interrupted (FIFO never stops a trial)
            early_stop = (rec.get("scheduler") or {}).get("type") == "asha" and tid in tune_status
            row["status"] = "stopped" if early_stop else "interrupted"
        rows.append(row)
    df = pd.DataFrame(rows)
    if FOLD_KEY not in df.columns:
        df[FOLD_KEY] = np.nan
    for col in ("kendall_tau", "spearman", "cv_tau", "val_tau", "train_time_s", "total_time_s", "finished_at",
                FOLD_KEY):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["error"] = df["error"].astype("string")
    keys = _setting_keys(rec)
    df.insert(1, "setting", [_setting_label(r, keys, rec["axis_keys"]) for _, r in df.iterrows()])
    return df, rec


def _setting_keys(rec: dict) -> list[str]:
    return [k for k in rec["axis_keys"] if k not in (SIZE_KEY, SEED_KEY, FOLD_KEY)]


def _setting_label(row, keys: list[str], all_keys: list[str]) -> str:
    return ", ".join(f"{short_name(k, all_keys)}={_fmt_value(row[k])}" for k in keys) or "base config"


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cell(values) -> tuple[str, dict | None]:
    vals = [v for v in values]
    if not vals:
        return "–", None
    s = summarize_seeds(vals)
    if s["n"] == 1:  # no spread from one seed: don't print a std of 0
        return f"{s['mean']:.3f} (n=1)", s
    return f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})", s


def report_markdown(df, rec: dict) -> str:
    keys = _setting_keys(rec)
    all_keys = rec["axis_keys"]
    df = df.copy()
    df["setting"] = [_setting_label(r, keys, all_keys) for _, r in df.iterrows()]
    sizes = sorted(df["num_train"].unique())
    settings = list(dict.fromkeys(df["setting"]))
    is_cv = df[FOLD_KEY].notna() if FOLD_KEY in df.columns else df["seed"].isna()
    test, cv = df[~is_cv], df[is_cv]
    ok, cv_ok = test[test["status"] == "ok"], cv[cv["status"] == "ok"]
    seeds_planned = test.groupby(["setting", "num_train"]).size()
    counts = df["status"].value_counts().to_dict()
    lines = [f"# Sweep `{rec['name']}`", "",
             f"Spec `{rec['spec_file']}`, base config `{rec['base_config']}`"
             + (f", overrides `{' '.join(rec['overrides'])}`" if rec["overrides"] else "") + ".", "",
             f"{len(df)} trials: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ". "
             "Cells: Kendall τ (all cells of the space, vs the eval label), mean ± sample std over seeds; "
             "n = finished seeds (of those planned, when fewer finished).", ""]

    def table(frame, metric: str, planned=None) -> list[str]:
        out = ["| setting | " + " | ".join(f"{n} archs" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for st in settings:
            cells = []
            for n in sizes:
                vals = frame[(frame["setting"] == st) & (frame["num_train"] == n)][metric].tolist()
                text, _ = _cell(vals)
                want = int(planned.get((st, n), 0)) if planned is not None else 0
                if want and len(vals) < want:
                    text = text.replace(f"(n={len(vals)})", f"(n={len(vals)}/{want})") if vals else f"– (0/{want})"
                cells.append(text)
            out.append(f"| {st} | " + " | ".join(cells) + " |")
        return out + [""]

    if len(test):
        for metric, title in (("kendall_tau", "Kendall τ"), ("spearman", "Spearman ρ")):
            lines += [f"## {title}", ""] + table(ok, metric, seeds_planned)
    if len(cv):
        lines += ["## Cross-validation τ inside the training budget (selection)", "",
                  "Mean ± std over every fold of every seed; each fold scores held-out *training* cells on the "
                  "training label, so no test label is read.", ""] + table(cv_ok, "cv_tau")
    # Selection never reads test τ: the best setting is the one with the highest CV τ.
    if len(settings) > 1:
        lines += ["## Best setting per train size", ""]
        if not len(cv_ok):
            lines += ["No setting is called best: selection must not use test labels. Add `cv_folds: K` to the "
                      "spec to rank settings by cross-validation τ inside the training budget.", ""]
        else:
            for n in sizes:
                means = cv_ok[cv_ok["num_train"] == n].groupby("setting")["cv_tau"].agg(["mean", "count"])
                means = means.sort_values("mean", ascending=False)
                if len(means) >= 2:
                    b, r = means.iloc[0], means.iloc[1]
                    tau = ok[(ok["num_train"] == n) & (ok["setting"] == means.index[0])]["kendall_tau"]
                    test_txt = f"; its test τ {tau.mean():.3f} (n={len(tau)})" if len(tau) else ""
                    lines.append(f"- {n} archs: **{means.index[0]}** CV τ {b['mean']:.3f} (n={int(b['count'])}), "
                                 f"+{b['mean'] - r['mean']:.3f} over {means.index[1]} {r['mean']:.3f}{test_txt}")
                elif len(means) == 1:
                    lines.append(f"- {n} archs: only {means.index[0]} finished its CV trials")
            lines.append("")
    failed = df[df["status"] == "failed"]
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- `{r.trial_id}`: {r.error}" for r in failed.itertuples()] + [""]
    begun = df[df["status"].isin(["stopped", "interrupted"])]
    not_run = int((df["status"] == "not run").sum())
    if len(begun) or not_run:
        lines += ["## Trials without a result", ""]
        lines += [f"- `{r.trial_id}`: {r.status}" for r in begun.itertuples()]
        if not_run:
            lines.append(f"- {not_run} trials not run yet (`--resume` continues the sweep)")
        lines.append("")
    if (ok["total_time_s"].notna()).any():
        lines += [f"Trial wall time: median {ok['total_time_s'].median():.0f} s, total "
                  f"{ok['total_time_s'].sum() / 3600:.2f} h over {len(ok)} finished trials.", ""]
    pngs = ["tau_vs_size.png"] + (["tau_per_q.png"] if Q_KEY in rec["axis_keys"] else [])
    lines += [f"![{p}]({p})" for p in pngs] + [""]
    return "\n".join(lines)


def _plot_tau_lines(df, rec: dict, group_keys: list[str], x_key: str, xlabel: str, title: str, path: Path) -> None:
    """One errorbar line (mean ± std τ over seeds vs `x_key`) per setting of `group_keys`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"] == "ok"].copy()
    ok["group"] = [_setting_label(r, group_keys, rec["axis_keys"]) for _, r in ok.iterrows()]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in dict.fromkeys(ok["group"]):
        stats = ok[ok["group"] == name].groupby(x_key)["kendall_tau"].agg(["mean", "std"]).fillna({"std": 0.0})
        ax.errorbar(stats.index.astype(float), stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Kendall τ (mean ± std over seeds)")
    ax.set_title(f"{rec['name']}: {title}")
    ax.grid(alpha=0.3)
    if len(ok):
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _plot_tau_vs_size(df, rec: dict, path: Path) -> None:
    _plot_tau_lines(df, rec, _setting_keys(rec), "num_train", "training architectures", "τ vs train size", path)


def _plot_tau_per_q(df, rec: dict, path: Path) -> None:
    keys = [k for k in _setting_keys(rec) if k != Q_KEY] + ([SIZE_KEY] if SIZE_KEY in rec["axis_keys"] else [])
    _plot_tau_lines(df, rec, keys, Q_KEY, "preference factor q", "τ per q", path)


def write_report(sweep_dir: str | Path) -> Path:
    """results.parquet, report.md and the plots, rebuilt from the sweep directory."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "sweep.json").is_file():
        raise UserError(f"{str(sweep_dir)!r} is not a sweep directory (no sweep.json)")
    df, rec = results_table(sweep_dir)
    with atomic_path(sweep_dir / "results.parquet", suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    _plot_tau_vs_size(df, rec, sweep_dir / "tau_vs_size.png")
    if Q_KEY in rec["axis_keys"]:
        _plot_tau_per_q(df, rec, sweep_dir / "tau_per_q.png")
    atomic_write_text(sweep_dir / "report.md", report_markdown(df, rec))
    return sweep_dir / "report.md"


# --------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="sweep spec YAML (configs/sweeps/*.yaml)")
    p.add_argument("--address", default=None,
                   help="Ray cluster: 'auto' (the running one), host:port; the driver sends the token in the "
                        "file RAY_AUTH_TOKEN_PATH names (or ~/.ray/auth_token). Default: a local Ray that listens "
                        "on loopback only (pipeline/ray_cluster.py)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in the sweep directory")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run failed trials again")
    p.add_argument("--storage", default=None, help="parent directory of the sweep directory (spec: storage)")
    p.add_argument("--name", default=None, help="sweep directory name (spec: name)")
    p.add_argument("--max-concurrent", type=int, default=None, help="max trials at once (spec: max_concurrent)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (no --address)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra fixed config override for every trial (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the trials, start nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        require("ray", "pandas", what="python -m pipeline.sweep")
        if argv and argv[0] == "report":
            if len(argv) != 2:
                print("usage: python -m pipeline.sweep report SWEEP_DIR", file=sys.stderr)
                return 2
            print(f"report: {write_report(argv[1])}")
            return 0
        args = parse_args(argv)
        spec = load_spec(args.spec, args.overrides, args.storage, args.name, args.max_concurrent)
        print(f"sweep {spec.name!r}: {len(spec.trials)} trials over {', '.join(spec.axis_keys)} -> {spec.sweep_dir}",
              flush=True)
        if args.dry_run:
            for t in spec.trials:
                print(f"  {t.trial_id}")
            return 0
        sweep_dir = run_sweep(spec, args.address, args.resume, args.retry_failed, args.num_cpus)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df, _ = results_table(sweep_dir)
    counts = df["status"].value_counts().to_dict()
    print(f"{counts.get('ok', 0)}/{len(df)} trials ok, {counts.get('failed', 0)} failed, "
          f"{counts.get('stopped', 0)} stopped early; table {sweep_dir / 'results.parquet'}, "
          f"report {sweep_dir / 'report.md'}")
    # 1 when a trial failed or never ran (an interrupted sweep); early stops are the scheduler's job
    return 1 if df["status"].isin(["failed", "not run", "interrupted"]).any() else 0


if __name__ == "__main__":
    sys.exit(main())
