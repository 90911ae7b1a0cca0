"""A label job: what is trained and how (`LabelJob`), which architectures (`sample_archs`), and where each
finished architecture is recorded (one JSON part per architecture under `<out>.parts/`).

A part holds the job's fingerprint: the settings that decide a label (space and its settings, the shard
manifest's sha256, splits, schedule, seed...). A re-run with other settings refuses the old parts instead
of mixing labels made two ways; threads, workers and the launcher are not part of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.tables.parts import snake_case
from pipeline.data.manifest import decoded_bytes, read_manifest
from pipeline.errors import ConfigError, DataError
from pipeline.settings import as_dict, build
from pipeline.spaces import SPACES, SearchSpace
from pipeline.utils.io import atomic_write_json, file_sha256

PART_VERSION = 1
LOADERS = ("auto", "memory", "stream")
# fields that change how fast a job runs, not its labels (the loader, which does, is resolved from
# memory_mb when the job is made)
_RUNTIME_FIELDS = ("shards", "threads", "memory_mb")


@dataclass(frozen=True)
class LabelJob:
    """Everything a worker needs to label one architecture (plain data: it is pickled to workers)."""

    space: str
    settings: dict                 # the space's settings, every field (defaults written out)
    shards: str                    # shard directory (absolute)
    dataset: str
    manifest_sha256: str
    num_classes: int
    epochs: int
    seed: int = 0
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("test",)
    holdout: int = 0               # train-split images held out as a `val` split (never trained on)
    image_size: int | None = None  # side the networks see (None: the shards' own)
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    train_images: int = 0          # 0: the whole train split (minus the holdout)
    eval_images: int = 0           # per eval split; 0: all
    bn_images: int = 500           # train images that recompute BN statistics before evaluation
    threads: int = 1
    loader: str = "memory"         # memory | stream (make_job resolves "auto"): they augment differently
    memory_mb: float = 2048.0
    label_names: dict = field(default_factory=dict)  # eval split -> table column

    def make_space(self) -> SearchSpace:
        cls = SPACES.get(self.space)
        return cls(cls.Settings(**self.settings))

    def fingerprint(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUNTIME_FIELDS}

    @property
    def splits(self) -> list[str]:
        """Every evaluated split, `val` (the holdout) first when there is one."""
        return (["val"] if self.holdout else []) + list(self.eval_splits)

    @property
    def label_columns(self) -> list[str]:
        return [self.label_names[s] for s in self.splits]


def label_column(dataset: str, split: str, epochs: int) -> str:
    return f"{snake_case(dataset)}_{split}_{epochs}ep"


def make_job(space_name: str, settings: dict, shards: str | Path, dataset: str | None, epochs: int,
             eval_splits: list[str] | None = None, **options: Any) -> LabelJob:
    """A validated job: the space's settings checked, the manifest read, splits and sizes checked."""
    cls = SPACES.get(space_name)
    space_settings = build(cls.Settings, settings, "space.settings.")
    shards = Path(shards).resolve()
    manifest = read_manifest(shards, dataset)
    manifest_path = next(shards.glob(f"{manifest['dataset']}-manifest.json"))
    splits = manifest["splits"]
    train = options.get("train_split", "train")
    if train not in splits:
        raise DataError(f"{manifest_path}: no split {train!r} to train on (splits: {', '.join(splits)})")
    if eval_splits is None:
        eval_splits = [s for s in ("val", "test") if s in splits and s != train][:1] or \
            [s for s in splits if s != train][:1]
        if not eval_splits and not options.get("holdout"):
            raise ConfigError(f"{manifest_path}: only the {train!r} split exists; hold some of it out with "
                              f"--holdout N to evaluate on")
    for s in eval_splits:
        if s not in splits:
            raise DataError(f"{manifest_path}: no split {s!r} to evaluate on (splits: {', '.join(splits)})")
    if options.get("holdout") and "val" in eval_splits:
        raise ConfigError("--holdout makes a split called 'val', and the shards have one too: evaluate on the "
                          "shards' val split or hold out, not both")
    for key in ("epochs", "batch_size"):
        value = epochs if key == "epochs" else options.get(key, 1)
        if value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    for key in ("holdout", "train_images", "eval_images", "bn_images"):
        if options.get(key, 0) < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 0, got {options[key]}")
    if options.get("image_size") is not None and options["image_size"] < 8:
        raise ConfigError(f"--image-size must be >= 8, got {options['image_size']}")
    if options.get("loader", "auto") not in LOADERS:
        raise ConfigError(f"--loader must be one of {', '.join(LOADERS)}, got {options['loader']!r}")
    n_train = splits[train]["count"] - options.get("holdout", 0)
    if n_train < 1:
        raise ConfigError(f"--holdout {options.get('holdout')} leaves no image of the {train!r} split "
                          f"({splits[train]['count']}) to train on")
    names = {s: label_column(manifest["dataset"], s, epochs) for s in (["val"] if options.get("holdout") else [])
             + list(eval_splits)}
    options["loader"] = resolve_loader(manifest, train, eval_splits, options.get("image_size"),
                                       options.get("loader", "auto"), options.get("memory_mb", 2048.0))
    if options["loader"] == "stream" and options.get("holdout"):
        raise ConfigError("--holdout needs the train split in memory (--loader memory, or a larger --memory-mb)")
    if options["loader"] == "memory" and manifest["image_shape"] is None and options.get("image_size") is None:
        raise ConfigError(f"{manifest_path}: {manifest['dataset']} images vary in size: pass --image-size")
    return LabelJob(space=space_name, settings=as_dict(space_settings), shards=str(shards),
                    dataset=manifest["dataset"], manifest_sha256=file_sha256(manifest_path),
                    num_classes=int(manifest["num_classes"]), epochs=epochs, eval_splits=tuple(eval_splits),
                    label_names=names, **options)


