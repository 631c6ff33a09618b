"""Resumable training: the state a trainer checkpoints and the one training loop of ``deep``.

A trainer keeps its modules, optimisers and random generators in a ``TrainingState``;
``TrainingState.save`` writes a ``"train-state"`` checkpoint (``deep.checkpoints``: the run's
config in the header, the modules' and optimisers' state dicts, and the fields ``step``,
``generators``, ``rng``, ``extra``) to a temporary file beside the target and renames it onto
the target (atomic on POSIX), so a run killed at any moment leaves either the previous or the
new checkpoint, never a torn one. ``TrainingState.load`` restores all of it, from training
states written before that format too. A trainer that draws every random number
from generators held in the state, and derives data orders from ``(seed, epoch)``
(``epoch_permutation``), continues a killed run exactly: N steps in one go and N/2 + resume +
N/2 give identical parameters on CPU. ``fit`` is the loop every trainer but score
decomposition's two-phase one runs.

Everything saved here loads with ``torch.load(weights_only=True)``: random states are stored
as tensors and plain Python values, never pickled objects.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlcov.deep.checkpoints import load_checkpoint, save_checkpoint


def _global_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class TrainingState:
    """What a resumable trainer saves: named modules and optimisers (anything with
    ``state_dict``/``load_state_dict``), named torch generators, the global random states,
    the step counter and a dict of extra plain values or tensors.

    Args:
        path: checkpoint file (None: nothing is saved or loaded).
        every: save every ``every`` steps (``maybe_save``); 0 disables periodic saves.
        objects: ``name -> module/optimiser``.
        generators: ``name -> torch.Generator``.
        config: the run's config as a plain dict; a checkpoint made under another config is
            not resumed (ValueError), so a changed hyperparameter cannot silently mix runs.
        every_seconds: also save when this many seconds have passed since the last save (0:
            never by time), so that slow steps do not leave a long run unsaved. It changes
            when checkpoints are written, never what a resumed run computes.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        every: int,
        objects: Mapping[str, Any],
        generators: Mapping[str, torch.Generator] | None = None,
        config: Mapping[str, Any] | None = None,
        every_seconds: float = 0.0,
    ) -> None:
        if not isinstance(every, (int, np.integer)) or every < 0:
            raise ValueError(f"checkpoint_every: expected a non-negative integer, got {every!r}")
        if not (math.isfinite(every_seconds) and every_seconds >= 0):
            raise ValueError(f"checkpoint_seconds: expected a finite non-negative number, got {every_seconds!r}")
        self.every_seconds = float(every_seconds)
        self._last_save = time.monotonic()
        self._requested = False
        self.path = None if path is None else Path(path)
        self.every = int(every)
        self.objects = dict(objects)
        self.generators = dict(generators or {})
        self.config = json.loads(json.dumps(dict(config or {})))
        self.step = 0
        self.extra: dict[str, Any] = {}

    def save(self) -> Path | None:
        """Write the checkpoint (nothing when ``path`` is None)."""
        if self.path is None:
            return None
        path = save_checkpoint(
            self.path,
            "train-state",
            {name: obj.state_dict() for name, obj in self.objects.items()},
            trainer=None,
            config=self.config,
            fields={
                "step": int(self.step),
                "generators": {name: g.get_state() for name, g in self.generators.items()},
                "rng": _global_rng_state(),
                "extra": self.extra,
            },
        )
        self._last_save = time.monotonic()
        self._requested = False
        return path

    def request_save(self) -> None:
        """Make the next ``due`` true (a step whose result must not be lost, e.g. a saved level)."""
        self._requested = True

    def due(self) -> bool:
        """Whether ``maybe_save`` would save now: the step counter is a positive multiple of
        ``every``, or ``every_seconds`` have passed since the last save (never without a path)."""
        if self.path is None:
            return False
        if self._requested:
            return True
        due_by_step = self.every and self.step > 0 and self.step % self.every == 0
        due_by_time = self.every_seconds > 0 and time.monotonic() - self._last_save >= self.every_seconds
        return bool(due_by_step or due_by_time)

    def maybe_save(self) -> bool:
        """Save when ``due``."""
        if self.due():
            self.save()
            return True
        return False

    def load(self, map_location: str | torch.device = "cpu") -> bool:
        """Restore from ``path`` if it exists; returns whether it did."""
        if self.path is None or not self.path.exists():
            return False
        state = load_checkpoint(self.path, "train-state", map_location)
        saved_config = state.config
        if saved_config != self.config:
            changed = sorted(k for k in set(saved_config) | set(self.config) if saved_config.get(k) != self.config.get(k))
            raise ValueError(
                f"{self.path}: checkpoint was made with another config (fields {changed} differ); "
                "delete it or pass resume=False to start afresh"
            )
        missing = sorted(set(self.objects) - set(state.state_dicts))
        if missing:
            raise ValueError(f"{self.path}: field 'state_dicts' lacks {missing}")
        for name, obj in self.objects.items():
            obj.load_state_dict(state.state_dicts[name])
        generators = state.field("generators")
        for name, g in self.generators.items():
            g.set_state(generators[name].cpu())
        _set_global_rng_state(state.field("rng"))
        self.step = int(state.field("step"))
        self.extra = dict(state.field("extra"))
        return True


