"""Trajectory sampling and Bradley-Terry preference datasets (MARLHF paper, section 3).

``P(y_i = +1 | tau, tau') = sigma(kappa * (sum_h r_i(s_h, a_h) - sum_h r_i(s'_h, a'_h)))`` with the
logistic function ``sigma`` and steepness ``kappa`` (1 in the paper's theory, a scale on
standardised returns in its experiments). The appendix's proof of Theorem 3 writes
``Ber(exp(r(tau) - r(tau')))``, which is not a probability when ``r(tau) > r(tau')``: an erratum;
the sigmoid of the main text is what is implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .games import GameError, MarkovGame
from .policies import Policy, check_policy


@dataclass(frozen=True)
class Trajectories:
    """``states[n, H+1]`` and joint ``actions[n, H, m]`` (int64)."""

    states: np.ndarray
    actions: np.ndarray


@dataclass(frozen=True, eq=False)
class PreferenceDataset:
    """A preference dataset of a finite game (docs/formats.md).

    Attributes:
        states: ``[N, 2, H+1]`` state indices of ``tau_n`` (index 0) and ``tau'_n`` (index 1).
        actions: ``[N, 2, H, m]`` joint action indices.
        prefs: ``[N, m]`` in {+1, -1}; +1 means player i prefers the first trajectory.
    """

    states: np.ndarray
    actions: np.ndarray
    prefs: np.ndarray

    def __post_init__(self) -> None:
        states = np.asarray(self.states)
        actions = np.asarray(self.actions)
        prefs = np.asarray(self.prefs)
        for name, arr in (("states", states), ("actions", actions), ("prefs", prefs)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise GameError(f"{name}: expected an integer array, got dtype {arr.dtype}")
        if states.ndim != 3 or states.shape[1] != 2:
            raise GameError(f"states: expected shape [N, 2, H+1], got {list(states.shape)}")
        N, _, H1 = states.shape
        if actions.ndim != 4 or actions.shape[:3] != (N, 2, H1 - 1):
            raise GameError(f"actions: expected shape [N, 2, H, m] = {[N, 2, H1 - 1, 'm']}, got {list(actions.shape)}")
        m = actions.shape[3]
        if prefs.shape != (N, m):
            raise GameError(f"prefs: expected shape [N, m] = {[N, m]}, got {list(prefs.shape)}")
        if not np.all(np.isin(prefs, (-1, 1))):
            raise GameError("prefs: expected values in {+1, -1}")
        object.__setattr__(self, "states", states.astype(np.int64, copy=False))
        object.__setattr__(self, "actions", actions.astype(np.int64, copy=False))
        object.__setattr__(self, "prefs", prefs.astype(np.int64, copy=False))

    @property
    def n_pairs(self) -> int:
        return int(self.states.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[2])

    @property
    def n_players(self) -> int:
        return int(self.actions.shape[3])

    def check_against(self, game: MarkovGame) -> None:
        """Raise GameError unless sizes and index ranges fit ``game``."""
        if self.horizon != game.horizon:
            raise GameError(f"actions: dataset horizon {self.horizon} differs from the game's H = {game.horizon}")
        if self.n_players != game.n_players:
            raise GameError(f"actions: dataset has {self.n_players} players, the game {game.n_players}")
        if self.states.size and (self.states.min() < 0 or self.states.max() >= game.n_states):
            raise GameError(f"states: expected indices in [0, {game.n_states - 1}]")
        for i, a in enumerate(game.action_sizes):
            col = self.actions[..., i]
            if col.size and (col.min() < 0 or col.max() >= a):
                raise GameError(f"actions: player {i}'s actions expected in [0, {a - 1}]")

    def __add__(self, other: PreferenceDataset) -> PreferenceDataset:
        return PreferenceDataset(
            np.concatenate([self.states, other.states]),
            np.concatenate([self.actions, other.actions]),
            np.concatenate([self.prefs, other.prefs]),
        )

    def subset(self, index) -> PreferenceDataset:
        return PreferenceDataset(self.states[index], self.actions[index], self.prefs[index])


def _sample_categorical(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw from rows ``probs[n, k]`` with uniforms ``u[n]``."""
    cdf = np.cumsum(probs, axis=-1)
    idx = (u[:, None] > cdf).sum(axis=-1)
    return np.minimum(idx, probs.shape[-1] - 1)


