"""cluster/torchrun.sbatch across two SLURM nodes: two `slurmd -N` simulated on this machine, 1 rank each.

The module fixture starts its own cluster (tests/slurm_harness.py; nodes hn<pid>n1, hn<pid>n2, both
127.0.0.1 with a port each, every daemon on loopback, stopped by PID). The job runs the multi-node path
for real: SLURM_NODEID 0 and 1, node rank 1's torchrun joins the store that pipeline/launch.py hosts on
the first node (HYPERNAS_ALLOW_LOOPBACK_RENDEZVOUS=1: the first node's name resolves to loopback here),
and the trainer streams its aux images (data.aux_loader=stream). StreamingAux's key log
(HYPERNAS_AUX_KEY_LOG) records the sample keys each rank trained on, per data epoch, and the node it ran
on: the two nodes' keys must be disjoint and together cover the epoch's shards.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from listeners import binds_of, non_loopback, tree
from PIL import Image
from slurm_harness import Cluster, local_cluster, tail

from data_prep.images import prepare_images
from pipeline.data.manifest import read_manifest, split_info

pytestmark = pytest.mark.slurm

TINY = "configs/nb201_tiny.yaml"
# 8 shards of 6 images: 2 nodes x 2 loader workers read 2 shards each per data epoch (24 images a rank)
CLASSES, PER_CLASS, SHARD_SIZE, WORKERS = 4, 12, 6, 2
# 12 archs, 4 per update (2 per rank, 8 images each: 16 a rank), 3 updates per epoch; 2 epochs = 96 images a
# rank, so data epochs 0 and 1 are read whole (a rank takes its workers' 32-image chunks in turn)
TRAIN = ["data.num_train=12", "train.accumulate=4", "train.micro_batch=1", "train.threads=1", "train.epochs=2",
         "run.tensorboard=false", "data.val_archs=20", "data.aux_loader=stream", f"data.aux_workers={WORKERS}",
         "data.aux_shuffle_buffer=16", "data.aux_dataset=toy", "data.prepare=false"]


@pytest.fixture(scope="module")
def slurm2() -> Iterator[Cluster]:
    with local_cluster(simulated_nodes=2) as cluster:
        yield cluster


def _jpeg(rng: np.random.Generator) -> bytes:
    img = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((24, 20), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stream_shards(tmp_path_factory) -> Path:
    """An ImageFolder of 48 small JPEGs -> 8 train shards of 6."""
    root = tmp_path_factory.mktemp("multinode")
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        d = root / "src" / "train" / f"n{c:08d}"
        d.mkdir(parents=True)
        for i in range(PER_CLASS):
            (d / f"{i}.JPEG").write_bytes(_jpeg(rng))
    prepare_images(root / "src", root / "shards", dataset="toy", shard_size=SHARD_SIZE)
    return root / "shards"


def _shard_keys(shard_dir: Path) -> dict[str, set[str]]:
    """Sample keys (member name up to its first dot, as webdataset groups them) of each train shard."""
    info = split_info(shard_dir, read_manifest(shard_dir, "toy"), "train")
    out = {}
    for s in info["shards"]:
        with tarfile.open(shard_dir / s["name"]) as tar:
            out[s["name"]] = {Path(m).name.split(".", 1)[0] for m in tar.getnames()}
    return out


def _key_log(path: Path) -> tuple[list[dict], dict[int, list[str]]]:
    """The lines of one rank's key log and the keys it took per data epoch."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    per_epoch = defaultdict(list)
    for line in lines:
        for key, epoch in zip(line["keys"], line["epochs"], strict=True):
            per_epoch[epoch].append(key)
    return lines, per_epoch


def test_simulated_nodes_listen_on_loopback_only(slurm2):
    pids = slurm2.daemon_pids()  # slurmctld + one slurmd per node
    binds = binds_of(tree(pids))
    assert len(pids) == 3 and binds, "\n".join(sorted(map(str, binds)))
    assert not non_loopback(binds), "\n".join(sorted(map(str, binds)))
    info = slurm2.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
    assert info == [slurm2.nodes[0], "idle", slurm2.nodes[1], "idle"], info


@pytest.mark.distributed
def test_torchrun_sbatch_two_nodes_stream_disjoint_aux_per_epoch(slurm2, prepared, stream_shards, tmp_path):
    out, keys_dir = tmp_path / "job.out", tmp_path / "aux-keys"
    args = ["--config", TINY, f"data.table={prepared['table']}", f"data.aux_shards={stream_shards}",
            f"run.root={tmp_path / 'runs'}", "run.name=two-nodes", *TRAIN]
    job = slurm2.submit("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--output={out}",
                        "cluster/torchrun.sbatch", *args,
                        env={"NPROC_PER_NODE": "1", "HYPERNAS_ALLOW_LOOPBACK_RENDEZVOUS": "1",
                             "HYPERNAS_AUX_KEY_LOG": str(keys_dir)})
    rec = slurm2.wait(job, timeout=240, output=out)
    log = tail(out, 20000)
    why = f"{rec}\n{log}\n{slurm2.logs()}"
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", why
    first, port = slurm2.nodes[0], 20000 + job % 20000
    assert f"job {job} (restart 0): 2 nodes x 1, rendezvous {first}:{port}" in log, why
    assert f"launch: rendezvous store on 127.0.0.1:{port} only ({first})" in log, why
    results = json.loads((tmp_path / "runs" / "two-nodes" / "results.json").read_text())
    assert results["world_size"] == 2, results

    shards = _shard_keys(stream_shards)
    everything = set().union(*shards.values())
    assert len(shards) == 8 and len(everything) == CLASSES * PER_CLASS
    files = sorted(p.name for p in keys_dir.iterdir())
    assert files == ["aux-keys-train-rank0-of2.jsonl", "aux-keys-train-rank1-of2.jsonl"], files
    seen = []
    for rank in (0, 1):
        lines, per_epoch = _key_log(keys_dir / f"aux-keys-train-rank{rank}-of2.jsonl")
        # rank r ran on the job's node r: SLURM_NODEID r, the r-th simulated node
        where = {(line["rank"], line["world"], line["node"], line["node_name"]) for line in lines}
        assert where == {(rank, 2, str(rank), slurm2.nodes[rank])}, where
        seen.append(per_epoch)
    per_rank = len(everything) // 2
    for epoch in sorted(set(seen[0]) & set(seen[1])):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(set(a)) and len(b) == len(set(b)), f"data epoch {epoch}: a key read twice"
        assert not set(a) & set(b), f"data epoch {epoch}: both nodes read {sorted(set(a) & set(b))}"
        assert set(a) | set(b) <= everything
    for epoch in (0, 1):  # read whole: together the two nodes cover every shard, each its own 4 shards
        a, b = set(seen[0][epoch]), set(seen[1][epoch])
        assert len(a) == len(b) == per_rank and a | b == everything, f"data epoch {epoch}: {len(a)} + {len(b)}"
        for keys in (a, b):
            mine = [name for name, k in shards.items() if k & keys]
            assert len(mine) == 4 and set().union(*(shards[n] for n in mine)) == keys, (epoch, mine)
    # every data epoch deals the shards anew (a seeded permutation per epoch; this seed moves them)
    assert set(seen[0][0]) != set(seen[0][1])
