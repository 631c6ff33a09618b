"""Shared plumbing of the deep trainers: seeding, devices, configs from files, progress bars,
resumable training state, in-memory tensors of an HDF5 dataset and the step masks of its
padded episodes.

Resumable training: a trainer keeps its modules, optimisers and random generators in a
``TrainingState``; ``TrainingState.save`` writes ``{format, step, modules, generators, rng,
extra, config}`` with ``torch.save`` to a temporary file beside the target and renames it onto
the target (atomic on POSIX), so a run killed at any moment leaves either the previous or the
new checkpoint, never a torn one. ``TrainingState.load`` restores all of it. A trainer that
draws every random number from generators held in the state, and derives data orders from
``(seed, epoch)``, continues a killed run exactly: N steps in one go and N/2 + resume + N/2
give identical parameters on CPU.

Everything saved here loads with ``torch.load(weights_only=True)``: random states are stored
as tensors and plain Python values, never pickled objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import torch

TRAIN_STATE_FORMAT = "marlcov.deep-train-state/1"
#: First reset seed of evaluation episodes, for every trainer of ``deep``: training and
#: collection seeds stay below it, so a policy is never scored on the starts of its own data.
EVAL_SEED_BASE = 2**31
#: Largest reset seed of the environments (a uint32).
MAX_ENV_SEED = 2**32 - 1

C = TypeVar("C")


# ----------------------------------------------------------------------------- seeding, devices
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA) with ``seed``."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def eval_seed_start(seed: int, n_episodes: int) -> int:
    """First reset seed of evaluation run ``seed`` of ``n_episodes`` episodes: episode k gets
    ``EVAL_SEED_BASE + seed * n_episodes + k``, so runs of different seeds never share an episode
    and the same ``(seed, n_episodes)`` gives every evaluated policy the same environments."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    base = EVAL_SEED_BASE + int(seed) * int(n_episodes)
    if base + int(n_episodes) - 1 > MAX_ENV_SEED:
        raise ValueError(f"seed: {seed} with {n_episodes} episodes runs past the largest environment seed {MAX_ENV_SEED}")
    return base


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"cpu"``, ``"cuda"`` / ``"cuda:k"`` (an error when CUDA is unavailable) or ``"auto"``
    (CUDA when available, else CPU)."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"device: expected 'cpu', 'cuda[:k]' or 'auto', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: expected 'cpu', 'cuda[:k]' or 'auto', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch sees no CUDA device; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu', 'cuda[:k]' or 'auto', got {device!r}")
    return dev


# ----------------------------------------------------------------------------- configs
def load_config(cls: type[C], source: C | Mapping[str, Any] | str | os.PathLike | None = None, **overrides: Any) -> C:
    """An instance of the dataclass ``cls`` from ``source``: an instance, a mapping, a JSON or
    YAML file path, or None (the defaults); ``overrides`` replace single fields. Unknown keys
    raise ValueError; list values become tuples where the field's default is a tuple."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls: expected a dataclass type, got {cls!r}")
    if isinstance(source, cls):
        values = dataclasses.asdict(source)
    elif source is None:
        values = {}
    elif isinstance(source, Mapping):
        values = dict(source)
    else:
        path = Path(source)
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        elif path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            raise ValueError(f"{path}: expected a .json, .yaml or .yml config file")
        if not isinstance(values, Mapping):
            raise ValueError(f"{path}: expected a mapping of {cls.__name__} fields at the top level")
        values = dict(values)
    values.update(overrides)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; expected names from {sorted(fields)}")
    for name, value in list(values.items()):
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass as plain JSON-able values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write a config dataclass as JSON (readable back with ``load_config``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_dict(config), indent=2, sort_keys=True) + "\n")
    return path


# ----------------------------------------------------------------------------- progress
def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar over ``total`` steps, silent when ``enabled`` is False or stderr is not a
    terminal (log files and ``--json`` runs stay clean)."""
    from tqdm.auto import tqdm

    disable = (not enabled) or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(total=total, desc=desc, initial=initial, disable=disable, dynamic_ncols=True, leave=False)


