"""torchrun / deepspeed with a rendezvous store that listens on one address: loopback, or the first node's.

torch's TCPStore, the rendezvous of both launchers, listens on every interface (`::`) whatever
--master_addr says (measured, torch 2.14: `torchrun --master_addr 127.0.0.1` and `deepspeed
--master_addr 127.0.0.1` both listen on *:MASTER_PORT), and anyone who reaches it can join or disturb
the run. This wrapper binds that socket itself and hands it to the store (TCPStore's `master_listen_fd`):

    python -m pipeline.launch torchrun --nproc_per_node 2 pipeline/train.py ...   # just train-ddp: 127.0.0.1
    python -m pipeline.launch deepspeed --num_gpus 2 pipeline/train.py ...        # just train-deepspeed
    python -m pipeline.launch --rendezvous node01:29500 --node-rank 0 torchrun --nnodes 4 ... # cluster/*.sbatch

With --rendezvous HOST:PORT the store listens on the address HOST resolves to (the first node's cluster
interface, the one the other nodes connect to), hosted by node rank 0; without it on 127.0.0.1 and a free
port. How the launcher is made to use our store:

- torchrun runs in this process. Its static rendezvous opens TCPStore(master_addr, master_port,
  multi_tenant=True), and a multi-tenant store reuses the server this process already runs on that port.
- deepspeed runs as a child. Its ranks see TORCHELASTIC_USE_AGENT_STORE=True with MASTER_ADDR/PORT naming
  our store, so rank 0 connects to it instead of hosting one (torch/distributed/rendezvous.py). Signals
  are forwarded to the child's process group, and this process (a Linux subreaper) keeps the store up
  until every process the launcher started has exited.

On one machine gloo and NCCL are pointed at the loopback interface too (GLOO_SOCKET_IFNAME,
NCCL_SOCKET_IFNAME, unless set): gloo otherwise listens on the address the host name resolves to.
A multi-node rendezvous host that resolves to loopback is refused (the other nodes could not reach it),
except with HYPERNAS_ALLOW_LOOPBACK_RENDEZVOUS=1: a test-only setting for simulated nodes that all run on
this host (two `slurmd -N` on one machine, tests/test_cluster_multinode.py); gloo and NCCL then stay on
loopback as on one machine. Never set it on a real cluster.
Launcher options that would move the rendezvous (--master_addr, --rdzv_endpoint, --standalone, ...)
are refused.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import signal
import socket
import subprocess
import sys

from pipeline.errors import UserError
from pipeline.utils.net import is_loopback

LOOPBACK = "127.0.0.1"
# options of the launchers (before the training script) that this wrapper sets itself
OWN_OPTIONS = {
    "torchrun": {"master_addr", "master_port", "rdzv_backend", "rdzv_endpoint", "rdzv_id", "rdzv_conf",
                 "standalone", "node_rank", "local_addr"},
    "deepspeed": {"master_addr", "master_port", "node_rank", "hostfile", "launcher", "ssh_port"},
}
NNODES_OPTION = {"torchrun": "nnodes", "deepspeed": "num_nodes"}
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# test-only: "1" lets a multi-node rendezvous resolve to loopback (simulated nodes on one host, see above)
ALLOW_LOOPBACK_ENV = "HYPERNAS_ALLOW_LOOPBACK_RENDEZVOUS"


def launcher_options(args: list[str]) -> dict[str, str | None]:
    """The launcher's own `--name[=value]` options: those before the training script (the first *.py)."""
    found: dict[str, str | None] = {}
    for i, tok in enumerate(args):
        if tok.endswith(".py") and not tok.startswith("-"):
            break
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            nxt = args[i + 1] if i + 1 < len(args) else None
            found[name.replace("-", "_")] = value if eq else (nxt if nxt and not nxt.startswith("-") else None)
    return found


def check_launcher_args(launcher: str, args: list[str], multi_node: bool) -> None:
    opts = launcher_options(args)
    clash = sorted(OWN_OPTIONS[launcher] & opts.keys())
    if clash:
        raise UserError(f"python -m pipeline.launch sets the rendezvous itself: remove "
                        f"{', '.join('--' + c for c in clash)} from the {launcher} arguments "
                        f"(multi-node: --rendezvous HOST:PORT --node-rank N before '{launcher}')")
    if not multi_node and max_nodes(launcher, args) > 1:
        raise UserError(f"--{NNODES_OPTION[launcher]} {opts[NNODES_OPTION[launcher]]}: several nodes need "
                        f"--rendezvous HOST:PORT --node-rank N (cluster/torchrun.sbatch, cluster/deepspeed.sbatch)")


