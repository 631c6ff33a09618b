"""Independent units of work ("cells") run in parallel: local processes or a Ray cluster.

A ``Cell`` names a function by import path (``"marlcov.deep.compare:algorithm_cell"``), its keyword
arguments and the JSON file its result goes to. ``run_cells`` runs the cells whose result file
is missing and reads the others back, so a killed run continues where it stopped (a cell's
trainer also resumes from its own ``train_state.pt``). The result of every cell is the JSON
object its function returns; it is written atomically to ``result_path`` by the process that
ran the cell and again by the caller (the same file on a shared filesystem).

Backends, with no scheduling of our own beyond the executor and ``ray.get``:

* ``workers == 1`` and no Ray: in this process, one cell after another;
* local processes (default): ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
  start method and ``workers`` processes;
* Ray (``ray_address``): one ``ray.remote(num_cpus=1)`` task per cell, gathered with
  ``ray.get``. ``"local"`` starts a local instance of ``workers`` CPUs (shut down at the end);
  any other value is handed to ``ray.init(address=...)``; an already initialised Ray is used
  as it is. Ray is imported only here, only then. Paths in a cell (dataset, output
  directory) must be readable and writable from the workers: on a multi-machine cluster,
  a shared filesystem.

Processes and threads:

* a worker process dies with the process that started it: on Linux the kernel sends it SIGTERM
  when its parent exits (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread ends it
  within ``WATCHDOG_SECONDS`` once its parent is gone, so a killed run leaves no worker training
  (a rerun resumes the cells from their checkpoints instead of racing orphans);
* torch threads per cell default to ``threads_per_worker(workers)``, the CPUs this process may
  use divided among the workers, and an explicit ``threads`` is lowered to that share, so that
  workers x threads never exceeds the cores (oversubscribed OpenMP threads spin against each
  other: on 2 cores, 2 workers x 2 threads ran 10-20 times slower than 2 x 1);
* results do not depend on the number of threads: ``marlcov.deep`` sets MKL's conditional
  numerical reproducibility (``MKL_CBWR=AUTO,STRICT``) unless the user set it, under which
  MKL's matrix products give the same bits whatever the thread count (without it, weight
  gradients differed in the last bits between 1 and 2 threads and training drifted apart).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Log = Callable[[str], None]

#: How often a worker's watchdog checks that its parent is alive.
WATCHDOG_SECONDS = 1.0
#: ``prctl`` option that asks the kernel for a signal when the parent exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Cell:
    """One unit of work.

    Args:
        key: a unique name, shown in logs and errors (``"omapl/seed0"``).
        function: ``"module:function"``; called with ``kwargs``, returns a JSON-able dict.
        kwargs: JSON-able keyword arguments.
        result_path: the JSON file of the result; when it exists the cell is not run.
    """

    key: str
    function: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    result_path: str = ""


def _function(path: str) -> Callable[..., dict[str, Any]]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"function: expected 'module:function', got {path!r}")
    return getattr(importlib.import_module(module), name)


def _write_result(result: Mapping[str, Any], path: str) -> None:
    from marlcov.deep.common import atomic_write_text

    atomic_write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", path)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, requested: int | None = None) -> int:
    """torch threads for each of ``workers`` processes: ``requested`` (or all it may have),
    at most ``available_cpus() // workers`` and at least 1, so workers never oversubscribe the cores."""
    share = max(1, available_cpus() // max(1, int(workers)))
    return share if requested is None else max(1, min(int(requested), share))


def _exit_with_parent(parent_pid: int) -> None:
    """Make this worker end when ``parent_pid`` does (module docstring)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="marlcov-parent-watchdog", daemon=True).start()


def _worker_init(parent_pid: int) -> None:
    _exit_with_parent(parent_pid)


def run_cell(cell: Cell, threads: int | None = None) -> dict[str, Any]:
    """Run one cell in the current process (with ``threads`` torch threads when given), write
    its result file, and return the result with ``seconds`` (wall time of the cell) added."""
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    result = dict(_function(cell.function)(**dict(cell.kwargs)))
    result.setdefault("seconds", time.perf_counter() - start)
    if cell.result_path:
        _write_result(result, cell.result_path)
    return result


def _check(cells: Sequence[Cell], workers: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers: expected a positive integer, got {workers!r}")
    keys = [c.key for c in cells]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"cells: duplicate keys {dup}")
    for c in cells:
        if not c.result_path:
            raise ValueError(f"cell {c.key!r}: result_path is empty")


def _local(pending: Sequence[Cell], workers: int, threads: int | None, log: Log) -> tuple[dict[str, dict], dict[str, BaseException]]:
    results: dict[str, dict] = {}
    errors: dict[str, BaseException] = {}
    if workers == 1:
        for cell in pending:
            log(f"[run ] {cell.key}")
            try:
                results[cell.key] = run_cell(cell, threads)
                log(f"[done] {cell.key} ({results[cell.key]['seconds']:.0f} s)")
            except Exception as exc:  # noqa: BLE001 - reported with the cell's key below
                errors[cell.key] = exc
        return results, errors
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),)
    ) as pool:
        futures = {pool.submit(run_cell, cell, threads): cell for cell in pending}
        log(f"[run ] {len(pending)} cell(s) in {workers} local processes")
        for fut in as_completed(futures):
            cell = futures[fut]
            try:
                results[cell.key] = fut.result()
                log(f"[done] {cell.key} ({results[cell.key]['seconds']:.0f} s)")
            except Exception as exc:  # noqa: BLE001
                errors[cell.key] = exc
    return results, errors


#: What to do when Ray refuses the connection for its token authentication (Ray >= 2.52).
RAY_AUTH_HINT = (
    "the Ray cluster refused this client's authentication token. Ray's token authentication "
    "(RAY_AUTH_MODE=token) needs the cluster's token on the client: set RAY_AUTH_TOKEN, or "
    "RAY_AUTH_TOKEN_PATH to a file holding it (`ray get-auth-token` on the head node prints it), "
    "or start the cluster and this command with the same RAY_AUTH_MODE (e.g. RAY_AUTH_MODE=disabled "
    "on a trusted private network)"
)


def _is_auth_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "authenticationerror" in text or "invalidauthtoken" in text or "auth token" in text or "unauthenticated" in text


def _ray(
    pending: Sequence[Cell], address: str, workers: int, threads: int | None, log: Log
) -> tuple[dict[str, dict], dict[str, BaseException]]:
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ValueError("--ray: Ray is not installed; pip install 'marlcov[cluster]' (ray>=2.9)") from exc
    started = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            if _is_auth_error(exc):
                raise ValueError(f"--ray {address}: {RAY_AUTH_HINT} ({type(exc).__name__}: {exc})") from exc
            raise
        started = True
    results: dict[str, dict] = {}
    errors: dict[str, BaseException] = {}
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        refs = {cell.key: task.remote(cell, threads) for cell in pending}
        log(f"[run ] {len(pending)} cell(s) as Ray tasks ({address})")
        for key, ref in refs.items():
            try:
                results[key] = ray.get(ref)
                log(f"[done] {key} ({results[key]['seconds']:.0f} s)")
            except Exception as exc:  # noqa: BLE001
                errors[key] = exc
    finally:
        if started:
            ray.shutdown()
    return results, errors


def run_cells(
    cells: Sequence[Cell], workers: int = 1, ray_address: str | None = None, threads: int | None = None, log: Log | None = None
) -> list[dict[str, Any]]:
    """The results of ``cells``, in their order: read from existing result files, the others
    computed on the chosen backend (module docstring). ``threads``: torch threads per cell.
    Raises RuntimeError naming every failed cell (after the others have finished)."""
    log = log or (lambda line: None)
    _check(cells, workers)
    done: dict[str, dict] = {}
    pending = []
    for cell in cells:
        path = Path(cell.result_path)
        if path.exists():
            log(f"[skip] {cell.key}: {path} exists")
            done[cell.key] = json.loads(path.read_text())
        else:
            pending.append(cell)
    if pending:
        if ray_address:
            # Ray reserves one CPU per task (num_cpus=1): one thread unless asked otherwise.
            results, errors = _ray(pending, ray_address, workers, threads or 1, log)
        else:
            n = min(workers, len(pending))
            per_worker = threads_per_worker(n, threads)
            if threads is not None and per_worker < threads:
                log(f"[note] --threads {threads} lowered to {per_worker} per worker: {n} worker(s) on {available_cpus()} CPU(s)")
            results, errors = _local(pending, n, per_worker, log)
        for cell in pending:
            if cell.key in results:
                _write_result(results[cell.key], cell.result_path)
        done.update(results)
        if errors:
            lines = "; ".join(f"{k}: {type(e).__name__}: {e}" for k, e in errors.items())
            raise RuntimeError(f"{len(errors)} cell(s) failed (the others are saved; run again to resume): {lines}")
    return [done[c.key] for c in cells]


def default_workers(n_cells: int) -> int:
    """``min(n_cells, os.cpu_count())``, at least 1."""
    return max(1, min(int(n_cells), os.cpu_count() or 1))