def _running_sums(saved: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """The partial sums and per-metric step counts of a record in progress, as a checkpoint
    holds them: ``{"sums", "counts"}``, or the former ``{metric: sum, "_n": steps}`` whose
    metrics all counted every step."""
    if "sums" in saved:
        return dict(saved["sums"]), {k: int(v) for k, v in saved["counts"].items()}
    n = int(saved.pop("_n", 0))
    return dict(saved), {key: n for key in saved}


def _host(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with their tensors (on any device) read as Python floats in one transfer, the
    one host synchronisation of a record; other values (numbers, a phase's name) unchanged."""
    keys = [key for key, value in values.items() if isinstance(value, torch.Tensor)]
    read = dict(zip(keys, torch.stack([values[key].detach().to(torch.float64).reshape(()) for key in keys]).tolist())) if keys else {}
    return {key: read.get(key, value) for key, value in values.items()}


def _summand(value: Any) -> Any:
    """A metric as a float64 summand: tensors stay on their device (no synchronisation), and
    float64 sums equal those of the Python floats a resumed run starts from."""
    return value.detach().to(torch.float64) if isinstance(value, torch.Tensor) else float(value)


def fit(
    train_state: TrainingState,
    total_steps: int,
    step_fn: Callable[[int], Mapping[str, float | torch.Tensor]],
    progress: bool,
    desc: str,
    record_every: int = 1,
    step_key: str | None = None,
    finish_record: Callable[[dict[str, float], int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The training loop of ``deep``: run ``step_fn(step)`` (one update; returns its metrics,
    floats or 0-dim tensors) from the checkpoint's step to ``total_steps``, checkpointing
    through ``train_state``. Tensor metrics are summed on their device and read to the host
    once per record (and at a checkpoint), so a step function that returns detached tensors
    adds no host synchronisation per update on an accelerator.

    The history holds, with ``record_every = 1``, every step's metrics; otherwise one record per
    ``record_every`` steps with the mean of each metric over the steps that returned it (a
    metric made on some steps only, e.g. a delayed actor update, is not diluted by the others). ``step_key`` adds the step
    count at the end of each record under that name; ``finish_record(record, step)`` returns the
    record to keep (e.g. with validation metrics added). The history and the partial sums are
    part of the checkpoint, so a resumed run returns the history of an uninterrupted one."""
    if record_every < 1:
        raise ValueError(f"record_every: expected a positive integer, got {record_every!r}")
    history: list[dict[str, float]] = list(json.loads(train_state.extra.get("history", "[]")))
    sums, counts = _running_sums(json.loads(train_state.extra.get("fit_running", "{}")))
    # deep.common imports this module at its end: import from it when the loop runs.
    from marlcov.deep.common import progress_bar

    bar = progress_bar(total_steps, desc, progress, initial=train_state.step)
    try:
        while train_state.step < total_steps:
            values = dict(step_fn(train_state.step))
            train_state.step += 1
            bar.update(1)
            if record_every > 1:
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + _summand(value)
                    counts[key] = counts.get(key, 0) + 1
                values = {}
                if train_state.step % record_every == 0:
                    values = {key: total / counts[key] for key, total in sums.items()}
                    sums, counts = {}, {}
            if values:
                values = _host(values)
                record = values if step_key is None else {step_key: train_state.step, **values}
                history.append(record if finish_record is None else finish_record(record, train_state.step))
            if train_state.due():
                # Serialised only when saved: the history grows with the run.
                train_state.extra.update(history=json.dumps(history), fit_running=json.dumps({"sums": _host(sums), "counts": counts}))
            train_state.maybe_save()
    finally:
        bar.close()
    train_state.extra.update(history=json.dumps(history), fit_running=json.dumps({"sums": _host(sums), "counts": counts}))
    train_state.save()
    return history


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``: data orders that
    a resumed run reproduces without saving them."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))
