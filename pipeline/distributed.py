"""Launchers and backends: the one trainer under plain python, torchrun (DDP) and the deepspeed launcher.

    python pipeline/train.py --config configs/nb201.yaml                                   # one process
    torchrun --nproc_per_node 8 pipeline/train.py --config configs/nb201.yaml              # DDP
    deepspeed --num_gpus 8 pipeline/train.py --config configs/nb201.yaml \\
        --deepspeed_config configs/deepspeed/zero2.json                                    # DeepSpeed
    # CPU (tests, this machine): torchrun --nproc_per_node 2 ... / deepspeed --num_gpus 2 ... train.threads=1

Launch mode is detected, not configured: a DeepSpeed config (`--deepspeed_config` or `dist.deepspeed_config`)
selects DeepSpeed; otherwise WORLD_SIZE > 1 (torchrun, or srun with SLURM_PROCID/SLURM_NTASKS) selects DDP;
otherwise one process. Backend: nccl on GPUs, gloo on CPUs (`dist.backend` overrides).

How the work is split. One optimizer update is `train.accumulate` architectures in the epoch's global order
(the same on every rank: same seed, same permutation). Rank r takes the r-th contiguous block of each update
(no architecture dropped or duplicated), micro-batched by `train.micro_batch`. Each architecture keeps the
sample id of its global position, so its aux images and dropout masks do not depend on which rank runs it.
Every rank scales its loss by W * (its archs) / (archs in the update) and the backend averages gradients over
ranks, so a W-rank update equals the single-process update (tests/test_distributed.py checks 1e-5).
Gradients are synchronised once per update (DDP `no_sync` / DeepSpeed's accumulation boundary).

Only rank 0 writes logs, metrics, plots and results; every rank computes the (cheap, identical) validation
tau; the final evaluation runs on rank 0 and its summary is broadcast.

Graceful stop: SIGTERM or SIGUSR1 (what SLURM sends before a preemption or the time limit) sets a flag; at
the next update boundary all ranks agree on it (all-reduce), write a mid-epoch checkpoint and exit with
status EXIT_PREEMPTED = 75 (EX_TEMPFAIL in sysexits.h: "try again later"). Relaunching the same command
resumes from that checkpoint; cluster/*.sbatch requeue the job on it. Under torchrun the launcher itself
reports a failure (exit 1) when its workers exit 75; the sbatch scripts therefore also requeue when they
forwarded the signal themselves.

Checkpoints: one process / DDP write `checkpoints/epoch_NNNN[_uNNNNN].pt` (rank 0, atomic, `latest` pointer,
world-size independent). DeepSpeed writes `checkpoints/deepspeed/<tag>/` from every rank (its own format,
with our epoch/step/LR-schedule state in client_state) plus `hypernas_meta.json`; the `latest` pointer is
written only after every rank finished. A DeepSpeed checkpoint resumes only with the same world size and
ZeRO stage (DeepSpeed#3810); the error says so before training starts.
"""
from __future__ import annotations

import contextlib
import datetime
import difflib
import json
import logging
import os
import shutil
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from pipeline.errors import ConfigError

log = logging.getLogger("hypernas.distributed")

EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

# DeepSpeed config: what we accept at the top level. Precision and the optimizer come from our config.
_DS_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "zero_optimization",
    "gradient_clipping", "steps_per_print", "wall_clock_breakdown", "prescale_gradients",
    "gradient_predivide_factor", "communication_data_type", "zero_allow_untested_optimizer", "dump_state",
    "memory_breakdown", "flops_profiler", "comms_logger", "tensorboard", "csv_monitor", "wandb", "checkpoint",
    "activation_checkpointing", "sparse_gradients", "seq_parallel_communication_data_type", "data_types",
    "bf16", "fp16", "torch_autocast", "optimizer", "scheduler", "zero_force_ds_cpu_optimizer", "timers",
}
_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


# --------------------------------------------------------------------------------------------------
# Launch environment


@dataclass
class LaunchEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    source: str = "none"       # torchrun/deepspeed (RANK...), slurm, or none