# ----------------------------------------------------------------------------- atomic files
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through ``theory.atomic.atomic_save`` (temporary file beside ``path``,
    fsync, rename)."""
    from marlcov.theory.atomic import atomic_save

    return atomic_save(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """``text`` written through ``theory.atomic.atomic_write_text``."""
    from marlcov.theory.atomic import atomic_write_text as write

    return write(path, text)


def load_versioned(path: str | os.PathLike, expected_format: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A dict saved with ``torch.save`` whose ``format`` is ``expected_format`` (ValueError
    naming the file and the field otherwise). Loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict) or "format" not in obj:
        raise ValueError(f"{path}: field 'format' is missing; expected {expected_format!r}")
    if obj["format"] != expected_format:
        raise ValueError(f"{path}: field 'format' is {obj['format']!r}; expected {expected_format!r}")
    return obj


# ----------------------------------------------------------------------------- resumable state
def _global_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
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
        state = {
            "format": TRAIN_STATE_FORMAT,
            "step": int(self.step),
            "modules": {name: obj.state_dict() for name, obj in self.objects.items()},
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "rng": _global_rng_state(),
            "extra": self.extra,
            "config": json.dumps(self.config, sort_keys=True),
        }
        path = atomic_torch_save(state, self.path)
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
        state = load_versioned(self.path, TRAIN_STATE_FORMAT, map_location)
        saved_config = json.loads(state["config"])
        if saved_config != self.config:
            changed = sorted(k for k in set(saved_config) | set(self.config) if saved_config.get(k) != self.config.get(k))
            raise ValueError(f"{self.path}: checkpoint was made with another config (fields {changed} differ); "
                             "delete it or pass resume=False to start afresh")
        missing = sorted(set(self.objects) - set(state["modules"]))
        if missing:
            raise ValueError(f"{self.path}: field 'modules' lacks {missing}")
        for name, obj in self.objects.items():
            obj.load_state_dict(state["modules"][name])
        for name, g in self.generators.items():
            g.set_state(state["generators"][name].cpu())
        _set_global_rng_state(state["rng"])
        self.step = int(state["step"])
        self.extra = dict(state["extra"])
        return True


def fit(
    train_state: TrainingState,
    total_steps: int,
    step_fn: Callable[[int], Mapping[str, float]],
    progress: bool,
    desc: str,
    record_every: int = 1,
    step_key: str | None = None,
    finish_record: Callable[[dict[str, float], int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The training loop of ``deep``: run ``step_fn(step)`` (one update; returns its metrics)
    from the checkpoint's step to ``total_steps``, checkpointing through ``train_state``.

    The history holds, with ``record_every = 1``, every step's metrics; otherwise one record per
    ``record_every`` steps with the mean of each metric over them. ``step_key`` adds the step
    count at the end of each record under that name; ``finish_record(record, step)`` returns the
    record to keep (e.g. with validation metrics added). The history and the partial sums are
    part of the checkpoint, so a resumed run returns the history of an uninterrupted one."""
    if record_every < 1:
        raise ValueError(f"record_every: expected a positive integer, got {record_every!r}")
    history: list[dict[str, float]] = list(json.loads(train_state.extra.get("history", "[]")))
    running: dict[str, float] = dict(json.loads(train_state.extra.get("fit_running", "{}")))
    bar = progress_bar(total_steps, desc, progress, initial=train_state.step)
    try:
        while train_state.step < total_steps:
            values = dict(step_fn(train_state.step))
            train_state.step += 1
            bar.update(1)
            if record_every > 1:
                for key, value in values.items():
                    running[key] = running.get(key, 0.0) + float(value)
                running["_n"] = running.get("_n", 0) + 1
                values = {}
                if train_state.step % record_every == 0:
                    n = running.pop("_n")
                    values, running = {key: total / n for key, total in running.items()}, {}
            if values:
                record = values if step_key is None else {step_key: train_state.step, **values}
                history.append(record if finish_record is None else finish_record(record, train_state.step))
            if train_state.due():
                # Serialised only when saved: the history grows with the run.
                train_state.extra.update(history=json.dumps(history), fit_running=json.dumps(running))
            train_state.maybe_save()
    finally:
        bar.close()
    train_state.extra.update(history=json.dumps(history), fit_running=json.dumps(running))
    train_state.save()
    return history


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``: data orders that
    a resumed run reproduces without saving them."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


