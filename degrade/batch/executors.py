"""Where the diagnoses run. Each executor takes the run dirs and diagnose()'s keyword arguments and
yields worker.py's outcomes in the order they finish.

- sequential: in this process, one after the other (one run, or --jobs 1);
- process pool (default): `jobs` spawned processes (spawn, not fork: a forked torch can hang on
  the parent's thread pools), each with its share of the cores as torch threads; each worker
  imports torch once and diagnoses run after run;
- Ray: one task per run on a local Ray started here (`ray.init(num_cpus=jobs)`) or on the cluster
  at --ray-address; each task asks for its threads as CPUs, and for a GPU when --device cuda.
A process that dies under a run (killed for memory, a segfault in native code) fails that run,
and only that run.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Iterator

from degrade.batch.worker import diagnose_one
from degrade.errors import EXIT_INTERNAL, InputError
from degrade.store.row import failed_row


def sequential(paths: list[str], kwargs: dict[str, Any], fail_on: str) -> Iterator[dict[str, Any]]:
    for p in paths:
        yield diagnose_one(p, kwargs, fail_on)


def process_pool(paths: list[str], kwargs: dict[str, Any], fail_on: str, jobs: int) -> Iterator[dict[str, Any]]:
    """A process that dies breaks the whole pool, and every unfinished run with it, without
    saying which run killed it. So the runs left unfinished go on in a pool of one worker: when
    that one breaks, the run it was on is the culprit and fails alone; the rest go on."""
    remaining = list(paths)
    while remaining:
        remaining, why = yield from _pool_pass(remaining, kwargs, fail_on, jobs)
        if why is not None and jobs == 1:
            yield _died(remaining.pop(0), why)
        jobs = 1


def _pool_pass(paths, kwargs, fail_on, jobs):
    """Run `paths` in one pool; (the runs left unfinished when it broke, in order, and why)."""
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(diagnose_one, p, kwargs, fail_on): p for p in paths}
        done: set[str] = set()
        try:
            for future in as_completed(futures):
                outcome = future.result()
                done.add(futures[future])
                yield outcome
        except BrokenProcessPool as e:
            for future, path in futures.items():  # finished before the break: kept, not rerun
                if path not in done and future.done() and future.exception() is None:
                    done.add(path)
                    yield future.result()
            return [p for p in paths if p not in done], e
    return [], None


def on_ray(paths: list[str], kwargs: dict[str, Any], fail_on: str, jobs: int, address: str | None,
           gpus: float) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise InputError(None, '--ray needs Ray: pip install "degrade[ray]"') from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            _reachable(address)
        try:
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(num_cpus=jobs, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            from degrade.errors import one_line
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise InputError(None, f"cannot start or reach {where}: {one_line(e, 200)}") from None
    try:
        task = ray.remote(diagnose_one).options(num_cpus=kwargs.get("threads") or 1, num_gpus=gpus,
                                                max_retries=0)
        pending = {task.remote(p, kwargs, fail_on): p for p in paths}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                path = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died (WorkerCrashedError, OOM kill)
                    yield _died(path, e)
    finally:
        if started_here:
            ray.shutdown()


def _reachable(address: str, seconds: float = 5.0) -> None:
    """Ray retries a cluster address where nothing listens for minutes: look first, in seconds."""
    import socket
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise InputError(None, f"--ray-address {address}: nothing answers there ({e.strerror or e}); "
                               "start the cluster with `ray start --head` or fix the address") from None


def _died(path: str, e: BaseException) -> dict[str, Any]:
    from degrade.errors import one_line
    why = f"the process diagnosing it died ({type(e).__name__}: {one_line(e, 160)})"
    return {"path": path, "row": failed_row(path, why), "exit_code": EXIT_INTERNAL, "worker": None}
