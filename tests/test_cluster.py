"""cluster/*.sbatch on real SLURM daemons: munged + slurmctld + slurmd on loopback, one node, this machine.

The module fixture starts its own cluster (tests/slurm_harness.py: a private config, free ports, every
daemon on 127.0.0.1, stopped by PID when the module ends). It needs root and the Debian packages
slurmctld, slurmd, slurm-client and munge (`just test-services` installs them; `just test` runs it
first); without them the tests fail and say so. Two simulated nodes: tests/test_cluster_multinode.py.
Recipe and pitfalls: ../shared/docs/slurm-local.md.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from listeners import binds_of, non_loopback, tree
from slurm_harness import DONE, REPO, Cluster, alive, local_cluster, stop, tail

from pipeline.ray_cluster import new_token_file

pytestmark = pytest.mark.slurm

TINY = "configs/nb201_tiny.yaml"
# As in tests/test_distributed.py: 12 archs, 4 per update (2 per rank), 3 updates per epoch
SMALL = ["data.num_train=12", "train.accumulate=4", "train.micro_batch=1", "train.threads=1",
         "run.tensorboard=false", "data.val_archs=20"]


@pytest.fixture(scope="module")
def slurm() -> Iterator[Cluster]:
    with local_cluster() as cluster:
        yield cluster


def test_slurm_daemons_listen_on_loopback_only(slurm):
    """The harness's own services: slurmctld and slurmd (munged has a unix socket only)."""
    pids = slurm.daemon_pids()
    binds = binds_of(tree(pids))
    assert len(pids) == 2 and binds, "\n".join(sorted(map(str, binds)))
    assert not non_loopback(binds), "\n".join(sorted(map(str, binds)))


def _train_args(overrides: list[str], *more: str) -> list[str]:
    return ["--config", TINY, *overrides, *SMALL, *more]


def _ddp_job(slurm: Cluster, tmp_path: Path, args: list[str]) -> tuple[int, Path]:
    """cluster/torchrun.sbatch on the one node: 2 CPU ranks (NPROC_PER_NODE), the rest as the script says."""
    out = tmp_path / "job.out"
    cpus = min(2, os.cpu_count() or 1)
    job = slurm.submit("--nodes=1", f"--cpus-per-task={cpus}", f"--output={out}", "cluster/torchrun.sbatch", *args,
                       env={"NPROC_PER_NODE": "2"})
    return job, out


@pytest.mark.distributed
def test_torchrun_sbatch_trains_two_ranks(slurm, tiny_overrides, tmp_path):
    job, out = _ddp_job(slurm, tmp_path, _train_args(tiny_overrides, "train.epochs=2", "run.name=ddp"))
    rec = slurm.wait(job, timeout=300, output=out)
    log = tail(out, 20000)
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
    assert f"job {job} (restart 0): 1 nodes x 2" in log, log
    # the store listens on the first node's address only (here the node is 127.0.0.1), on the job's port
    assert f"launch: rendezvous store on 127.0.0.1:{20000 + job % 20000} only" in log, log
    run = tmp_path / "runs" / "ddp"
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2, results
    assert (run / "checkpoints" / "epoch_0002.pt").is_file()


@pytest.mark.distributed
def test_torchrun_sbatch_stop_signal_checkpoints_requeues_and_resumes(slurm, tiny_overrides, tmp_path):
    """What SLURM does 120 s before the time limit (`--signal=B:USR1@120`): USR1 to the batch shell only.

    The script must get the workers to checkpoint (exit 75) and requeue the job; the requeued job (same id,
    Restarts=1) resumes from that checkpoint and finishes.
    """
    epochs = 12
    job, out = _ddp_job(slurm, tmp_path, _train_args(tiny_overrides, f"train.epochs={epochs}", "run.name=stop"))
    run = tmp_path / "runs" / "stop"
    first = run / "checkpoints" / "epoch_0001.pt"
    deadline = time.monotonic() + 240
    i = 0
    while not first.exists():
        if i % 20 == 0:  # the job still runs (scontrol once a second, the file every 50 ms)
            rec = slurm.job(job)
            assert rec is not None and rec["JobState"] in ("PENDING", "CONFIGURING", "RUNNING"), \
                f"{rec}\n{tail(out)}"
        assert time.monotonic() < deadline, f"no first checkpoint after 240 s\n{tail(out)}"
        time.sleep(0.05)
        i += 1
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))
    rec = slurm.wait(job, timeout=300, output=out)
    log = tail(out, 50000)
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
    assert rec["Restarts"] == "1", rec
    # first run: the signal reached the workers (not a SIGKILL), they checkpointed and exited 75
    assert "signal received: asking the workers to checkpoint" in log, log
    assert "got SIGTERM: checkpointing at the next update boundary" in log, log
    assert log.count("relaunch the same command to resume (exit 75)") == 2, log  # both ranks
    assert f"requeueing job {job}" in log, log
    # second run: same job id, resumed from the stop checkpoint, not from scratch
    assert f"job {job} (restart 1)" in log, log
    m = re.search(r"resumed from (\S+) \(epoch (\d+)", log)
    assert m, log
    assert int(m.group(2)) >= 1
    assert json.loads((run / "results.json").read_text())["world_size"] == 2
    assert (run / "checkpoints" / f"epoch_{epochs:04d}.pt").is_file()