def resolve_loader(manifest: dict, train: str, evals: list[str], image_size: int | None, loader: str,
                   memory_mb: float) -> str:
    """`auto` -> memory when the decoded train and eval splits fit `memory_mb`, else stream."""
    if loader != "auto":
        return loader
    varying = manifest["image_shape"] is None
    size = image_size if image_size is not None else (224 if varying else None)
    need = sum(decoded_bytes(manifest, s, size) for s in [train, *evals])
    return "memory" if need <= memory_mb * 2**20 else "stream"


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[str]:
    """`n` canonical architectures drawn with `space.sample`, one per isomorphism class, in draw order.
    The draws are sequential, so the first n of a larger request are the same architectures."""
    if n < 1:
        raise ConfigError(f"--num-archs must be >= 1, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    misses = 0
    while len(out) < n:
        arch = space.sample(rng)
        iso = space.isomorphism_class(arch)
        if iso in seen:
            misses += 1
            if misses > 100 * n + 1000:
                raise ConfigError(f"space {space.name!r} gave only {len(out)} distinct architectures in "
                                  f"{len(out) + misses} draws; ask for fewer than {n}")
            continue
        seen.add(iso)
        out.append(space.to_str(arch))
    return out


def arch_seed(seed: int, arch: str) -> int:
    """The training seed of one architecture: its label does not depend on which others are labelled."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{arch}".encode()).digest()[:8], "little") >> 1


# -- parts -------------------------------------------------------------------------------------------

def parts_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_path(parts: Path, arch: str) -> Path:
    return parts / f"{hashlib.sha256(arch.encode()).hexdigest()[:24]}.json"


def write_part(parts: Path, job: LabelJob, arch: str, result: dict[str, Any]) -> Path:
    """Record one finished architecture atomically (temp file + rename)."""
    path = part_path(parts, arch)
    atomic_write_json(path, {"version": PART_VERSION, "arch": arch, "job": job.fingerprint(), **result})
    return path


def read_part(parts: Path, job: LabelJob, arch: str) -> dict[str, Any] | None:
    """The recorded result of `arch`, None when it has none; DataError when the part is unreadable or was
    made by a job with other settings (naming the first setting that differs)."""
    path = part_path(parts, arch)
    if not path.is_file():
        return None
    try:
        part = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable label part ({e}); delete it to relabel {arch}") from e
    if part.get("arch") != arch:
        raise DataError(f"{path}: holds architecture {part.get('arch')!r}, expected {arch!r}; delete it")
    mine, theirs = job.fingerprint(), part.get("job", {})
    theirs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in theirs.items()}
    for key in mine:
        if theirs.get(key) != mine[key]:
            raise DataError(f"{path}: labelled with {key}={theirs.get(key)!r}, this run has {key}={mine[key]!r}; "
                            f"re-run with the same settings, or write to another --out (or delete "
                            f"{parts}) to start over")
    return part
