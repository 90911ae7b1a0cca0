"""Typed job config: dataclasses loaded from YAML, overridden from the command line, validated once.

Config flows one way: `load_config(path, overrides)` -> `Config` -> the trainer. Every key has a
`help` text (`python -m pipeline.config --doc` prints them all; configs/README.md is generated from
it), unknown keys are an error that names the key and suggests the closest known one, and the
resolved config is written into every run directory.

Overrides use dotted keys: `train.epochs=5 model.variant=np loss.q=2`. Values are parsed as YAML
(`5` is an int, `[0.5, 0.75]` a list, `null` None).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from pipeline.errors import ConfigError
from pipeline.settings import build as _build
from pipeline.settings import as_dict, help_rows
from pipeline.settings import setting as _f
from pipeline.search.config import SearchConfig  # imports only pipeline.settings


@dataclass
class DataConfig:
    table: str = _f("prepared/tables/nb201.parquet",
                    "Parquet table of architectures and labels (data_prep.tables schema). Built from "
                    "`benchmark_dir` when missing and `prepare` is true.")
    benchmark_dir: str = _f("../shared/data/nasbench201",
                            "Directory holding the raw benchmark files the table is built from.")
    train_label: str = _f("cifar10_valid_val_200ep",
                          "Table column the predictor is trained on (METHOD.md §7: validation accuracy).")
    eval_label: str = _f("cifar10_test_200ep",
                         "Table column Kendall tau / Spearman are computed against (test accuracy).")
    label_range: list = _f([0.0, 100.0], "Allowed [min, max] of label values; outside it is an error.")
    num_train: int = _f(156, "Number of training architectures drawn from the pool (seeded by train.seed).")
    val_archs: int = _f(0, "Labelled architectures beyond the budget for a per-epoch monitoring tau on "
                           "`train_label` (0 = none). Monitoring only: they are labels a real search would not "
                           "have, so no choice (setting, checkpoint, early stop) may use them; select with "
                           "cross-validation inside the budget (`python -m pipeline.cv`).")
    cv_folds: int = _f(0, "K-fold cross-validation inside the training budget (0 = off): the run trains on "
                          "K-1 folds of the num_train cells and scores fold `cv_fold` on `train_label` only "
                          "(no test label is read). `python -m pipeline.cv` runs all K.")
    cv_fold: int = _f(0, "Which fold (0..cv_folds-1) is held out when cv_folds > 0.")
    aux_source: str = _f("../shared/data/cifar10/cifar10_subset.npz",
                         "Image source for the auxiliary task (npz, CIFAR python batches dir, "
                         "ImageNet16 batches or an ImageFolder); sharded into `aux_shards` when missing.")
    aux_shards: str = _f("prepared/shards/cifar10", "Directory of WebDataset shards + manifest of the aux images.")
    aux_dataset: str = _f("cifar10", "Dataset name in the shard file names (`{dataset}-{split}-000000.tar`).")
    aux_split: str = _f("train", "Shard split the auxiliary task trains on.")
    aux_eval_split: str = _f("test", "Shard split the generated networks are scored on (HyperNAS-H).")
    aux_loader: str = _f("auto", "auto | memory | stream. auto: in memory when the split's decoded size fits "
                                 "`aux_memory_mb`; memory: exact, resumable batches per sample id; stream: "
                                 "webdataset + timm transforms, disjoint shards per rank (ImageNet-sized sets).")
    aux_memory_mb: float = _f(2048.0, "Per-rank budget (MiB) for the decoded aux split (count x H x W x 3 at "
                                      "model.hyper.image_size when sizes vary).")
    aux_workers: int = _f(2, "DataLoader workers per rank for streamed aux images (shards >= ranks x workers).")
    aux_shuffle_buffer: int = _f(2000, "Samples in each streaming worker's shuffle buffer.")
    prepare: bool = _f(True, "Build the table / shards when they are missing (false: error instead).")
    prepare_workers: int = _f(1, "Worker processes when the trainer shards missing aux images.")


@dataclass
class SpaceConfig:
    name: str = _f("nb201", "Search space (pipeline.spaces registry): nb201, ...")
    settings: dict = _f({}, "The space's own settings, checked against its Settings dataclass (see 'Space "
                            "settings' below); missing ones take their defaults, written out in config.yaml.")


@dataclass
class EncoderConfig:
    layers: int = _f(6, "Bidirectional GCN layers (METHOD.md §2: 6 for NB101/NB201/MobileNetV3).")
    hidden: int = _f(72, "GCN hidden width.")
    dropout: float = _f(0.1, "Dropout after each GCN layer.")
    connectivity: str = _f("sum", "How cell i sees cell i-1: `sum` (h0 = embed(V) + z) or `concat` "
                                  "(h0 = W[embed(V); z]).")


@dataclass
class RegressorConfig:
    hidden: int = _f(128, "Hidden width of the accuracy regressor MLP.")
    layers: int = _f(2, "Hidden layers of the regressor MLP.")
    dropout: float = _f(0.0, "Dropout in the regressor MLP.")


@dataclass
class HyperConfig:
    layers: int = _f(3, "Hypernetwork MLP layers (shared by all nodes).")
    hidden: int = _f(96, "Hypernetwork hidden width.")
    images_per_arch: int = _f(128, "Auxiliary images per architecture per step.")
    image_size: int = _f(32, "Aux images are resized to this side (32 = CIFAR native).")
    augment: bool = _f(True, "Random crop (pad 4) + horizontal flip on aux images.")
    init: str = _f("kaiming", "Hypernetwork initialisation: kaiming (generated weights start at Kaiming scale and "
                              "depend on the node; pipeline/models/hypernet.py) or fan_in (the earlier scheme, "
                              "~1/7 of that scale, bias-dominated; for ablations).")
    encoder_grad: float = _f(1.0, "Scale of the hypernetwork task's gradient where it enters the shared GCN (1 = the "
                                  "paper; 0 = the aux task trains only the hypernetwork). The aux loss sends a "
                                  "far larger gradient into the GCN than L_pred at init (x2-x50 by space), "
                                  "which the task weights alone do not balance.")
    unlabelled: int = _f(0, "Extra architectures per architecture-step for the hypernetwork task only, drawn "
                            "from the whole table without their labels (the auxiliary task needs none): the "
                            "GCN then learns from the space, not only the labelled budget. 0 = the paper's "
                            "recipe.")


@dataclass
class ModelConfig:
    variant: str = _f("hypernas", "Predictor variant: np, hypernas_p, hypernas_h, hypernas (METHOD.md §6), or a "
                                  "baseline of pipeline.baselines (rf, params).")
    features: list = _f(["graf"], "Feature sets (pipeline.features: graf, cost, zc) fed to the regressor beside "
                                  "the GCN embedding, standardised with the training cells' statistics; [] = the "
                                  "paper's predictor (GCN embedding only). Default chosen by cross-validation "
                                  "inside the budget (README: what each change bought).")
    baseline: dict = _f({}, "Settings of a baseline variant (e.g. {n_estimators: 500, features: [graf]}).")
    encoder: EncoderConfig = field(default_factory=EncoderConfig, metadata={"help": "GCN encoder."})
    regressor: RegressorConfig = field(default_factory=RegressorConfig, metadata={"help": "Regressor."})
    hyper: HyperConfig = field(default_factory=HyperConfig, metadata={"help": "Hypernetwork + target net."})


@dataclass
class LossConfig:
    weighting: str = _f("adaptive", "Multi-task weighting: adaptive (HyperNAS, q), uncertainty "
                                    "(Kendall et al.), fixed.")
    q: float = _f(1.5, "Preference factor q of the adaptive loss.")
    reading: str = _f("B", "Adaptive-loss transcription: B = sum L^(q-1) L/(2u^2) + ln(1+u^2); "
                           "A = sum L^(q-1)/(2u^2) + ln(1+u^2).")
    detach_power: Optional[bool] = _f(None, "Detach the L^(q-1) factor (it then acts as a weight). null = "
                                            "auto: detached for reading B, not for A (where it is the whole term).")
    init: float = _f(1.0, "Initial value of the learnable task weights u_t.")
    scope: str = _f("update", "What the weighting weights: `update` = each task's mean loss over the update "
                              "(the power factor read at the previous update's mean, so micro-batches and "
                              "ranks change nothing); `arch` = every architecture's own loss (ablation).")
    anchor_momentum: float = _f(0.0, "Smoothing of the previous-update task means the weighting reads "
                                     "(0 = the last update's).")
    mse_weight: float = _f(0.0, "Weight of the squared error in L_pred (standardised accuracy; the paper's L_pred "
                                "is mse_weight=1, rank_weight=0).")
    rank_weight: float = _f(1.0, "Weight of a pairwise ranking term in L_pred: for each architecture, the "
                                 "mean logistic loss log(1+exp(-s_ij (p_i - p_j))) over the other architectures "
                                 "of its update, s_ij = sign(y_i - y_j). With mse_weight=0 predictions are "
                                 "ranking scores in label units, not calibrated accuracies. Default chosen by "
                                 "cross-validation inside the budget.")
    fixed_weights: dict = _f({}, "Per-task weights for `fixed` (e.g. {pred: 1.0, hyper: 0.1}).")


@dataclass
class TrainConfig:
    epochs: int = _f(200, "Epochs; one epoch is one pass over the training architectures.")
    lr: float = _f(1e-3, "Adam learning rate.")
    weight_decay: float = _f(0.0, "Adam weight decay (METHOD.md: 1e-3 collapsed an NP to a constant).")
    lr_milestones: list = _f([0.5, 0.75], "Fractions of `epochs` at which the LR is multiplied by lr_gamma.")
    lr_gamma: float = _f(0.5, "LR decay factor at each milestone.")
    accumulate: int = _f(10, "Architectures per optimizer update (the paper accumulates 10 single-arch steps).")
    micro_batch: int = _f(0, "Architectures per forward pass on each rank (0 = accumulate / world size). Each "
                             "architecture keeps its own loss, image batch and dropout stream, and the task "
                             "weighting is linear in them, so this changes speed, not the gradient (up to float "
                             "rounding; tests/test_train.py checks one update to 1e-5).")
    seed: int = _f(0, "Seed of the training subset, initialisation, data order and augmentation.")
    member: int = _f(0, "Ensemble member: another initialisation, data order and augmentation on the SAME training "
                        "subset (0 = train.seed's own; the split only depends on train.seed).")
    deterministic: bool = _f(True, "torch.use_deterministic_algorithms (CPU: exact resume).")
    threads: int = _f(0, "torch intra-op threads (0 = all cores).")
    grad_clip: float = _f(0.0, "Clip the gradient norm to this value (0 = off).")
    precision: str = _f("fp32", "Forward precision: fp32, bf16 or fp16 (torch.autocast with fp32 master weights, "
                                "the same under every launcher; fp16 adds a GradScaler and is not offered "
                                "under DeepSpeed).")
    device: str = _f("auto", "auto (cuda when visible, else cpu), cpu or cuda; ranks use cuda:LOCAL_RANK.")


@dataclass
class EvalConfig:
    every: int = _f(10, "Validation tau every N epochs (0 = only at the end).")
    batch_size: int = _f(2048, "Architectures per forward pass when scoring the space.")
    hyper_archs: int = _f(64, "HyperNAS-H: architectures whose generated networks are scored on aux_eval_split.")
    hyper_images: int = _f(500, "HyperNAS-H: aux eval images per scored architecture.")


@dataclass
class RunConfig:
    root: str = _f("runs", "Parent directory of run directories.")
    name: str = _f("", "Run directory name ('' = {space}-{variant}-n{num_train}-s{seed}).")
    resume: bool = _f(True, "Continue from the run directory's latest checkpoint when one exists.")
    keep_checkpoints: int = _f(2, "Epoch checkpoints kept (the latest ones).")
    log_every: int = _f(20, "Optimizer updates between JSONL/TensorBoard log lines.")
    tensorboard: bool = _f(True, "Write TensorBoard event files.")
    progress: bool = _f(True, "Show a tqdm progress bar (plain log lines when stderr is no terminal).")


@dataclass
class DistConfig:
    deepspeed_config: str = _f("", "DeepSpeed JSON (configs/deepspeed/zero{0,1,2}.json); set by --deepspeed_config "
                                   "too. Non-empty selects DeepSpeed; its batch fields are computed from "
                                   "train.accumulate / micro_batch and the world size.")
    backend: str = _f("auto", "Process-group backend: auto (nccl on GPUs, gloo on CPUs), nccl or gloo.")
    timeout_s: int = _f(1800, "Collective timeout in seconds (rank 0 evaluates while the others wait).")
    find_unused_parameters: bool = _f(True, "DDP: allow parameters without a gradient in a step (hypernetwork "
                                            "slots of weightless ops).")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Tables, labels and aux images."})
    space: SpaceConfig = field(default_factory=SpaceConfig, metadata={"help": "Search space."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Predictor."})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "Multi-task loss."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Run directory and logging."})
    dist: DistConfig = field(default_factory=DistConfig, metadata={"help": "Multi-process training (DDP, DeepSpeed)."})
    search: SearchConfig = field(default_factory=SearchConfig,
                                 metadata={"help": "Search under a query budget (python -m pipeline.search)."})


# --------------------------------------------------------------------------------------------------
# Loading, overriding, validating


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_override(tree: dict, assignment: str) -> None:
    """Apply `a.b.c=value` to a nested dict in place (unknown keys are caught by `_build`)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML ({e})") from None
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a config YAML; `base: other.yaml` (relative to the file) is merged underneath."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    base = tree.pop("base", None)
    if base is not None:
        tree = _deep_merge(read_yaml(path.parent / base), tree)
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    tree = read_yaml(path) if path else {}
    for assignment in overrides:
        apply_override(tree, assignment)
    cfg = _build(Config, tree)
    validate(cfg)
    return cfg


