"""Offline MARL datasets in the layouts people already have, read in place.

``open_dataset(path)`` returns a reader with the interface of ``DatasetReader`` (``spec``,
``uuid``, ``n_trajectories``, ``read_fields``, ``read``, ``iter_batches``, ``returns``,
``has_pairs``, ``pairs``, context manager) for:

* a marlcov dataset file (``DatasetReader`` itself);
* a continuous-action spread file of the retired format ``marlcov.deep-dataset-continuous/1``:
  ``legacy_continuous.LegacyContinuousReader``;
* an OG-MARL / flashbax **Vault** (a directory ``NAME.vlt/UID`` holding ``metadata.json``, or a
  ``NAME.vlt`` directory with exactly one UID): ``vaults.VaultReader``;
* the **OMIGA** release HDF5 (root datasets ``o``, ``s``, ``a``, ``r``, ``d`` of flat steps):
  ``vaults.OmigaReader``;
* the **O-MAPL** release HDF5 (pairs of padded trajectories ``*_x``/``*_y`` and ``labels``):
  ``OmaplReader`` here; its own preference labels come back from ``pairs()``.

Nothing is converted or copied whole: every read fetches the trajectories asked for. Any other
layout is refused with a ValueError naming the file and the field. The conventions of the
project's schema (``schema.py``) are kept: trajectories padded to the longest episode ``H``,
a padded step has no available action (``deep.common.step_masks``), action 0 and reward 0.
Sources that store one team reward give it to every agent. Reset seeds are unknown (-1).
Continuous actions (MaMuJoCo) come back as the schema holds them: float32 ``actions [N, H, m,
action_dim]`` with ``env_config["actions"] = "continuous"`` and ``env_config["action_dim"]``, and
``avail [N, H, m, 1]`` True exactly on real steps; readers of discrete actions must check
``spec.continuous``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .hdf5 import DatasetReader
from .schema import FORMAT_ATTR, TRAJECTORY_FIELDS, DatasetSpec, PreferencePairs, TrajectoryBatch

KIND_OMAPL = "omapl-hdf5"
UNKNOWN_SEED = -1


def layout_uuid(kind: str, parts: Sequence[Any]) -> str:
    """A uuid for a dataset read in place, from what identifies its content (layout, sizes):
    the same data give the same uuid, so pairs files stay tied to it."""
    return hashlib.sha1(json.dumps([kind, *map(str, parts)]).encode()).hexdigest()[:32]


def continuous_config(action_dim: int) -> dict[str, Any]:
    return {"actions": "continuous", "action_dim": int(action_dim)}


def is_continuous(spec: DatasetSpec) -> bool:
    """Whether a dataset's actions are continuous (``actions [N, H, m, action_dim]`` float)."""
    return spec.continuous


class ExternalReader:
    """What every in-place reader shares; a subclass sets ``path``, ``spec``, ``uuid``,
    ``n_trajectories``, ``source_names``, ``policy_names`` and implements ``_read``."""

    kind = "external"
    path: Path
    spec: DatasetSpec
    uuid: str
    n_trajectories: int

    # Written against read_fields and n_trajectories only, so they serve every reader.
    read = DatasetReader.read
    iter_batches = DatasetReader.iter_batches
    returns = DatasetReader.returns

    def __len__(self) -> int:
        return self.n_trajectories

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between reads by default."""

    def _open_hdf5(self, path: str | os.PathLike, check) -> None:
        """Open ``path`` read-only as ``self._file`` and run ``check()``; a file the check
        refuses is closed before the error propagates."""
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        try:
            check()
        except Exception:
            self._file.close()
            raise

    def has_pairs(self) -> bool:
        return False

    def pairs(self) -> PreferencePairs:
        raise ValueError(f"{self.path}: this {self.kind} dataset holds no preference pairs; label it first")

    def _read(self, idx: np.ndarray, fields: Sequence[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def read_fields(self, index, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of ``fields`` (default: all) of the trajectories at ``index`` (a slice or
        integer indices, in the order asked)."""
        fields = list(TRAJECTORY_FIELDS if fields is None else fields)
        unknown = [name for name in fields if name not in TRAJECTORY_FIELDS]
        if unknown:
            raise ValueError(f"fields: unknown {unknown}; expected names from {list(TRAJECTORY_FIELDS)}")
        if isinstance(index, slice):
            idx = np.arange(self.n_trajectories)[index]
        else:
            idx = np.asarray(index, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= self.n_trajectories):
                raise ValueError(f"index: expected trajectory indices in [0, {self.n_trajectories - 1}]")
        out = self._read(idx, fields)
        # Layouts without tags or reset seeds give every trajectory the file's one tag and no seed.
        if "source" in fields and "source" not in out:
            out["source"] = np.full(idx.shape, self.source_names[0])
        if "agent_policy" in fields and "agent_policy" not in out:
            out["agent_policy"] = np.full((idx.size, self.spec.n_agents), self.policy_names[0])
        if "seed" in fields and "seed" not in out:
            out["seed"] = np.full(idx.shape, UNKNOWN_SEED, dtype=np.int64)
        return out


