"""The offline-dataset schema of deep/: trajectories, their tags, and preference pairs.

One HDF5 file holds the trajectories of one environment configuration (``hdf5.py`` writes and
reads it). Per trajectory ``n`` of horizon ``H`` with ``m`` controlled agents:

===============  =========  =======================  ===========================================
dataset          dtype      shape                    meaning
===============  =========  =======================  ===========================================
``obs``          float32    ``[N, H+1, m, obs_dim]`` local observations o_1 .. o_{H+1}; the last
                                                     is the true final observation, never a reset
``state``        float32    ``[N, H+1, state_dim]``  global state s_1 .. s_{H+1}
``actions``      int16      ``[N, H, m]``            discrete actions a_1 .. a_H, or float32
                            ``[N, H, m, action_dim]`` continuous ones (below)
``avail``        bool       ``[N, H, m, n_actions]`` availability mask of each a_h
``rewards``      float32    ``[N, H, m]``            true rewards r_h: for evaluation only, a
                                                     learner from preferences must not read them
``seed``         int64      ``[N]``                  the environment's reset seed
``source``       int16      ``[N]``                  behaviour-mix tag, index into ``source_names``
``agent_policy`` int16      ``[N, m]``               each agent's policy, index into
                                                     ``policy_names``
===============  =========  =======================  ===========================================

File attributes: ``format`` (``DEEP_DATASET_FORMAT``; a reader rejects any other value),
``env_name``, ``env_config`` (JSON), ``agent_names`` (JSON list), ``obs_dim``, ``state_dim``,
``n_actions``, ``horizon``, ``source_names`` and ``policy_names`` (JSON lists), ``uuid`` (ties
a pairs file to its dataset) and ``n_trajectories``.

Preference pairs live in a group ``pairs`` with datasets ``first`` int64 ``[P]``, ``second``
int64 ``[P]``, ``labels`` int8 ``[P, m]`` in {+1, -1} (+1: agent i prefers trajectory
``first``; the sign convention of the finite-game format of docs/formats.md), and optionally ``probs``
float64 ``[P, m]`` (the Bradley-Terry probability each label was drawn with); its attributes
record how the labels were made. The group sits either in the dataset file or in a separate
pairs file whose root has ``format = DEEP_PAIRS_FORMAT`` and ``dataset_uuid``.

**Continuous actions** (continuous spread, MaMuJoCo) are marked by ``env_config["actions"] =
"continuous"`` and ``env_config["action_dim"]``: then ``actions`` is float32 ``[N, H, m,
action_dim]``, ``n_actions`` is 1 and ``avail [N, H, m, 1]`` is True exactly on real steps
(``DatasetSpec.continuous``, ``DatasetSpec.action_dim``). Readers of discrete actions check it.

Every episode of MPE lasts exactly ``H`` steps: there is no termination, only truncation at
``H`` (JaxMARL has no termination/truncation split, and none is needed here), so no done flags
are stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marlcov.theory.games import GameError
from marlcov.theory.safe_read import short_repr

#: The trajectory dataset format of deep/ (``theory.io.DATASET_FORMAT`` is the finite-game one).
DEEP_DATASET_FORMAT = "marlcov.deep-dataset/1"
#: The preference-pairs file of a deep dataset.
DEEP_PAIRS_FORMAT = "marlcov.deep-pairs/1"
#: Names this module had before, and the names that replaced them.
RENAMED = {"DATASET_FORMAT": "DEEP_DATASET_FORMAT", "PAIRS_FORMAT": "DEEP_PAIRS_FORMAT"}
FORMAT_ATTR = "format"
PAIRS_GROUP = "pairs"

ACTION_DTYPE = np.int16
TAG_DTYPE = np.int16

#: Per-trajectory datasets, in the order they are written (layout: ``DatasetSpec.field_layout``).
TRAJECTORY_FIELDS = ("obs", "state", "actions", "avail", "rewards", "seed", "source", "agent_policy")


def __getattr__(name: str):
    if name in RENAMED:
        raise AttributeError(f"{__name__}.{name} is now {RENAMED[name]} (theory.io.{name} is the finite-game format)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """What every trajectory of a dataset file shares: the environment and the array sizes."""

    env_name: str
    env_config: Mapping[str, Any]
    agent_names: tuple[str, ...]
    obs_dim: int
    state_dim: int
    n_actions: int
    horizon: int

    @property
    def n_agents(self) -> int:
        return len(self.agent_names)

    @property
    def continuous(self) -> bool:
        """Whether the actions are continuous (``env_config["actions"] == "continuous"``)."""
        return dict(self.env_config).get("actions") == "continuous"

    @property
    def action_dim(self) -> int | None:
        """Size of one agent's continuous action (``env_config["action_dim"]``); None when discrete."""
        return int(self.env_config["action_dim"]) if self.continuous else None

    def field_layout(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """``name -> (dtype, per-trajectory shape)`` of each trajectory dataset."""
        H, m = self.horizon, self.n_agents
        return {
            "obs": (np.dtype(np.float32), (H + 1, m, self.obs_dim)),
            "state": (np.dtype(np.float32), (H + 1, self.state_dim)),
            "actions": (np.dtype(np.float32), (H, m, self.action_dim)) if self.continuous else (np.dtype(ACTION_DTYPE), (H, m)),
            "avail": (np.dtype(bool), (H, m, self.n_actions)),
            "rewards": (np.dtype(np.float32), (H, m)),
            "seed": (np.dtype(np.int64), ()),
            "source": (np.dtype(TAG_DTYPE), ()),
            "agent_policy": (np.dtype(TAG_DTYPE), (m,)),
        }

    def to_attrs(self) -> dict[str, Any]:
        return {
            "env_name": self.env_name,
            "env_config": json.dumps(dict(self.env_config), sort_keys=True),
            "agent_names": json.dumps(list(self.agent_names)),
            "obs_dim": int(self.obs_dim),
            "state_dim": int(self.state_dim),
            "n_actions": int(self.n_actions),
            "horizon": int(self.horizon),
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str = "dataset") -> DatasetSpec:
        """The spec of a file's attributes; GameError naming ``where`` and the attribute when
        one is missing or of the wrong kind."""
        missing = [k for k in SPEC_ATTRS if k not in attrs]
        if missing:
            raise GameError(f"{where}: missing attribute(s) {missing}")
        env_config = json_attr(attrs, "env_config", dict, where, "a JSON object")
        agent_names = json_attr(attrs, "agent_names", list, where, "a JSON list of agent names")
        if not agent_names or not all(isinstance(a, str) for a in agent_names):
            raise GameError(f"{where}: attribute 'agent_names': expected a non-empty JSON list of strings, got {short_repr(agent_names)}")
        if env_config.get("actions") == "continuous":
            dim = env_config.get("action_dim")
            if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_ATTR_INT:
                raise GameError(
                    f"{where}: attribute 'env_config': continuous actions need 'action_dim', a positive integer, got {short_repr(dim)}"
                )
        return cls(
            env_name=str_attr(attrs, "env_name", where),
            env_config=env_config,
            agent_names=tuple(agent_names),
            obs_dim=int_attr(attrs, "obs_dim", where, low=1),
            state_dim=int_attr(attrs, "state_dim", where, low=1),
            n_actions=int_attr(attrs, "n_actions", where, low=1),
            horizon=int_attr(attrs, "horizon", where, low=1),
        )


SPEC_ATTRS = ("env_name", "env_config", "agent_names", "obs_dim", "state_dim", "n_actions", "horizon")

#: Largest declared size of one attribute (an integer beyond it is a corrupt file, not a dataset).
MAX_ATTR_INT = 2**40


def _attr_value(attrs: Mapping[str, Any], key: str, where: str):
    if key not in attrs:
        raise GameError(f"{where}: attribute {key!r} is missing")
    value = attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value


def str_attr(attrs: Mapping[str, Any], key: str, where: str) -> str:
    value = _attr_value(attrs, key, where)
    if not isinstance(value, str):
        raise GameError(f"{where}: attribute {key!r}: expected a string, got {short_repr(value)}")
    return value


def int_attr(attrs: Mapping[str, Any], key: str, where: str, low: int = 0) -> int:
    value = _attr_value(attrs, key, where)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= MAX_ATTR_INT:
        raise GameError(f"{where}: attribute {key!r}: expected an integer in [{low}, 2^40], got {short_repr(value)}")
    return int(value)


def json_attr(attrs: Mapping[str, Any], key: str, kind: type, where: str, expected: str):
    text = str_attr(attrs, key, where)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise GameError(f"{where}: attribute {key!r}: expected {expected} as JSON text, got {short_repr(text)}") from None
    if not isinstance(value, kind):
        raise GameError(f"{where}: attribute {key!r}: expected {expected}, got {short_repr(value)}")
    return value


def _tag_array(value: str | Sequence[str] | np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=str)
    if arr.ndim == 0 or arr.shape == shape[1:]:
        arr = np.broadcast_to(arr, shape)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected one tag, or shape {list(shape[1:])} or {list(shape)}, got {list(arr.shape)}")
    return arr


@dataclass(eq=False)
class TrajectoryBatch:
    """A batch of ``B`` complete trajectories in the layout of the schema above.

    ``source`` is one tag for the whole batch or ``[B]`` tags; ``agent_policy`` is ``[m]``
    (shared by the batch) or ``[B, m]``; both are stored as string arrays after construction.
    """

    obs: np.ndarray
    state: np.ndarray
    actions: np.ndarray
    avail: np.ndarray
    rewards: np.ndarray
    seed: np.ndarray
    source: Any = "unknown"
    agent_policy: Any = field(default=None)

    def __post_init__(self) -> None:
        self.seed = np.asarray(self.seed, dtype=np.int64).reshape(-1)
        B = len(self.seed)
        m = np.shape(self.actions)[2] if np.ndim(self.actions) >= 3 else 0
        self.source = _tag_array(self.source, (B,), "source")
        if self.agent_policy is None:
            self.agent_policy = np.repeat(self.source[:, None], m, axis=1)
        else:
            self.agent_policy = _tag_array(self.agent_policy, (B, m), "agent_policy")

    def __len__(self) -> int:
        return int(self.seed.shape[0])

    def validate(self, spec: DatasetSpec) -> None:
        """Raise ValueError naming the first field whose shape, dtype kind or range is wrong."""
        B = len(self)
        for name, (dtype, shape) in spec.field_layout().items():
            if name in ("source", "agent_policy"):
                continue
            arr = np.asarray(getattr(self, name))
            if arr.shape != (B, *shape):
                raise ValueError(f"{name}: expected shape {[B, *shape]}, got {list(arr.shape)}")
            if dtype.kind == "f" and arr.dtype.kind != "f":
                raise ValueError(f"{name}: expected floating point values, got dtype {arr.dtype}")
            if dtype.kind in "iu" and arr.dtype.kind not in "iu":
                raise ValueError(f"{name}: expected integer values, got dtype {arr.dtype}")
            if dtype.kind == "b" and arr.dtype.kind != "b":
                raise ValueError(f"{name}: expected a boolean mask, got dtype {arr.dtype}")
        if spec.continuous:
            if not np.isfinite(self.actions).all():
                raise ValueError("actions: expected finite continuous actions")
        elif B and (self.actions.min() < 0 or self.actions.max() >= spec.n_actions):
            raise ValueError(f"actions: expected values in [0, {spec.n_actions - 1}]")
        if self.agent_policy.shape != (B, spec.n_agents):
            raise ValueError(f"agent_policy: expected shape {[B, spec.n_agents]}, got {list(self.agent_policy.shape)}")

    def take(self, index) -> TrajectoryBatch:
        return TrajectoryBatch(
            self.obs[index],
            self.state[index],
            self.actions[index],
            self.avail[index],
            self.rewards[index],
            self.seed[index],
            self.source[index],
            self.agent_policy[index],
        )

    def returns(self) -> np.ndarray:
        """True undiscounted return of each agent, ``[B, m]`` float64."""
        return np.asarray(self.rewards, dtype=np.float64).sum(axis=1)


@dataclass(eq=False)
class PreferencePairs:
    """Pairs ``(first[p], second[p])`` of trajectory indices with one label per agent.

    ``labels[p, i] = +1`` when agent i prefers trajectory ``first[p]``, -1 otherwise;
    ``probs[p, i]`` (optional) is ``P(labels[p, i] = +1)`` under the labelling model.
    """

    first: np.ndarray
    second: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.first = np.asarray(self.first, dtype=np.int64)
        self.second = np.asarray(self.second, dtype=np.int64)
        labels = np.asarray(self.labels)
        P = self.first.shape[0] if self.first.ndim == 1 else -1
        if self.first.ndim != 1 or self.second.shape != self.first.shape:
            raise ValueError(
                f"first/second: expected two index arrays of one shape [P], got {list(self.first.shape)} and {list(self.second.shape)}"
            )
        if labels.ndim != 2 or labels.shape[0] != P:
            raise ValueError(f"labels: expected shape [P, n_agents] with P = {P}, got {list(labels.shape)}")
        if not np.all(np.isin(labels, (-1, 1))):
            raise ValueError("labels: expected values in {+1, -1}")
        self.labels = labels.astype(np.int8)
        if self.probs is not None:
            self.probs = np.asarray(self.probs, dtype=np.float64)
            if self.probs.shape != self.labels.shape:
                raise ValueError(f"probs: expected shape {list(self.labels.shape)}, got {list(self.probs.shape)}")
        self.attrs = dict(self.attrs)

    def __len__(self) -> int:
        return int(self.first.shape[0])

    @property
    def n_agents(self) -> int:
        return int(self.labels.shape[1])
