"""Where checkpoints are measured: in this process, in a local process pool, or on Ray.

Every executor takes the checkpoints still to do and calls ``on_result(entry, result)`` in the calling
process as each one finishes, so the caller writes each result as soon as it exists.

* ``serial``: in this process; the next file is read on a thread while the current one is measured.
* ``process``: ``workers`` processes (started by a ``forkserver`` that imports torch once; ``spawn`` where
  that is unavailable), each fed two checkpoints at a time through its own pipes, so it reads the next
  file while measuring the current one and a worker that dies mid-message corrupts nothing shared. With
  ``device="cuda"`` and several GPUs, worker *i* uses GPU *i mod count* (one worker per GPU by default). A worker that dies (out of memory, killed) is replaced and
  its checkpoints are retried once; a checkpoint whose worker dies twice is recorded as failed. This is a
  small pool of our own rather than ``concurrent.futures`` or joblib/loky because those give a worker
  neither a fixed identity (needed to pin it to a GPU) nor a view of its next task (needed to prefetch).
* ``ray``: one Ray task per checkpoint (``num_gpus=1`` each on a CUDA device), for clusters.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
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
                 inbox, outbox) -> None:
    """A pool worker: take a task, read the next one already sent while measuring, send the result back.

    The parent keeps up to two tasks in the ``inbox`` pipe (``None`` means stop) and gets ``(key, result)``
    on this worker's own ``outbox`` pipe, so a worker that dies mid-message corrupts nothing shared.
    """
    worker.init_worker(threads)
    with worker.Prefetcher(settings.trusted) as prefetch:
        current = inbox.recv()
        while current is not None:
            prefetch.start(current.path)
            following = inbox.recv() if inbox.poll() else ()  # if already here, read it while measuring
            if isinstance(following, _Task):
                prefetch.start(following.path)
            result = worker.analyse_checkpoint(current.path, settings, retry_delay=retry_delay,
                                               read=prefetch.take(current.path), device=device)
            outbox.send((current.key, result))
            if following is None:
                break
            current = following if isinstance(following, _Task) else inbox.recv()


def mp_context() -> multiprocessing.context.BaseContext:
    """'forkserver' where available (workers fork from a clean server that imported torch once), else 'spawn'.

    Both start workers from a fresh interpreter, never by forking this (possibly multi-threaded) process.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["landscape.trajectory", "landscape.checkpoints", "landscape.datasets",
                                    "landscape.measures"])
        return ctx
    return multiprocessing.get_context("spawn")


@dataclasses.dataclass
class _Slot:
    """One worker as the parent sees it: the process, its two pipe ends and the checkpoints sent to it."""

    process: Any
    tasks: Any  # parent -> worker
    results: Any  # worker -> parent
    assigned: list[str]


def run_process(tasks: Sequence[CheckpointEntry], settings: TrajectorySettings, retry_delay: float,
                on_result: OnResult, *, workers: int, threads: int, **_: Any) -> None:
    """Measure in ``workers`` local processes (see the module docstring)."""
    from multiprocessing.connection import wait

    ctx = mp_context()
    by_key = {e.key: e for e in tasks}
    pending = [e.key for e in tasks]  # not yet sent to a worker
    remaining = set(by_key)  # not yet finished
    devices = worker_devices(settings.device, min(workers, len(tasks)))
    slots: dict[int, _Slot] = {}
    deaths: dict[str, int] = {}

    def feed(slot: _Slot) -> None:  # the current task and the next one, so the worker can prefetch it
        while pending and len(slot.assigned) < 2:
            if slot.assigned and any(deaths.get(k) for k in (pending[0], *slot.assigned)):
                break  # a checkpoint whose worker died runs alone, so it cannot take a sound one down with it
            key = pending.pop(0)
            slot.assigned.append(key)
            try:
                slot.tasks.send(_Task(key, str(by_key[key].path)))
            except OSError:  # the worker is gone: its sentinel reports it
                return

    def start(i: int) -> None:
        task_r, task_w = ctx.Pipe(duplex=False)
        result_r, result_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, name=f"landscape-worker-{i}", daemon=True,
                           args=(i, devices[i], settings, retry_delay, threads, task_r, result_w))
        proc.start()
        task_r.close()  # the child's ends: closing ours lets a dead child show as EOF
        result_w.close()
        slots[i] = _Slot(proc, task_w, result_r, [])
        feed(slots[i])

    def receive(slot: _Slot) -> bool:
        """Handle one message from ``slot``; False when its pipe is closed or broken (the worker died)."""
        try:
            key, result = slot.results.recv()
        except (EOFError, OSError, ValueError, TypeError, AttributeError, ImportError, IndexError,
                pickle.UnpicklingError):  # a message cut short by the worker's death
            return False
        if key in slot.assigned:
            slot.assigned.remove(key)
        if key in remaining:
            remaining.discard(key)
            on_result(by_key[key], result)
        return True

    def bury(i: int) -> None:
        slot = slots.pop(i)
        while slot.results.poll() and receive(slot):  # it may have finished a checkpoint before dying
            pass
        for conn in (slot.tasks, slot.results):
            conn.close()
        lost = [k for k in slot.assigned if k in remaining]
        for key in reversed(lost):
            deaths[key] = deaths.get(key, 0) + 1
            if deaths[key] >= 2:
                remaining.discard(key)
                on_result(by_key[key], CheckpointResult.failure(by_key[key].path, _DIED))
            else:
                pending.insert(0, key)
        retry = [k for k in lost if k in remaining]
        if retry:
            warnings.warn(f"a worker process died (exit code {slot.process.exitcode}); starting another and "
                          f"retrying {len(retry)} checkpoint(s)", TrajectoryWarning, stacklevel=4)
        if remaining:
            start(i)

    try:
        for i in range(len(devices)):
            start(i)
        while remaining:
            by_conn = {slot.results: i for i, slot in slots.items()}
            by_sentinel = {slot.process.sentinel: i for i, slot in slots.items()}
            for ready in wait([*by_conn, *by_sentinel], timeout=1.0):
                if ready in by_conn and by_conn[ready] in slots:
                    slot = slots[by_conn[ready]]
                    if receive(slot) and slot.process.is_alive():
                        feed(slot)
            for i in [i for i, slot in slots.items() if not slot.process.is_alive()]:
                if remaining:
                    bury(i)
        for slot in slots.values():
            try:
                slot.tasks.send(None)
            except OSError:
                pass
        for slot in slots.values():
            slot.process.join(timeout=30)
    finally:
        for slot in slots.values():  # Ctrl-C or an error in the parent: stop at once
            if slot.process.is_alive():
                slot.process.terminate()
        for slot in slots.values():
            slot.process.join(timeout=5)
            for conn in (slot.tasks, slot.results):
                conn.close()


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