def launch_env() -> LaunchEnv:
    """Rank and world size from torchrun's / deepspeed's variables, then SLURM's (srun, one task per rank)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "env")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return LaunchEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                         "slurm")
    return LaunchEnv()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# DeepSpeed config: read, validate, fill the batch fields from our config


def deepspeed_config(path_or_dict: str | Path | dict, accumulate: int, micro: int, world: int,
                     grad_clip: float, precision: str) -> dict[str, Any]:
    """The DeepSpeed config for this run: the user's JSON with batch fields computed from our config.

    Batch fields are computed (`train_batch_size` = train.accumulate, micro = train.micro_batch per rank,
    accumulation = accumulate / world / micro) so they always agree with the world size (DeepSpeed#3228);
    user-given values must match them or be "auto".
    """
    if isinstance(path_or_dict, dict):
        user, where = dict(path_or_dict), "DeepSpeed config"
    else:
        path = Path(path_or_dict)
        where = f"DeepSpeed config {str(path)!r}"
        if not path.is_file():
            raise ConfigError(f"{where} does not exist")
        try:
            user = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"{where} is not valid JSON: {e}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{where} must hold a JSON object")
    for key in user:
        if key not in _DS_KEYS:
            close = difflib.get_close_matches(key, sorted(_DS_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    zero = user.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigError(f"{where}: zero_optimization must be an object")
    try:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
        DeepSpeedZeroConfig(**zero)
    except ImportError:
        pass
    except Exception as e:  # pydantic ValidationError: unknown or ill-typed zero keys
        raise ConfigError(f"{where}: invalid zero_optimization: {e}") from None
    if int(zero.get("stage", 0)) > 2:
        raise ConfigError(f"{where}: ZeRO stage {zero['stage']} is not supported (0, 1, 2): evaluation and "
                          f"checkpoints need whole parameters on every rank")
    for key in ("optimizer", "scheduler"):
        if key in user:
            raise ConfigError(f"{where}: remove {key!r}: the optimizer (Adam, train.lr, train.weight_decay) and "
                              f"the LR schedule (train.lr_milestones) come from the run config")
    for key in ("bf16", "fp16", "torch_autocast"):
        if isinstance(user.get(key), dict) and user[key].get("enabled"):
            raise ConfigError(f"{where}: remove {key!r}: set the precision with train.precision=bf16 (autocast "
                              f"with fp32 master weights, the same under every launcher)")
    if precision == "fp16":
        raise ConfigError("train.precision=fp16 is not supported under DeepSpeed (no loss scaling around an "
                          "external autocast); use train.precision=bf16")
    if accumulate % world:
        raise ConfigError(f"train.accumulate={accumulate} is not divisible by the world size {world}")
    per_rank = accumulate // world
    micro = micro or per_rank
    if per_rank % micro:
        raise ConfigError(f"train.micro_batch={micro} does not divide the {per_rank} architectures per rank and "
                          f"update (train.accumulate={accumulate} / {world} ranks)")
    computed = {"train_batch_size": accumulate, "train_micro_batch_size_per_gpu": micro,
                "gradient_accumulation_steps": per_rank // micro}
    for key, value in computed.items():
        given = user.get(key, "auto")
        if given != "auto" and given != value:
            raise ConfigError(
                f"{where}: {key}={given!r} does not match this run ({key}={value} for train.accumulate="
                f"{accumulate}, train.micro_batch={micro}, {world} ranks); remove it or set it to \"auto\" "
                f"(the batch fields are computed from the run config)")
    clip = user.get("gradient_clipping", grad_clip)
    if float(clip) != float(grad_clip):
        raise ConfigError(f"{where}: gradient_clipping={clip} disagrees with train.grad_clip={grad_clip}; remove it")
    out = {**user, **computed, "gradient_clipping": float(grad_clip), "zero_optimization": zero}
    out.setdefault("steps_per_print", 10**9)
    out["zero_allow_untested_optimizer"] = True
    return out


# --------------------------------------------------------------------------------------------------
# The runtime the training loop talks to


@dataclass
class Runtime:
    mode: str = "single"                 # single | ddp | deepspeed
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""
    precision: str = "fp32"
    grad_clip: float = 0.0
    ds_config: dict | None = None
    objective: Any = None                # unwrapped module
    module: Any = None                   # what the forward goes through (DDP / engine / objective)
    optimizer: Any = None
    scaler: Any = None
    funnel: bool = False
    _named_params: list = field(default_factory=list)
    _stop: bool = False
    _handlers: dict = field(default_factory=dict)

    # -- who am I -------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mode != "single"

    def shard(self, n: int) -> np.ndarray:
        """Positions of an n-architecture update this rank runs: a contiguous block (no drop, no duplicate),
        so W ranks with micro_batch m form the same micro-batches as one rank with micro_batch m."""
        return np.array_split(np.arange(n), self.world)[self.rank]

    # -- wrapping -------------------------------------------------------------------------------
    def wrap(self, objective: torch.nn.Module, optimizer: torch.optim.Optimizer, find_unused: bool = True) -> None:
        objective.to(self.device)
        self.objective, self.optimizer, self.module = objective, optimizer, objective
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            # hypernetwork slots of ops without weights (skip, pooling, none) get no gradient in some steps
            self.module = DDP(objective, device_ids=ids, find_unused_parameters=find_unused)
        elif self.mode == "deepspeed":
            import deepspeed
            engine, ds_opt, _, _ = deepspeed.initialize(model=objective, optimizer=optimizer,
                                                        config=self.ds_config, dist_init_required=False)
            self.module, self.optimizer = engine, ds_opt
            self.funnel = int(self.ds_config.get("zero_optimization", {}).get("stage", 0)) == 2
            self._named_params = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
        if self.precision == "fp16" and self.mode != "deepspeed":
            self.scaler = torch.amp.GradScaler(self.device.type)

    # -- one update -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def sync(self, last: bool) -> Iterator[None]:
        """Around one micro-batch's forward + backward: gradients are synchronised only on `last`."""
        if self.mode == "ddp" and not last:
            with self.module.no_sync():
                yield
            return
        if self.mode == "deepspeed":
            self.module.set_gradient_accumulation_boundary(last)
        yield

    def forward(self, mb: Any) -> tuple[torch.Tensor, dict[str, float]]:
        mb = to_device(mb, self.device)
        if self.precision == "fp32":
            return self._forward(mb)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            return self._forward(mb)

    def _forward(self, mb: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.funnel:
            return self.module(mb)
        # ZeRO-2 reduces gradients in the order they become ready. Ranks run different architectures (different
        # graphs, different unused hypernetwork slots), so that order differs between ranks and the reduction
        # silently mixes up parameters (measured: 8e-3 parameter error after 6 updates). Routing every
        # parameter through one autograd node makes all gradients ready at once, in parameter order, with
        # zeros for unused parameters: the same on every rank.
        names = [n for n, _ in self._named_params]
        outs = _Funnel.apply(*[p for _, p in self._named_params])
        return torch.func.functional_call(self.objective, dict(zip(names, outs)), (mb,))

    def backward(self, loss: torch.Tensor) -> None:
        """`loss` is already weighted by this rank's share (see `loss_weight`)."""
        if self.mode == "deepspeed":
            self.module.backward(loss, scale_wrt_gas=False)
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def loss_weight(self, n_micro: int, n_update: int) -> float:
        """Weight of a micro-batch's mean loss: the backend averages over W ranks, so scale by W."""
        return self.world * n_micro / n_update

    def step(self) -> None:
        if self.mode == "deepspeed":
            self.module.step()            # clips (gradient_clipping) and steps at the boundary
            return
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def zero_grad(self) -> None:
        if self.mode == "deepspeed":
            self.module.zero_grad()
        else:
            self.optimizer.zero_grad(set_to_none=True)

    # -- collectives ----------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_lists(self, d: dict[str, list[float]]) -> dict[str, list[float]]:
        """Concatenate every rank's per-micro-batch statistics (rank order)."""
        if not self.distributed:
            return d
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, d)
        out: dict[str, list[float]] = {}
        for p in parts:
            for k, v in p.items():
                out.setdefault(k, []).extend(v)
        return out

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over ranks (float64; identity in one process)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def any_flag(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    # -- graceful stop --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum, frame):  # noqa: ARG001
            if not self._stop:
                log.warning("rank %d got %s: checkpointing at the next update boundary, then exiting %d",
                            self.rank, signal.Signals(signum).name, EXIT_PREEMPTED)
            self._stop = True
        for sig in STOP_SIGNALS:
            try:
                self._handlers[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. a Ray worker thread): no graceful stop there
                pass

    def restore_signal_handlers(self) -> None:
        for sig, old in self._handlers.items():
            signal.signal(sig, old)
        self._handlers.clear()

    def stop_requested(self) -> bool:
        """True on every rank when any rank got a stop signal (one tiny all-reduce per update)."""
        return self.any_flag(self._stop)

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, run: Any, client: dict[str, Any], tag: str, keep: int) -> None:
        if self.mode != "deepspeed":
            if self.is_main:
                state = {"objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                         **client}
                if self.scaler is not None:
                    state["grad_scaler"] = self.scaler.state_dict()
                run.save_checkpoint(state, tag=tag, keep=keep)
            self.barrier()
            return
        ds_dir = run.ckpt_dir / "deepspeed"
        self.module.save_checkpoint(str(ds_dir), tag=tag, client_state=client, save_latest=False)
        self.barrier()
        if self.is_main:
            meta = {"tag": tag, "world_size": self.world,
                    "zero_stage": int(self.ds_config.get("zero_optimization", {}).get("stage", 0)),
                    "config": client.get("config")}
            from pipeline.utils.io import atomic_write_json, atomic_write_text
            atomic_write_json(ds_dir / tag / "hypernas_meta.json", meta)
            atomic_write_text(ds_dir / "latest", tag + "\n")
            tags = sorted(p for p in ds_dir.iterdir() if p.is_dir() and p.name.startswith("epoch_"))
            for old in tags[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()

    def check_checkpoint_kind(self, run: Any) -> None:
        """A DeepSpeed checkpoint resumes only under DeepSpeed, a plain one only without (before wrapping)."""
        has_ds = (run.ckpt_dir / "deepspeed" / "latest").is_file()
        has_plain = run.latest_checkpoint() is not None
        if self.mode == "deepspeed" and has_plain and not has_ds:
            raise ConfigError(f"{str(run.path)!r} holds a checkpoint of a non-DeepSpeed run; resume it without "
                              f"--deepspeed_config, or use another run.name")
        if self.mode != "deepspeed" and has_ds and not has_plain:
            raise ConfigError(f"{str(run.path)!r} holds a DeepSpeed checkpoint; resume it under the deepspeed "
                              f"launcher with the same --deepspeed_config, or use another run.name")

    def load_checkpoint(self, run: Any, fingerprint: dict[str, Any], check) -> dict[str, Any] | None:
        """Restore model/optimizer (and the grad scaler); return the client state, or None when none.

        `check(saved_fingerprint, current, path)` raises on a config mismatch (before any state is loaded).
        """
        if self.mode != "deepspeed":
            path = run.latest_checkpoint()
            if path is None:
                if (run.ckpt_dir / "deepspeed" / "latest").is_file():
                    raise ConfigError(f"{str(run.path)!r} holds a DeepSpeed checkpoint; resume it under the "
                                      f"deepspeed launcher with the same --deepspeed_config, or use another run.name")
                return None
            state = torch.load(path, map_location="cpu", weights_only=False)
            check(state["config"], fingerprint, path)
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and "grad_scaler" in state:
                self.scaler.load_state_dict(state["grad_scaler"])
            state["path"] = str(path)
            return state
        ds_dir = run.ckpt_dir / "deepspeed"
        pointer = ds_dir / "latest"
        if not pointer.is_file():
            if run.latest_checkpoint() is not None:
                raise ConfigError(f"{str(run.path)!r} holds a checkpoint of a non-DeepSpeed run; resume it without "
                                  f"--deepspeed_config, or use another run.name")
            return None
        tag = pointer.read_text().strip()
        meta = json.loads((ds_dir / tag / "hypernas_meta.json").read_text())
        check(meta["config"], fingerprint, ds_dir / tag)
        stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        if meta["world_size"] != self.world or meta["zero_stage"] != stage:
            raise ConfigError(
                f"DeepSpeed checkpoint {str(ds_dir / tag)!r} was written by {meta['world_size']} ranks with ZeRO "
                f"stage {meta['zero_stage']}; this run has {self.world} ranks, stage {stage}. DeepSpeed cannot "
                f"reshard it (DeepSpeed#3810): relaunch with the same world size and config, or start over with "
                f"another run.name")
        _, client = self.module.load_checkpoint(str(ds_dir), tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
        if client is None:
            raise ConfigError(f"DeepSpeed checkpoint {str(ds_dir / tag)!r} could not be loaded")
        client["path"] = str(ds_dir / tag)
        return client

    def close(self) -> None:
        self.restore_signal_handlers()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


class _Funnel(torch.autograd.Function):
    """Identity on parameters whose backward hands every gradient on at once (zeros where unused)."""

    @staticmethod
    def forward(ctx, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: ARG004
        ctx.shapes = [(p.shape, p.dtype, p.device) for p in params]
        return tuple(p.view_as(p) for p in params)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        return tuple(g if g is not None else torch.zeros(s, dtype=d, device=dev)
                     for g, (s, d, dev) in zip(grads, ctx.shapes))


def to_device(obj: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) dataclass to `device` (no-op on the CPU)."""
    if device.type == "cpu":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.replace(obj, **{f: to_device(getattr(obj, f), device) for f in obj.__dataclass_fields__
                                           if isinstance(getattr(obj, f), torch.Tensor)
                                           or hasattr(getattr(obj, f), "__dataclass_fields__")})
    return obj


# --------------------------------------------------------------------------------------------------
# Setup


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(requested)


def setup(cfg: Any, n_train: int | None = None) -> Runtime:
    """Detect the launch mode, initialise the process group, validate the split; see the module doc."""
    env = launch_env()
    ds_path = cfg.dist.deepspeed_config
    mode = "deepspeed" if ds_path else ("ddp" if env.world > 1 else "single")
    device = pick_device(cfg.train.device, env.local_rank)
    backend = cfg.dist.backend if cfg.dist.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    rt = Runtime(mode=mode, rank=env.rank, world=env.world, local_rank=env.local_rank, device=device,
                 backend=backend if mode != "single" else "", precision=cfg.train.precision,
                 grad_clip=cfg.train.grad_clip)
    # Checks that need the world size, before any process group exists (every rank fails alike).
    if cfg.train.accumulate % env.world:
        raise ConfigError(f"train.accumulate={cfg.train.accumulate} is not divisible by the world size "
                          f"{env.world}: each rank runs accumulate / world architectures per update")
    if n_train is not None and env.world > n_train:
        raise ConfigError(f"{env.world} ranks but only {n_train} training architectures (data.num_train): "
                          f"some ranks would have nothing to train on")
    per_rank = cfg.train.accumulate // env.world
    if cfg.train.micro_batch and cfg.train.micro_batch > per_rank:
        raise ConfigError(f"train.micro_batch={cfg.train.micro_batch} exceeds the {per_rank} architectures per "
                          f"rank and update (train.accumulate={cfg.train.accumulate} / {env.world} ranks)")
    if mode == "deepspeed":
        from pipeline.utils.extras import require
        require("deepspeed", what="dist.deepspeed_config (training under DeepSpeed)")
        rt.ds_config = deepspeed_config(ds_path, cfg.train.accumulate, cfg.train.micro_batch, env.world,
                                        cfg.train.grad_clip, cfg.train.precision)
    if mode == "single":
        return rt
    if env.source == "slurm" and "MASTER_ADDR" not in os.environ:
        raise ConfigError("launched by srun without torchrun: set MASTER_ADDR and MASTER_PORT "
                          "(cluster/*.sbatch show how)")
    timeout = datetime.timedelta(seconds=cfg.dist.timeout_s)
    if env.world == 1:  # deepspeed in one plain process: it wants the torchrun variables
        for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(k, v)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        # One process needs no rendezvous: an in-memory store, so nothing listens (a TCPStore listens on every
        # interface whatever MASTER_ADDR says); DeepSpeed takes the existing group. gloo's own socket on loopback.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout, **kw)
    if mode == "deepspeed":
        import deepspeed
        deepspeed.init_distributed(dist_backend=backend, timeout=timeout, rank=env.rank, world_size=env.world,
                                   distributed_port=int(os.environ.get("MASTER_PORT", 29500)))
    else:
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=env.rank, world_size=env.world, timeout=timeout, **kw)
    log.info("rank %d/%d (%s, %s, %s)", env.rank, env.world, mode, backend, device)
    return rt
