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
from typing import Any, Callable

if __package__ in (None, ""):  # `python pipeline/train.py` (and so `deepspeed pipeline/train.py`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pipeline import distributed
from pipeline.checkpoints import check_resume_config, config_fingerprint
from pipeline.config import Config, dump_yaml, load_config, model_seed, run_name
from pipeline.data.loading import Split, TrainData, ensure_prepared, load_data, split_archs
from pipeline.errors import UserError
from pipeline.utils.extras import require
from pipeline.evaluate import (hyper_evaluation, predict_all, results_markdown, score_and_write,
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
# Runtime, model, optimiser


def setup_runtime(cfg: Config) -> None:
    # Trained predictors produce denormal floats that slow CPU matmuls ~20x (measured: 0.3 s -> 6-10 s
    # to score NB201); flushing them to zero costs nothing in accuracy.
    torch.set_flush_denormal(True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    torch.manual_seed(model_seed(cfg))
    np.random.seed(model_seed(cfg) % 2**32)


def build_objective(cfg: Config, space: SearchSpace, num_classes: int, num_features: int = 0) -> Objective:
    model = HyperNASModel(cfg.model, space, num_classes, num_features)
    tasks = model.variant.tasks
    settings: dict[str, Any] = {"scope": cfg.loss.scope, "anchor_momentum": cfg.loss.anchor_momentum}
    if cfg.loss.weighting == "adaptive":
        settings.update(q=cfg.loss.q, reading=cfg.loss.reading, detach_power=cfg.loss.detach_power,
                        init=cfg.loss.init)
    elif cfg.loss.weighting == "fixed":
        # weights for tasks this variant has (one config serves every variant of an ablation)
        settings["weights"] = {t: w for t, w in cfg.loss.fixed_weights.items() if t in tasks}
    if model.regressor is not None and cfg.loss.mse_weight == 0:
        # A pure ranking loss does not change when every prediction shifts by a constant, so the output
        # bias would get only float-rounding noise as gradient, and Adam normalises noise into lr-sized
        # random steps (different on every machine and split). It stays at 0.
        model.regressor.freeze_output_bias()
    objective = Objective(model, None, cfg.loss.mse_weight, cfg.loss.rank_weight, cfg.model.hyper.encoder_grad)
    objective.weighting = build_weighting(cfg.loss.weighting, tasks, chance=objective.chance_losses(), **settings)
    return objective


def build_optimizer(cfg: Config, objective: Objective):
    opt = torch.optim.Adam(objective.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    milestones = sorted({max(1, round(m * cfg.train.epochs)) for m in cfg.train.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.train.lr_gamma)
    return opt, sched


def load_training_data(cfg: Config, space: SearchSpace, rank: int | None = None, world: int | None = None) -> TrainData:
    variant = VARIANTS.get(cfg.model.variant)
    return load_data(cfg, space, scope=variant.scope, need_images=variant.hyper, features=cfg.model.features,
                     rank=rank, world=world)


# --------------------------------------------------------------------------------------------------
# One update


def _epoch_order(train_idx: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return train_idx[torch.randperm(len(train_idx), generator=g).numpy()]


def _chunks(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def arch_seed(seed: int, sample_id: int) -> int:
    """Seed of one architecture-step's randomness (its dropout masks): a function of its sample id only."""
    return (seed * 2_654_435_761 + int(sample_id) * 40_503 + 12_345) % (2**63 - 1)


@dataclass
class UpdateBatch:
    """The architectures of one optimizer update, in the epoch's global order (the same on every rank)."""

    rows: np.ndarray           # table rows
    first_sample_id: int       # sample id of rows[0]; rows[i] has first_sample_id + i


def unlabelled_rows(cfg: Config, n_table: int, sample_id: int) -> np.ndarray:
    """The `model.hyper.unlabelled` table rows an architecture-step adds to the hyper task (its labels unread)."""
    k = cfg.model.hyper.unlabelled
    if not k:
        return np.zeros(0, dtype=np.int64)
    return np.random.default_rng(arch_seed(model_seed(cfg) + 1, sample_id)).choice(n_table, size=k, replace=False)


def make_micro_batch(cfg: Config, data: TrainData, update: UpdateBatch, pos: np.ndarray,
                     targets_all: torch.Tensor | None, features_all: torch.Tensor | None,
                     whole_update: bool) -> MicroBatch:
    """The micro-batch of update positions `pos`; with `whole_update`, graphs (and targets, features,
    dropout seeds) of every architecture of the update, `own` marking `pos` (the ranking term); with
    model.hyper.unlabelled, each position's unlabelled architectures appended for the hyper task."""
    rows = update.rows if whole_update else update.rows[pos]
    ids = list(update.first_sample_id + (np.arange(len(update.rows)) if whole_update else pos))
    own = pos if whole_update else np.arange(len(pos))
    own_ids = update.first_sample_id + pos
    seeds = [arch_seed(model_seed(cfg), i) for i in ids]
    hyper_rows, hyper_step, hyper_ids = list(own), list(range(len(pos))), list(own_ids)
    labelled = len(rows)
    if data.aux is not None and cfg.model.hyper.unlabelled:
        extra = []
        for b, sid in enumerate(own_ids):
            for u, row in enumerate(unlabelled_rows(cfg, len(data.archs), int(sid))):
                extra.append(row)
                hyper_rows.append(len(rows) + len(extra) - 1)
                hyper_step.append(b)
                hyper_ids.append(-(int(sid) * 64 + u + 1))  # an id no labelled step uses: own images, own masks
                seeds.append(arch_seed(model_seed(cfg), hyper_ids[-1]))
        rows = np.concatenate([rows, np.asarray(extra, dtype=rows.dtype)])
    images = labels = None
    if data.aux is not None:
        hyp = cfg.model.hyper
        pairs = [data.aux.batch(int(s), hyp.images_per_arch, model_seed(cfg)) for s in hyper_ids]
        images = torch.stack([p[0] for p in pairs])
        labels = torch.stack([p[1] for p in pairs])
    t_rows = torch.as_tensor(rows)
    extra_rows = len(hyper_rows) > len(pos)
    return MicroBatch(graphs=data.graphs.select(t_rows), archs=[data.archs[rows[r]] for r in hyper_rows],
                      targets=targets_all[t_rows] if targets_all is not None else None, images=images,
                      labels=labels, own=torch.as_tensor(own) if (whole_update or extra_rows) else None,
                      features=features_all[t_rows] if features_all is not None else None,
                      drop_seeds=torch.tensor(seeds, dtype=torch.long),
                      hyper_rows=torch.as_tensor(hyper_rows) if extra_rows else None,
                      hyper_step=torch.as_tensor(hyper_step) if extra_rows else None, labelled=labelled)


def run_update(cfg: Config, rt: distributed.Runtime, objective: Objective, data: TrainData, update: UpdateBatch,
               targets_all: torch.Tensor | None, features_all: torch.Tensor | None) -> list[dict[str, float]]:
    """One optimizer update: this rank's share of `update`, micro-batched, backward, step, task anchors.

    Returns the statistics of this rank's micro-batches. The same function serves the trainer, the
    benchmarks and the GPU check.
    """
    micro = cfg.train.micro_batch or cfg.train.accumulate // rt.world
    n = len(update.rows)
    # this rank's positions in the update; a rank left without one (short last update) runs the first
    # architecture with weight 0 so that every rank joins the gradient all-reduce
    mine = rt.shard(n)
    weight_scale = 1.0
    if len(mine) == 0:
        mine, weight_scale = np.array([0]), 0.0
    tasks = objective.weighting.task_names
    sums = np.zeros(len(tasks))
    out = []
    rt.zero_grad()
    for m_start in range(0, len(mine), micro):
        pos = mine[m_start:m_start + micro]
        mb = make_micro_batch(cfg, data, update, pos, targets_all, features_all, objective.uses_update_context)
        with rt.sync(last=m_start + micro >= len(mine)):
            loss, stats = rt.forward(mb)
            rt.backward(loss * (weight_scale * rt.loss_weight(len(pos), n)))
        if weight_scale:
            out.append(stats)
            sums += np.array([stats[f"loss/{t}"] for t in tasks]) * len(pos)
    rt.step()
    if len(tasks) > 1:  # the weighting reads each task's mean over this update at the next one
        means = rt.all_reduce_sum(sums.tolist())
        objective.weighting.set_anchors({t: v / n for t, v in zip(tasks, means)})
    return out


class _NullLogger:
    """What ranks other than 0 log to."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# The loop


def train(cfg: Config, stop_after_epoch: int | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the run described by `cfg`; evaluate; return the results summary.

    Runs as one process, or as one rank of a torchrun / deepspeed launch (pipeline/distributed.py).
    `stop_after_epoch`: checkpoint and return after that epoch (tests, graceful stops).
    `on_epoch(record)`: called after each epoch's checkpoint with the epoch's metrics (losses, lr,
    val_tau when computed); sweeps report it to Ray Tune.
    A SIGTERM / SIGUSR1 checkpoints at the next update boundary and returns {"preempted": True, ...}
    (`main` then exits with distributed.EXIT_PREEMPTED). Baseline variants (pipeline.baselines) are
    fitted instead, writing the same run directory.
    """
    setup_runtime(cfg)
    from pipeline.baselines import BASELINES, run_baseline
    if cfg.model.variant in BASELINES:
        return run_baseline(cfg)
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
    data = load_training_data(cfg, space, rt.rank, rt.world)
    split = split_archs(cfg, len(data.archs))
    train_idx, val_idx = split.train, split.monitor
    y_train_all = data.labels[cfg.data.train_label]
    mu, sigma = float(y_train_all[train_idx].mean()), float(y_train_all[train_idx].std() or 1.0)
    targets_all = torch.tensor((y_train_all - mu) / sigma, dtype=torch.float32)
    features_all = torch.tensor(data.features.values, dtype=torch.float32) if data.features is not None else None

    objective = build_objective(cfg, space, data.num_classes, 0 if features_all is None else features_all.shape[1])
    if features_all is not None:
        objective.model.set_feature_stats(features_all[torch.as_tensor(train_idx)])
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
        if data.aux is not None:  # a streamed aux set restarts its seeded stream there (no-op in memory)
            data.aux.seek(step)
    if rt.is_main:
        run.write_config(dump_yaml(cfg))
        run.write_env()
    logger = MetricsLogger(run, cfg.run.tensorboard, resume_step=step if state else None) if rt.is_main \
        else _NullLogger()

    accumulate = cfg.train.accumulate
    updates_per_epoch = math.ceil(len(train_idx) / accumulate)
    show_bar = cfg.run.progress and sys.stderr.isatty() and rt.is_main
    from tqdm import tqdm
    bar = tqdm(total=cfg.train.epochs * updates_per_epoch, initial=step, disable=not show_bar,
               desc=run_name(cfg), dynamic_ncols=True)

    def checkpoint(tag: str, update: int) -> None:
        client = {"scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                  "update": update, "step": step, "config": config_fingerprint(cfg), "label_mean": mu,
                  "label_std": sigma, "world_size": rt.world, "num_classes": data.num_classes,
                  "feature_names": data.features.names if data.features is not None else []}
        if update:
            client["epoch_stats"] = rt.gather_lists(epoch_stats)
        rt.save_checkpoint(run, client, tag, cfg.run.keep_checkpoints)

    objective.train()
    t_train = time.time()
    steps_this_run = 0
    try:
        while epoch < cfg.train.epochs:
            order = _epoch_order(train_idx, model_seed(cfg), epoch)
            t_epoch = time.time()
            for u, chunk in enumerate(_chunks(order, accumulate)):
                if u < skip_updates:
                    continue
                # a unique id per (epoch, position) picks each arch-step's aux images and dropout masks
                update = UpdateBatch(chunk, epoch * len(train_idx) + u * accumulate)
                stats = {}
                for stats in run_update(cfg, rt, objective, data, update, targets_all, features_all):
                    for k, v in stats.items():
                        epoch_stats.setdefault(k, []).append(v)
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
                vp = predict_all(objective.model, data.graphs, cfg.eval.batch_size, torch.as_tensor(val_idx),
                                 features_all)
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
        summary = final_evaluation(cfg, data, objective.model, run, split, mu, sigma, features_all)
        summary.update({"run_dir": str(run.path), "train_time_s": train_time, "update_time_s": step_time,
                        "total_time_s": time.time() - t_start, "variant": cfg.model.variant,
                        "num_train": int(len(train_idx)), "seed": cfg.train.seed, "epochs": cfg.train.epochs,
                        "world_size": rt.world, "launcher": rt.mode})
        logger.log("final", step, **{k: v for k, v in summary.items() if isinstance(v, (int, float))})
        logger.close()
        what = f"variant `{cfg.model.variant}`, {len(train_idx)} training cells, seed {cfg.train.seed}, " \
               f"{cfg.train.epochs} epochs, train label `{cfg.data.train_label}`; " \
               f"train {train_time:.1f} s ({step_time * 1000:.1f} ms/update)."
        write_results(run.path, summary, results_markdown(run_name(cfg), summary, what))
    return rt.broadcast(summary)


def final_evaluation(cfg: Config, data: TrainData, model: HyperNASModel, run: RunDir, split: Split,
                     mu: float, sigma: float, features_all: torch.Tensor | None) -> dict[str, Any]:
    if not model.variant.predict:
        return hyper_evaluation(cfg, data, model)
    t0 = time.time()
    if len(split.holdout):  # cross-validation: only the held-out training cells are scored
        pred = np.full(len(data.archs), np.nan)
        pred[split.holdout] = predict_all(model, data.graphs, cfg.eval.batch_size, torch.as_tensor(split.holdout),
                                          features_all) * sigma + mu
    else:
        pred = predict_all(model, data.graphs, cfg.eval.batch_size, features=features_all) * sigma + mu
    score_time = time.time() - t0
    summary = score_and_write(cfg, data, pred, run, split, run_name(cfg), score_time)
    if summary.get("degenerate"):
        log.warning("predictions are (near) constant: the predictor collapsed (pred std %.3g)", summary["pred_std"])
    return summary


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
        require("deepspeed", what="training under DeepSpeed")
        import deepspeed
        deepspeed.add_config_arguments(parser)
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        args, unknown = parse_args(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    if "cv_tau" in summary:
        print(f"cross-validation fold {summary['cv_fold']}/{summary['cv_folds']}: Kendall tau {summary['cv_tau']:.4f} "
              f"on {summary['cv_n']} held-out training cells ({summary['train_label']})")
    elif "kendall_tau" in summary:
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