# ----------------------------------------------------------------------------- padded episodes
def step_masks(avail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, last)``, bool ``[N, H]``, of episodes stored padded to ``H`` steps, from their
    availability masks ``avail [N, H, m, A]``.

    A dataset stores every episode padded to ``H`` steps (SMAX episodes end early;
    ``deep.envs.smax``): a padded step has no action available to any agent. ``valid[n, t]``
    is True for real steps (some action available) and ``last[n, t]`` for the final real step
    of an episode, after which the value of the next state is 0 (the finite-horizon convention
    of the papers; without padding, as in MPE, every step is real and the last is ``H - 1``).
    ValueError when an episode's padding does not come after all its real steps.
    """
    valid = np.asarray(avail).any(axis=(2, 3))
    lengths = valid.sum(axis=1)
    if not np.all(valid == (np.arange(valid.shape[1])[None, :] < lengths[:, None])):
        raise ValueError("avail: expected every episode's real steps to come first and the padding after them")
    last = np.arange(valid.shape[1])[None, :] == (lengths - 1)[:, None]
    return valid, last


# ----------------------------------------------------------------------------- dataset tensors
def load_dataset_arrays(
    dataset_path: str | os.PathLike,
    fields: Sequence[str],
    batch_size: int = 1024,
) -> tuple[Any, dict[str, np.ndarray]]:
    """``(spec, arrays)``: the trajectory datasets ``fields`` of an HDF5 dataset, read in
    batches into preallocated numpy arrays (one copy in memory, none of the others)."""
    from marlcov.deep.data.hdf5 import DatasetReader

    with DatasetReader(dataset_path) as reader:
        layout = reader.spec.field_layout()
        unknown = [f for f in fields if f not in layout]
        if unknown:
            raise ValueError(f"fields: unknown {unknown}; expected names from {sorted(layout)}")
        N = len(reader)
        out = {f: np.empty((N, *layout[f][1]), dtype=layout[f][0]) for f in fields if f not in ("source", "agent_policy")}
        tags = {f: np.empty((N, *layout[f][1]), dtype=object) for f in fields if f in ("source", "agent_policy")}
        for idx, arrays in reader.iter_batches(batch_size, fields=list(fields)):
            for f in fields:
                (tags if f in tags else out)[f][idx] = arrays[f]
        out.update({f: v.astype(str) for f, v in tags.items()})
        return reader.spec, out


def to_tensors(arrays: Mapping[str, np.ndarray], device: torch.device, float_fields: Iterable[str] = ("obs", "state", "rewards")) -> dict[str, torch.Tensor]:
    """numpy arrays to torch tensors on ``device``: float fields as float32, ``actions`` as
    int64, ``avail`` as bool."""
    out = {}
    for name, arr in arrays.items():
        if name in float_fields:
            out[name] = torch.as_tensor(arr, dtype=torch.float32, device=device)
        elif name == "actions":
            out[name] = torch.as_tensor(arr.astype(np.int64), device=device)
        elif name == "avail":
            out[name] = torch.as_tensor(arr, dtype=torch.bool, device=device)
        elif arr.dtype.kind in "iub":
            out[name] = torch.as_tensor(arr, device=device)
    return out


# ----------------------------------------------------------------------------- network pieces
#: Logit given to unavailable actions: finite (so 0 * it is 0, not nan) and far below any real one.
MASKED_LOGIT = -1e9


def mlp(in_dim: int, hidden: int, n_linear: int, out_dim: int) -> torch.nn.Sequential:
    """``n_linear`` linear layers with ReLU between them: in_dim -> hidden -> ... -> out_dim."""
    if n_linear < 1:
        raise ValueError(f"layers: expected at least 1 linear layer, got {n_linear!r}")
    dims = [in_dim] + [hidden] * (n_linear - 1) + [out_dim]
    layers: list[torch.nn.Module] = []
    for k in range(n_linear):
        layers.append(torch.nn.Linear(dims[k], dims[k + 1]))
        if k < n_linear - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def with_agent_id(obs: torch.Tensor) -> torch.Tensor:
    """``obs [..., m, d]`` with a one-hot agent id appended: ``[..., m, d + m]`` (the input of
    a network whose parameters all agents share)."""
    m = obs.shape[-2]
    eye = torch.eye(m, dtype=obs.dtype, device=obs.device).expand(*obs.shape[:-1], m)
    return torch.cat([obs, eye], dim=-1)


def masked(values: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """``values [..., A]`` with unavailable entries (``avail`` False) set to ``MASKED_LOGIT``."""
    if avail is None:
        return values
    return values.masked_fill(~avail, MASKED_LOGIT)
