"""Train a HyperNAS predictor, evaluate it over the whole space, write the run directory.

    python pipeline/train.py --config configs/nb201_cpu.yaml [key=value ...]
    python -m pipeline.train --config configs/nb201.yaml train.epochs=5 model.variant=np
    torchrun --nproc_per_node 8 pipeline/train.py --config configs/nb201.yaml                  # DDP
    deepspeed --num_gpus 8 pipeline/train.py --config configs/nb201.yaml \
        --deepspeed_config configs/deepspeed/zero2.json                                        # DeepSpeed

Launchers, backends, how work is split over ranks and the graceful stop (SIGTERM/SIGUSR1 -> checkpoint,
exit 75) are in pipeline/distributed.py; this loop is the same for all of them.

The default config is the CPU profile (configs/nb201_cpu.yaml). Missing data is prepared first
(benchmark tables -> Parquet, aux images -> WebDataset shards). A run resumes from its directory's
latest checkpoint. See pipeline/rundir.py for what the run directory holds.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

if __package__ in (None, ""):  # `python pipeline/train.py` (and so `deepspeed pipeline/train.py`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pipeline import config as config_mod
from pipeline import distributed
from pipeline.config import Config, dump_yaml, load_config, run_name, to_dict
from pipeline.data.graphs import GraphTable, build_graph_table
from pipeline.errors import ConfigError, DataError, UserError
from pipeline.evaluate import (evaluate, markdown_table, predict_all, scatter_plot, write_predictions,
                               write_results)
from pipeline.loss import build_weighting
from pipeline.metrics import kendall_tau
from pipeline.models.predictor import VARIANTS, HyperNASModel
from pipeline.objective import MicroBatch, Objective
from pipeline.rundir import MetricsLogger, RunDir
from pipeline.spaces import SearchSpace, space_from_config

log = logging.getLogger("hypernas.train")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "nb201_cpu.yaml"


# --------------------------------------------------------------------------------------------------
# Runtime and data


def setup_runtime(cfg: Config) -> None:
    # Trained predictors produce denormal floats that slow CPU matmuls ~20x (measured: 0.3 s -> 6-10 s
    # to score NB201); flushing them to zero costs nothing in accuracy.
    torch.set_flush_denormal(True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)


@dataclass
class TrainData:
    archs: list[Hashable]        # parsed architectures, table order
    arch_strs: list[str]
    index: np.ndarray
    labels: dict[str, np.ndarray]  # train and eval label columns
    graphs: GraphTable
    aux: Any | None              # AuxBatches of the aux train split (hyper task)
    num_classes: int


def ensure_prepared(cfg: Config, space: SearchSpace, need_images: bool) -> None:
    """Build the Parquet table / image shards when missing (or fail, naming what is missing)."""
    table = Path(cfg.data.table)
    if not table.is_file():
        if not cfg.data.prepare:
            raise DataError(f"table {str(table)!r} does not exist (data.prepare=false); build it with "
                            f"`python -m data_prep.tables {space.name} --benchmark-dir DIR --out {table}`")
        from data_prep.tables import prepare_table
        log.info("preparing table %s from %s", table, cfg.data.benchmark_dir)
        prepare_table(space.name, cfg.data.benchmark_dir, table)
    if need_images:
        shards = Path(cfg.data.aux_shards)
        if not any(shards.glob("*-manifest.json")):
            if not cfg.data.prepare:
                raise DataError(f"no shard manifest in {str(shards)!r} (data.prepare=false); build it with "
                                f"`python -m data_prep.images --source SRC --out {shards}`")
            from data_prep.images import prepare_images
            log.info("sharding aux images %s -> %s", cfg.data.aux_source, shards)
            prepare_images(cfg.data.aux_source, shards, dataset=cfg.data.aux_dataset)


def check_labels(name: str, values: np.ndarray, archs: list[str], lo: float, hi: float, table: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"label column {name!r} of {table!r} has {int(bad.sum())} NaN/inf values "
                        f"(first at arch {archs[i]!r})")
    bad = (values < lo) | (values > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"label column {name!r} of {table!r} has {int(bad.sum())} values outside "
                        f"data.label_range [{lo}, {hi}] (first: {values[i]} at arch {archs[i]!r})")


def load_data(cfg: Config, space: SearchSpace) -> TrainData:
    from pipeline.data.tables import load_table

    variant = VARIANTS.get(cfg.model.variant)
    ensure_prepared(cfg, space, need_images=variant.hyper)
    table = load_table(cfg.data.table)
    labels = {}
    for name in dict.fromkeys([cfg.data.train_label, cfg.data.eval_label]):
        values = table.label(name)
        check_labels(name, values, table.archs, *cfg.data.label_range, table=str(cfg.data.table))
        labels[name] = values
    archs = space.parse_many(table.archs)
    graphs = build_graph_table(space, archs, variant.scope)
    aux, num_classes = None, 10
    if variant.hyper:
        from pipeline.data.images import AuxBatches, read_manifest
        hyp = cfg.model.hyper
        aux = AuxBatches.from_shards(cfg.data.aux_shards, cfg.data.aux_split, dataset=cfg.data.aux_dataset,
                                     augment=hyp.augment, resize=hyp.image_size)
        # the manifest's class count, not the largest label seen: a split may miss the last classes
        manifest = read_manifest(cfg.data.aux_shards, cfg.data.aux_dataset)
        num_classes = int(manifest.get("num_classes", int(aux.labels.max()) + 1))
    index = np.asarray(table.columns["index"]) if "index" in table.columns else np.arange(len(archs))
    return TrainData(archs, list(table.archs), index, labels, graphs, aux, num_classes)


def split_archs(cfg: Config, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Training subset (METHOD.md §7: each seed draws its own) and a disjoint validation subset."""
    from pipeline.data.tables import split_train

    train_idx = split_train(n_total, cfg.data.num_train, cfg.train.seed)
    rest = np.setdiff1d(np.arange(n_total), train_idx)
    rng = np.random.default_rng(cfg.train.seed + 7919)
    val_idx = np.sort(rng.choice(rest, size=min(cfg.data.val_archs, len(rest)), replace=False))
    return train_idx, val_idx