def max_nodes(launcher: str, args: list[str]) -> int:
    """The most nodes the launcher arguments allow (torchrun: --nnodes N or MIN:MAX; deepspeed: --num_nodes)."""
    value = launcher_options(args).get(NNODES_OPTION[launcher]) or "1"
    try:
        return int(value.rpartition(":")[2])
    except ValueError:
        raise UserError(f"--{NNODES_OPTION[launcher]} {value!r} is not a node count") from None


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on the address `host` resolves to (IPv4 first), port 0 = a free one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise UserError(f"rendezvous host {host!r} does not resolve ({e})") from None
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {addr[0]}:{port} for the rendezvous ({e})") from None
    sock.listen(512)
    return sock


def _resolves_to_loopback(host: str) -> bool:
    try:
        return all(is_loopback(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except OSError:
        return False


def serve_store(host: str, sock: socket.socket):
    """The rendezvous TCPStore server, listening on `sock` only."""
    import torch.distributed as dist

    return dist.TCPStore(host, sock.getsockname()[1], None, True, datetime.timedelta(seconds=60),
                         wait_for_workers=False, multi_tenant=True, master_listen_fd=sock.fileno())


def loopback_interface() -> str | None:
    names = {name for _, name in socket.if_nameindex()}
    return next((n for n in ("lo", "lo0") if n in names), None)


def _become_subreaper() -> bool:
    """Linux: orphaned descendants are re-parented to this process (so it can wait for them)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def run_deepspeed(args: list[str], env: dict[str, str]) -> int:
    reaper = _become_subreaper()
    child = subprocess.Popen([sys.executable, "-m", "deepspeed.launcher.runner", *args], env=env,
                             start_new_session=True)

    def forward(signum, _frame):
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    rc = child.wait()
    while reaper:  # the launcher's orphans (its ranks, when it died first) still use the store
        try:
            os.wait()
        except ChildProcessError:
            break
    return rc if rc >= 0 else 128 - rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rendezvous", metavar="HOST:PORT",
                   help="multi-node: the store listens on HOST's address (node rank 0); default 127.0.0.1:<free>")
    p.add_argument("--node-rank", type=int, default=None, help="this node's rank (with --rendezvous)")
    p.add_argument("launcher", choices=("torchrun", "deepspeed"))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the launcher's arguments, training script and its args")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_launcher_args(a.launcher, a.args, multi_node=a.rendezvous is not None)
        if a.rendezvous:
            host, _, port_s = a.rendezvous.rpartition(":")
            if not host or not port_s.isdigit() or a.node_rank is None:
                raise UserError(f"--rendezvous {a.rendezvous!r} needs HOST:PORT and --node-rank N")
            port, node_rank = int(port_s), a.node_rank
        else:
            host, port, node_rank = LOOPBACK, 0, 0
        sock = listen_socket(host, port) if node_rank == 0 else None
        simulated = a.rendezvous is not None and os.environ.get(ALLOW_LOOPBACK_ENV) == "1" and \
            _resolves_to_loopback(host)
        if sock is not None and a.rendezvous and max_nodes(a.launcher, a.args) > 1 and \
                is_loopback(sock.getsockname()[0]) and not simulated:
            # e.g. Debian's `127.0.1.1 <hostname>` line in /etc/hosts: the other nodes could not connect
            raise UserError(f"rendezvous host {host!r} resolves to {sock.getsockname()[0]} (loopback) on this node, "
                            f"but other nodes must reach it: fix its /etc/hosts entry or pass its cluster IP "
                            f"as --rendezvous IP:PORT")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if sock is not None:
        port = sock.getsockname()[1]
        store = serve_store(host, sock)  # noqa: F841 (kept alive until the launcher returns)
        print(f"launch: rendezvous store on {sock.getsockname()[0]}:{port} only ({host})", file=sys.stderr,
              flush=True)
    if (not a.rendezvous or simulated) and (lo := loopback_interface()):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    own = ["--master_addr", host, "--master_port", str(port)]
    if a.rendezvous:
        own += ["--node_rank", str(node_rank)]
    if a.launcher == "deepspeed":
        env = {**os.environ, "TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": host, "MASTER_PORT": str(port)}
        return run_deepspeed([*own, *a.args], env)
    from torch.distributed.run import main as torchrun_main

    torchrun_main([*own, "--rdzv_backend", "static", *a.args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
