"""A private SLURM cluster on this machine for the tests of cluster/*.sbatch: munged + slurmctld + slurmd.

    with local_cluster() as slurm:             # one node: this host (tests/test_cluster.py)
    with local_cluster(simulated_nodes=2) as slurm:  # two `slurmd -N` on this host (test_cluster_multinode.py)
        job = slurm.submit("--nodes=1", "--output=...", "cluster/torchrun.sbatch", ...)
        record = slurm.wait(job, timeout=300, output=...)

The cluster has its own config (SLURM_CONF points at a slurm.conf in a temp dir; state, spool, logs, pid
files, the munge key and socket live there too; free ports), every daemon bound to 127.0.0.1
(NoCtldInAddrAny, NoInAddrAny), and is stopped by PID (TERM, then KILL) when the block ends. Simulated
nodes are NodeName entries with NodeHostname = this host, NodeAddr=127.0.0.1 and a port each; their names
(unique per run) get a 127.0.0.1 line in /etc/hosts, removed afterwards, so that torch resolves
MASTER_ADDR. It needs root and the Debian packages slurmctld, slurmd, slurm-client and munge (`just
test-services` installs them; `just test` runs it first); without them the tests fail and say so.
Jobs are submitted with `sbatch --parsable` and followed with `scontrol show job` every 0.2 s (`sbatch
--wait` polls every 2 s at best). Recipe and pitfalls: ../shared/docs/slurm-local.md.
"""
from __future__ import annotations

