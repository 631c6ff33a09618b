"""Batched simple_spread_v3 with continuous actions (JaxMARL's ``action_type="Continuous"``),
its scripted behaviour policies and its dataset files.

``MPEBatch`` (``mpe.py``) holds discrete actions only, so the continuous variant lives here,
with the same conventions: episodes of exactly ``horizon`` steps through JaxMARL's
non-resetting ``step_env``, the true final observation kept, environment b reset with seed
``seed + b``.

Actions: each agent's action is a force direction ``u = (u_x, u_y) in [-1, 1]^2`` (clipped),
handed to JaxMARL as its 5-vector ``[0, max(-u_x, 0), max(u_x, 0), max(-u_y, 0), max(u_y, 0)]``
(JaxMARL decodes ``(a[2] - a[1], a[4] - a[3]) * accel``).

Dataset files are those of the one schema (``deep/data/schema.py``) with continuous actions:
float32 ``actions [N, H, m, 2]``, ``env_config["actions"] = "continuous"`` and
``env_config["action_dim"] = 2``, ``avail [N, H, m, 1]`` all True. Files of the retired format
``marlcov.deep-dataset-continuous/1`` are read in place by ``deep.data.external.open_dataset``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np
import torch
from jaxmarl.environments.mpe import SimpleSpreadMPE  # noqa: E402
from jaxmarl.environments.mpe.default_params import CONTINUOUS_ACT  # noqa: E402

from marlcov.deep.data.external import continuous_config, continuous_trajectories
from marlcov.deep.data.hdf5 import DatasetWriter
from marlcov.deep.data.schema import DatasetSpec, TrajectoryBatch
from marlcov.deep.envs.mpe import DEFAULT_LOCAL_RATIO, HORIZON, MAX_SEED, global_state  # first: it imports jaxmarl with its prints silenced

CONTINUOUS_ENV_NAMES = ("simple_spread_v3",)
ACTION_DIM = 2
#: Offset of the landmark positions (relative to the agent) in a simple_spread observation.
LANDMARK_OFFSET = 4
#: Gain of the scripted landmark-seeking controller (force = gain * relative position, clipped).
SEEK_GAIN = 2.0
#: Reset seeds of ``collect_continuous_dataset(seed=k)`` start at ``k * SEED_STRIDE``, so datasets
#: of different seeds share no episode (up to a million episodes each).
SEED_STRIDE = 1_000_003

ContinuousPolicy = Callable[[torch.Tensor, int], Any]


@functools.cache
def _compiled(horizon: int, local_ratio: float, num_agents: int):
    env = SimpleSpreadMPE(
        num_agents=num_agents, num_landmarks=num_agents, local_ratio=local_ratio, max_steps=horizon - 1, action_type=CONTINUOUS_ACT
    )
    agents = list(env.agents)

    def reset_one(key):
        key, k_reset = jax.random.split(key)
        st = env.reset(k_reset)[1]
        obs = env.get_obs(st)
        return key, st, jnp.stack([obs[a] for a in agents]), global_state("simple_spread_v3", env, st)

    def step_one(key, st, u):
        key, k_step = jax.random.split(key)
        u = jnp.clip(u, -1.0, 1.0)
        zero = jnp.zeros_like(u[:, :1])
        five = jnp.concatenate(
            [zero, jnp.maximum(-u[:, :1], 0), jnp.maximum(u[:, :1], 0), jnp.maximum(-u[:, 1:], 0), jnp.maximum(u[:, 1:], 0)], axis=1
        )
        obs, st, rew, _, _ = env.step_env(k_step, st, {a: five[i] for i, a in enumerate(agents)})
        r = jnp.stack([rew[a] for a in agents]).astype(jnp.float32)
        return key, st, jnp.stack([obs[a] for a in agents]), global_state("simple_spread_v3", env, st), r

    return env, jax.jit(jax.vmap(reset_one)), jax.jit(jax.vmap(step_one))


class ContinuousMPEBatch:
    """``batch_size`` copies of continuous-action simple_spread_v3 stepped by one compiled step
    (CPU jax; tensors handed back as torch CPU tensors)."""

    def __init__(
        self, name: str, batch_size: int, *, horizon: int = HORIZON, local_ratio: float = DEFAULT_LOCAL_RATIO, num_agents: int = 3
    ) -> None:
        if name not in CONTINUOUS_ENV_NAMES:
            raise ValueError(f"name: expected one of {list(CONTINUOUS_ENV_NAMES)}, got {name!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon: expected a positive integer, got {horizon!r}")
        self.env, self._reset_fn, self._step_fn = _compiled(int(horizon), float(local_ratio), int(num_agents))
        self.batch_size = int(batch_size)
        agents = tuple(self.env.agents)
        _, st0 = jax.eval_shape(self.env.reset, jax.random.PRNGKey(0))
        state_dim = jax.eval_shape(lambda s: global_state(name, self.env, s), st0).shape[0]
        obs_dim = self.env.observation_spaces[agents[0]].shape[0]
        config = {
            "horizon": int(horizon),
            "local_ratio": float(local_ratio),
            "num_agents": int(num_agents),
            **continuous_config(ACTION_DIM),
        }
        self.spec = DatasetSpec(name, config, agents, int(obs_dim), int(state_dim), 1, int(horizon))
        self.t: int | None = None

    def reset(self, seeds: int | Sequence[int] | np.ndarray) -> torch.Tensor:
        """Start all episodes (``seeds``: one base seed or ``[B]`` seeds); returns ``obs [B, m, obs_dim]``."""
        arr = np.asarray(seeds, dtype=np.int64)
        if arr.ndim == 0:
            arr = arr + np.arange(self.batch_size, dtype=np.int64)
        if arr.shape != (self.batch_size,) or arr.min() < 0 or arr.max() > MAX_SEED:
            raise ValueError(f"seeds: expected one base seed or {self.batch_size} seeds in [0, {MAX_SEED}]")
        self.seeds = arr
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(arr.astype(np.uint32)))
        self._keys, self._state, obs, state_vec = self._reset_fn(keys)
        self.t = 0
        self.state = torch.from_numpy(np.array(state_vec))
        return torch.from_numpy(np.array(obs))

    def step(self, actions) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance by ``actions [B, m, 2]`` (clipped to [-1, 1]); returns ``(obs, rewards [B, m])``."""
        if self.t is None or self.t >= self.spec.horizon:
            raise RuntimeError("step: call reset first (episodes last exactly horizon steps)")
        u = np.asarray(torch.as_tensor(actions, dtype=torch.float32).cpu(), dtype=np.float32)
        if u.shape != (self.batch_size, self.spec.n_agents, ACTION_DIM):
            raise ValueError(f"actions: expected shape {[self.batch_size, self.spec.n_agents, ACTION_DIM]}, got {list(u.shape)}")
        if not np.isfinite(u).all():
            raise ValueError("actions: expected finite values")
        self._keys, self._state, obs, state_vec, r = self._step_fn(self._keys, self._state, jnp.asarray(u))
        self.t += 1
        self.state = torch.from_numpy(np.array(state_vec))
        return torch.from_numpy(np.array(obs)), torch.from_numpy(np.array(r))

    def rollout(
        self, policy: ContinuousPolicy, seeds, *, source: str = "unknown", agent_policy: Sequence[str] | None = None
    ) -> TrajectoryBatch:
        """Play B episodes with ``policy(obs [B, m, obs_dim], t) -> actions [B, m, 2]``; every
        step is real, so ``avail [B, H, m, 1]`` is all True."""
        spec, B = self.spec, self.batch_size
        H, m = spec.horizon, spec.n_agents
        o = self.reset(seeds)
        obs = np.empty((B, H + 1, m, spec.obs_dim), np.float32)
        state = np.empty((B, H + 1, spec.state_dim), np.float32)
        actions = np.empty((B, H, m, ACTION_DIM), np.float32)
        rewards = np.empty((B, H, m), np.float32)
        obs[:, 0], state[:, 0] = o.numpy(), self.state.numpy()
        for t in range(H):
            a = torch.as_tensor(policy(o, t), dtype=torch.float32).clamp(-1.0, 1.0)
            o, r = self.step(a)
            actions[:, t], obs[:, t + 1], state[:, t + 1], rewards[:, t] = a.cpu().numpy(), o.numpy(), self.state.numpy(), r.numpy()
        avail = np.ones((B, H, m, 1), dtype=bool)
        return TrajectoryBatch(obs, state, actions, avail, rewards, self.seeds.copy(), source, agent_policy)


