"""One map over audio files: local worker processes, or an existing distributed engine (Ray, Dask).

``map_items(factory, items, MapSettings(...))`` splits ``items`` (paths, or anything picklable) into
batches and yields ``(index, result)`` pairs as batches finish. Every worker calls ``factory()`` once
(it loads the model or the extractor) and then the function it returned on each batch, which must
return one result per item. Workers are:

- ``engine="local"``: ``jobs`` processes of ``concurrent.futures.ProcessPoolExecutor`` (spawn), each with
  ``threads`` torch / BLAS threads (default: cores // jobs, so workers x threads = cores); ``jobs=1``
  runs in this process;
- ``engine="ray"``: a ``ray.util.ActorPool`` of ``jobs`` actors, each holding the function (Ray Data's
  batch inference does the same), on a local Ray instance or the cluster at ``address``;
- ``engine="dask"``: a ``distributed.Client`` on a ``LocalCluster`` of ``jobs`` single-threaded worker
  processes or the scheduler at ``address``; each worker keeps the function in a per-process cache.

No scheduling of our own: the pool or the engine hands out the batches. A result never depends on the
engine, the number of workers or the batch size, as long as the function treats each item on its own.
Dask is the optional extra ``scale`` (12 MB installed, against Ray's 204 MB, and a faster start: see
benchmarks/results/batch_*.md); Ray works when installed. Asking for an engine that is not installed is one
error line naming the pip command.
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, MissingExtra

ENGINES = ("local", "ray", "dask")
Factory = Callable[[], Callable[[list], list]]  # picklable: a module-level function or a functools.partial


@dataclass(frozen=True)
class MapSettings:
    """How ``map_items`` runs: where, on how many workers, in what batches."""

    jobs: int = field(default=1, metadata={"help": "worker processes (or engine actors/workers)"})
    engine: str = field(default="local", metadata={"help": "local (process pool), dask (the scale extra) or ray"})
    address: str | None = field(default=None, metadata={"help": "a running engine to join (ray: ray://host:10001 "
                                                                "or auto; dask: tcp://host:8786); None: start "
                                                                "a local one for this run"})
    batch_size: int = field(default=8, metadata={"help": "items a worker receives at once"})
    threads: int | None = field(default=None, metadata={"help": "torch/BLAS threads per worker; None: CPU "
                                                                "cores // jobs (at least 1)"})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if not (isinstance(self.jobs, int) and 1 <= self.jobs <= 1024):
            raise ConfigError(f"jobs must be an integer from 1 to 1024, not {self.jobs!r}")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 100_000):
            raise ConfigError(f"batch size must be an integer from 1 to 100000, not {self.batch_size!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be a positive integer, not {self.threads!r}")
        if self.address is not None and self.engine == "local":
            raise ConfigError("--address joins a ray or dask cluster: give --engine ray or --engine dask")

    @property
    def worker_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.jobs)


# ------------------------------------------------------------------------------------- worker side

_fn: Callable[[list], list] | None = None
_init_error: BaseException | None = None
_limits: Any = None  # threadpoolctl's limiter, kept alive for the process's life


def set_threads(n: int) -> None:
    """torch intra-op threads and BLAS/OpenMP threads of this process to ``n``."""
    global _limits
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)  # for anything started or loaded later
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    _limits = threadpool_limits(limits=n)


def _init_worker(factory: Factory, threads: int) -> None:
    """A pool process's initializer: threads, then the function (loads its model once). A failure is kept
    and raised by each batch, so the caller sees the real error instead of a broken pool."""
    global _fn, _init_error
    try:
        set_threads(threads)
        _fn = factory()
    except BaseException as exc:  # noqa: BLE001 - re-raised in _run_batch
        _init_error = exc


def _run_batch(indices: list[int], batch: list) -> tuple[list[int], list]:
    if _init_error is not None:
        raise _init_error
    assert _fn is not None
    out = _fn(batch)
    if len(out) != len(batch):
        raise RuntimeError(f"the mapped function returned {len(out)} results for {len(batch)} items")
    return indices, list(out)


_dask_cache: dict[bytes, Callable[[list], list]] = {}


def _run_batch_dask(factory: Factory, threads: int, indices: list[int], batch: list) -> tuple[list[int], list]:
    """A Dask task: the worker process builds the function once per factory and keeps it."""
    key = pickle.dumps(factory)
    if key not in _dask_cache:
        set_threads(threads)
        _dask_cache[key] = factory()
    out = _dask_cache[key](batch)
    return indices, list(out)


# ------------------------------------------------------------------------------------- driver side

def batches(n: int, size: int) -> list[list[int]]:
    """Index runs [0..size), [size..2 size), ... covering ``n`` items."""
    return [list(range(s, min(n, s + size))) for s in range(0, n, size)]


def map_items(factory: Factory, items: Sequence, settings: MapSettings = MapSettings()) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` for every item, batch by batch as they finish (not in input order)."""
    runs = batches(len(items), settings.batch_size)
    if not runs:
        return
    if settings.engine == "ray":
        yield from _map_ray(factory, items, runs, settings)
    elif settings.engine == "dask":
        yield from _map_dask(factory, items, runs, settings)
    elif settings.jobs == 1:
        yield from _map_here(factory, items, runs, settings)
    else:
        yield from _map_pool(factory, items, runs, settings)


