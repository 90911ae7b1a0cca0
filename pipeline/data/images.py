"""Read the image shards written by `data_prep.images`.

- `read_manifest` (manifest.py): find and validate `{dataset}-manifest.json`.
- `load_split`: a whole split in memory (CIFAR-sized sets), in sample-key order, every shard checked.
- `stream_split`: a seeded, shuffled stream of batches, DDP-aware via `nodesplitter` (evaluation, tools).
- `AuxBatches`: deterministic augmented batches from an in-memory set; the batch of a step only depends
  on (seed, step), so a resumed run sees exactly the batches it would have seen.
- streaming.py: `StreamingAux`, the training stream for sets that do not fit in memory (ImageNet);
  aux_source.py: `open_aux_source`, which picks one of the two for the trainer.

Every problem with the data raises `DataError` naming the manifest or shard file at fault.
"""
from __future__ import annotations

import functools
import io
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from PIL import Image

from pipeline.data.manifest import read_manifest, split_info
from pipeline.errors import DataError
from pipeline.utils.io import file_sha256

__all__ = ["read_manifest", "load_split", "stream_split", "AuxBatches"]
_IMAGE_FIELDS = ("png", "jpg", "jpeg")


# --------------------------------------------------------------------------- decoding


def decode_sample(sample: dict[str, Any], convert: Callable[[Image.Image], Any]) -> tuple[str, Any, int]:
    """(key, convert(RGB image), label) of a raw webdataset sample; DataError naming the shard and sample."""
    shard, key = Path(str(sample.get("__url__", "?"))).name, sample.get("__key__", "?")
    data = next((sample[f] for f in _IMAGE_FIELDS if f in sample), None)
    if data is None or "cls" not in sample:
        raise DataError(f"{shard}: sample '{key}' lacks an image (.png/.jpg) or .cls field (has {sorted(sample)})")
    try:
        with Image.open(io.BytesIO(data)) as img:
            out = convert(img.convert("RGB"))
        label = int(sample["cls"])
    except Exception as e:  # noqa: BLE001 - any decode failure is a corrupt sample
        raise DataError(f"{shard}: sample '{key}' cannot be decoded ({type(e).__name__}: {e})") from e
    return key, out, label


def _decode(sample: dict[str, Any], image_size: int | None = None) -> tuple[str, torch.Tensor, int]:
    """(key, uint8 CHW image, label) from a raw webdataset sample; DataError naming the shard."""
    def to_array(img: Image.Image) -> np.ndarray:
        if image_size is not None:
            img = _resize_center_crop(img, image_size)
        return np.array(img, dtype=np.uint8)  # copy: writable, owned by torch afterwards

    key, arr, label = decode_sample(sample, to_array)
    return key, torch.from_numpy(arr).permute(2, 0, 1).contiguous(), label


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then a central size x size crop (the usual ImageNet evaluation transform)."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _shard_error(exn: Exception) -> bool:
    """webdataset handler: turn tar errors into DataError naming the shard.

    webdataset appends the shard URL to the exception's args before it calls the handler from its
    tar expander; errors raised deeper (without the URL) are re-raised so that the expander sees them.
    """
    if isinstance(exn, DataError):
        raise exn
    url = exn.args[-1] if exn.args and isinstance(exn.args[-1], str) and exn.args[-1].endswith(".tar") else None
    if url is None:
        raise exn
    raise DataError(f"{Path(url).name}: corrupt or truncated shard ({exn.args[0]}) [{url}]") from exn


# --------------------------------------------------------------------------- whole split in memory


