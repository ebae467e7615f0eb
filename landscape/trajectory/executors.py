"""Where checkpoints are measured: in this process, in a local process pool, or on Ray.

Every executor takes the checkpoints still to do and calls ``on_result(entry, result)`` in the calling
process as each one finishes, so the caller writes each result as soon as it exists.

* ``serial``: in this process; the next file is read on a thread while the current one is measured.
* ``process``: ``workers`` processes (started by a ``forkserver`` that imports torch once; ``spawn`` where
  that is unavailable) pulling checkpoints from one queue. Each worker reserves its next checkpoint and
  reads it while measuring the current one. With ``device="cuda"`` and several GPUs, worker *i* uses GPU
  *i mod count* (one worker per GPU by default). A worker that dies (out of memory, killed) is replaced and
  its checkpoints are retried once; a checkpoint whose worker dies twice is recorded as failed. This is a
  small pool of our own rather than ``concurrent.futures`` or joblib/loky because those give a worker
  neither a fixed identity (needed to pin it to a GPU) nor a view of its next task (needed to prefetch).
* ``ray``: one Ray task per checkpoint (``num_gpus=1`` each on a CUDA device), for clusters.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import queue
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .._base import LandscapeError
from . import worker
from .discover import CheckpointEntry
from .settings import TrajectorySettings, TrajectoryWarning
from .store import CheckpointResult

__all__ = ["EXECUTORS", "RUNNERS", "check_executor", "default_workers", "import_ray", "run_process", "run_ray",
           "run_serial", "worker_devices"]

OnResult = Callable[[CheckpointEntry, CheckpointResult], None]
_DIED = ("worker process died twice (out of memory? a script using executor='process' needs an "
         "`if __name__ == '__main__':` guard); re-run to retry")


def worker_devices(device: str, workers: int) -> list[str]:
    """The device of each process worker.

    ``"cuda"`` (no index) on a machine with several GPUs spreads the workers over them (worker *i* on
    ``cuda:{i mod count}``); any other device (``"cpu"``, ``"cuda:1"``, one GPU) is used by every worker.
    """
    if device == "cuda":
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            return [f"cuda:{i % count}" for i in range(workers)]
    return [device] * workers


def default_workers(executor: str, device: str) -> int:
    """Workers when none are given: one per GPU for ``executor="process"`` on ``device="cuda"``, else 1."""
    if executor == "process" and device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def run_serial(tasks: Sequence[CheckpointEntry], settings: TrajectorySettings, retry_delay: float,
               on_result: OnResult, **_: Any) -> None:
    """Measure in this process, reading checkpoint *k + 1* while checkpoint *k* is measured."""
    with worker.Prefetcher(settings.trusted) as prefetch:
        for i, entry in enumerate(tasks):
            prefetch.start(entry.path)
            if i + 1 < len(tasks):
                prefetch.start(tasks[i + 1].path)
            on_result(entry, worker.analyse_checkpoint(entry.path, settings, retry_delay=retry_delay,
                                                       read=prefetch.take(entry.path)))


# ---------------------------------------------------------------------------------------------- process pool

@dataclasses.dataclass(frozen=True)
class _Task:
    key: str
    path: str


def _worker_main(slot: int, device: str, settings: TrajectorySettings, retry_delay: float, threads: int,
                 inbox, results) -> None:
    """A pool worker: take a task, read the next one already sent while measuring, send the result back.

    The parent keeps up to two tasks in each worker's ``inbox`` (``None`` means stop) and gets
    ``(slot, key, result)`` on ``results``.
    """
    worker.init_worker(threads)
    with worker.Prefetcher(settings.trusted) as prefetch:
        current = inbox.get()
        while current is not None:
            prefetch.start(current.path)
            try:  # the next task, if already here, is read while this one is measured
                following = inbox.get_nowait()
            except queue.Empty:
                following = ()
            if isinstance(following, _Task):
                prefetch.start(following.path)
            result = worker.analyse_checkpoint(current.path, settings, retry_delay=retry_delay,
                                               read=prefetch.take(current.path), device=device)
            results.put((slot, current.key, result))
            if following is None:
                break
            current = following if isinstance(following, _Task) else inbox.get()


def mp_context() -> multiprocessing.context.BaseContext:
    """'forkserver' where available (workers fork from a clean server that imported torch once), else 'spawn'.

    Both start workers from a fresh interpreter, never by forking this (possibly multi-threaded) process.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["landscape.trajectory", "landscape.checkpoints", "landscape.data",
                                    "landscape.measures"])
        return ctx
    return multiprocessing.get_context("spawn")


