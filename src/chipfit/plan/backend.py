"""Where the planner's pricing runs: this process, a local process pool, or a Ray cluster.

The driver traces and submits `SweepTask`s as it goes (pricing of one batch size overlaps the
tracing of the next); `gather` returns each task's rows in submission order, so the plan is the
same whatever the backend (tested). A trace is sent once per task to a pool worker (pickled;
about 1 MB for a 70B decoder) and once per batch size to Ray's object store.

- serial: no workers; the oracle the others are tested against.
- local: a `concurrent.futures.ProcessPoolExecutor` (default one worker per core), forked where
  the platform allows (see `_context`), one pool per sweep.
- ray: `ray.init(address)` (None starts a local instance, "auto" joins a running cluster); the
  workers must have chipfit installed. Ray is an optional extra: `pip install chipfit[ray]`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from chipfit.errors import InputError, ResourceError

if TYPE_CHECKING:
    from chipfit.plan.sweep import PlanRow, SweepTask
    from chipfit.trace import Trace

__all__ = ["BACKENDS", "Backend", "open_backend"]

BACKENDS = ("local", "ray", "serial")


class Backend(Protocol):
    def chunks(self) -> int:
        """How many tasks to cut one batch size's devices into (fewer when there are fewer devices)."""
        ...

    def submit(self, trace: Trace, task: SweepTask) -> None: ...

    def gather(self, progress: Callable[[int], None]) -> list[list[PlanRow]]:
        """Every task's rows in submission order; progress(estimates done) as tasks finish."""
        ...


class Serial:
    def __init__(self) -> None:
        self._todo: list[tuple[Trace, SweepTask]] = []

    def chunks(self) -> int:
        return 1

    def submit(self, trace: Trace, task: SweepTask) -> None:
        self._todo.append((trace, task))

    def gather(self, progress: Callable[[int], None]) -> list[list[PlanRow]]:
        from chipfit.plan.sweep import price

        out, done = [], 0
        for trace, task in self._todo:
            out.append(price(trace, task))
            done += task.estimates
            progress(done)
        return out


def _context() -> Any:
    """fork where the platform has it: workers start in milliseconds with the driver's modules (and
    its registered devices) and need no `if __name__ == "__main__"` guard in the user's script.
    PyTorch's DataLoader makes the same choice; the workers run no torch kernels, only the cost
    model's arithmetic. spawn elsewhere (macOS, Windows)."""
    import multiprocessing

    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _worker_init() -> None:
    """Workers leave Ctrl-C to the driver, which stops them (Pool.terminate): no half-finished task
    prints a traceback, and none picks up the next queued task."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Pool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_worker_init)
        self._futures: list[tuple[Future[list[PlanRow]], int]] = []

    def chunks(self) -> int:
        return 2 * self.workers  # some slack for uneven tasks, few copies of the trace

    def submit(self, trace: Trace, task: SweepTask) -> None:
        from chipfit.plan.sweep import price

        self._futures.append((self._pool.submit(price, trace, task), task.estimates))

    def gather(self, progress: Callable[[int], None]) -> list[list[PlanRow]]:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        weight = {id(f): n for f, n in self._futures}
        done = 0
        try:
            for f in as_completed([f for f, _ in self._futures]):
                f.result()  # a worker's exception surfaces here, as raised
                done += weight[id(f)]
                progress(done)
        except BrokenProcessPool:
            raise ResourceError(
                "a planner worker process died (out of memory?); try --workers 1 or --backend serial"
            ) from None
        return [f.result() for f, _ in self._futures]

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)

    def terminate(self) -> None:
        """Stop now (Ctrl-C, or an error in the driver): kill the workers, whatever they are running,
        rather than wait for their tasks and the ones already queued to them."""
        for proc in list(getattr(self._pool, "_processes", {}).values()):
            proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


class Ray:
    def __init__(self, address: str | None, workers: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--backend ray needs Ray: pip install 'chipfit[ray]' (or choose local, serial)") from None
        from chipfit.plan.sweep import price

        self.ray = ray
        if not ray.is_initialized():
            opts: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
            if address is None and workers:
                opts["num_cpus"] = workers
            try:
                ray.init(**opts)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InputError(f"could not reach a Ray cluster at {address!r}: {e}") from None
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(price)
        self._refs: dict[int, Any] = {}  # id(trace) -> object ref: each trace is shipped once
        self._pending: list[tuple[Any, int]] = []
        self._keep: list[Trace] = []  # keep traces alive so their ids stay unique

    def chunks(self) -> int:
        return 2 * self.cpus

    def submit(self, trace: Trace, task: SweepTask) -> None:
        ref = self._refs.get(id(trace))
        if ref is None:
            ref = self._refs[id(trace)] = self.ray.put(trace)
            self._keep.append(trace)
        self._pending.append((self._remote.remote(ref, task), task.estimates))

    def gather(self, progress: Callable[[int], None]) -> list[list[PlanRow]]:
        weight = {r: n for r, n in self._pending}
        waiting, done = list(weight), 0
        while waiting:
            ready, waiting = self.ray.wait(waiting, num_returns=1)
            for r in ready:
                self.ray.get(r)  # a task's exception surfaces here
                done += weight[r]
            progress(done)
        return [self.ray.get(r) for r, _ in self._pending]


@contextmanager
def open_backend(name: str, *, workers: int | None = None, ray_address: str | None = None) -> Iterator[Backend]:
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers}")
    if name == "ray":
        yield Ray(ray_address, workers)
    elif name == "local" and (workers or os.cpu_count() or 1) > 1:
        pool = Pool(workers or os.cpu_count() or 1)
        try:
            yield pool
        except BaseException:
            pool.terminate()
            raise
        pool.close()
    else:
        yield Serial()  # serial, or a pool of one worker: this process is that worker
