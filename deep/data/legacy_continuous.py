"""Continuous-action spread files of the retired format ``marlcov.deep-dataset-continuous/1``,
read in place through the interface of ``DatasetReader`` (``external.open_dataset`` picks it).

That format stored what the schema (``schema.py``) stores, in other dtypes: ``obs [N, H+1, m,
obs_dim]`` (the last observation the true final one, as in the schema), ``state [N, H+1,
state_dim]``, float32 ``actions [N, H, m, action_dim]``, ``rewards [N, H, m]``, ``seed [N]``, and
the tags ``source [N]``, ``agent_policy [N, m]`` as byte strings instead of indices into name
tables; its attributes ``env_name``, ``env_config``, ``agent_names``, ``obs_dim``,
``state_dim``, ``action_dim``, ``horizon``. Every episode lasts ``H`` steps, so ``avail [N, H, m,
1]`` is all True. It had no uuid: the reader derives one from the attributes and the reset
seeds, so pairs written for such a file stay tied to it. New files are written in the schema
(``deep.envs.mpe_continuous.collect_continuous_dataset``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from marlcov.theory.games import GameError
from marlcov.theory.safe_read import short_repr

from .external import ExternalReader, continuous_config
from .hdf5 import LEGACY_CONTINUOUS_FORMAT, _check_dtype, _dataset
from .schema import DatasetSpec, int_attr, json_attr, str_attr

__all__ = ["KIND_LEGACY_CONTINUOUS", "LEGACY_CONTINUOUS_FORMAT", "LegacyContinuousReader"]

KIND_LEGACY_CONTINUOUS = "legacy-continuous"
#: The largest number of trajectories whose string tags are decoded when the file is opened.
MAX_LEGACY_TRAJECTORIES = 2**24


class LegacyContinuousReader(ExternalReader):
    """A ``marlcov.deep-dataset-continuous/1`` file as a dataset of the schema (module docstring)."""

    kind = KIND_LEGACY_CONTINUOUS

    def __init__(self, path: str | os.PathLike) -> None:
        self._open_hdf5(path, self._check)

    def _check(self) -> None:
        f, where = self._file, str(self.path)
        attrs = f.attrs
        env_config = dict(json_attr(attrs, "env_config", dict, where, "a JSON object"))
        agent_names = json_attr(attrs, "agent_names", list, where, "a JSON list of agent names")
        if not agent_names or not all(isinstance(a, str) for a in agent_names):
            raise GameError(f"{where}: attribute 'agent_names': expected a non-empty JSON list of strings, got {short_repr(agent_names)}")
        action_dim = int_attr(attrs, "action_dim", where, low=1)
        env_config.update(continuous_config(action_dim))
        self.spec = DatasetSpec(
            env_name=str_attr(attrs, "env_name", where),
            env_config=env_config,
            agent_names=tuple(agent_names),
            obs_dim=int_attr(attrs, "obs_dim", where, low=1),
            state_dim=int_attr(attrs, "state_dim", where, low=1),
            n_actions=1,
            horizon=int_attr(attrs, "horizon", where, low=1),
        )
        seed = _dataset(f, "seed", where)
        N = seed.shape[0] if seed.ndim == 1 else -1
        if not 0 <= N <= MAX_LEGACY_TRAJECTORIES:
            raise GameError(f"{where}: seed: expected shape [N] with N <= {MAX_LEGACY_TRAJECTORIES}, got {short_repr(list(seed.shape))}")
        layout = self.spec.field_layout()
        for name in ("obs", "state", "actions", "rewards", "seed"):
            dtype, shape = layout[name]
            ds = _dataset(f, name, where)
            _check_dtype(ds, dtype, where)
            if ds.shape != (N, *shape):
                raise GameError(f"{where}: {name}: expected shape {short_repr([N, *shape])}, got {short_repr(list(ds.shape))}")
        tags = {}
        for name, shape in (("source", (N,)), ("agent_policy", (N, self.spec.n_agents))):
            ds = _dataset(f, name, where)
            if ds.dtype.kind not in "SO" or ds.shape != shape:
                raise GameError(
                    f"{where}: {name}: expected strings of shape {list(shape)}, got {short_repr(str(ds.dtype))} {list(ds.shape)}"
                )
            tags[name] = ds[()].astype(str)
        self._tags = tags
        self.n_trajectories = int(N)
        self.source_names = np.unique(tags["source"])
        self.policy_names = np.unique(tags["agent_policy"])
        seeds = np.ascontiguousarray(seed[()], dtype=np.int64)
        identity = json.dumps([self.kind, self.spec.to_attrs(), hashlib.sha1(seeds.tobytes()).hexdigest()], sort_keys=True)
        self.uuid = hashlib.sha1(identity.encode()).hexdigest()[:32]

    def close(self) -> None:
        self._file.close()

    def _read(self, idx: np.ndarray, fields: Sequence[str]) -> dict[str, np.ndarray]:
        unique, inverse = np.unique(idx, return_inverse=True)
        out = {}
        for name in fields:
            if name in self._tags:
                out[name] = self._tags[name][idx]
            elif name == "avail":
                out[name] = np.ones((idx.size, self.spec.horizon, self.spec.n_agents, 1), dtype=bool)
            else:
                ds = self._file[name]
                block = ds[unique] if unique.size else np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
                out[name] = block[inverse].astype(self.spec.field_layout()[name][0])
        return out
