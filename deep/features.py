"""Feature maps ``psi(s, a)`` for continuous observations, for the coverage measures of datasets.

A feature map turns the arrays of a batch of trajectories (HDF5 fields ``state`` ``[B, T(+1),
state_dim]`` and/or ``obs`` ``[B, T(+1), m, obs_dim]``, of which the first ``T`` steps are used)
and joint actions ``[B, T, m]`` into per-step features ``[B, T, d]`` (float64). Three kinds:

* ``RandomFourierFeatures``: a fixed, seeded random-feature map (below); numpy only.
* ``RewardModelFeatures``: the penultimate layer of a trained reward model (torch, imported
  lazily): a module's ``features(obs, actions)`` method when it has one, else the input of its
  last ``torch.nn.Linear`` layer, or any user callable.
* ``FileFeatures``: user-supplied features of the dataset's own trajectories, ``[N, H, d]`` in an
  ``.npy`` file (memory-mapped) or an ``.h5`` dataset.

Random Fourier features. With ``x`` the global state (or the agents' observations concatenated),
standardised per coordinate by the dataset's mean and standard deviation (``fit``), ``k`` its
dimension, ``e(a)`` the one-hot code of the joint action (``action_encoding="joint"``: one of
``n_actions^m``; ``"agents"``: the agents' one-hot codes concatenated), and, drawn once from
``seed``, ``omega_j ~ N(0, I / (bandwidth^2 k))`` over the state, ``nu_j ~ N(0, action_scale^2 I)``
over the action code and ``b_j ~ U[0, 2 pi)``, ``j = 1..d``:

    psi(s, a)_j = cos(omega_j . x + nu_j . e(a) + b_j) / sqrt(d).

So ``||psi|| <= 1`` (Assumption 1 of the MARLHF paper) and, as ``d -> infinity``,
``psi(s, a) . psi(s', a') -> (1/2) exp(-||x - x'||^2 / (2 bandwidth^2 k)) exp(-action_scale^2 D(a, a'))``
with ``D`` = 1[a != a'] (joint) or the number of agents whose actions differ (agents): a Gaussian
kernel in the state times a discount per differing action.

Length: a little over 400 lines, most of them the docstrings of the maps' kernels and the checks
of their inputs; the maps share the fit / transform protocol defined here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIM = 256
DEFAULT_BANDWIDTH = 1.0
DEFAULT_ACTION_SCALE = 1.0
#: A standard deviation below this is treated as a constant coordinate (divided by 1).
STD_FLOOR = 1e-8
#: Largest joint action space given its own one-hot code (``action_encoding="joint"``).
MAX_JOINT_ACTIONS = 1 << 16
ACTION_ENCODINGS = ("joint", "agents")
SOURCES = ("state", "obs")


def joint_action_index(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """Index of each joint action ``[..., m]`` in ``[0, n_actions^m)``, agent 0 most significant."""
    a = np.asarray(actions, dtype=np.int64)
    m = a.shape[-1]
    radix = n_actions ** np.arange(m - 1, -1, -1, dtype=np.int64)
    return a @ radix


def all_joint_actions(n_agents: int, n_actions: int) -> np.ndarray:
    """Every joint action, ``[n_actions^m, m]`` in ``joint_action_index`` order."""
    grids = np.meshgrid(*[np.arange(n_actions)] * n_agents, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=-1)


class FeatureMap:
    """Base class: ``__call__`` gives ``psi`` at given actions; the variants below default to one
    call per action, which subclasses replace with something faster when they can.

    Attributes:
        dim: d.
        fields: the HDF5 trajectory fields the map reads.
        n_agents, n_actions: sizes of the joint action.
    """

    dim: int
    fields: tuple[str, ...]
    n_agents: int
    n_actions: int

    def __call__(self, fields: Mapping[str, np.ndarray], actions: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def unilateral(self, fields: Mapping[str, np.ndarray], actions: np.ndarray, player: int, index: np.ndarray | None = None) -> np.ndarray:
        """``psi(s_t, (a_i, a_{-i,t}))`` for every action ``a_i`` of ``player``: ``[B, T, n_actions, d]``."""
        out = []
        for a_i in range(self.n_actions):
            alt = np.array(actions, copy=True)
            alt[..., player] = a_i
            out.append(self(fields, alt, index))
        return np.stack(out, axis=2)

    def joint(self, fields: Mapping[str, np.ndarray], steps: int, index: np.ndarray | None = None) -> np.ndarray:
        """``psi(s_t, a)`` for every joint action (``all_joint_actions`` order): ``[B, T, K, d]``."""
        B = _batch_size(fields)
        table = all_joint_actions(self.n_agents, self.n_actions)
        return np.stack([self(fields, np.broadcast_to(a, (B, steps, self.n_agents)), index) for a in table], axis=2)

    def describe(self) -> dict:
        return {"kind": type(self).__name__, "dim": int(self.dim)}


def _batch_size(fields: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(fields.values())).shape[0])


def _check_actions(actions: np.ndarray, n_agents: int, n_actions: int) -> np.ndarray:
    a = np.asarray(actions)
    if a.ndim != 3 or a.shape[-1] != n_agents:
        raise ValueError(f"actions: expected shape [B, T, m] with m = {n_agents}, got {list(a.shape)}")
    if a.size and (a.min() < 0 or a.max() >= n_actions):
        raise ValueError(f"actions: expected values in [0, {n_actions - 1}]")
    return a.astype(np.int64, copy=False)


class RandomFourierFeatures(FeatureMap):
    """Seeded random Fourier features of ``[standardised state, action code]`` (module docstring).

    Args:
        input_dim: dimension of the state (``source="state"``) or of one agent's observation
            (``source="obs"``; the agents' observations are concatenated).
        n_agents, n_actions: joint action sizes.
        dim: d.
        source: ``"state"`` (global state) or ``"obs"`` (concatenated observations).
        action_encoding: ``"joint"`` or ``"agents"``.
        bandwidth, action_scale: kernel widths (module docstring).
        seed: the draw of ``omega, nu, b``.
        mean, std: standardisation of the input; set by ``fit`` or given.
    """

    def __init__(
        self,
        input_dim: int,
        n_agents: int,
        n_actions: int,
        dim: int = DEFAULT_DIM,
        *,
        source: str = "state",
        action_encoding: str = "joint",
        bandwidth: float = DEFAULT_BANDWIDTH,
        action_scale: float = DEFAULT_ACTION_SCALE,
        seed: int = 0,
        mean=None,
        std=None,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"source: expected one of {list(SOURCES)}, got {source!r}")
        if action_encoding not in ACTION_ENCODINGS:
            raise ValueError(f"action_encoding: expected one of {list(ACTION_ENCODINGS)}, got {action_encoding!r}")
        for name, v in (("input_dim", input_dim), ("n_agents", n_agents), ("n_actions", n_actions), ("dim", dim)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not (np.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth: expected a positive number, got {bandwidth!r}")
        if not (np.isfinite(action_scale) and action_scale >= 0):
            raise ValueError(f"action_scale: expected a non-negative number, got {action_scale!r}")
        if action_encoding == "joint" and n_actions**n_agents > MAX_JOINT_ACTIONS:
            raise ValueError(f"action_encoding: {n_actions}^{n_agents} joint actions exceed {MAX_JOINT_ACTIONS}; use 'agents'")
        self.source, self.action_encoding = source, action_encoding
        self.n_agents, self.n_actions, self.dim = int(n_agents), int(n_actions), int(dim)
        self.input_dim = int(input_dim) * (self.n_agents if source == "obs" else 1)
        self.fields = (source,)
        self.bandwidth, self.action_scale, self.seed = float(bandwidth), float(action_scale), int(seed)
        rng = np.random.default_rng(self.seed)
        k = self.input_dim
        self.omega = rng.normal(0.0, 1.0 / (self.bandwidth * np.sqrt(k)), size=(k, self.dim))
        n_codes = self.n_actions**self.n_agents if action_encoding == "joint" else self.n_agents * self.n_actions
        self.nu = rng.normal(0.0, self.action_scale, size=(n_codes, self.dim))
        self.offset = rng.uniform(0.0, 2.0 * np.pi, size=self.dim)
        self.mean = np.zeros(k) if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = np.ones(k) if std is None else np.asarray(std, dtype=np.float64)
        if self.mean.shape != (k,) or self.std.shape != (k,):
            raise ValueError(f"mean/std: expected shape [{k}]")

    @classmethod
    def for_spec(cls, spec, dim: int = DEFAULT_DIM, source: str = "state", **kwargs) -> RandomFourierFeatures:
        """For a ``deep.data.schema.DatasetSpec``."""
        input_dim = spec.state_dim if source == "state" else spec.obs_dim
        return cls(input_dim, spec.n_agents, spec.n_actions, dim, source=source, **kwargs)

    def _inputs(self, fields: Mapping[str, np.ndarray], steps: int) -> np.ndarray:
        if self.source not in fields:
            raise ValueError(f"fields: the feature map needs '{self.source}'")
        x = np.asarray(fields[self.source], dtype=np.float64)[:, :steps]
        x = x.reshape(x.shape[0], x.shape[1], -1)
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"{self.source}: expected {self.input_dim} values per step, got {x.shape[-1]}")
        return x

    def fit(self, batches) -> RandomFourierFeatures:
        """Set ``mean``/``std`` from an iterable of field dicts (e.g. ``DatasetReader.iter_batches``
        yields ``(index, fields)``), streaming: sums and sums of squares over every step."""
        total = np.zeros(self.input_dim)
        squares = np.zeros(self.input_dim)
        count = 0
        for item in batches:
            fields = item[1] if isinstance(item, tuple) else item
            x = np.asarray(fields[self.source], dtype=np.float64).reshape(-1, self.input_dim)
            total += x.sum(axis=0)
            squares += (x * x).sum(axis=0)
            count += x.shape[0]
        if count == 0:
            raise ValueError("batches: no data to standardise the features with")
        self.mean = total / count
        var = np.maximum(squares / count - self.mean**2, 0.0)
        std = np.sqrt(var)
        self.std = np.where(std < STD_FLOOR, 1.0, std)
        return self

    def _state_phase(self, fields: Mapping[str, np.ndarray], steps: int) -> np.ndarray:
        x = (self._inputs(fields, steps) - self.mean) / self.std
        return x @ self.omega + self.offset

    def _action_phase(self, actions: np.ndarray) -> np.ndarray:
        a = _check_actions(actions, self.n_agents, self.n_actions) if actions.ndim == 3 else np.asarray(actions, dtype=np.int64)
        if self.action_encoding == "joint":
            return self.nu[joint_action_index(a, self.n_actions)]
        codes = a + self.n_actions * np.arange(self.n_agents)
        return self.nu[codes].sum(axis=-2)

    def __call__(self, fields, actions, index=None) -> np.ndarray:
        a = _check_actions(actions, self.n_agents, self.n_actions)
        phase = self._state_phase(fields, a.shape[1]) + self._action_phase(a)
        return np.cos(phase) / np.sqrt(self.dim)

    def unilateral(self, fields, actions, player, index=None) -> np.ndarray:
        a = _check_actions(actions, self.n_agents, self.n_actions)
        if not 0 <= player < self.n_agents:
            raise ValueError(f"player: expected an agent in [0, {self.n_agents - 1}], got {player}")
        alt = np.repeat(a[:, :, None, :], self.n_actions, axis=2)
        alt[..., player] = np.arange(self.n_actions)
        phase = self._state_phase(fields, a.shape[1])[:, :, None, :] + self._action_phase(alt)
        return np.cos(phase) / np.sqrt(self.dim)

    def joint(self, fields, steps, index=None) -> np.ndarray:
        table = all_joint_actions(self.n_agents, self.n_actions)
        phase = self._state_phase(fields, steps)[:, :, None, :] + self._action_phase(table)[None, None]
        return np.cos(phase) / np.sqrt(self.dim)

    def describe(self) -> dict:
        return {
            "kind": "random-fourier",
            "dim": self.dim,
            "source": self.source,
            "action_encoding": self.action_encoding,
            "bandwidth": self.bandwidth,
            "action_scale": self.action_scale,
            "seed": self.seed,
        }


class RewardModelFeatures(FeatureMap):
    """The penultimate layer of a reward model as ``psi(s, a)`` (torch, imported here lazily).

    Args:
        model: a ``torch.nn.Module`` (or an object with a ``.net`` module, as the loaded reward
            models of ``deep.marlhf``) taking ``(obs [B, T, m, obs_dim], actions [B, T, m])``.
        n_agents, n_actions, obs_dim: sizes of the dataset.
        call: optional ``call(model, obs, actions) -> Tensor`` returning the features; default:
            ``model.features(obs, actions)`` when the module has that method, else the input of
            its last ``torch.nn.Linear`` submodule during ``model(obs, actions)``.
        normalize: scale every per-step feature vector to unit norm (Assumption 1's
            ``||psi|| <= 1``, and a scale-free bonus).
        device: torch device of the model.

    Per-agent outputs ``[B, T, m, k]`` are concatenated over agents into ``[B, T, m k]``.
    """

    def __init__(
        self,
        model,
        n_agents: int,
        n_actions: int,
        obs_dim: int,
        *,
        call: Callable | None = None,
        normalize: bool = True,
        device: str = "cpu",
        name: str = "reward-model",
    ) -> None:
        import torch

        self._torch = torch
        self.module = getattr(model, "net", model)
        self.n_agents, self.n_actions, self.obs_dim = int(n_agents), int(n_actions), int(obs_dim)
        self.call, self.normalize, self.device, self.name = call, bool(normalize), torch.device(device), name
        self.fields = ("obs",)
        probe = self({"obs": np.zeros((1, 2, self.n_agents, self.obs_dim), np.float32)}, np.zeros((1, 1, self.n_agents), np.int64))
        self.dim = int(probe.shape[-1])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, spec, device: str = "cpu", **kwargs) -> RewardModelFeatures:
        """A reward model saved by ``deep.marlhf.reward_model`` (``load_reward_model``)."""
        from marlcov.deep.marlhf.reward_model import load_reward_model

        return cls(load_reward_model(path, device), spec.n_agents, spec.n_actions, spec.obs_dim, device=device, name=str(path), **kwargs)

    def _penultimate(self, obs, actions):
        torch = self._torch
        if self.call is not None:
            return self.call(self.module, obs, actions)
        if hasattr(self.module, "features"):
            return self.module.features(obs, actions)
        linears = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise ValueError("model: no 'features' method and no torch.nn.Linear layer to take the penultimate layer from; pass call=")
        captured = []
        handle = linears[-1].register_forward_hook(lambda mod, inputs, out: captured.append(inputs[0]))
        try:
            self.module(obs, actions)
        finally:
            handle.remove()
        return captured[-1]

    def __call__(self, fields, actions, index=None) -> np.ndarray:
        torch = self._torch
        a = _check_actions(actions, self.n_agents, self.n_actions)
        if "obs" not in fields:
            raise ValueError("fields: the reward-model feature map needs 'obs'")
        B, T = a.shape[:2]
        obs = torch.as_tensor(np.asarray(fields["obs"])[:, :T], dtype=torch.float32, device=self.device)
        act = torch.as_tensor(a, dtype=torch.long, device=self.device)
        with torch.no_grad():
            out = self._penultimate(obs, act)
        x = out.detach().to("cpu", torch.float64).numpy().reshape(B, T, -1)
        if self.normalize:
            norm = np.linalg.norm(x, axis=-1, keepdims=True)
            x = np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)
        return x

    def describe(self) -> dict:
        return {"kind": "reward-model", "dim": self.dim, "model": self.name, "normalize": self.normalize}


class FileFeatures(FeatureMap):
    """User-supplied features of the dataset's trajectories at their recorded actions.

    Args:
        path: ``.npy`` holding ``[N, H, d]`` (memory-mapped, read by index), or ``.h5``/``.hdf5``
            with a dataset ``key`` of that shape and, optionally, ``deviation_key`` of shape
            ``[N, H, m, n_actions, d]``: the features with agent i's action replaced by each of its
            actions (the others' recorded), which the unilateral measure needs.
        n_agents, n_actions: sizes of the joint action.

    Features exist only where the file has them: other joint actions (the uniform measure, and
    the unilateral one without ``deviation_key``) raise NotImplementedError, which the
    diagnostic reports as a measure it could not compute.
    """

    def __init__(
        self, path: str | os.PathLike, n_agents: int, n_actions: int, key: str = "features", deviation_key: str = "deviation_features"
    ) -> None:
        self.path = Path(path)
        self.n_agents, self.n_actions = int(n_agents), int(n_actions)
        self.fields = ("actions",)
        suffix = self.path.suffix.lower()
        self._deviations = None
        if suffix == ".npy":
            self._features = np.load(self.path, mmap_mode="r")
        elif suffix in (".h5", ".hdf5"):
            import h5py

            self._file = h5py.File(self.path, "r")
            if key not in self._file:
                raise ValueError(f"{self.path}: no dataset '{key}' (expected [N, H, d] features)")
            self._features = self._file[key]
            if deviation_key in self._file:
                self._deviations = self._file[deviation_key]
        else:
            raise ValueError(f"{self.path}: expected a .npy or .h5/.hdf5 feature file")
        if len(self._features.shape) != 3:
            raise ValueError(f"{self.path}: expected features of shape [N, H, d], got {list(self._features.shape)}")
        self.dim = int(self._features.shape[-1])
        if self._deviations is not None and tuple(self._deviations.shape[1:]) != (
            self._features.shape[1],
            self.n_agents,
            self.n_actions,
            self.dim,
        ):
            raise ValueError(f"{self.path}: '{deviation_key}' expected shape [N, H, m, n_actions, d], got {list(self._deviations.shape)}")

    @property
    def n_trajectories(self) -> int:
        return int(self._features.shape[0])

    def _rows(self, source, index) -> np.ndarray:
        if index is None:
            raise ValueError("index: features from a file are looked up by trajectory index")
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_trajectories):
            raise ValueError(f"index: expected trajectory indices in [0, {self.n_trajectories - 1}]")
        unique, inverse = np.unique(idx, return_inverse=True)
        return np.asarray(source[unique], dtype=np.float64)[inverse]

    def __call__(self, fields, actions, index=None) -> np.ndarray:
        if "actions" not in fields or not np.array_equal(np.asarray(actions), np.asarray(fields["actions"])[:, : np.shape(actions)[1]]):
            raise NotImplementedError(f"{self.path}: features are given only at the dataset's recorded actions")
        return self._rows(self._features, index)[:, : np.shape(actions)[1]]

    def unilateral(self, fields, actions, player, index=None) -> np.ndarray:
        if self._deviations is None:
            raise NotImplementedError(f"{self.path}: no deviation features in the file")
        if "actions" not in fields or not np.array_equal(np.asarray(actions), np.asarray(fields["actions"])[:, : np.shape(actions)[1]]):
            raise NotImplementedError(f"{self.path}: deviation features are given around the recorded actions only")
        return self._rows(self._deviations, index)[:, : np.shape(actions)[1], player]

    def joint(self, fields, steps, index=None) -> np.ndarray:
        raise NotImplementedError(f"{self.path}: features of arbitrary joint actions are not in the file")

    def describe(self) -> dict:
        return {"kind": "file", "dim": self.dim, "path": str(self.path), "deviations": self._deviations is not None}


def make_feature_map(features: Any, spec, *, dim: int = DEFAULT_DIM, seed: int = 0, device: str = "cpu") -> FeatureMap:
    """A feature map from the CLI's ``--features`` value and a dataset spec.

    ``"random"`` (random Fourier features of the global state), ``"random-obs"`` (of the
    concatenated observations), ``"reward-model:PATH"`` (a saved reward model), a path to an
    ``.npy``/``.h5`` features file, or a ``FeatureMap`` instance (returned as is).
    """
    if isinstance(features, FeatureMap):
        return features
    if not isinstance(features, str):
        raise ValueError(f"features: expected 'random', 'random-obs', 'reward-model:PATH' or a file path, got {features!r}")
    if features in ("random", "random-state"):
        return RandomFourierFeatures.for_spec(spec, dim, "state", seed=seed)
    if features == "random-obs":
        return RandomFourierFeatures.for_spec(spec, dim, "obs", seed=seed)
    if features.startswith("reward-model:"):
        return RewardModelFeatures.from_checkpoint(features.split(":", 1)[1], spec, device)
    if features == "reward-model":
        raise ValueError("features: 'reward-model' needs the checkpoint, as 'reward-model:PATH'")
    path = Path(features)
    if not path.exists():
        raise ValueError(f"features: {features!r} is neither 'random', 'random-obs', 'reward-model:PATH' nor an existing file")
    return FileFeatures(path, spec.n_agents, spec.n_actions)
