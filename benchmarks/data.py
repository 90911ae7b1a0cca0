"""Data throughput: sharding and loading images/s (ImageNet-sized JPEGs and CIFAR) vs what training consumes.

    python -m benchmarks.data [--jpegs 1000] [--workers 2] [--load-images 1000] [--gpu-update-s 0.2]

1. Generates `--jpegs` 500x375 JPEGs (a smooth random image plus noise: ~110 kB, like ImageNet's average)
   as an ImageFolder in a temp dir, and shards them with `--workers` processes: bytes kept, and --resize 256.
2. Loads them with the training stream (pipeline/data/streaming.py: decode + timm's RandomResizedCrop, flip,
   colour jitter at 224 px, `--workers` DataLoader workers), from both shard sets.
3. CIFAR (the shared 5,000-image npz): sharding, the trainer's in-memory AuxBatches at 32 px, and the
   stream at 32 px.
4. Compares with what one HyperNAS update of the paper profile consumes (10 architectures x 128 images):
   the measured CPU update time (results/bench_speed/summary.json) and an *assumed* GPU update time, and
   projects ImageNet-1k (1,281,167 images) on a 32-core node.
Writes results/bench_data/summary.md, summary.json and throughput.png (atomically).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167
PAPER_IMAGES_PER_UPDATE = 10 * 128  # train.accumulate x model.hyper.images_per_arch (configs/nb201.yaml)
NODE_CORES = 32
# Heavy imports (torch, timm, webdataset) happen inside the functions: shard writers are spawned
# processes that import this module as their __main__, and should start in a fraction of a second.


def make_jpegs(root: Path, n: int, classes: int = 10, seed: int = 0) -> float:
    """n 500x375 JPEGs as root/train/<class>/<i>.JPEG; returns their mean size in bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(n):
        d = root / "train" / f"n{i % classes:08d}"
        d.mkdir(parents=True, exist_ok=True)
        low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        img = np.asarray(low, dtype=np.int16) + rng.normal(0, 24, (375, 500, 3)).astype(np.int16)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        (d / f"{i:06d}.JPEG").write_bytes(buf.getvalue())
        sizes.append(buf.tell())
    return float(np.mean(sizes))


def cpu_seconds() -> float:
    """User + system CPU time of this process, its finished children and its live children (shard writers,
    DataLoader workers; read from /proc): the cost of the work itself, whatever else loads the machine."""
    own, done = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime
    tick, me = os.sysconf("SC_CLK_TCK"), os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid ...
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def time_sharding(source: Path, out: Path, workers: int, **kwargs) -> dict:
    from data_prep.images import prepare_images

    c0, t0 = cpu_seconds(), time.perf_counter()
    m = prepare_images(source, out, workers=workers, progress=False, **kwargs)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    n = sum(v["count"] for v in m["splits"].values())
    shard_bytes = sum(v["bytes"] for v in m["splits"].values())
    return {"images": n, "wall_s": wall, "images_per_s": n / wall, "cpu_s": cpu, "images_per_cpu_s": n / cpu,
            "shard_mb": shard_bytes / 1e6, "shards": sum(len(v["shards"]) for v in m["splits"].values())}


def time_stream(shards: Path, split: str, image_size: int, workers: int, images: int, batch: int = 128) -> dict:
    from pipeline.data.streaming import StreamingAux

    aux = StreamingAux(shards, split, image_size=image_size, augment=True, num_workers=workers, rank=0, world=1)
    aux.batch(0, batch)  # warm-up: workers started, first shards opened
    c0, t0 = cpu_seconds(), time.perf_counter()
    done = 0
    while done < images:
        done += len(aux.batch(done, batch)[1])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0  # steady state, workers still alive
    aux.close()
    return {"images": done, "wall_s": wall, "images_per_s": done / wall, "cpu_s": cpu,
            "images_per_cpu_s": done / cpu, "image_size": image_size}