def load_split(
    shard_dir: str | Path, split: str, dataset: str | None = None, verify: bool = True,
    image_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All samples of `split` as (uint8 images (N,C,H,W), int64 labels (N,)), in sample-key order.

    Checks each shard's sha256 (when `verify`), its sample count, every image's shape and label range.
    `image_size`: resize (shorter side) + centre-crop every image to it while loading; needed when the
    images vary in size (image folders, ImageNet: the manifest's image_shape is null).
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir, dataset)
    info = split_info(shard_dir, manifest, split)
    expected_shape = manifest["image_shape"]
    keys: list[str] = []
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for shard in info["shards"]:
        path = shard_dir / shard["name"]
        if verify and file_sha256(path) != shard["sha256"]:
            raise DataError(f"{path}: sha256 does not match the manifest (corrupt or modified shard)")
        n = 0
        try:
            # One pipeline per shard, without node/worker splitting: every rank needs the whole aux set.
            ds = wds.WebDataset(str(path), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
            for sample in ds:
                key, img, label = _decode(sample, image_size)
                if image_size is None and expected_shape is None and images and img.shape != images[0].shape:
                    raise DataError(f"{path.name}: sample '{key}' has shape {tuple(img.shape)}, an earlier one "
                                    f"{tuple(images[0].shape)}: images vary in size, pass image_size=")
                if image_size is None and expected_shape is not None and list(img.shape) != [expected_shape[2], *expected_shape[:2]]:
                    raise DataError(f"{path.name}: sample '{key}' has shape {tuple(img.shape)} (CHW), "
                                    f"manifest says {expected_shape} (HWC)")
                if not 0 <= label < manifest["num_classes"]:
                    raise DataError(f"{path.name}: sample '{key}' has label {label}, "
                                    f"outside [0, {manifest['num_classes']})")
                keys.append(key)
                images.append(img)
                labels.append(label)
                n += 1
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - tar errors of any kind mean a broken shard
            detail = e.args[0] if e.args else ""  # webdataset appends the stream and URL to args
            raise DataError(f"{path}: corrupt or truncated shard ({type(e).__name__}: {detail})") from e
        if n != shard["count"]:
            raise DataError(f"{path}: has {n} samples, manifest says {shard['count']} (truncated shard?)")
    if not images:
        raise DataError(f"{shard_dir}: split '{split}' has no images")
    if len(set(keys)) != len(keys):
        raise DataError(f"{shard_dir}: split '{split}' has duplicate sample keys")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    # fill a preallocated tensor and drop each decoded image once copied: the peak stays near one copy
    x = torch.empty((len(order), *images[0].shape), dtype=torch.uint8)
    for j, i in enumerate(order):
        x[j] = images[i]
        images[i] = None
    y = torch.tensor([labels[i] for i in order], dtype=torch.int64)
    return x, y


# --------------------------------------------------------------------------- streaming


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms, unlike hash())."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(1, np.uint64)[0]) >> 1


def stream_split(
    shard_dir: str | Path,
    split: str,
    batch_size: int,
    seed: int,
    epoch: int,
    dataset: str | None = None,
    nodesplitter: Callable | None = None,
    image_size: int | None = None,
    shuffle: bool = True,
    shuffle_buffer: int = 1000,
    partial: bool = True,
) -> wds.DataPipeline:
    """Batches (uint8 images (B,C,H,W), int64 labels (B,)) of `split`, shuffled reproducibly per (seed, epoch).

    The shard list is permuted with (seed, epoch) before `nodesplitter` (e.g. `wds.split_by_node`) hands
    shards to ranks, so all ranks agree on the permutation and each epoch moves shards between ranks.
    Samples are then shuffled in a buffer seeded by (seed, epoch, rank, worker). `image_size` resizes
    (shorter side) and centre-crops, needed when the images vary in size (image folders). The result is a
    webdataset pipeline: wrap it in `wds.WebLoader(..., batch_size=None)` and use `.with_epoch(n)` to give
    every rank the same number of steps.
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir, dataset)
    info = split_info(shard_dir, manifest, split)
    urls = [str(shard_dir / s["name"]) for s in info["shards"]]
    expected = {u: s["count"] for u, s in zip(urls, info["shards"])}
    if shuffle:
        random.Random(_mix(seed, epoch)).shuffle(urls)
    ds = wds.WebDataset(
        urls, shardshuffle=False, nodesplitter=nodesplitter, handler=_shard_error, empty_check=False
    )
    # module-level functions + partial (not closures): the pipeline must pickle for spawn-started workers
    ds = ds.compose(functools.partial(_check_counts, expected=expected))
    if shuffle:
        ds = ds.compose(functools.partial(_seeded_shuffle, bufsize=shuffle_buffer, seed=seed, epoch=epoch))
    ds = ds.map(functools.partial(_decode_image_label, image_size=image_size))
    return ds.batched(batch_size, collation_fn=_collate, partial=partial)


def _check_counts(src: Iterable[dict], expected: dict[str, int]) -> Iterator[dict]:
    """Catch shards that end early: tar streams truncated at a member boundary end without an error."""
    url, n = None, 0
    for sample in src:
        if sample.get("__url__") != url:
            _check_count(url, n, expected)
            url, n = sample.get("__url__"), 0
        n += 1
        yield sample
    _check_count(url, n, expected)


def _check_count(url: str | None, n: int, expected: dict[str, int]) -> None:
    if url is not None and n != expected.get(url, n):
        raise DataError(f"{Path(url).name}: has {n} samples, manifest says {expected[url]} (truncated shard?)")


def _seeded_shuffle(src: Iterable[Any], bufsize: int, seed: int, epoch: int) -> Iterator[Any]:
    # evaluated inside the DataLoader worker, so rank and worker id are the real ones
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    rng = random.Random(_mix(seed, epoch, rank, worker))
    yield from wds.filters.shuffle(bufsize, bufsize, rng=rng)(iter(src))


def _decode_image_label(sample: dict[str, Any], image_size: int | None) -> tuple[torch.Tensor, int]:
    return _decode(sample, image_size)[1:]


def _collate(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(img.shape) for img, _ in samples}
    if len(shapes) > 1:
        raise DataError(f"images of different sizes {sorted(shapes)} in one batch: pass image_size= to stream_split")
    return torch.stack([img for img, _ in samples]), torch.tensor([lab for _, lab in samples], dtype=torch.int64)


# --------------------------------------------------------------------------- deterministic aux batches


class AuxBatches:
    """In-memory images with deterministic, resumable augmented batches.

    `batch(step, n, seed)` draws indices, crop offsets and flips from a torch.Generator seeded with
    (seed, step): no state carries from one step to the next, so a resumed run reproduces the batches.
    """

    mode = "memory"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: bool = True,
        resize: int | None = None,
        padding: int = 4,
        device: torch.device | str | None = None,
        num_classes: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N,C,H,W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        if images.shape[0] == 0:
            raise ValueError("AuxBatches needs at least one image")
        self.images = images.to(device) if device is not None else images
        self.labels = labels.to(device=self.images.device, dtype=torch.int64)
        self.augment, self.resize, self.padding = augment, resize, padding
        # the manifest's class count when known: a split may miss the last classes
        self.num_classes = int(num_classes) if num_classes is not None else int(self.labels.max()) + 1
        self.mean, self.std = _channel_stats(self.images)

    @classmethod
    def from_shards(cls, shard_dir: str | Path, split: str, dataset: str | None = None, verify: bool = True,
                    **kwargs: Any) -> "AuxBatches":
        """`image_size` (kwarg): resize + centre-crop while loading (sets of varying image sizes)."""
        images, labels = load_split(shard_dir, split, dataset, verify, image_size=kwargs.pop("image_size", None))
        kwargs.setdefault("num_classes", read_manifest(shard_dir, dataset)["num_classes"])
        return cls(images, labels, **kwargs)

    def __len__(self) -> int:
        return self.images.shape[0]

    def seek(self, start: int) -> None:
        """Nothing to do: a batch depends only on (seed, sample id). (StreamingAux.seek re-seeds its stream.)"""

    def batch(self, step: int, n: int, generator_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(float images (n,C,H',W') normalised, int64 labels (n,)) for this step; same args, same batch."""
        g = torch.Generator().manual_seed(_mix(generator_seed, step))
        N = len(self)
        # draws always happen in the same order (indices, then crops, then flips) whatever the options
        idx = torch.randperm(N, generator=g)[:n] if n <= N else torch.randint(N, (n,), generator=g)
        x = self.images[idx.to(self.images.device)]
        if self.augment:
            x = self._crop_flip(x, g)
        x = x.float().div_(255)
        if self.resize is not None and self.resize != x.shape[-1]:
            # 'area' is average pooling when shrinking (e.g. 32 -> 16 for a cheap CPU profile)
            mode = "area" if self.resize < x.shape[-1] else "bilinear"
            x = F.interpolate(x, size=(self.resize, self.resize), mode=mode)
        mean, std = self.mean.to(x.device)[None, :, None, None], self.std.to(x.device)[None, :, None, None]
        return (x - mean) / std, self.labels[idx.to(self.labels.device)]

    def _crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random crop after zero padding + horizontal flip, vectorised over the batch (torchvision's CIFAR recipe)."""
        n, _, h, w = x.shape
        p = self.padding
        oy = torch.randint(0, 2 * p + 1, (n,), generator=g).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=g).to(x.device)
        flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
        padded = F.pad(x, (p, p, p, p))
        rows = oy[:, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = ox[:, None] + torch.arange(w, device=x.device)  # (n, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # flipping = reading the crop's columns backwards
        b = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (n, h, w, C)
        return out.permute(0, 3, 1, 2).contiguous()


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units (what torchvision's Normalize expects).

    Two passes over chunks in float64: a float64 copy of a large set would take 8x its memory.
    """
    n_pix = images.shape[0] * images.shape[2] * images.shape[3]
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    for i in range(0, images.shape[0], chunk):
        total += images[i:i + chunk].to(torch.float64).sum(dim=(0, 2, 3))
    mean = total / (255 * n_pix)
    sq = torch.zeros_like(total)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255).sub_(mean[None, :, None, None])
        sq += x.square_().sum(dim=(0, 2, 3))
    std = (sq / max(n_pix - 1, 1)).sqrt()
    return mean.float(), std.clamp_min(1e-6).float()
