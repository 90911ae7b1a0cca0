"""Run label jobs: in this process, on W worker processes, or as Ray tasks, one architecture at a time per
worker. Whoever labels an architecture writes its part (job.write_part, atomic) before reporting it, so a
finished architecture survives anything that happens later, and a worker that dies (killed, out of memory)
loses only the architecture it was labelling: the others go on, and a re-run retries the lost one.

Workers (`run_processes`): W spawned processes, each with its own pipes, so the parent always knows
which architecture a worker holds; a dead worker is replaced while work remains. Each worker loads the
images once (data_prep/label/train.py) and labels architecture after architecture.

Ray (`run_ray`): one task per architecture (`num_cpus=1`, no automatic retry: a crashed task is reported
and left to the re-run), on a loopback-only local Ray or a cluster (pipeline/ray_cluster.py).

Bad input found while labelling (a corrupt shard, images that cannot be resized: a `UserError`) is the same
for every architecture: it stops the run with that error instead of failing each architecture in turn.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable

from data_prep.label.job import LabelJob, part_path, write_part
from pipeline.errors import UserError

log = logging.getLogger("hypernas.label")
Report = Callable[[str, dict | None, str | None], None]  # (arch, result or None, error or None)
Label = Callable[[LabelJob, Path, str], dict]  # labels one architecture and writes its part


def label_and_record(job: LabelJob, parts: Path, arch: str) -> dict:
    from data_prep.label.train import label_one
    result = label_one(job, arch)
    write_part(parts, job, arch, result)
    return result


def run_inline(job: LabelJob, parts: Path, archs: list[str], report: Report) -> None:
    for arch in archs:
        try:
            report(arch, label_and_record(job, parts, arch), None)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - one architecture's failure is reported, the rest go on
            report(arch, None, f"{type(e).__name__}: {e}")


# -- worker processes --------------------------------------------------------------------------------

def _worker(job: LabelJob, parts: str, tasks: Connection, results: Connection, label: Label) -> None:
    while True:
        try:
            arch = tasks.recv()
        except EOFError:  # the parent is gone or done
            return
        if arch is None:
            return
        try:
            results.send((arch, label(job, Path(parts), arch), None, False))
        except Exception as e:  # noqa: BLE001 - reported; the worker goes on with the next architecture
            log.debug("%s failed:\n%s", arch, traceback.format_exc())
            user = isinstance(e, UserError)
            results.send((arch, None, str(e) if user else f"{type(e).__name__}: {e}", user))


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    tasks: Connection    # parent -> worker
    results: Connection  # worker -> parent
    arch: str | None = None  # the architecture it holds


class _Pool:
    """Worker processes with a pipe each way per worker: no pipe or lock is shared, so a worker killed in
    the middle of a write can only break its own pipe (a shared multiprocessing.Queue would be left locked)."""

    def __init__(self, job: LabelJob, parts: Path, label: Label):
        self.ctx = mp.get_context("spawn")  # no fork after torch has started its threads
        self.job, self.parts, self.label = job, parts, label
        self.workers: list[_Worker] = []

    def start_worker(self) -> None:
        task_r, task_w = self.ctx.Pipe(duplex=False)
        res_r, res_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker, args=(self.job, str(self.parts), task_r, res_w, self.label),
                                name="label-worker", daemon=True)
        proc.start()
        task_r.close()  # the child's ends: closed here, so EOF reaches each side when the other goes
        res_w.close()
        self.workers.append(_Worker(proc, task_w, res_r))

    def stop(self) -> None:
        for w in self.workers:
            try:
                w.tasks.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.proc.join(timeout=10)
            if w.proc.is_alive():  # our own child, by its handle
                w.proc.terminate()
                w.proc.join(timeout=5)


def run_processes(job: LabelJob, parts: Path, archs: list[str], workers: int, report: Report,
                  label: Label = label_and_record) -> None:
    """`label`: a picklable function (spawned workers import it by name)."""
    todo = list(reversed(archs))
    pool = _Pool(job, parts, label)
    try:
        for _ in range(min(workers, len(todo))):
            pool.start_worker()
        while pool.workers:
            for w in pool.workers:
                if w.arch is None and todo:
                    w.arch = todo.pop()
                    w.tasks.send(w.arch)
            idle = [w for w in pool.workers if w.arch is None]
            if not todo and len(idle) == len(pool.workers):
                break
            wait([w.results for w in pool.workers] + [w.proc.sentinel for w in pool.workers], timeout=1.0)
            for w in list(pool.workers):
                try:
                    while w.results.poll():
                        arch, result, error, user = w.results.recv()
                        w.arch = None
                        if user:
                            raise UserError(error)
                        report(arch, result, error)
                except (EOFError, OSError):
                    pass  # its pipe closed: the worker is gone, handled below
                if w.proc.is_alive():
                    continue
                w.proc.join()
                pool.workers.remove(w)
                if w.arch is not None:
                    done = part_path(parts, w.arch).is_file()  # it may have died right after recording
                    report(w.arch, {"recovered": True} if done else None,
                           None if done else f"worker process {w.proc.pid} died (exit code {w.proc.exitcode}) "
                                             f"while labelling it")
                if todo:
                    pool.start_worker()
    finally:
        pool.stop()


# -- Ray ---------------------------------------------------------------------------------------------

def run_ray(job: LabelJob, parts: Path, archs: list[str], address: str | None, num_cpus: int | None,
            report: Report) -> None:
    from pipeline.ray_cluster import connect
    connect(address, num_cpus)
    import ray

    task = ray.remote(num_cpus=1, max_retries=0)(label_and_record)
    try:
        job_ref = ray.put(job)
        pending = {task.remote(job_ref, parts, arch): arch for arch in archs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                arch = pending.pop(ref)
                try:
                    report(arch, ray.get(ref), None)
                except Exception as e:  # noqa: BLE001 - a task error or a crashed worker: this arch only
                    if isinstance(getattr(e, "cause", None), UserError):
                        raise e.cause from None
                    report(arch, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        ray.shutdown()