def team_rewards(r: np.ndarray, n_agents: int, lead_dims: int, where: str, field: str) -> np.ndarray:
    """Rewards with ``lead_dims`` leading axes, then nothing (one team reward), ``[1]`` or
    ``[m]``, as ``[..., m]`` float32 (a team reward goes to every agent)."""
    r = np.asarray(r, dtype=np.float32)
    if r.ndim == lead_dims + 1 and r.shape[-1] == n_agents:
        return r
    if r.ndim == lead_dims + 1 and r.shape[-1] == 1:
        r = r[..., 0]
    if r.ndim != lead_dims:
        raise ValueError(f"{where}: field {field!r}: expected one team reward or {n_agents} rewards per step, got shape {list(r.shape)}")
    return np.repeat(r[..., None], n_agents, axis=-1)


def shape_error(where: str, field: str, expected: str, got) -> ValueError:
    return ValueError(f"{where}: field {field!r}: expected {expected}, got shape {list(got)}")


class OmaplReader(ExternalReader):
    """The O-MAPL release layout: ``P`` labelled pairs of padded trajectories.

    Per side ``X`` in {x, y}: ``obs_X [P, T+1, m, O]``, ``states_X [P, T+1, S]`` (or
    ``[P, T+1, m, S']``, flattened), ``actions_X [P, T, m]`` integers with ``avails_X
    [P, T+1, m, A]`` (SMAC), or ``[P, T, m, A]`` floats (MaMuJoCo), ``rewards_X [P, T]`` team
    rewards, ``dones_X [P, T]`` (an episode's real steps end at its first done); ``labels [P]``
    (1: trajectory x preferred). Trajectory ``p`` is ``x`` of pair ``p``, trajectory ``P + p``
    its ``y``; ``pairs()`` returns the file's labels for every agent.
    """

    kind = KIND_OMAPL
    REQUIRED = ("obs", "states", "actions", "rewards", "dones")

    def __init__(self, path: str | os.PathLike) -> None:
        self._open_hdf5(path, self._check)

    def _check(self) -> None:
        f, where = self._file, str(self.path)
        for name in [f"{k}_{s}" for k in self.REQUIRED for s in "xy"] + ["labels"]:
            if name not in f:
                raise ValueError(
                    f"{where}: field {name!r} is missing; expected the O-MAPL pair layout "
                    f"({', '.join(k + '_x/_y' for k in self.REQUIRED)}, labels)"
                )
        obs = f["obs_x"].shape
        if len(obs) != 4:
            raise shape_error(where, "obs_x", "[P, T+1, m, obs_dim]", obs)
        P, T1, m, obs_dim = obs
        T = T1 - 1
        for side in "xy":
            if f[f"obs_{side}"].shape != obs:
                raise shape_error(where, f"obs_{side}", f"{list(obs)} (as obs_x)", f[f"obs_{side}"].shape)
            st = f[f"states_{side}"].shape
            if st[:2] != (P, T1) or len(st) not in (3, 4):
                raise shape_error(where, f"states_{side}", f"[{P}, {T1}, state_dim]", st)
            for key in ("rewards", "dones"):
                sh = f[f"{key}_{side}"].shape
                if sh[:2] != (P, T) or len(sh) > 3:
                    raise shape_error(where, f"{key}_{side}", f"[{P}, {T}] or [{P}, {T}, 1]", sh)
        if f["labels"].shape[:1] != (P,) or int(np.prod(f["labels"].shape)) != P:
            raise shape_error(where, "labels", f"[{P}]", f["labels"].shape)
        act = f["actions_x"]
        self._continuous = act.dtype.kind == "f"
        config: dict[str, Any] = {"source_layout": self.kind}
        if self._continuous:
            if act.shape[:3] != (P, T, m) or act.ndim != 4:
                raise shape_error(where, "actions_x", f"[{P}, {T}, {m}, action_dim] (continuous)", act.shape)
            n_actions = 1
            config.update(continuous_config(act.shape[3]))
        else:
            if act.shape != (P, T, m):
                raise shape_error(where, "actions_x", f"[{P}, {T}, {m}] integer actions", act.shape)
            for side in "xy":
                if f"avails_{side}" not in f:
                    raise ValueError(f"{where}: field 'avails_{side}' is missing; expected it beside integer actions (SMAC)")
                av = f[f"avails_{side}"].shape
                if len(av) != 4 or av[0] != P or av[1] < T or av[2] != m:
                    raise shape_error(where, f"avails_{side}", f"[{P}, {T} or {T1}, {m}, n_actions]", av)
            n_actions = int(f["avails_x"].shape[3])
        state_dim = int(np.prod(f["states_x"].shape[2:]))
        self._P, self._T = P, T
        self.n_trajectories = 2 * P
        self.spec = DatasetSpec(
            f"{self.kind}:{self.path.stem}", config, tuple(f"agent_{i}" for i in range(m)), int(obs_dim), state_dim, n_actions, int(T)
        )
        self.uuid = layout_uuid(self.kind, [(k, f[k].shape, f[k].dtype) for k in sorted(f.keys())])
        self.source_names = np.asarray([self.path.stem])
        self.policy_names = self.source_names

    def close(self) -> None:
        self._file.close()

    def _side(self, name: str, side: str, rows: np.ndarray) -> np.ndarray:
        ds = self._file[f"{name}_{side}"]
        unique, inverse = np.unique(rows, return_inverse=True)
        block = ds[unique] if unique.size else np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
        return block[inverse]

    def _read(self, idx: np.ndarray, fields: Sequence[str]) -> dict[str, np.ndarray]:
        P, T, m = self._P, self._T, self.spec.n_agents
        parts: dict[str, list[np.ndarray]] = {name: [] for name in fields}
        order = np.concatenate([np.flatnonzero(idx < P), np.flatnonzero(idx >= P)])
        for side, rows in (("x", idx[idx < P]), ("y", idx[idx >= P] - P)):
            dones = self._side("dones", side, rows).reshape(len(rows), T).astype(bool)
            ended = dones.any(axis=1)
            lengths = np.where(ended, dones.argmax(axis=1) + 1, T)
            valid = np.arange(T)[None, :] < lengths[:, None]
            for name in fields:
                if name == "obs":
                    v = self._side("obs", side, rows).astype(np.float32)
                elif name == "state":
                    v = self._side("states", side, rows).astype(np.float32).reshape(len(rows), T + 1, -1)
                elif name == "rewards":
                    r = team_rewards(self._side("rewards", side, rows), m, 2, str(self.path), f"rewards_{side}")
                    v = np.where(valid[..., None], r, 0.0).astype(np.float32)
                elif name == "actions":
                    a = self._side("actions", side, rows)
                    mask = valid.reshape(valid.shape + (1,) * (a.ndim - 2))
                    v = np.where(mask, a, 0).astype(np.float32 if self._continuous else np.int16)
                elif name == "avail":
                    if self._continuous:
                        v = np.repeat(valid[:, :, None, None], m, axis=2)
                    else:
                        v = self._side("avails", side, rows)[:, :T].astype(bool) & valid[:, :, None, None]
                else:
                    continue
                parts[name].append(v)
        inverse = np.argsort(order, kind="stable")
        return {name: np.concatenate(vs)[inverse] for name, vs in parts.items() if vs}

    def has_pairs(self) -> bool:
        return True

    def pairs(self) -> PreferencePairs:
        """The file's labelled pairs: ``(p, P + p)`` with label +1 for every agent when x is preferred."""
        raw = np.asarray(self._file["labels"][()]).reshape(-1)
        if not np.all(np.isin(raw, (0, 1))):
            raise ValueError(f"{self.path}: field 'labels': expected values in {{0, 1}} (1: trajectory x preferred)")
        P, m = self._P, self.spec.n_agents
        labels = np.repeat(np.where(raw == 1, 1, -1)[:, None], m, axis=1)
        return PreferencePairs(np.arange(P), P + np.arange(P), labels, attrs={"label_model": "file:o-mapl"})