# --------------------------------------------------------------------------------------------------
# Model, optimiser, checkpoints


def build_objective(cfg: Config, space: SearchSpace, num_classes: int) -> Objective:
    model = HyperNASModel(cfg.model, space, num_classes)
    tasks = model.variant.tasks
    settings: dict[str, Any] = {}
    if cfg.loss.weighting == "adaptive":
        settings = {"q": cfg.loss.q, "reading": cfg.loss.reading, "detach_power": cfg.loss.detach_power,
                    "init": cfg.loss.init}
    elif cfg.loss.weighting == "fixed":
        # weights for tasks this variant has (one config serves every variant of an ablation)
        settings = {"weights": {t: w for t, w in cfg.loss.fixed_weights.items() if t in tasks}}
    return Objective(model, build_weighting(cfg.loss.weighting, tasks, **settings))


def build_optimizer(cfg: Config, objective: Objective):
    opt = torch.optim.Adam(objective.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    milestones = sorted({max(1, round(m * cfg.train.epochs)) for m in cfg.train.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.train.lr_gamma)
    return opt, sched


# Keys that may differ between a checkpoint's run and the resuming one (they do not change the math).
_RESUMABLE_SECTIONS = ("run", "eval", "dist")
_RESUMABLE_TRAIN_KEYS = ("threads", "device")


def config_fingerprint(cfg: Config) -> dict[str, Any]:
    tree = to_dict(cfg)
    for section in _RESUMABLE_SECTIONS:
        tree.pop(section)
    for key in _RESUMABLE_TRAIN_KEYS:
        tree["train"].pop(key)
    return tree


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    diffs = []
    defaults = config_fingerprint(Config())

    def walk(a: Any, b: Any, d: Any, prefix: str, in_saved: bool) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), d.get(k) if isinstance(d, dict) else None, f"{prefix}{k}.", k in a)
        elif not in_saved and b == d:
            pass  # a key added after the checkpoint was written, at its default: same math as before
        elif a != b:
            diffs.append(f"{prefix[:-1]}: checkpoint {a!r} vs now {b!r}")

    walk(saved, current, defaults, "", True)
    if diffs:
        raise ConfigError(f"checkpoint {str(path)!r} was written by another config ({'; '.join(diffs)}); "
                          f"use another run.name or run.resume=false to start over")