def run_process(tasks: Sequence[CheckpointEntry], settings: TrajectorySettings, retry_delay: float,
                on_result: OnResult, *, workers: int, threads: int, **_: Any) -> None:
    """Measure in ``workers`` local processes (see the module docstring)."""
    ctx = mp_context()
    by_key = {e.key: e for e in tasks}
    pending = [e.key for e in tasks]  # not yet sent to a worker
    remaining = set(by_key)  # not yet finished
    devices = worker_devices(settings.device, min(workers, len(tasks)))
    results = ctx.Queue()
    procs: dict[int, Any] = {}
    inboxes: dict[int, Any] = {}
    assigned: dict[int, list[str]] = {}
    deaths: dict[str, int] = {}

    def feed(slot: int) -> None:  # the current task and the next one, so the worker can prefetch it
        while pending and len(assigned[slot]) < 2:
            if assigned[slot] and any(deaths.get(k) for k in (pending[0], *assigned[slot])):
                break  # a checkpoint whose worker died runs alone, so it cannot take a sound one down with it
            key = pending.pop(0)
            assigned[slot].append(key)
            inboxes[slot].put(_Task(key, str(by_key[key].path)))

    def start(slot: int) -> None:
        inboxes[slot], assigned[slot] = ctx.Queue(), []
        procs[slot] = ctx.Process(target=_worker_main, name=f"landscape-worker-{slot}", daemon=True,
                                  args=(slot, devices[slot], settings, retry_delay, threads, inboxes[slot], results))
        procs[slot].start()
        feed(slot)

    def handle(message) -> None:
        slot, key, result = message
        if key in assigned.get(slot, ()):
            assigned[slot].remove(key)
        if key in remaining:
            remaining.discard(key)
            on_result(by_key[key], result)
        if slot in procs and procs[slot].is_alive():
            feed(slot)

    try:
        for slot in range(len(devices)):
            start(slot)
        while remaining:
            try:
                handle(results.get(timeout=0.2))
                continue
            except queue.Empty:
                pass
            for slot, proc in list(procs.items()):
                if proc.is_alive() or not remaining:
                    continue
                _drain(results, handle)  # a dying worker may have finished a checkpoint first
                lost = [k for k in assigned[slot] if k in remaining]
                assigned[slot] = []
                for key in reversed(lost):
                    deaths[key] = deaths.get(key, 0) + 1
                    if deaths[key] >= 2:
                        remaining.discard(key)
                        on_result(by_key[key], CheckpointResult.failure(by_key[key].path, _DIED))
                    else:
                        pending.insert(0, key)
                retry = [k for k in lost if k in remaining]
                if retry:
                    warnings.warn(f"a worker process died (exit code {proc.exitcode}); starting another and "
                                  f"retrying {len(retry)} checkpoint(s)", TrajectoryWarning, stacklevel=4)
                if remaining:
                    start(slot)
        for inbox in inboxes.values():
            inbox.put(None)
        for proc in procs.values():
            proc.join(timeout=30)
    finally:
        for proc in procs.values():  # Ctrl-C or an error in the parent: stop at once
            if proc.is_alive():
                proc.terminate()
        for proc in procs.values():
            proc.join(timeout=5)
        for q in (results, *inboxes.values()):
            q.cancel_join_thread()
            q.close()


def _drain(results, handle) -> None:
    """Handle every message already sent (a dying worker may have finished a checkpoint first)."""
    while True:
        try:
            handle(results.get(timeout=0.05))
        except queue.Empty:
            return


# ---------------------------------------------------------------------------------------------- Ray

def _ray_task(path: str, settings: TrajectorySettings, retry_delay: float, threads: int) -> CheckpointResult:
    worker.init_worker(threads)
    return worker.analyse_checkpoint(path, settings, retry_delay=retry_delay)


def import_ray():
    try:
        import ray
    except ImportError:
        raise LandscapeError("executor='ray' needs Ray: pip install 'landscape[ray]'") from None
    return ray


def run_ray(tasks: Sequence[CheckpointEntry], settings: TrajectorySettings, retry_delay: float,
            on_result: OnResult, *, workers: int, threads: int, address: str | None = None, **_: Any) -> None:
    """One Ray task per checkpoint; starts a local Ray with ``num_cpus=workers`` unless ``address`` is given."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        import logging

        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                  "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
        started = True
    try:
        # on a CUDA device each task holds one GPU; Ray sets CUDA_VISIBLE_DEVICES so "cuda" is that GPU
        gpus = 1 if settings.device.startswith("cuda") else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_task)
        refs = {remote.remote(str(e.path), settings, retry_delay, threads): e for e in tasks}
        waiting = list(refs)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    entry = refs[ref]
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 -- a lost Ray task is recorded, the run goes on
                        result = CheckpointResult.failure(entry.path, f"ray task failed: {worker.one_line(exc)}")
                    on_result(entry, result)
        except BaseException:
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


#: Executor name -> runner ``(tasks, settings, retry_delay, on_result, *, workers, threads, address)``; a
#: new executor is one function above plus one line here.
RUNNERS: dict[str, Callable[..., None]] = {"serial": run_serial, "process": run_process, "ray": run_ray}
EXECUTORS = tuple(RUNNERS)


def check_executor(executor: str) -> None:
    if executor not in RUNNERS:
        raise ValueError(f"unknown executor {executor!r} (allowed: {', '.join(RUNNERS)})")
