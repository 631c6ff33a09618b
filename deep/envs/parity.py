"""Fidelity of the batched JaxMARL MPE against mpe2 (PettingZoo's MPE) on replayed episodes.

Both environments start from the same world (mpe2's seeded reset, copied into a JaxMARL
``State``: the two libraries draw their initial worlds differently) and play the same joint
actions; the harness reports the largest absolute differences of the controlled agents'
observations and rewards and of all entity positions (which covers the prey of
simple_tag_v3). mpe2 computes in float64, JaxMARL in float32, so differences of order 1e-6
relative to the magnitudes are expected and nothing larger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch

from marlcov.deep.envs.mpe import HORIZON, N_MOVES, MPEBatch

MPE2_MODULES = {
    "simple_spread_v3": "mpe2.simple_spread_v3",
    "simple_tag_v3": "mpe2.simple_tag_v3",
    "simple_reference_v3": "mpe2.simple_reference_v3",
}


def mpe2_env(name: str, horizon: int = HORIZON, local_ratio: float = 0.5, num_agents: int = 3):
    """mpe2's parallel environment of ``name`` with discrete actions and ``max_cycles = horizon``."""
    import importlib

    module = importlib.import_module(MPE2_MODULES[name])
    kwargs = {"max_cycles": horizon, "continuous_actions": False}
    if name == "simple_spread_v3":
        kwargs.update(N=num_agents, local_ratio=local_ratio)
    elif name == "simple_reference_v3":
        kwargs.update(local_ratio=local_ratio)
    return module.parallel_env(**kwargs)


def jax_state_from_mpe2(name: str, world):
    """The JaxMARL ``State`` of an mpe2 world (entities in the same order in both libraries)."""
    from jaxmarl.environments.mpe.simple import State

    p_pos = np.stack([e.state.p_pos for e in world.entities]).astype(np.float32)
    p_vel = np.stack([e.state.p_vel for e in world.entities]).astype(np.float32)
    c = np.stack([a.state.c for a in world.agents]).astype(np.float32)
    goal = None
    if name == "simple_reference_v3":
        # JaxMARL's goal[j] is the landmark agent j must reach; mpe2 stores it on the other agent.
        landmark_index = {id(lm): k for k, lm in enumerate(world.landmarks)}
        goal = jnp.asarray([landmark_index[id(world.agents[1 - j].goal_b)] for j in range(2)], dtype=jnp.int32)
    return State(p_pos=jnp.asarray(p_pos), p_vel=jnp.asarray(p_vel), c=jnp.asarray(c), done=jnp.array(False), step=jnp.array(0), goal=goal)


@dataclass(frozen=True)
class MPE2Episode:
    """One mpe2 episode: controlled agents' ``obs [T+1, m, d]``, ``rewards [T, m]``, entity
    ``positions [T+1, E, 2]``, its length and the JaxMARL state of its first world."""

    obs: np.ndarray
    rewards: np.ndarray
    positions: np.ndarray
    length: int
    initial_state: object


def replay_mpe2(name: str, seed: int, actions: np.ndarray, controlled: Sequence[str], **env_kwargs) -> MPE2Episode:
    """Play the joint ``actions [T, n_all]`` (all agents, mpe2's agent order) in mpe2 from its
    reset with ``seed``; stops early if mpe2 ends the episode first."""
    env = mpe2_env(name, **env_kwargs)
    obs, _ = env.reset(seed=int(seed))
    world = env.unwrapped.world
    names = list(env.possible_agents)
    init = jax_state_from_mpe2(name, world)
    all_obs = [np.stack([obs[a] for a in controlled])]
    positions = [np.stack([e.state.p_pos for e in world.entities])]
    rewards = []
    for t in range(actions.shape[0]):
        if not env.agents:
            break
        obs, rew, term, trunc, _ = env.step({a: int(actions[t, i]) for i, a in enumerate(names)})
        all_obs.append(np.stack([obs[a] for a in controlled]))
        rewards.append([rew[a] for a in controlled])
        positions.append(np.stack([e.state.p_pos for e in world.entities]))
        if all(term[a] or trunc[a] for a in names):
            break
    env.close()
    return MPE2Episode(np.asarray(all_obs), np.asarray(rewards), np.asarray(positions), len(rewards), init)


class ReplayPolicy:
    """A policy that plays recorded actions ``[T, B, k]`` (used for the tag prey in parity runs)."""

    name = "replay"

    def __init__(self, actions: np.ndarray) -> None:
        self.actions = torch.as_tensor(np.asarray(actions, dtype=np.int64))

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        return self.actions[t].to(obs.device)


def random_joint_actions(name: str, n_episodes: int, horizon: int = HORIZON, seed: int = 0, num_agents: int = 3) -> np.ndarray:
    """Uniform random joint actions ``[K, T, n_all]`` in mpe2's agent order."""
    rng = np.random.default_rng(seed)
    if name == "simple_tag_v3":
        return rng.integers(0, N_MOVES, size=(n_episodes, horizon, 4))
    if name == "simple_reference_v3":
        return rng.integers(0, 50, size=(n_episodes, horizon, 2))
    return rng.integers(0, N_MOVES, size=(n_episodes, horizon, num_agents))


def parity_report(name: str, seeds: Sequence[int], actions: np.ndarray, horizon: int = HORIZON) -> dict:
    """Max abs differences between ``MPEBatch`` and mpe2 on the episodes ``seeds[k]`` with joint
    actions ``actions[k] [T, n_all]``; also both episode lengths."""
    K = len(seeds)
    prey = None
    if name == "simple_tag_v3":
        prey = ReplayPolicy(np.transpose(actions[:, :, 3:], (1, 0, 2)))
    env = MPEBatch(name, K, horizon=horizon, prey_policy=prey)
    controlled = env.spec.agent_names
    episodes = [replay_mpe2(name, s, a, controlled, horizon=horizon) for s, a in zip(seeds, actions)]
    init = jax.tree.map(lambda *xs: jnp.stack(xs), *[e.initial_state for e in episodes])
    m = env.spec.n_agents
    step = env.reset(np.asarray(seeds), initial_state=init)
    obs, rewards, positions = [step.obs.clone()], [], [step.state[:, : 2 * len(episodes[0].positions[0])].clone()]
    length = 0
    while not bool(step.done.all()):
        step = env.step(torch.as_tensor(actions[:, length, :m]))
        length += 1
        obs.append(step.obs.clone())
        rewards.append(step.rewards.clone())
        positions.append(step.state[:, : positions[0].shape[1]].clone())
    ours_obs = torch.stack(obs, 1).numpy()
    ours_rew = torch.stack(rewards, 1).numpy()
    ours_pos = torch.stack(positions, 1).numpy().reshape(K, length + 1, -1, 2)
    theirs_len = {e.length for e in episodes}
    T = min(length, min(theirs_len))
    ref_obs = np.stack([e.obs[: T + 1] for e in episodes])
    ref_rew = np.stack([e.rewards[:T] for e in episodes])
    ref_pos = np.stack([e.positions[: T + 1] for e in episodes])
    return {
        "env": name,
        "episodes": K,
        "length_ours": length,
        "length_mpe2": sorted(theirs_len),
        "obs_max_abs": float(np.abs(ours_obs[:, : T + 1] - ref_obs).max()),
        "rewards_max_abs": float(np.abs(ours_rew[:, :T] - ref_rew).max()),
        "positions_max_abs": float(np.abs(ours_pos[:, : T + 1] - ref_pos).max()),
        "obs_max_magnitude": float(np.abs(ref_obs).max()),
        "rewards_max_magnitude": float(np.abs(ref_rew).max()),
    }