def sample_trajectories(game: MarkovGame, policy: Policy, n: int, seed: int | np.random.Generator | None = None) -> Trajectories:
    """Roll out ``n`` independent episodes of ``policy`` from ``s_1``; vectorised over episodes."""
    policy = check_policy(policy, game)
    rng = np.random.default_rng(seed)
    H, m = game.horizon, game.n_players
    states = np.empty((n, H + 1), dtype=np.int64)
    actions = np.empty((n, H, m), dtype=np.int64)
    states[:, 0] = game.initial_state
    for h in range(H):
        s = states[:, h]
        for i in range(m):
            actions[:, h, i] = _sample_categorical(policy[i][h, s], rng.random(n))
        next_probs = game.transitions[h][(s, *actions[:, h].T)]
        states[:, h + 1] = _sample_categorical(next_probs, rng.random(n))
    return Trajectories(states, actions)


def trajectory_returns(rewards: np.ndarray, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``sum_h r_i(s_h, a_h)`` per player: ``rewards[H, m, S, A..]``, states ``[..., H+1]``,
    actions ``[..., H, m]`` -> ``[..., m]``."""
    H, m = rewards.shape[:2]
    h = np.arange(H)
    per_step = rewards[(h[:, None], np.arange(m)[None, :], states[..., :H, None], *np.moveaxis(actions[..., None, :], -1, 0))]
    return per_step.sum(axis=-2)


def bradley_terry_probability(return_first: np.ndarray, return_second: np.ndarray, steepness: float = 1.0) -> np.ndarray:
    """``P(y = +1) = sigma(kappa * (R(tau) - R(tau')))`` (the logistic model of section 3)."""
    return expit(steepness * (np.asarray(return_first) - np.asarray(return_second)))


def label_pairs(
    game: MarkovGame,
    states: np.ndarray,
    actions: np.ndarray,
    seed: int | np.random.Generator | None = None,
    steepness: float = 1.0,
) -> PreferenceDataset:
    """Draw one Bradley-Terry label per player for given pairs ``states[N,2,H+1]``, ``actions[N,2,H,m]``."""
    rng = np.random.default_rng(seed)
    returns = trajectory_returns(game.rewards, states, actions)
    p = bradley_terry_probability(returns[:, 0], returns[:, 1], steepness)
    prefs = np.where(rng.random(p.shape) < p, 1, -1)
    return PreferenceDataset(states, actions, prefs)


def sample_preference_dataset(
    game: MarkovGame,
    policy: Policy,
    n_pairs: int,
    seed: int | np.random.Generator | None = None,
    steepness: float = 1.0,
    second_policy: Policy | None = None,
) -> PreferenceDataset:
    """``n_pairs`` pairs ``(tau, tau')`` of independent episodes with Bradley-Terry labels.

    ``tau`` follows ``policy``; ``tau'`` follows ``second_policy`` (default: ``policy``).
    """
    if n_pairs < 0:
        raise GameError(f"n_pairs: expected a non-negative integer, got {n_pairs}")
    rng = np.random.default_rng(seed)
    first = sample_trajectories(game, policy, n_pairs, rng)
    second = sample_trajectories(game, policy if second_policy is None else second_policy, n_pairs, rng)
    states = np.stack([first.states, second.states], axis=1)
    actions = np.stack([first.actions, second.actions], axis=1)
    return label_pairs(game, states, actions, rng, steepness)


def mixture_dataset(
    game: MarkovGame,
    policies: Sequence[Policy],
    weights: Sequence[float],
    n_pairs: int,
    seed: int | np.random.Generator | None = None,
    steepness: float = 1.0,
) -> PreferenceDataset:
    """Pairs whose two episodes each follow a policy drawn from the mixture ``weights``."""
    rng = np.random.default_rng(seed)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(policies),) or np.any(w < 0) or w.sum() <= 0:
        raise GameError("weights: expected one non-negative weight per policy, not all zero")
    counts = rng.multinomial(2 * n_pairs, w / w.sum())
    trajs = [sample_trajectories(game, pol, int(c), rng) for pol, c in zip(policies, counts)]
    states = np.concatenate([t.states for t in trajs])
    actions = np.concatenate([t.actions for t in trajs])
    order = rng.permutation(2 * n_pairs)
    states = states[order].reshape(n_pairs, 2, -1)
    actions = actions[order].reshape(n_pairs, 2, game.horizon, game.n_players)
    return label_pairs(game, states, actions, rng, steepness)