def _pairs(indices: list[int], results: list) -> Iterator[tuple[int, Any]]:
    yield from zip(indices, results)


def _map_here(factory, items, runs, settings) -> Iterator[tuple[int, Any]]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(settings.worker_threads)
    try:
        fn = factory()
        for idx in runs:
            out = fn([items[i] for i in idx])
            yield from _pairs(idx, out)
    finally:
        torch.set_num_threads(before)


def _map_pool(factory, items, runs, settings) -> Iterator[tuple[int, Any]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
    with ProcessPoolExecutor(settings.jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(factory, settings.worker_threads)) as pool:
        pending: set = set()
        todo = iter(runs)
        window = 2 * settings.jobs  # batches in flight: every worker busy, one queued each
        try:
            while True:
                for idx in todo:
                    pending.add(pool.submit(_run_batch, idx, [items[i] for i in idx]))
                    if len(pending) >= window:
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield from _pairs(*fut.result())
        finally:
            for fut in pending:
                fut.cancel()


def _missing(engine: str, exc: ImportError) -> MissingExtra:
    how = "pip install ray" if engine == "ray" else "pip install 'persemo[scale]'"
    return MissingExtra(f"--engine {engine} is not installed ({exc}): {how}")


def _map_ray(factory, items, runs, settings) -> Iterator[tuple[int, Any]]:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise _missing("ray", exc) from None
    started = False
    if not ray.is_initialized():
        if settings.address:
            ray.init(address=settings.address, log_to_driver=False)
        else:
            ray.init(num_cpus=settings.jobs, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
        started = True
    try:
        actor = ray.remote(num_cpus=1)(_RayWorker)
        actors = [actor.remote(factory, settings.worker_threads) for _ in range(settings.jobs)]
        pool = ActorPool(actors)
        results = pool.map_unordered(lambda a, idx: a.run.remote(idx, [items[i] for i in idx]), runs)
        for idx, out in results:
            yield from _pairs(idx, out)
    finally:
        if started:
            ray.shutdown()


class _RayWorker:
    """A Ray actor: the function built once, then one call per batch."""

    def __init__(self, factory: Factory, threads: int):
        set_threads(threads)
        self.fn = factory()

    def run(self, indices: list[int], batch: list) -> tuple[list[int], list]:
        return indices, list(self.fn(batch))


def _map_dask(factory, items, runs, settings) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise _missing("dask", exc) from None
    cluster = None
    if settings.address:
        client = Client(settings.address)
    else:
        cluster = LocalCluster(n_workers=settings.jobs, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    try:
        pending = iter(runs)
        window = 2 * len(client.nthreads()) if settings.address else 2 * settings.jobs
        futs = [client.submit(_run_batch_dask, factory, settings.worker_threads, idx, [items[i] for i in idx],
                              pure=False) for idx in itertools.islice(pending, window)]
        ac = as_completed(futs)
        for fut in ac:
            idx, out = fut.result()
            nxt = next(pending, None)
            if nxt is not None:
                ac.add(client.submit(_run_batch_dask, factory, settings.worker_threads, nxt,
                                     [items[i] for i in nxt], pure=False))
            yield from _pairs(idx, out)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
