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

Each cell sets ``torch.set_num_threads(threads)`` in the process that runs it.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

Log = Callable[[str], None]


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
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
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


def _ray(pending: Sequence[Cell], address: str, workers: int, threads: int | None, log: Log) -> tuple[dict[str, dict], dict[str, BaseException]]:
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ValueError("--ray: Ray is not installed; pip install 'marlcov[cluster]' (ray>=2.9)") from exc
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
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


def run_cells(cells: Sequence[Cell], workers: int = 1, ray_address: str | None = None, threads: int | None = None,
              log: Log | None = None) -> list[dict[str, Any]]:
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
            results, errors = _ray(pending, ray_address, workers, threads, log)
        else:
            results, errors = _local(pending, min(workers, len(pending)), threads, log)
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