# --------------------------------------------------------------------------------------------------
# The loop


def _epoch_order(train_idx: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return train_idx[torch.randperm(len(train_idx), generator=g).numpy()]


def _chunks(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def _micro_seed(seed: int, sample_id: int) -> int:
    """Torch seed of a micro-batch (dropout): a function of its first sample id, not of the rank or history."""
    return (seed * 2_654_435_761 + int(sample_id) * 40_503 + 12_345) % (2**63 - 1)


def make_micro_batch(cfg: Config, data: TrainData, idx: np.ndarray, sample_ids: np.ndarray,
                     targets: torch.Tensor | None) -> MicroBatch:
    images = labels = None
    if data.aux is not None:
        hyp = cfg.model.hyper
        pairs = [data.aux.batch(int(s), hyp.images_per_arch, cfg.train.seed) for s in sample_ids]
        images = torch.stack([p[0] for p in pairs])
        labels = torch.stack([p[1] for p in pairs])
    t_idx = torch.as_tensor(idx)
    return MicroBatch(graphs=data.graphs.select(t_idx), archs=[data.archs[i] for i in idx],
                      targets=targets, images=images, labels=labels)


class _NullLogger:
    """What ranks other than 0 log to."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def train(cfg: Config, stop_after_epoch: int | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the run described by `cfg`; evaluate; return the results summary.

    Runs as one process, or as one rank of a torchrun / deepspeed launch (pipeline/distributed.py).
    `stop_after_epoch`: checkpoint and return after that epoch (tests, graceful stops).
    `on_epoch(record)`: called after each epoch's checkpoint with the epoch's metrics (losses, lr,
    val_tau when computed); sweeps report it to Ray Tune.
    A SIGTERM / SIGUSR1 checkpoints at the next update boundary and returns {"preempted": True, ...}
    (`main` then exits with distributed.EXIT_PREEMPTED).
    """
    setup_runtime(cfg)
    rt = distributed.setup(cfg, n_train=cfg.data.num_train)
    rt.install_signal_handlers()
    try:
        return _train(cfg, rt, stop_after_epoch, on_epoch)
    finally:
        rt.close()


def _train(cfg: Config, rt: distributed.Runtime, stop_after_epoch: int | None,
           on_epoch: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    t_start = time.time()
    space = space_from_config(cfg.space)
    if rt.distributed:  # rank 0 prepares missing data, the others wait for it
        if rt.is_main:
            ensure_prepared(cfg, space, need_images=VARIANTS.get(cfg.model.variant).hyper)
        rt.barrier()
    data = load_data(cfg, space)
    n_total = len(data.archs)
    train_idx, val_idx = split_archs(cfg, n_total)
    y_train_all = data.labels[cfg.data.train_label]
    mu, sigma = float(y_train_all[train_idx].mean()), float(y_train_all[train_idx].std() or 1.0)
    targets_all = torch.tensor((y_train_all - mu) / sigma, dtype=torch.float32)

    objective = build_objective(cfg, space, data.num_classes)
    opt, sched = build_optimizer(cfg, objective)
    run = RunDir(Path(cfg.run.root) / run_name(cfg)).create()
    if cfg.run.resume:
        rt.check_checkpoint_kind(run)
    rt.wrap(objective, opt, find_unused=cfg.dist.find_unused_parameters)
    variant = objective.model.variant

    epoch, step, skip_updates = 0, 0, 0
    epoch_stats: dict[str, list[float]] = {}
    state = rt.load_checkpoint(run, config_fingerprint(cfg), check_resume_config) if cfg.run.resume else None
    if state is not None:
        sched.load_state_dict(state["scheduler"])
        epoch, step, skip_updates = state["epoch"], state["step"], state.get("update", 0)
        if skip_updates and rt.is_main:
            epoch_stats = state.get("epoch_stats", {})
        log.info("resumed from %s (epoch %d, update %d, step %d)", state["path"], epoch, skip_updates, step)
    if rt.is_main:
        run.write_config(dump_yaml(cfg))
        run.write_env()
    logger = MetricsLogger(run, cfg.run.tensorboard, resume_step=step if state else None) if rt.is_main \
        else _NullLogger()

    accumulate = cfg.train.accumulate
    micro = cfg.train.micro_batch or accumulate // rt.world
    updates_per_epoch = math.ceil(len(train_idx) / accumulate)
    show_bar = cfg.run.progress and sys.stderr.isatty() and rt.is_main
    from tqdm import tqdm
    bar = tqdm(total=cfg.train.epochs * updates_per_epoch, initial=step, disable=not show_bar,
               desc=run_name(cfg), dynamic_ncols=True)

    def checkpoint(tag: str, update: int) -> None:
        client = {"scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                  "update": update, "step": step, "config": config_fingerprint(cfg), "label_mean": mu,
                  "label_std": sigma, "world_size": rt.world}
        if update:
            client["epoch_stats"] = rt.gather_lists(epoch_stats)
        rt.save_checkpoint(run, client, tag, cfg.run.keep_checkpoints)

    objective.train()
    t_train = time.time()
    steps_this_run = 0
    try:
        while epoch < cfg.train.epochs:
            order = _epoch_order(train_idx, cfg.train.seed, epoch)
            t_epoch = time.time()
            for u, chunk in enumerate(_chunks(order, accumulate)):
                if u < skip_updates:
                    continue
                # this rank's positions in the update; a rank left without one (short last update) runs the
                # first architecture with weight 0 so that every rank joins the gradient all-reduce
                mine = rt.shard(len(chunk))
                weight_scale = 1.0
                if len(mine) == 0:
                    mine, weight_scale = np.array([0]), 0.0
                rt.zero_grad()
                for m_start in range(0, len(mine), micro):
                    pos = mine[m_start:m_start + micro]
                    idx = chunk[pos]
                    # a unique id per (epoch, position) picks this arch-step's aux images reproducibly
                    sample_ids = epoch * len(train_idx) + u * accumulate + pos
                    torch.manual_seed(_micro_seed(cfg.train.seed, sample_ids[0]))
                    mb = make_micro_batch(cfg, data, idx, sample_ids,
                                          targets_all[torch.as_tensor(idx)] if variant.predict else None)
                    with rt.sync(last=m_start + micro >= len(mine)):
                        loss, stats = rt.forward(mb)
                        rt.backward(loss * (weight_scale * rt.loss_weight(len(idx), len(chunk))))
                    if weight_scale:
                        for k, v in stats.items():
                            epoch_stats.setdefault(k, []).append(v)
                rt.step()
                step += 1
                steps_this_run += 1
                bar.update(1)
                if step % cfg.run.log_every == 0:
                    logger.log("update", step, epoch=epoch, lr=opt.param_groups[0]["lr"], **stats)
                if rt.stop_requested() and u + 1 < updates_per_epoch:
                    checkpoint(f"epoch_{epoch:04d}_u{u + 1:05d}", u + 1)
                    logger.close()
                    return {"preempted": True, "epoch": epoch, "update": u + 1, "step": step,
                            "run_dir": str(run.path)}
            skip_updates = 0
            sched.step()
            epoch += 1
            all_stats = rt.gather_lists(epoch_stats)
            epoch_stats = {}
            record = {k: float(np.mean(v)) for k, v in all_stats.items()}
            record["epoch_time_s"] = time.time() - t_epoch
            if variant.predict and len(val_idx) and cfg.eval.every and (epoch % cfg.eval.every == 0
                                                                       or epoch == cfg.train.epochs):
                vp = predict_all(objective.model, data.graphs, cfg.eval.batch_size, torch.as_tensor(val_idx))
                record["val_tau"] = kendall_tau(vp, y_train_all[val_idx]) if np.ptp(vp) > 0 else float("nan")
                record["val_pred_std"] = float(vp.std())
            logger.log("epoch", step, epoch=epoch, lr=opt.param_groups[0]["lr"], **record)
            if show_bar:
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.startswith(("loss", "val_tau"))})
            elif rt.is_main:
                log.info("epoch %d/%d %s", epoch, cfg.train.epochs,
                         " ".join(f"{k}={v:.4g}" for k, v in record.items()))
            checkpoint(f"epoch_{epoch:04d}", 0)
            if on_epoch is not None and rt.is_main:
                on_epoch({"epoch": epoch, "step": step, **record})
            stop = rt.stop_requested()
            if epoch < cfg.train.epochs and (stop or (stop_after_epoch is not None and epoch >= stop_after_epoch)):
                logger.close()
                out = {"stopped_at_epoch": epoch, "run_dir": str(run.path)}
                if stop:
                    out.update(preempted=True, epoch=epoch, update=0, step=step)
                return out
    finally:
        bar.close()
    train_time = time.time() - t_train
    step_time = train_time / max(steps_this_run, 1)

    summary = None
    if rt.is_main:
        summary = final_evaluation(cfg, data, objective.model, run, train_idx, mu, sigma)
        summary.update({"run_dir": str(run.path), "train_time_s": train_time, "update_time_s": step_time,
                        "total_time_s": time.time() - t_start, "variant": cfg.model.variant,
                        "num_train": int(len(train_idx)), "seed": cfg.train.seed, "epochs": cfg.train.epochs,
                        "world_size": rt.world, "launcher": rt.mode})
        logger.log("final", step, **{k: v for k, v in summary.items() if isinstance(v, (int, float))})
        logger.close()
        write_results(run.path, summary, results_markdown(cfg, summary))
    return rt.broadcast(summary)


# --------------------------------------------------------------------------------------------------
# Final evaluation


def final_evaluation(cfg: Config, data: TrainData, model: HyperNASModel, run: RunDir, train_idx: np.ndarray,
                     mu: float, sigma: float) -> dict[str, Any]:
    in_train = np.zeros(len(data.archs), dtype=bool)
    in_train[train_idx] = True
    if not model.variant.predict:
        return hyper_evaluation(cfg, data, model)
    t0 = time.time()
    pred = predict_all(model, data.graphs, cfg.eval.batch_size) * sigma + mu
    score_time = time.time() - t0
    metrics = evaluate(pred, data.labels)
    write_predictions(run.file("predictions.parquet"), data.arch_strs, data.index, pred, data.labels, in_train)
    ev = metrics[cfg.data.eval_label]
    if ev["degenerate"]:
        log.warning("predictions are (near) constant: the predictor collapsed (pred std %.3g)", ev["pred_std"])
    scatter_plot(run.file("scatter.png"), pred, data.labels[cfg.data.eval_label], in_train,
                 f"{run_name(cfg)}: Kendall τ {ev['kendall_tau']:.3f}, Spearman {ev['spearman']:.3f} "
                 f"(n={ev['n']})", f"true {cfg.data.eval_label}", "predicted")
    return {"kendall_tau": ev["kendall_tau"], "spearman": ev["spearman"], "n_eval": ev["n"],
            "eval_label": cfg.data.eval_label, "train_label": cfg.data.train_label,
            "score_time_s": score_time, "metrics": metrics}


@torch.no_grad()
def hyper_evaluation(cfg: Config, data: TrainData, model: HyperNASModel) -> dict[str, Any]:
    """HyperNAS-H: accuracy of generated networks on held-out aux images, and how it ranks archs."""
    from pipeline.data.images import AuxBatches

    aux_eval = AuxBatches.from_shards(cfg.data.aux_shards, cfg.data.aux_eval_split, dataset=cfg.data.aux_dataset,
                                      augment=False, resize=cfg.model.hyper.image_size)
    rng = np.random.default_rng(cfg.train.seed + 104729)
    idx = np.sort(rng.choice(len(data.archs), size=min(cfg.eval.hyper_archs, len(data.archs)), replace=False))
    model.eval()
    images, labels = aux_eval.batch(0, min(cfg.eval.hyper_images, len(aux_eval)), cfg.train.seed)
    dev = next(model.parameters()).device
    images, labels = images.to(dev), labels.to(dev)
    accs = []
    for start in range(0, len(idx), 16):
        part = idx[start:start + 16]
        _, nodes = model.encode(distributed.to_device(data.graphs.select(torch.as_tensor(part)), dev))
        params = model.target_params([data.archs[i] for i in part], nodes)
        for b, i in enumerate(part):
            logits = model.run_target(data.archs[i], params[b], images)
            accs.append(float((logits.argmax(1) == labels).float().mean()))
    model.train()
    accs_np = np.array(accs)
    y = data.labels[cfg.data.eval_label][idx]
    tau = kendall_tau(accs_np, y) if np.ptp(accs_np) > 0 else float("nan")
    return {"generated_aux_acc_mean": float(accs_np.mean()), "generated_aux_acc_std": float(accs_np.std()),
            "hyper_archs": int(len(idx)), "kendall_tau_generated_acc": tau, "eval_label": cfg.data.eval_label}


def results_markdown(cfg: Config, s: dict[str, Any]) -> str:
    head = f"# {run_name(cfg)}\n\nvariant `{cfg.model.variant}`, {s['num_train']} training cells, seed {s['seed']}, " \
           f"{s['epochs']} epochs, train label `{cfg.data.train_label}`.\n\n"
    if "metrics" not in s:
        return head + markdown_table([s], ["generated_aux_acc_mean", "kendall_tau_generated_acc", "hyper_archs"])
    rows = [{"label": k, **{m: v[m] for m in ("kendall_tau", "spearman", "n", "pred_std")}}
            for k, v in s["metrics"].items()]
    timing = f"\ntrain {s['train_time_s']:.1f} s ({s['update_time_s'] * 1000:.1f} ms/update), " \
             f"scoring all {s['n_eval']} architectures {s['score_time_s']:.2f} s.\n"
    return head + markdown_table(rows, ["label", "kendall_tau", "spearman", "n", "pred_std"]) + timing + \
        "\n![predicted vs true](scatter.png)\n"


# --------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: the CPU profile)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher / torch.distributed.launch (LOCAL_RANK is read too)")
    argv = sys.argv[1:] if argv is None else argv
    if any(a.startswith("--deepspeed") for a in argv):  # importing deepspeed costs seconds: only when asked
        import deepspeed
        deepspeed.add_config_arguments(parser)
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args, unknown = parse_args(argv)
    extra = [u for u in unknown if not u.startswith("-")]
    flags = [u for u in unknown if u.startswith("-")]
    if flags:
        print(f"error: unknown arguments {flags}", file=sys.stderr)
        return 2
    try:
        overrides = list(args.overrides) + extra
        ds_config = getattr(args, "deepspeed_config", None)
        if ds_config:
            overrides.append(f"dist.deepspeed_config={ds_config}")
        cfg = load_config(args.config, overrides)
        summary = train(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary.get("preempted"):
        print(f"stopped by a signal after epoch {summary['epoch']} + {summary['update']} updates; checkpoint "
              f"written; relaunch the same command to resume (exit {distributed.EXIT_PREEMPTED})", file=sys.stderr)
        return distributed.EXIT_PREEMPTED
    if "stopped_at_epoch" in summary:
        return 0
    if distributed.launch_env().rank != 0:
        return 0
    if "kendall_tau" in summary:
        print(f"Kendall tau {summary['kendall_tau']:.4f}  Spearman {summary['spearman']:.4f}  "
              f"({summary['eval_label']}, {summary['n_eval']} architectures, trained on "
              f"{summary['num_train']} x {summary['train_label']})")
    else:
        print(f"generated-network aux accuracy {summary['generated_aux_acc_mean']:.4f}; Kendall tau of it vs "
              f"{summary['eval_label']}: {summary['kendall_tau_generated_acc']:.4f}")
    print(f"run directory: {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