@pytest.mark.distributed
def test_deepspeed_sbatch_trains_two_ranks(slurm, tiny_overrides, tmp_path):
    """cluster/deepspeed.sbatch: the deepspeed launcher without SSH (--no_ssh), 2 CPU ranks (gloo), ZeRO-1."""
    out = tmp_path / "job.out"
    cpus = min(2, os.cpu_count() or 1)
    job = slurm.submit("--nodes=1", f"--cpus-per-task={cpus}", f"--output={out}", "cluster/deepspeed.sbatch",
                       "configs/deepspeed/zero1.json", *_train_args(tiny_overrides, "train.epochs=1", "run.name=ds"),
                       env={"NPROC_PER_NODE": "2"})
    rec = slurm.wait(job, timeout=480, output=out)  # a first run JIT-builds DeepSpeed's CPU comm op (~0.5-2 min)
    log = tail(out, 20000)
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
    assert f"launch: rendezvous store on 127.0.0.1:{20000 + job % 20000} only" in log, log
    run = tmp_path / "runs" / "ds"
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results.get("launcher") == "deepspeed", results
    assert (run / "checkpoints" / "deepspeed" / "epoch_0001" / "hypernas_meta.json").is_file()


def _ray_leftovers(job: int) -> list[int]:
    """PIDs of processes of this job's Ray cluster (its temp dir is /tmp/ray-<job id>)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"/tmp/ray-{job}" in cmd and alive(int(proc.name)):
                found.append(int(proc.name))
    return found


# Ray swaps a 127.0.0.1 node address for the routable one unless it runs in its single-machine mode
# (ray/_private/services.py get_node_ip_address): these keep the job's head on loopback
RAY_ON_LOOPBACK = {"RAY_HEAD_IP": "127.0.0.1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.mark.ray
def test_ray_slurm_sbatch_runs_a_sweep(slurm, prepared, tmp_path):
    """cluster/ray_slurm.sbatch: a Ray head in the job (127.0.0.1, token auth), the tiny sweep on it, Ray gone after."""
    out = tmp_path / "job.out"
    tokens = tmp_path / "tokens"
    cpus = min(2, os.cpu_count() or 1)
    job = slurm.submit("--nodes=1", f"--cpus-per-task={cpus}", f"--output={out}", "cluster/ray_slurm.sbatch",
                       "configs/sweeps/tiny.yaml", "--storage", str(tmp_path / "sweeps"), "--set", "train.epochs=1",
                       "--set", f"data.table={prepared['table']}", "--set", f"data.aux_shards={prepared['shards']}",
                       "--set", "data.prepare=false", env={**RAY_ON_LOOPBACK, "RAY_TOKEN_DIR": str(tokens)})
    try:
        rec = slurm.wait(job, timeout=420, output=out)
        log = tail(out, 20000)
        assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
        assert "ray head on" in log and "(127.0.0.1:" in log and "1 Ray nodes up" in log, log
        assert "Local node IP: 127.0.0.1" in log and "'node:127.0.0.1': 1.0" in log, log
        assert "4/4 trials ok" in log, log
        assert f"token authentication on (token file {tokens}/hypernas-job-{job}.token)" in log, log
        assert not any(tokens.iterdir()), "the job's token file outlived the job"
        df = pd.read_parquet(tmp_path / "sweeps" / "tiny" / "results.parquet")
        assert len(df) == 4 and (df["status"] == "ok").all(), df
        # the job's end took its Ray processes with it
        deadline = time.monotonic() + 20
        while _ray_leftovers(job) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_leftovers(job), "Ray processes outlived the job"
    finally:
        stop(_ray_leftovers(job), grace=5)
        shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)


def _driver(code: str, env: dict[str, str], address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, address], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    """Exit status (None: killed after `timeout` s) and output of a driver."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out


# a bare Ray client (what anyone who reaches the port could run), and the project's driver connection
BARE_DRIVER = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); print('CONNECTED')"
PROJECT_DRIVER = ("import sys\n"
                  "from pipeline.ray_cluster import connect\n"
                  "connect(sys.argv[1], None)\n"  # before `import ray`: Ray reads its auth settings on import
                  "import ray\n"
                  "print('CONNECTED', ray.get(ray.remote(lambda: 42).remote()))\n")