def open_dataset(path: str | os.PathLike):
    """A reader of the dataset at ``path`` in any layout this module knows (module docstring);
    ValueError naming the file and the field for any other."""
    from .legacy_continuous import LEGACY_CONTINUOUS_FORMAT, LegacyContinuousReader
    from .vaults import OmigaReader, VaultReader, find_vault

    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or directory")
    if p.is_dir():
        return VaultReader(find_vault(p))
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise ValueError(f"{p}: not an HDF5 file or a vault directory ({exc})") from None
    with f:
        names = set(f.keys())
        native = FORMAT_ATTR in f.attrs
        fmt = f.attrs.get(FORMAT_ATTR)
    if fmt in (LEGACY_CONTINUOUS_FORMAT, LEGACY_CONTINUOUS_FORMAT.encode()):
        return LegacyContinuousReader(p)
    if native:
        return DatasetReader(p)
    if {"o", "s", "a", "r", "d"} <= names:
        return OmigaReader(p)
    if "labels" in names and "obs_x" in names:
        return OmaplReader(p)
    raise ValueError(
        f"{p}: unknown HDF5 layout (root fields {sorted(names)}); expected a marlcov dataset "
        f"(attribute {FORMAT_ATTR!r}), the OMIGA layout (o, s, a, r, d) or the O-MAPL pair layout (obs_x, ..., labels)"
    )


def continuous_trajectories(path: str | os.PathLike) -> tuple[DatasetSpec, TrajectoryBatch]:
    """``(spec, trajectories)`` of a dataset read whole through ``open_dataset``;
    ValueError naming the file unless its actions are continuous and every episode lasts ``H``
    steps (score decomposition's transitions have no padding)."""
    with open_dataset(path) as reader:
        if not reader.spec.continuous:
            raise ValueError(
                f"{path}: expected continuous actions (env_config 'actions' = 'continuous'), got {reader.spec.n_actions} discrete ones"
            )
        traj = reader.read(slice(None))
        spec = reader.spec
    if not traj.avail.all():
        raise ValueError(f"{path}: avail: expected every episode to last the horizon {spec.horizon} (no padded steps)")
    return spec, traj