import contextlib
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
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
TOOLS = ("runuser", "munged", "mungekey", "munge", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel",
         "sinfo", "squeue")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
        "PREEMPTED"}


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_pid(path: Path, timeout: float = 15.0) -> int:
    """The PID a daemon wrote (it writes the file after forking, maybe after its starter returned)."""
    deadline = time.monotonic() + timeout
    while (pid := read_pid(path)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no pid file {path} after {timeout:.0f} s")
        time.sleep(0.05)
    return pid


def alive(pid: int) -> bool:
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


def stop(pids: list[int], grace: float = 15.0) -> None:
    """TERM all, wait (the daemons take ~2 s), KILL what is left."""
    pids = [p for p in pids if p and alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"<{path}: {e}>"


class Cluster:
    def __init__(self, root: Path, env: dict[str, str], tools: dict[str, str], nodes: list[str]):
        self.root, self.env, self.tools, self.nodes = root, env, tools, nodes
        self.log = root / "log"

    def daemon_pids(self) -> list[int]:
        """slurmctld's and every slurmd's PID (from their pid files)."""
        files = [self.root / "slurmctld.pid", *sorted(self.root.glob("slurmd*.pid"))]
        return [p for p in map(read_pid, files) if p]

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run([self.tools.get(args[0], args[0]), *args[1:]], env=self.env, cwd=REPO,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode:
            raise AssertionError(f"{' '.join(args)} -> {out.returncode}\n{out.stdout}{out.stderr}\n{self.logs()}")
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{tail(p, 1500)}" for p in sorted(self.root.glob("*/*.log")))

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
                             f"{tail(output) if output else ''}\n{self.logs()}")

    def idle(self) -> bool:
        states = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split("\n")
        found = dict(line.split() for line in states if len(line.split()) == 2)
        return sorted(found) == sorted(self.nodes) and set(found.values()) == {"idle"}


def _hosts_entry(names: list[str]) -> str | None:
    """Make `names` resolve to 127.0.0.1 (slurmctld checks SlurmctldHost, torch resolves MASTER_ADDR); the
    line we added to /etc/hosts, None when they all resolve already."""
    missing = []
    for name in names:
        try:
            socket.gethostbyname(name)
        except OSError:
            missing.append(name)
    if not missing:
        return None
    line = f"127.0.0.1 {' '.join(missing)}  # tests/slurm_harness.py pid {os.getpid()}\n"
    with open("/etc/hosts", "a") as f:
        f.write(line)
    return line


def _remove_hosts_entry(line: str | None) -> None:
    if line is None:
        return
    text = Path("/etc/hosts").read_text()
    if line in text:
        Path("/etc/hosts").write_text(text.replace(line, "", 1))


def _slurm_conf(root: Path, short: str, sock: Path, hardware: str, nodes: list[str] | None) -> str:
    """slurm.conf for one node (this host) or for simulated `nodes` (one slurmd each, own port)."""
    if nodes is None:
        node_lines = f"NodeName={short} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN"
        slurmd = (f"SlurmdSpoolDir={root / 'spool'}\nSlurmdPidFile={root / 'slurmd.pid'}\n"
                  f"SlurmdLogFile={root / 'log' / 'slurmd.log'}")
    else:
        # %n: the node's name, so that the slurmd processes of one host keep apart
        node_lines = "\n".join(f"NodeName={n} NodeHostname={short} NodeAddr=127.0.0.1 Port={free_port()} "
                               f"{hardware} State=UNKNOWN" for n in nodes)
        slurmd = (f"SlurmdSpoolDir={root / 'spool'}/%n\nSlurmdPidFile={root}/slurmd-%n.pid\n"
                  f"SlurmdLogFile={root / 'log'}/slurmd-%n.log")
    return f"""\
ClusterName=hntest
SlurmctldHost={short}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
# bind to the node's address (127.0.0.1 here), not to every interface: slurmctld, slurmd, srun's ports
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
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
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
{slurmd}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def local_cluster(simulated_nodes: int = 0) -> Iterator[Cluster]:
    """A running cluster: this host as its one node, or `simulated_nodes` slurmd -N on this host."""
    tools = {t: _which(t) for t in TOOLS}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        pytest.fail(f"SLURM/munge not installed (missing: {', '.join(missing)}). Install them as root with "
                    f"`apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge` "
                    f"(`just test-services` does this when it runs as root; `just test` runs it first).",
                    pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the SLURM tests start slurmd, which needs root; run them as root (CI does)", pytrace=False)
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        pytest.fail("no 'munge' user: the munge package is not installed properly", pytrace=False)

    short = socket.gethostname().split(".")[0]
    # unique per run: two test sessions on one machine must not share (or remove) each other's names
    sim = [f"hn{os.getpid()}n{i}" for i in range(1, simulated_nodes + 1)] if simulated_nodes else None
    hosts_line = _hosts_entry([short, *(sim or [])])
    root = Path(tempfile.mkdtemp(prefix="hn-slurm-", dir="/tmp"))  # short: the munge socket path must be short
    root.chmod(0o755)  # munged (user munge) needs to reach its directory
    mdir = root / "munge"
    for d in ("munge", "state", "spool", "log", *(f"spool/{n}" for n in sim or [])):
        (root / d).mkdir()
    os.chown(mdir, munge_user.pw_uid, munge_user.pw_gid)
    mdir.chmod(0o755)  # munged insists: socket dir executable by all, not writable by others
    pids: list[int] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env.update(SLURM_CONF=str(root / "slurm.conf"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", PYTHON=sys.executable)

    def all_pids() -> list[int]:
        files = [root / "slurmctld.pid", *root.glob("slurmd*.pid"), mdir / "munged.pid"]
        return list(dict.fromkeys(pids + [read_pid(p) or 0 for p in files]))

    def start(cmd: list[str], what: str, **kw) -> None:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, **kw)
        if out.returncode:
            raise RuntimeError(f"{what} did not start ({out.returncode}): {out.stdout}{out.stderr}")

    cluster = Cluster(root, env, tools, sim or [short])
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
        hardware = re.sub(r"^NodeName=\S+\s*", "", node)
        hardware = re.sub(r"RealMemory=\d+", "RealMemory=1000", hardware)  # jobs here ask for no memory
        (root / "slurm.conf").write_text(_slurm_conf(root, short, sock, hardware, sim))
        deadline = time.monotonic() + 10
        while subprocess.run([tools["munge"], "-S", str(sock), "-n"], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged not answering on {sock}: {tail(mdir / 'munged.log')}")
            time.sleep(0.1)
        start([tools["slurmctld"]], "slurmctld")
        pids.append(_wait_pid(root / "slurmctld.pid"))
        if sim is None:
            start([tools["slurmd"]], "slurmd")
            pids.append(_wait_pid(root / "slurmd.pid"))
        for name in sim or []:
            start([tools["slurmd"], "-N", name], f"slurmd -N {name}")
            pids.append(_wait_pid(root / f"slurmd-{name}.pid"))
        deadline = time.monotonic() + 30
        while not cluster.idle():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the nodes did not come up idle: "
                                   f"{cluster.run('sinfo', '-N', check=False).stdout}\n{cluster.logs()}")
            time.sleep(0.2)
    except Exception as e:  # noqa: BLE001 (reported below, after the cleanup)
        error = f"{e}\n" + "\n".join(f"--- {p.name} ---\n{tail(p, 1500)}" for p in sorted(root.glob("*/*.log")))
    else:
        error = None
    if error is not None:
        stop(all_pids())
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
        stop(all_pids())
        _remove_hosts_entry(hosts_line)
        shutil.rmtree(root, ignore_errors=True)