def replace(cfg: Config, *overrides: str) -> Config:
    """A copy of `cfg` with dotted overrides applied (used by sweeps and benchmarks)."""
    tree = to_dict(cfg)
    for assignment in overrides:
        apply_override(tree, assignment)
    new = _build(Config, tree)
    validate(new)
    return new


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express; each names the key."""
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"config key {key!r}: {msg}")

    need(cfg.data.num_train >= 1, "data.num_train", "must be >= 1")
    need(cfg.data.val_archs >= 0, "data.val_archs", "must be >= 0")
    need(cfg.data.aux_loader in ("auto", "memory", "stream"), "data.aux_loader",
         f"must be auto, memory or stream, got {cfg.data.aux_loader!r}")
    need(cfg.data.aux_memory_mb >= 0 and cfg.data.aux_workers >= 0 and cfg.data.aux_shuffle_buffer >= 0,
         "data.aux_memory_mb", "aux_memory_mb, aux_workers and aux_shuffle_buffer must be >= 0")
    need(cfg.data.prepare_workers >= 1, "data.prepare_workers", "must be >= 1")
    need(len(cfg.data.label_range) == 2 and cfg.data.label_range[0] < cfg.data.label_range[1],
         "data.label_range", "must be [min, max] with min < max")
    need(cfg.model.encoder.layers >= 1, "model.encoder.layers", "must be >= 1")
    need(cfg.model.encoder.hidden >= 1, "model.encoder.hidden", "must be >= 1")
    need(cfg.model.encoder.connectivity in ("sum", "concat"), "model.encoder.connectivity",
         f"must be 'sum' or 'concat', got {cfg.model.encoder.connectivity!r}")
    need(0.0 <= cfg.model.encoder.dropout < 1.0, "model.encoder.dropout", "must be in [0, 1)")
    need(cfg.model.hyper.images_per_arch >= 1, "model.hyper.images_per_arch", "must be >= 1")
    need(cfg.model.hyper.image_size >= 8, "model.hyper.image_size", "must be >= 8")
    need(cfg.model.hyper.unlabelled >= 0, "model.hyper.unlabelled", "must be >= 0")
    need(cfg.model.hyper.encoder_grad >= 0, "model.hyper.encoder_grad", "must be >= 0")
    need(cfg.model.hyper.init in ("kaiming", "fan_in"), "model.hyper.init",
         f"must be kaiming or fan_in, got {cfg.model.hyper.init!r}")
    need(cfg.loss.q > 0, "loss.q", "must be > 0")
    need(cfg.loss.scope in ("update", "arch"), "loss.scope", f"must be update or arch, got {cfg.loss.scope!r}")
    need(0.0 <= cfg.loss.anchor_momentum < 1.0, "loss.anchor_momentum", "must be in [0, 1)")
    need(cfg.loss.mse_weight >= 0 and cfg.loss.rank_weight >= 0, "loss.mse_weight",
         "loss.mse_weight and loss.rank_weight must be >= 0")
    need(cfg.loss.mse_weight + cfg.loss.rank_weight > 0, "loss.rank_weight",
         "loss.mse_weight and loss.rank_weight are both 0: the regressor would not train")
    need(cfg.data.cv_folds == 0 or cfg.data.cv_folds >= 2, "data.cv_folds", "must be 0 (off) or >= 2")
    need(cfg.data.cv_folds == 0 or 0 <= cfg.data.cv_fold < cfg.data.cv_folds, "data.cv_fold",
         f"must be in [0, data.cv_folds={cfg.data.cv_folds})")
    need(cfg.data.cv_folds == 0 or cfg.data.num_train >= 2 * cfg.data.cv_folds, "data.cv_folds",
         f"needs at least 2 training cells per fold (data.num_train={cfg.data.num_train})")
    need(cfg.loss.reading in ("A", "B"), "loss.reading", f"must be 'A' or 'B', got {cfg.loss.reading!r}")
    need(cfg.train.epochs >= 1, "train.epochs", "must be >= 1")
    need(cfg.train.member >= 0, "train.member", "must be >= 0")
    need(cfg.train.lr > 0, "train.lr", "must be > 0")
    need(cfg.train.accumulate >= 1, "train.accumulate", "must be >= 1")
    need(cfg.train.micro_batch >= 0, "train.micro_batch", "must be >= 0")
    need(all(isinstance(m, (int, float)) and 0 < m < 1 for m in cfg.train.lr_milestones),
         "train.lr_milestones", "must be fractions of the epochs in (0, 1)")
    need(cfg.train.precision in ("fp32", "bf16", "fp16"), "train.precision",
         f"must be fp32, bf16 or fp16, got {cfg.train.precision!r}")
    need(cfg.train.device in ("auto", "cpu", "cuda"), "train.device", f"must be auto, cpu or cuda, got {cfg.train.device!r}")
    need(cfg.dist.backend in ("auto", "nccl", "gloo"), "dist.backend", f"must be auto, nccl or gloo, got {cfg.dist.backend!r}")
    need(cfg.dist.timeout_s >= 1, "dist.timeout_s", "must be >= 1")
    need(cfg.eval.batch_size >= 1, "eval.batch_size", "must be >= 1")
    need(cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints", "must be >= 1")
    # Registries validate names (space, variant, weighting) where they are built, listing the options.
    from pipeline.baselines import BASELINES
    from pipeline.features import FEATURE_SETS
    from pipeline.loss import WEIGHTINGS
    from pipeline.models.predictor import VARIANTS
    from pipeline.spaces import SPACES
    space_cls = SPACES.get(cfg.space.name)
    if not isinstance(cfg.space.settings, dict):
        raise ConfigError(f"config key 'space.settings' must be a mapping, got {cfg.space.settings!r}")
    cfg.space.settings = as_dict(_build(space_cls.Settings, cfg.space.settings, "space.settings."))
    if cfg.model.variant not in BASELINES:
        try:
            VARIANTS.get(cfg.model.variant)
        except ConfigError:
            raise ConfigError(f"config key 'model.variant': unknown {cfg.model.variant!r}; predictor variants: "
                              f"{', '.join(VARIANTS.names())}; baselines: {', '.join(BASELINES.names())}") from None
    WEIGHTINGS.get(cfg.loss.weighting)
    for name in cfg.model.features:
        FEATURE_SETS.get(name)


def run_name(cfg: Config) -> str:
    member = f"-m{cfg.train.member}" if cfg.train.member else ""
    return cfg.run.name or f"{cfg.space.name}-{cfg.model.variant}-n{cfg.data.num_train}-s{cfg.train.seed}{member}"


def model_seed(cfg: Config) -> int:
    """Seed of everything random but the split (init, order, dropout, augmentation): train.seed for member 0."""
    if not cfg.train.member:
        return cfg.train.seed
    return (cfg.train.seed * 1_000_003 + cfg.train.member * 7_919 + 17) % (2**31 - 1)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Documentation of every key


def iter_keys(cls: type = Config, prefix: str = ""):
    """Yield (dotted key, type name, default, help) for every leaf key."""
    yield from help_rows(cls, prefix)


def markdown_doc() -> str:
    lines = ["# Config keys", "",
             "Generated by `python -m pipeline.config --doc`; do not edit by hand. Override any key on the "
             "command line as `key=value`, e.g. `train.epochs=5`.", "",
             "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, help in iter_keys():
        lines.append(f"| `{key}` | {typ} | `{default!r}` | {help} |")
    from pipeline.spaces import SPACES
    lines += ["", "## Space settings", "",
              "`space.settings.<key>`, per space (`space.name`); e.g. `space.settings.target_channels=16`.", ""]
    for name in SPACES.names():
        cls = SPACES.get(name)
        lines += [f"### `{name}`", "", (cls.Settings.__doc__ or "").strip(), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, typ, default, help in help_rows(cls.Settings):
            lines.append(f"| `{key}` | {typ} | `{default!r}` | {help} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    if "--doc" in sys.argv:
        print(markdown_doc(), end="")
    else:
        args = [a for a in sys.argv[1:]]
        path = args.pop(0) if args and "=" not in args[0] else None
        print(dump_yaml(load_config(path, args)), end="")