# ----------------------------------------------------------------------------- behaviour policies
class LandmarkAssignmentPolicy:
    """Scripted simple_spread behaviour with several equally good coordination patterns: at
    the start of each episode a uniformly drawn permutation assigns agents to landmarks, and
    agent i pushes towards its landmark (force ``SEEK_GAIN * relative position``, clipped) plus
    Gaussian noise of std ``noise``. Across episodes the joint behaviour is multimodal (one
    mode per assignment), the situation of the score-decomposition paper."""

    name = "assignment"

    def __init__(self, n_agents: int, noise: float = 0.1, seed: int = 0) -> None:
        self.n_agents, self.noise = int(n_agents), float(noise)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.assignment: torch.Tensor | None = None

    def __call__(self, obs: torch.Tensor, t: int) -> torch.Tensor:
        B, m = obs.shape[0], self.n_agents
        if t == 0 or self.assignment is None or self.assignment.shape[0] != B:
            self.assignment = torch.argsort(torch.rand(B, m, generator=self.generator), dim=-1)
        rel = obs[..., LANDMARK_OFFSET : LANDMARK_OFFSET + 2 * m].reshape(B, m, m, 2)
        target = rel.gather(2, self.assignment[:, :, None, None].expand(B, m, 1, 2)).squeeze(2)
        u = SEEK_GAIN * target + self.noise * torch.randn(B, m, ACTION_DIM, generator=self.generator)
        return u.clamp(-1.0, 1.0)


