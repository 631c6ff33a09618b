"""Batched SMAX (JaxMARL's re-implementation of SMAC micro-management) seen from torch.

Results on these tasks are *SMAX* results, not SMAC results (``docs/smax.md`` lists the
differences). The controlled team is the allies; the enemies follow JaxMARL's built-in
heuristic policy (``HeuristicEnemySMAX``: each enemy attacks the closest visible ally), drawn
inside the compiled step from the environment's own key, so an episode is a function of its
seed and the allies' actions.

Episode ends and the fixed-size dataset layout (``deep/data/schema.py`` has no length field):

* An episode ends when one team is wiped out or after ``horizon`` steps. JaxMARL tests
  ``step >= max_steps`` *before* incrementing the counter, so the environment is built with
  ``max_steps = horizon - 1`` to give at most ``horizon`` steps.
* All B environments advance in lock-step; a finished one is *frozen*: its state stops
  changing, its rewards are 0 and its availability mask is all False.
* ``rollout`` stores every episode padded to ``horizon`` steps. A padded step has
  ``avail`` all False, action ``STOP_ACTION``, reward 0, and ``obs``/``state`` repeating the
  final observation. During a real step every agent has at least its stop action available
  (dead agents too), so ``episode_lengths(avail)`` recovers the lengths exactly, and
  ``episode_wins(state_final, ...)`` recovers the outcome from the final global state.
* ``done`` of ``SMAXStep`` is True from the step that ended the episode on; ``won`` is True
  for episodes that ended with every enemy dead and an ally alive (a mutual wipe-out is a draw,
  as in JaxMARL).
* Rewards are JaxMARL's team reward, the same for every ally: the enemies' lost health as a
  fraction of their total, divided by the number of enemies, plus ``won_battle_bonus`` (1) on
  a win, so a return lies in ``[0, 2]``.

A *policy* is a callable ``policy(obs, avail, t) -> actions`` as in ``deep.envs.mpe``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from marlcov.deep.data.schema import DatasetSpec, TrajectoryBatch  # noqa: E402
from marlcov.deep.envs.mpe import MAX_SEED, Policy, UniformRandomPolicy, jax_device, silenced_stdout, to_torch  # noqa: E402

with silenced_stdout():
    from jaxmarl.environments.smax import map_name_to_scenario  # noqa: E402
    from jaxmarl.environments.smax.heuristic_enemy_smax_env import HeuristicEnemySMAX  # noqa: E402

#: Maps offered here (JaxMARL scenario names); the dataset's ``env_name`` is ``"smax_" + map``.
MAP_NAMES = ("3m", "2s3z", "5m_vs_6m", "8m", "3s5z")
ENV_PREFIX = "smax_"
ENV_NAMES = tuple(ENV_PREFIX + name for name in MAP_NAMES)
#: JaxMARL's default episode limit (``max_steps = 100``), used for every map.
HORIZON = 100
#: SMAX's discrete actions: 0-3 move (N, E, S, W), 4 stop, 5.. attack enemy j.
STOP_ACTION = 4
N_MOVEMENT_ACTIONS = 5
__all__ = [
    "MAP_NAMES",
    "ENV_NAMES",
    "HORIZON",
    "STOP_ACTION",
    "SMAXSpec",
    "SMAXStep",
    "SMAXBatch",
    "UniformRandomPolicy",
    "episode_lengths",
    "episode_wins",
    "map_of",
]


def map_of(env_name: str) -> str:
    """The map of a SMAX ``env_name`` (``"smax_3m"`` -> ``"3m"``)."""
    if not env_name.startswith(ENV_PREFIX) or env_name[len(ENV_PREFIX) :] not in MAP_NAMES:
        raise ValueError(f"env_name: expected one of {list(ENV_NAMES)}, got {env_name!r}")
    return env_name[len(ENV_PREFIX) :]


@dataclass(frozen=True)
class SMAXSpec:
    """Sizes of a batched SMAX map as seen by the allies."""

    name: str
    agent_names: tuple[str, ...]
    n_enemies: int
    obs_dim: int
    state_dim: int
    n_actions: int
    horizon: int
    config: Mapping[str, Any]

    @property
    def n_agents(self) -> int:
        return len(self.agent_names)

    def dataset_spec(self) -> DatasetSpec:
        """The HDF5 dataset spec of (padded) trajectories of this map."""
        return DatasetSpec(self.name, dict(self.config), self.agent_names, self.obs_dim, self.state_dim, self.n_actions, self.horizon)


class SMAXStep(NamedTuple):
    """One batched observation: ``obs [B, m, obs_dim]``, ``state [B, state_dim]``,
    ``avail [B, m, n_actions]`` (all False once ``done``), ``rewards [B, m]`` of the step that led
    here, ``done [B]`` and ``won [B]``."""

    obs: torch.Tensor
    state: torch.Tensor
    avail: torch.Tensor
    rewards: torch.Tensor
    done: torch.Tensor
    won: torch.Tensor


def episode_lengths(avail: np.ndarray) -> np.ndarray:
    """Episode lengths ``[N]`` of padded trajectories from their masks ``avail [N, H, m, A]``
    (a real step has at least one available action per agent, a padded one none)."""
    avail = np.asarray(avail)
    if avail.ndim != 4:
        raise ValueError(f"avail: expected shape [N, H, m, n_actions], got {list(avail.shape)}")
    return avail.any(axis=(2, 3)).sum(axis=1).astype(np.int64)


def _alive_units(state: np.ndarray, n_units: int) -> np.ndarray:
    """``[..., n_units]`` alive flags from SMAX's world state: a dead unit's features are all zero,
    a living one has health fraction ``> 0`` in its first feature."""
    state = np.asarray(state)
    unit_dim = (state.shape[-1] - 2 * n_units) // n_units
    features = state[..., : n_units * unit_dim].reshape(*state.shape[:-1], n_units, unit_dim)
    return features[..., 0] > 0


def episode_wins(state_final: np.ndarray, n_allies: int, n_enemies: int) -> np.ndarray:
    """Win flags ``[N]`` from the final global states ``[N, state_dim]``: every enemy dead and
    at least one ally alive."""
    alive = _alive_units(state_final, n_allies + n_enemies)
    return alive[..., :n_allies].any(axis=-1) & ~alive[..., n_allies:].any(axis=-1)


def _make_env(map_name: str, horizon: int) -> HeuristicEnemySMAX:
    if map_name not in MAP_NAMES:
        raise ValueError(f"map_name: expected one of {list(MAP_NAMES)}, got {map_name!r}")
    if not isinstance(horizon, (int, np.integer)) or horizon < 2:
        raise ValueError(f"horizon: expected an integer >= 2, got {horizon!r}")
    return HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name), max_steps=int(horizon) - 1)


@functools.cache
def _compiled_functions(map_name: str, horizon: int):
    """The env and its jitted, vmapped ``(reset, step)``, shared by every batch of one map."""
    env = _make_env(map_name, horizon)
    agents = list(env.agents)
    n_allies = env.num_allies

    def observe(st):
        obs = env.get_obs(st)
        avail = env.get_avail_actions(st)
        return (jnp.stack([obs[a] for a in agents]), env.get_world_state(st), jnp.stack([avail[a] for a in agents]).astype(bool))

    def outcome(st):
        alive = st.state.unit_alive
        return jnp.any(alive[:n_allies]) & ~jnp.any(alive[n_allies:])

    def reset_one(key):
        key, k_reset = jax.random.split(key)
        _, st = env.reset(k_reset)
        obs, state_vec, avail = observe(st)
        return key, st, obs, state_vec, avail

    def step_one(key, st, done, actions):
        key, k_step = jax.random.split(key)
        _, new_st, rew, dones, _ = env.step_env(k_step, st, {a: actions[i] for i, a in enumerate(agents)})
        # A finished episode is frozen so that the batch can run on in lock-step.
        new_st = jax.tree.map(lambda old, new: jnp.where(done, old, new), st, new_st)
        now_done = done | dones["__all__"]
        r = jnp.where(done, 0.0, jnp.stack([rew[a] for a in agents])).astype(jnp.float32)
        obs, state_vec, avail = observe(new_st)
        avail = avail & ~now_done
        return key, new_st, obs, state_vec, avail, r, now_done, now_done & outcome(new_st)

    return env, jax.jit(jax.vmap(reset_one)), jax.jit(jax.vmap(step_one))


class SMAXBatch:
    """``batch_size`` copies of one SMAX map against the heuristic enemy, stepped together.

    Args:
        map_name: one of ``MAP_NAMES`` (or ``"smax_" + map``).
        batch_size: number of environments B.
        horizon: episode limit (JaxMARL's 100 by default; SMAC's limits differ per map).
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, map_name: str, batch_size: int, *, horizon: int = HORIZON, device: str | torch.device = "cpu") -> None:
        if map_name.startswith(ENV_PREFIX):
            map_name = map_of(map_name)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.env, self._reset_fn, self._step_fn = _compiled_functions(map_name, int(horizon))
        self.map_name = map_name
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self._jdev = jax_device(self.device)
        env = self.env
        names = tuple(env.agents)
        config = {"map": map_name, "horizon": int(horizon), "enemy": "heuristic/closest", "won_battle_bonus": float(env.won_battle_bonus)}
        self.spec = SMAXSpec(
            ENV_PREFIX + map_name,
            names,
            int(env.num_enemies),
            int(env.observation_spaces[names[0]].shape[0]),
            int(env.state_size),
            int(env.action_spaces[names[0]].n),
            int(horizon),
            config,
        )
        self.t: int | None = None
        self.seeds: np.ndarray | None = None

    def _seed_array(self, seeds) -> np.ndarray:
        B = self.batch_size
        arr = np.asarray(seeds, dtype=np.int64)
        if arr.ndim == 0:
            arr = arr + np.arange(B, dtype=np.int64)
        if arr.shape != (B,):
            raise ValueError(f"seeds: expected one base seed or {B} seeds, got shape {list(arr.shape)}")
        if arr.min() < 0 or arr.max() > MAX_SEED:
            raise ValueError(f"seeds: expected integers in [0, {MAX_SEED}]")
        return arr

    def reset(self, seeds: int | Sequence[int] | np.ndarray) -> SMAXStep:
        """Start all B episodes; environment b is a function of ``seeds[b]`` (or ``seed + b``)
        and the allies' actions alone."""
        self.seeds = self._seed_array(seeds)
        with jax.default_device(self._jdev):
            keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(self.seeds.astype(np.uint32)))
            self._keys, self._state, obs, state_vec, avail = self._reset_fn(keys)
            self._done = jnp.zeros(self.batch_size, dtype=bool)
        self.t = 0
        B, m = self.batch_size, self.spec.n_agents
        zeros = torch.zeros((B, m), dtype=torch.float32, device=self.device)
        false = torch.zeros(B, dtype=torch.bool, device=self.device)
        self._avail, self._done_t = to_torch(avail), false
        return SMAXStep(to_torch(obs), to_torch(state_vec), self._avail, zeros, false, false)

    def step(self, actions) -> SMAXStep:
        """Advance all B environments with ``actions [B, m]``; finished ones stay frozen and
        ignore their actions. An unavailable action of a running episode is a ValueError, as
        in SMAC (a dead agent may only stop)."""
        if self.t is None:
            raise RuntimeError("step: call reset first")
        if self.t >= self.spec.horizon:
            raise RuntimeError(f"step: the episodes reached the limit of {self.spec.horizon} steps; call reset")
        a = torch.as_tensor(actions, device=self.device)
        if a.shape != (self.batch_size, self.spec.n_agents):
            raise ValueError(f"actions: expected shape {[self.batch_size, self.spec.n_agents]}, got {list(a.shape)}")
        if a.is_floating_point() or a.dtype == torch.bool:
            raise ValueError(f"actions: expected integer actions, got dtype {a.dtype}")
        if bool(((a < 0) | (a >= self.spec.n_actions)).any()):
            raise ValueError(f"actions: expected actions in [0, {self.spec.n_actions - 1}]")
        chosen = self._avail.gather(-1, a.long().unsqueeze(-1)).squeeze(-1)
        bad = ~chosen & ~self._done_t[:, None]
        if bool(bad.any()):
            b, i = (int(x) for x in bad.nonzero()[0])
            raise ValueError(f"actions: agent {i} of environment {b} chose action {int(a[b, i])}, which is not available")
        ja = jax.dlpack.from_dlpack(a.to(torch.int32).contiguous())
        out = self._step_fn(self._keys, self._state, self._done, ja)
        self._keys, self._state, obs, state_vec, avail, rewards, self._done, won = out
        self.t += 1
        step = SMAXStep(*(to_torch(x) for x in (obs, state_vec, avail, rewards, self._done, won)))
        self._avail, self._done_t = step.avail, step.done
        return step

    def rollout(self, policy: Policy, seeds, *, source: str = "unknown", agent_policy: Sequence[str] | None = None) -> TrajectoryBatch:
        """Play B episodes with ``policy`` and return them padded to ``horizon`` steps (module
        docstring); ``self.last_lengths`` and ``self.last_wins`` hold their lengths and wins."""
        spec, B = self.spec, self.batch_size
        H, m = spec.horizon, spec.n_agents
        cur = self.reset(seeds)
        obs = torch.empty((B, H + 1, m, spec.obs_dim), dtype=torch.float32, device=self.device)
        state = torch.empty((B, H + 1, spec.state_dim), dtype=torch.float32, device=self.device)
        actions = torch.full((B, H, m), STOP_ACTION, dtype=torch.int16, device=self.device)
        avail = torch.zeros((B, H, m, spec.n_actions), dtype=torch.bool, device=self.device)
        rewards = torch.zeros((B, H, m), dtype=torch.float32, device=self.device)
        obs[:, 0], state[:, 0] = cur.obs, cur.state
        wins = torch.zeros(B, dtype=torch.bool, device=self.device)
        for t in range(H):
            live = ~cur.done
            a = torch.as_tensor(policy(cur.obs, cur.avail, t), device=self.device)
            a = torch.where(live[:, None], a, torch.full_like(a, STOP_ACTION))
            avail[:, t] = cur.avail
            actions[:, t] = a.to(torch.int16)
            cur = self.step(a)
            obs[:, t + 1], state[:, t + 1], rewards[:, t] = cur.obs, cur.state, cur.rewards
            wins |= cur.won
            if bool(cur.done.all()):
                obs[:, t + 2 :] = cur.obs[:, None]
                state[:, t + 2 :] = cur.state[:, None]
                break
        host = [x.cpu().numpy() for x in (obs, state, actions, avail, rewards)]
        self.last_lengths = episode_lengths(host[3])
        self.last_wins = wins.cpu().numpy()
        return TrajectoryBatch(*host, seed=self.seeds.copy(), source=source, agent_policy=agent_policy)
