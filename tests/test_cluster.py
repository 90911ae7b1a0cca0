"""cluster/*.sbatch on real SLURM daemons: munged + slurmctld + slurmd on loopback, one node, this machine.

The module fixture starts its own cluster with a private config (SLURM_CONF points at a slurm.conf in a
temp dir; state, spool, logs, pid files, the munge key and socket live there too; free ports), and stops
it by PID (TERM, then KILL) when the module ends. It needs root and the Debian packages slurmctld, slurmd,
slurm-client and munge (.ci/run installs them); without them the tests fail and say so.
Jobs are submitted with `sbatch --parsable` and followed with `scontrol show job` every 0.2 s (`sbatch
--wait` polls every 2 s at best). Recipe and pitfalls: ../shared/docs/slurm-local.md.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/nb201_tiny.yaml"
# As in tests/test_distributed.py: 12 archs, 4 per update (2 per rank), 3 updates per epoch
SMALL = ["data.num_train=12", "train.accumulate=4", "train.micro_batch=1", "train.threads=1",
         "run.tensorboard=false", "data.val_archs=20"]
SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
TOOLS = ("runuser", "munged", "mungekey", "munge", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel",
         "sinfo", "squeue")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
        "PREEMPTED"}


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_pid(path: Path, timeout: float = 15.0) -> int:
    """The PID a daemon wrote (it writes the file after forking, maybe after its starter returned)."""
    deadline = time.monotonic() + timeout
    while (pid := _read_pid(path)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no pid file {path} after {timeout:.0f} s")
        time.sleep(0.05)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(pids: list[int], grace: float = 15.0) -> None:
    """TERM all, wait (the daemons take ~2 s), KILL what is left."""
    pids = [p for p in pids if p and _alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"<{path}: {e}>"


class Cluster:
    def __init__(self, root: Path, env: dict[str, str], tools: dict[str, str]):
        self.root, self.env, self.tools = root, env, tools
        self.log = root / "log"

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run([self.tools.get(args[0], args[0]), *args[1:]], env=self.env, cwd=REPO,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode:
            raise AssertionError(f"{' '.join(args)} -> {out.returncode}\n{out.stdout}{out.stderr}\n{self.logs()}")
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{_tail(p, 1500)}" for p in sorted(self.root.glob("*/*.log")))

    def submit(self, *args: str, env: dict[str, str] | None = None) -> int:
        out = subprocess.run([self.tools["sbatch"], "--parsable", *args], env={**self.env, **(env or {})},
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"sbatch failed: {out.stdout}{out.stderr}"
        return int(out.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str] | None:
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if out.returncode:
            return None  # purged (MinJobAge after it ended)
        return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)

    def wait(self, job_id: int, timeout: float, until=None, output: Path | None = None) -> dict[str, str]:
        """Poll every 0.2 s until the job has ended (or `until(record)` holds); its last record."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            rec = self.job(job_id)
            if rec is None:
                assert last is not None, f"job {job_id} unknown to slurmctld\n{self.logs()}"
                return last
            last = rec
            if (until or (lambda r: r["JobState"] in DONE))(rec):
                return rec
            time.sleep(0.2)
        self.run("scancel", str(job_id), check=False)
        raise AssertionError(f"job {job_id} still {last and last.get('JobState')} after {timeout:.0f} s\n"
                             f"{_tail(output) if output else ''}\n{self.logs()}")


def _hosts_entry(short: str) -> str | None:
    """Make `short` resolve (slurmctld checks SlurmctldHost, torch resolves MASTER_ADDR); the line we added."""
    try:
        socket.gethostbyname(short)
        return None
    except OSError:
        pass
    line = f"127.0.0.1 {short}  # tests/test_cluster.py\n"
    with open("/etc/hosts", "a") as f:
        f.write(line)
    return line


def _remove_hosts_entry(line: str | None) -> None:
    if line is None:
        return
    text = Path("/etc/hosts").read_text()
    if line in text:
        Path("/etc/hosts").write_text(text.replace(line, "", 1))