@pytest.mark.ray
@pytest.mark.slow
def test_ray_slurm_head_refuses_a_driver_without_the_token(slurm, tmp_path):
    """`ray_slurm.sbatch --serve`: a head with token auth on loopback; drivers without the token (or with
    another one) are refused, the project's driver with the job's token file connects and runs a task."""
    out = tmp_path / "job.out"
    tokens = tmp_path / "tokens"
    job = slurm.submit("--nodes=1", f"--cpus-per-task={min(2, os.cpu_count() or 1)}", f"--output={out}",
                       "cluster/ray_slurm.sbatch", "--serve", env={**RAY_ON_LOOPBACK, "RAY_TOKEN_DIR": str(tokens)})
    drivers: list[subprocess.Popen] = []
    try:
        rec = slurm.wait(job, timeout=240, output=out,
                         until=lambda r: r["JobState"] in DONE or "ray cluster up at" in tail(out))
        log = tail(out, 20000)
        m = re.search(r"ray cluster up at (127\.0\.0\.1:\d+); connect with RAY_AUTH_TOKEN_PATH=(\S+)", log)
        assert m and rec["JobState"] == "RUNNING", f"{rec}\n{log}"
        address, token = m.group(1), Path(m.group(2))
        assert token == tokens / f"hypernas-job-{job}.token", log
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and stat.S_IMODE(tokens.stat().st_mode) == 0o700
        assert token.read_text().strip() not in log  # the path is printed, never the token
        binds = binds_of(tree(_ray_leftovers(job)))  # the head's Ray processes, their children, its srun
        assert len(binds) >= 3 and not non_loopback(binds), "\n".join(sorted(map(str, binds)))

        home = tmp_path / "home"  # no ~/.ray/auth_token for the drivers to fall back on
        home.mkdir()
        # the drivers run on the head's node in Ray's single-machine mode too (else they would look for a
        # local Ray node on the routable address); nothing else of Ray's settings
        base = {k: v for k, v in slurm.env.items() if not k.startswith("RAY_")} | {
            "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        other = new_token_file(tmp_path / "other.token")
        # the two refused ones in parallel: a refused driver retries for ~20 s before it gives up
        drivers = [_driver(BARE_DRIVER, base, address),
                   _driver(BARE_DRIVER, base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(other)}, address)]
        ok = _driver(PROJECT_DRIVER, base | {"RAY_AUTH_TOKEN_PATH": str(token)}, address)
        drivers.append(ok)
        rc, text = _finish(ok, 120)
        assert rc == 0 and "CONNECTED 42" in text, f"with the token (rc {rc}): {text[-3000:]}"
        for name, proc in zip(("no token", "another token"), drivers[:2]):
            rc, text = _finish(proc, 120)
            assert rc not in (0, None) and "CONNECTED" not in text, f"{name} (rc {rc}): {text[-3000:]}"
            assert "Unauthenticated" in text and "InvalidAuthToken" in text, f"{name}: {text[-3000:]}"

        slurm.run("scancel", str(job))
        rec = slurm.wait(job, timeout=60, output=out)
        assert rec["JobState"] == "CANCELLED", rec
        deadline = time.monotonic() + 20
        while (_ray_leftovers(job) or token.exists()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not token.exists(), "the job's token file outlived the job"
        assert not _ray_leftovers(job), "Ray processes outlived the job"
    finally:
        for proc in drivers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        slurm.run("scancel", str(job), check=False)
        stop(_ray_leftovers(job), grace=5)
        shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)


@pytest.mark.ray
def test_ray_slurm_sbatch_refuses_a_token_file_others_can_read(slurm, tmp_path):
    token = tmp_path / "shared.token"
    token.write_text("ab" * 32)
    token.chmod(0o644)
    out = tmp_path / "job.out"
    job = slurm.submit("--nodes=1", "--cpus-per-task=1", f"--output={out}", "cluster/ray_slurm.sbatch",
                       "configs/sweeps/tiny.yaml",
                       env={**RAY_ON_LOOPBACK, "RAY_AUTH_TOKEN_PATH": str(token)})
    rec = slurm.wait(job, timeout=120, output=out)
    log = tail(out)
    assert rec["JobState"] == "FAILED" and rec["ExitCode"] == "2:0", f"{rec}\n{log}"
    assert f"error: Ray token file {token} is accessible to other users (mode 0644)" in log, log
    assert f"chmod 600 {token}" in log and "ray head on" not in log, log
    assert token.exists() and not _ray_leftovers(job)  # not the job's own token: left in place