def time_in_memory(shards: Path, split: str, image_size: int, batches: int, batch: int = 128) -> dict:
    from pipeline.data.images import AuxBatches

    t0 = time.perf_counter()
    aux = AuxBatches.from_shards(shards, split, augment=True, resize=image_size)
    load_s = time.perf_counter() - t0
    c0, t0 = cpu_seconds(), time.perf_counter()
    for step in range(batches):
        aux.batch(step, batch, 0)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"images": batches * batch, "wall_s": wall, "images_per_s": batches * batch / wall, "cpu_s": cpu,
            "images_per_cpu_s": batches * batch / cpu, "load_s": load_s, "set_size": len(aux),
            "image_size": image_size}


def cpu_update_s() -> tuple[float, str]:
    path = REPO / "results" / "bench_speed" / "summary.json"
    try:
        rows = json.loads(path.read_text())["step_time"]
        return float(next(r["hypernas_s"] for r in rows if r["profile"] == "paper")), "results/bench_speed/summary.json"
    except (OSError, ValueError, KeyError, StopIteration):
        return 13.08, "results/bench_speed/summary.md (13.08 s/update)"


def run(args: argparse.Namespace) -> dict:
    import timm.data  # noqa: F401 - imported before any timing (its import costs seconds of CPU)
    import torch

    torch.set_num_threads(1)  # the main process only collates; the workers do the work
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_data."))
    try:
        t0 = time.perf_counter()
        mean_jpeg = make_jpegs(tmp / "jpegs", args.jpegs)
        gen_s = time.perf_counter() - t0
        print(f"generated {args.jpegs} JPEGs of 500x375, mean {mean_jpeg / 1e3:.0f} kB ({gen_s:.1f} s)", flush=True)
        shard_size = max(1, args.jpegs // (4 * args.workers))  # >= 4 shards per loader worker
        rows = {
            "jpeg_shard_keep": time_sharding(tmp / "jpegs", tmp / "keep", args.workers, shard_size=shard_size),
            "jpeg_shard_resize256": time_sharding(tmp / "jpegs", tmp / "r256", args.workers, shard_size=shard_size,
                                                  resize=256),
        }
        # the fixed cost of a run (spawning the writers, listing, planning), from the same run on 8 images:
        # the marginal CPU per image is what a 1.28 M-image run pays
        make_jpegs(tmp / "tiny", 8, classes=2, seed=1)
        for name, extra in (("jpeg_shard_keep", {}), ("jpeg_shard_resize256", {"resize": 256})):
            small = time_sharding(tmp / "tiny", tmp / f"tiny_{name}", args.workers, shard_size=2, **extra)
            row = rows[name]
            row["fixed_cpu_s"] = small["cpu_s"] - 8 * (row["cpu_s"] - small["cpu_s"]) / (row["images"] - 8)
            row["marginal_images_per_cpu_s"] = (row["images"] - 8) / max(row["cpu_s"] - small["cpu_s"], 1e-9)
        rows["jpeg_load_224_keep"] = time_stream(tmp / "keep", "train", 224, args.workers, args.load_images)
        rows["jpeg_load_224_resize256"] = time_stream(tmp / "r256", "train", 224, args.workers, args.load_images)
        cifar = Path(args.cifar)
        rows["cifar_shard"] = time_sharding(cifar, tmp / "cifar", args.workers, dataset="cifar10")
        rows["cifar_memory_32"] = time_in_memory(tmp / "cifar", "train", 32, batches=50)
        rows["cifar_stream_32"] = time_stream(tmp / "cifar", "train", 32, args.workers, 4 * args.load_images)
        for name, r in rows.items():
            print(f"  {name:26s} {r['images_per_s']:10.0f} images/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    update_s, update_src = cpu_update_s()
    consume = {"cpu_measured": PAPER_IMAGES_PER_UPDATE / update_s, "gpu_assumed": PAPER_IMAGES_PER_UPDATE / args.gpu_update_s}
    # per core: images per CPU-second (load-independent), not wall rate / workers (the machine is shared)
    per_worker = {k: rows[k].get("marginal_images_per_cpu_s", rows[k]["images_per_cpu_s"]) for k in
                  ("jpeg_shard_keep", "jpeg_shard_resize256", "jpeg_load_224_keep", "jpeg_load_224_resize256")}
    projection = {
        "shard_keep_min": IMAGENET_TRAIN / (per_worker["jpeg_shard_keep"] * NODE_CORES) / 60,
        "shard_resize256_min": IMAGENET_TRAIN / (per_worker["jpeg_shard_resize256"] * NODE_CORES) / 60,
        "load_224_keep_images_per_s": per_worker["jpeg_load_224_keep"] * NODE_CORES,
        "load_224_resize256_images_per_s": per_worker["jpeg_load_224_resize256"] * NODE_CORES,
        "imagenet_read_gb": IMAGENET_TRAIN * mean_jpeg / 1e9,
    }
    projection["epoch_keep_min"] = IMAGENET_TRAIN / projection["load_224_keep_images_per_s"] / 60
    projection["epoch_resize256_min"] = IMAGENET_TRAIN / projection["load_224_resize256_images_per_s"] / 60
    return {"rows": rows, "consumption_images_per_s": consume, "cpu_update_s": update_s, "cpu_update_source": update_src,
            "gpu_update_s_assumed": args.gpu_update_s, "projection_32_cores": projection, "per_worker": per_worker,
            "mean_jpeg_bytes": mean_jpeg, "jpegs": args.jpegs, "workers": args.workers, "cpus": os.cpu_count(),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "generate_s": gen_s,
            "args": {**vars(args), "out": _rel(args.out), "cifar": _rel(args.cifar)}}


def _rel(p: str) -> str:
    path = Path(p).resolve()
    return str(path.relative_to(REPO.parent)) if path.is_relative_to(REPO.parent) else str(p)


LABELS = {
    "jpeg_shard_keep": "shard JPEGs, bytes kept",
    "jpeg_shard_resize256": "shard JPEGs, --resize 256",
    "jpeg_load_224_keep": "stream JPEGs -> 224 px (kept bytes)",
    "jpeg_load_224_resize256": "stream JPEGs -> 224 px (256-px shards)",
    "cifar_shard": "shard CIFAR (PNG)",
    "cifar_memory_32": "CIFAR in memory (AuxBatches, 32 px)",
    "cifar_stream_32": "stream CIFAR -> 32 px (timm)",
}


def summary_md(r: dict) -> str:
    from benchmarks.provenance import code_line  # imports torch (pipeline.rundir): not at module level

    c, p, w = r["consumption_images_per_s"], r["projection_32_cores"], r["workers"]
    la0, la1 = r["loadavg_start"][0], r["loadavg_end"][0]
    loaded = la0 > 0.5 * r["cpus"] or la1 > 0.5 * r["cpus"]
    lines = [
        "# Data throughput: sharding and loading vs what HyperNAS consumes", "",
        f"`python -m benchmarks.data --jpegs {r['jpegs']} --workers {w} --load-images {r['args']['load_images']}`; "
        f"{r['cpus']} CPUs, load average {la0:.2f} at the start and {la1:.2f} at the end"
        + (" — **a loaded machine** (other jobs were running): the rates are lower bounds." if loaded else "."), "",
        code_line() + ".", "",
        f"ImageNet-sized input: {r['jpegs']} generated 500×375 JPEGs, mean {r['mean_jpeg_bytes'] / 1e3:.0f} kB "
        "(ImageNet-1k train averages ~110 kB). CIFAR: the shared 5,000-image npz.", "",
        f"| what ({w} workers) | images/s (wall) | images per CPU-second | wall s | CPU s |", "|---|---|---|---|---|",
    ]
    for k in [k for k in LABELS if k in r["rows"]]:
        row = r["rows"][k]
        lines.append(f"| {LABELS[k]} | {row['images_per_s']:,.0f} | {row['images_per_cpu_s']:,.0f} | "
                     f"{row['wall_s']:.2f} | {row['cpu_s']:.2f} |")
    lines += [
        "", "images/s (wall) is what this machine delivered with the other jobs on it; images per CPU-second "
        "(user + system time of the process and its workers, from getrusage and /proc) is the cost of the work itself, what a core "
        "delivers when it is not shared, and what the projection below uses.", "",
        "Sharding CPU includes the run's fixed cost (spawning the writers, listing, planning): "
        + ", ".join(f"{LABELS[k]}: {r['rows'][k]['fixed_cpu_s']:.2f} CPU-s fixed, "
                    f"{r['rows'][k]['marginal_images_per_cpu_s']:,.0f} images per marginal CPU-second"
                    for k in ("jpeg_shard_keep", "jpeg_shard_resize256"))
        + " (from a second run on 8 images); the projection uses the marginal rate. Streaming CPU is the steady "
        "state (after the first batch).", "",
        "Sharding includes a full decode of every JPEG (a corrupt file fails or is skipped here, not in training), "
        "the tar write with sha256 and fsync, and the spawn of the writer processes. Streaming = webdataset shard "
        "reading + PIL decode + timm `create_transform(224, is_training=True)` (RandomResizedCrop, flip, colour "
        "jitter, normalise) in DataLoader workers. The in-memory CIFAR row is the trainer's path today (pad-4 crop "
        "+ flip on the whole batch, no decoding).", "",
        "## What one training update consumes (paper profile: 10 architectures × 128 images)", "",
        f"- CPU, measured: {r['cpu_update_s']:.2f} s/update ({r['cpu_update_source']}) → "
        f"**{c['cpu_measured']:.0f} images/s**.",
        f"- GPU, **assumed** (not measured; `just gpu-check` measures it): {r['gpu_update_s_assumed']} s/update → "
        f"**{c['gpu_assumed']:,.0f} images/s** per GPU.", "",
        f"| loader | × CPU consumption (wall, as measured) | × CPU consumption ({w} unshared cores) | "
        f"× assumed GPU consumption ({w} unshared cores) |", "|---|---|---|---|",
    ]
    for k in ("jpeg_load_224_keep", "jpeg_load_224_resize256", "cifar_memory_32", "cifar_stream_32"):
        v, cores = r["rows"][k]["images_per_s"], r["rows"][k]["images_per_cpu_s"] * w
        lines.append(f"| {LABELS[k]} | {v / c['cpu_measured']:.1f}× | {cores / c['cpu_measured']:.1f}× | "
                     f"{cores / c['gpu_assumed']:.2f}× |")
    lines += ["", f"({w} unshared cores = images per CPU-second × {w}. On this machine the training step itself "
              "needs the same cores, so CPU training and ImageNet-sized streaming compete for them.)"]
    lines += [
        "", f"## Projection: ImageNet-1k train ({IMAGENET_TRAIN:,} images) on a {NODE_CORES}-core node", "",
        "Assumption: throughput scales linearly with processes, one per core, each delivering the images per "
        "CPU-second measured here (JPEG decode and augmentation are CPU-bound and independent per image; "
        "memory bandwidth and turbo clocks are ignored), so the projection holds until "
        f"storage caps it: the set is {p['imagenet_read_gb']:.0f} GB, i.e. ≥ {p['imagenet_read_gb'] / 1.0 / 60:.1f} "
        "min of reading at 1 GB/s.", "",
        f"- Sharding (`--workers 32`), CPU-bound: bytes kept {p['shard_keep_min']:.1f} min, --resize 256 "
        f"{p['shard_resize256_min']:.1f} min. Storage: bytes kept reads and writes {p['imagenet_read_gb']:.0f} GB, "
        f"≥ {2 * p['imagenet_read_gb'] / 60:.1f} min at 1 GB/s, so that run is storage-bound "
        f"(about {max(p['shard_keep_min'], 2 * p['imagenet_read_gb'] / 60):.0f} min on 1 GB/s storage); "
        f"--resize 256 writes {r['rows']['jpeg_shard_resize256']['shard_mb'] / r['rows']['jpeg_shard_keep']['shard_mb']:.0%} "
        "of those bytes (measured on the generated set).",
        f"- Streaming at 224 px: {p['load_224_keep_images_per_s']:,.0f} images/s from kept bytes "
        f"({p['epoch_keep_min']:.1f} min per pass over the set), {p['load_224_resize256_images_per_s']:,.0f} images/s "
        f"from 256-px shards ({p['epoch_resize256_min']:.1f} min).",
        f"- Against consumption: one node of 32 cores streams "
        f"{p['load_224_keep_images_per_s'] / c['gpu_assumed']:.1f}× (kept bytes) / "
        f"{p['load_224_resize256_images_per_s'] / c['gpu_assumed']:.1f}× (256-px shards) what one GPU consumes at "
        "the assumed update time, if all 32 cores feed it; 8 GPUs per node leave 4 cores per GPU, i.e. "
        f"{p['load_224_resize256_images_per_s'] / 8 / c['gpu_assumed']:.2f}× from 256-px shards.", "",
        "Caveat: the paper profile's aux images are 32-px CIFAR; 224-px ImageNet aux images make the target "
        "networks (and so each update) heavier, which lowers the consumption per GPU below the figure above.", "",
        "![throughput](throughput.png)", "",
    ]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.utils.io import atomic_path

    names = [k for k in LABELS if k in r["rows"]]  # a fixed order (summary.json stores keys sorted)
    vals = [r["rows"][k]["images_per_s"] for k in names]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.barh([LABELS[k] for k in names], vals, color=["#27a" if "shard" in k else "#2a7" for k in names])
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    cores = [r["rows"][k]["images_per_cpu_s"] * r["workers"] for k in names]
    ax.scatter(cores, range(len(names)), marker="|", s=250, color="k", zorder=3,
               label=f"{r['workers']} unshared cores (images per CPU-s × {r['workers']})")
    c = r["consumption_images_per_s"]
    ax.axvline(c["cpu_measured"], color="#a22", ls="--", label=f"CPU update consumes {c['cpu_measured']:.0f}/s")
    ax.axvline(c["gpu_assumed"], color="#a62", ls=":", label=f"GPU (assumed) {c['gpu_assumed']:,.0f}/s")
    ax.set_xscale("log")
    ax.set_xlabel(f"images / s (bars: wall rate, {r['workers']} workers, this shared {r['cpus']}-CPU machine)")
    ax.invert_yaxis()
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jpegs", type=int, default=1000, help="ImageNet-sized JPEGs to generate (500x375)")
    ap.add_argument("--workers", type=int, default=2, help="sharding processes and DataLoader workers")
    ap.add_argument("--load-images", type=int, default=1000, help="images timed per JPEG streaming run (x4 for CIFAR)")
    ap.add_argument("--gpu-update-s", type=float, default=0.2,
                    help="ASSUMED paper-profile update time on one GPU (not measured here), for the comparison")
    ap.add_argument("--cifar", default=str(REPO.parent / "shared" / "data" / "cifar10" / "cifar10_subset.npz"))
    ap.add_argument("--out", default=str(REPO / "results" / "bench_data"))
    args = ap.parse_args(argv)
    if not Path(args.cifar).is_file():
        print(f"error: {args.cifar}: CIFAR npz not found (--cifar)", file=sys.stderr)
        return 2
    from pipeline.utils.io import atomic_write_json, atomic_write_text

    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", result)
    plot(result, out / "throughput.png")
    atomic_write_text(out / "summary.md", summary_md(result))
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
