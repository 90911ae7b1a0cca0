"""The sockets a process tree listens on, sampled while it runs (psutil), for the tests that start services.

A listening socket is a TCP socket in LISTEN state or a bound UDP socket without a peer. Processes are
found by PID: the process a test started and all its descendants, re-read every sample (so workers that
come and go are seen if they live longer than the sampling interval).
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import psutil

from pipeline.utils.net import is_loopback


@dataclass(frozen=True)
class Bind:
    pid: int
    name: str
    ip: str
    port: int
    kind: str  # "tcp" | "udp"

    def __str__(self) -> str:
        return f"{self.kind} {self.ip}:{self.port} pid {self.pid} ({self.name})"


def tree(pids: list[int]) -> list[psutil.Process]:
    """The processes `pids` and all their descendants (those still alive)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.Error:
            continue
    return list(procs.values())


def binds_of(procs: list[psutil.Process]) -> set[Bind]:
    found = set()
    for p in procs:
        try:
            name = p.name()
            conns = p.net_connections(kind="inet")
        except psutil.Error:  # gone meanwhile
            continue
        for c in conns:
            tcp = c.type == socket.SOCK_STREAM
            if (tcp and c.status == psutil.CONN_LISTEN) or (not tcp and not c.raddr and c.laddr):
                found.add(Bind(p.pid, name, c.laddr.ip, c.laddr.port, "tcp" if tcp else "udp"))
    return found


def non_loopback(binds: set[Bind]) -> list[Bind]:
    return sorted((b for b in binds if not is_loopback(b.ip)), key=str)


class ListenerWatch:
    """Sample the listening sockets of `pids`' process trees every `interval` s until stop()."""

    def __init__(self, pids: list[int] | None = None, interval: float = 0.1):
        self.pids, self.interval = list(pids or []), interval
        self.binds: set[Bind] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.binds |= binds_of(tree(self.pids))
            time.sleep(self.interval)

    def start(self) -> "ListenerWatch":
        self._thread.start()
        return self

    def stop(self) -> set[Bind]:
        self._stop.set()
        self._thread.join()
        return self.binds

    def report(self) -> str:
        return "\n".join(sorted(map(str, self.binds))) or "(no listening sockets)"