@pytest.fixture(scope="module")
def slurm() -> Cluster:
    tools = {t: _which(t) for t in TOOLS}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        pytest.fail(f"SLURM/munge not installed (missing: {', '.join(missing)}). Install them as root with "
                    f"`apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge` "
                    f"(.ci/run does this when it runs as root).", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the SLURM tests start slurmd, which needs root; run them as root (CI does)", pytrace=False)
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        pytest.fail("no 'munge' user: the munge package is not installed properly", pytrace=False)

    short = socket.gethostname().split(".")[0]
    hosts_line = _hosts_entry(short)
    root = Path(tempfile.mkdtemp(prefix="hn-slurm-", dir="/tmp"))  # short: the munge socket path must be short
    root.chmod(0o755)  # munged (user munge) needs to reach its directory
    mdir = root / "munge"
    for d in ("munge", "state", "spool", "log"):
        (root / d).mkdir()
    os.chown(mdir, munge_user.pw_uid, munge_user.pw_gid)
    mdir.chmod(0o755)  # munged insists: socket dir executable by all, not writable by others
    pidfiles = [root / "slurmd.pid", root / "slurmctld.pid", mdir / "munged.pid"]
    pids: list[int] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env.update(SLURM_CONF=str(root / "slurm.conf"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", PYTHON=sys.executable)

    def start(cmd: list[str], what: str, **kw) -> None:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, **kw)
        if out.returncode:
            raise RuntimeError(f"{what} did not start ({out.returncode}): {out.stdout}{out.stderr}")

    try:
        key = mdir / "munge.key"
        start([tools["mungekey"], "--create", f"--keyfile={key}"], "mungekey")
        os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
        key.chmod(0o400)
        sock = mdir / "munge.socket"
        # as user munge: munged refuses to run as root
        start([tools["runuser"], "-u", "munge", "--", tools["munged"], f"--socket={sock}", f"--key-file={key}",
               f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
               f"--seed-file={mdir / 'munged.seed'}"], "munged")
        pids.append(_wait_pid(mdir / "munged.pid"))

        node = subprocess.run([tools["slurmd"], "-C"], env=env, capture_output=True, text=True,
                              timeout=60).stdout.splitlines()[0]
        node = re.sub(r"RealMemory=\d+", "RealMemory=1000", node)  # jobs here ask for no memory
        node = re.sub(r"^NodeName=\S+", f"NodeName={short} NodeAddr=127.0.0.1", node)
        (root / "slurm.conf").write_text(f"""\
ClusterName=hntest
SlurmctldHost={short}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={sock},cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
# schedule every second (defaults 30/60 s): a requeued job starts as soon as its begin time has passed
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=5
KillWait=10
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
{node} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        deadline = time.monotonic() + 10
        while subprocess.run([tools["munge"], "-S", str(sock), "-n"], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged not answering on {sock}: {_tail(mdir / 'munged.log')}")
            time.sleep(0.1)
        start([tools["slurmctld"]], "slurmctld")
        pids.append(_wait_pid(root / "slurmctld.pid"))
        start([tools["slurmd"]], "slurmd")
        pids.append(_wait_pid(root / "slurmd.pid"))
        cluster = Cluster(root, env, tools)
        deadline = time.monotonic() + 30
        while cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up idle\n{cluster.logs()}")
            time.sleep(0.2)
    except Exception as e:  # noqa: BLE001 (reported below, after the cleanup)
        error = f"{e}\n" + "\n".join(f"--- {p.name} ---\n{_tail(p, 1500)}"
                                     for p in sorted(root.glob("*/*.log")))
    else:
        error = None
    if error is not None:
        _stop(pids + [_read_pid(p) or 0 for p in pidfiles])
        _remove_hosts_entry(hosts_line)
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start the local SLURM cluster: {error}", pytrace=False)
    try:
        yield cluster
    finally:
        # jobs first: their slurmstepd processes outlive slurmd
        jobs = cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if jobs:
            cluster.run("scancel", *jobs, check=False)
            deadline = time.monotonic() + 30
            while cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split() and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
        _stop(list(dict.fromkeys(pids + [_read_pid(p) or 0 for p in pidfiles])))
        _remove_hosts_entry(hosts_line)
        shutil.rmtree(root, ignore_errors=True)


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
    log = _tail(out, 20000)
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
    assert f"job {job} (restart 0): 1 nodes x 2" in log, log
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
                f"{rec}\n{_tail(out)}"
        assert time.monotonic() < deadline, f"no first checkpoint after 240 s\n{_tail(out)}"
        time.sleep(0.05)
        i += 1
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))
    rec = slurm.wait(job, timeout=300, output=out)
    log = _tail(out, 50000)
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
    log = _tail(out, 20000)
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
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
            if f"/tmp/ray-{job}" in cmd and _alive(int(proc.name)):
                found.append(int(proc.name))
    return found


@pytest.mark.ray
def test_ray_slurm_sbatch_runs_a_sweep(slurm, prepared, tmp_path):
    """cluster/ray_slurm.sbatch: a Ray head in the job (on 127.0.0.1), the tiny sweep on it, Ray gone after."""
    out = tmp_path / "job.out"
    cpus = min(2, os.cpu_count() or 1)
    job = slurm.submit("--nodes=1", f"--cpus-per-task={cpus}", f"--output={out}", "cluster/ray_slurm.sbatch",
                       "configs/sweeps/tiny.yaml", "--storage", str(tmp_path / "sweeps"), "--set", "train.epochs=1",
                       "--set", f"data.table={prepared['table']}", "--set", f"data.aux_shards={prepared['shards']}",
                       "--set", "data.prepare=false",
                       # Ray swaps a 127.0.0.1 node address for the routable one unless it runs in its
                       # single-machine mode (ray/_private/services.py get_node_ip_address): keep it on loopback
                       env={"RAY_HEAD_IP": "127.0.0.1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    try:
        rec = slurm.wait(job, timeout=420, output=out)
        log = _tail(out, 20000)
        assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", f"{rec}\n{log}"
        assert "ray head on" in log and "(127.0.0.1:" in log and "1 Ray nodes up" in log, log
        assert "Local node IP: 127.0.0.1" in log and "'node:127.0.0.1': 1.0" in log, log
        assert "4/4 trials ok" in log, log
        df = pd.read_parquet(tmp_path / "sweeps" / "tiny" / "results.parquet")
        assert len(df) == 4 and (df["status"] == "ok").all(), df
        # the job's end took its Ray processes with it
        deadline = time.monotonic() + 20
        while _ray_leftovers(job) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_leftovers(job), "Ray processes outlived the job"
    finally:
        _stop(_ray_leftovers(job), grace=5)
        shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)