class UniformContinuousPolicy:
    """Each agent draws its action uniformly from [-1, 1]^2."""

    name = "uniform"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, obs: torch.Tensor, t: int) -> torch.Tensor:
        return 2.0 * torch.rand(obs.shape[0], obs.shape[1], ACTION_DIM, generator=self.generator) - 1.0


# ----------------------------------------------------------------------------- dataset files
def write_continuous_dataset(
    path: str | os.PathLike, spec: DatasetSpec, batches: Sequence[TrajectoryBatch], overwrite: bool = False
) -> Path:
    """Write ``batches`` as one dataset file of the schema (``DatasetWriter``, atomically)."""
    with DatasetWriter(path, spec, overwrite=overwrite) as writer:
        for batch in batches:
            writer.append(batch)
    return Path(path)


def read_continuous_dataset(path: str | os.PathLike) -> tuple[DatasetSpec, TrajectoryBatch]:
    """``(spec, trajectories)`` of a continuous-action dataset, read whole through
    ``open_dataset`` (the schema or the retired continuous format); ValueError for discrete
    actions (``deep.data.external.continuous_trajectories``)."""
    return continuous_trajectories(path)


def collect_continuous_dataset(
    path: str | os.PathLike,
    n_expert: int,
    n_random: int,
    *,
    name: str = "simple_spread_v3",
    horizon: int = HORIZON,
    num_agents: int = 3,
    noise: float = 0.1,
    batch_size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """A continuous-action dataset of the schema: ``n_expert`` episodes of
    ``LandmarkAssignmentPolicy`` (source "expert") and ``n_random`` of ``UniformContinuousPolicy``
    (source "random"), each batch appended to the file as it is played."""
    if n_expert < 0 or n_random < 0 or n_expert + n_random < 1:
        raise ValueError(f"n_expert, n_random: expected non-negative counts with a positive sum, got {n_expert}, {n_random}")
    last_seed = (MAX_SEED - n_expert - n_random + 1) // SEED_STRIDE
    if not 0 <= int(seed) <= last_seed:
        raise ValueError(f"seed: expected an integer in [0, {last_seed}] (reset seeds start at seed * {SEED_STRIDE}), got {seed!r}")
    next_seed = int(seed) * SEED_STRIDE
    spec = ContinuousMPEBatch(name, 1, horizon=horizon, num_agents=num_agents).spec
    with DatasetWriter(path, spec, overwrite=overwrite) as writer:
        for count, policy, tag in (
            (n_expert, LandmarkAssignmentPolicy(num_agents, noise, seed), "expert"),
            (n_random, UniformContinuousPolicy(seed + 1), "random"),
        ):
            done = 0
            while done < count:
                B = min(batch_size, count - done)
                env = ContinuousMPEBatch(name, B, horizon=horizon, num_agents=num_agents)
                writer.append(env.rollout(policy, next_seed, source=tag))
                next_seed += B
                done += B
    return Path(path)
