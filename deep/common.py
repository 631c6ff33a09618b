"""Shared plumbing of the deep trainers: seeding, devices, progress bars,
atomic files, in-memory tensors of an HDF5 dataset, the step masks of its padded
episodes and network pieces. The resumable training state and the training loop are
``deep.training`` (re-exported here: ``TrainingState``, ``fit``, ``epoch_permutation``).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

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
#: Config helpers that lived here; they are ``deep.config_model``'s (``config_dict`` is named
#: ``config_values`` there; the second JSON/YAML reader and ``save_config`` are gone).
MOVED = {"load_config": "load_config", "config_dict": "config_values"}


def __getattr__(name: str):
    if name in MOVED:
        from marlcov.deep import config_model

        return getattr(config_model, MOVED[name])
    if name == "save_config":
        raise AttributeError(
            f"{__name__}.save_config is gone: write json.dumps(marlcov.deep.config_model.config_values(config)) "
            "and read it back with marlcov.deep.config_model.load_config"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    fsync, rename): the writer of ``deep.checkpoints.save_checkpoint``."""
    from marlcov.theory.atomic import atomic_save

    return atomic_save(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """``text`` written through ``theory.atomic.atomic_write_text``."""
    from marlcov.theory.atomic import atomic_write_text as write

    return write(path, text)


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
    from marlcov.deep.data.external import open_dataset

    with open_dataset(dataset_path) as reader:
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


# The training state and loop live in deep.training, which imports this module's helpers; they
# are imported last so that those helpers exist when it does.
from marlcov.deep.training import TrainingState, epoch_permutation, fit  # noqa: E402,F401
