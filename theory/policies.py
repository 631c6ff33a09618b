"""Product Markov policies: a tuple over players of arrays ``pi[i][h, s, a_i]`` on the simplex."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .games import GameError, MarkovGame, check_distribution

Policy = tuple[np.ndarray, ...]


def check_policy(policy: Sequence, game: MarkovGame, field_name: str = "policy") -> Policy:
    """Validate ``policy`` against ``game`` and return it as a tuple of float64 arrays.

    Raises GameError naming the player and the expected shape when a player's array does not
    have shape ``[H, S, A_i]``, and naming the row when it is off the simplex.
    """
    if isinstance(policy, np.ndarray) or not isinstance(policy, (list, tuple)):
        raise GameError(f"{field_name}: expected a list over players of arrays [H, S, A_i]")
    if len(policy) != game.n_players:
        raise GameError(f"{field_name}: expected {game.n_players} players, got {len(policy)}")
    out = []
    for i, (pi_i, a_i) in enumerate(zip(policy, game.action_sizes)):
        name = f"{field_name}[{i}]"
        try:
            arr = np.asarray(pi_i, dtype=np.float64)
        except (TypeError, ValueError):
            raise GameError(f"{name}: expected an array of numbers of shape [H, S, A_i]") from None
        expected = (game.horizon, game.n_states, a_i)
        if arr.shape != expected:
            raise GameError(f"{name}: expected shape {list(expected)} ([H, S, A_{i}]), got {list(arr.shape)}")
        if not np.all(np.isfinite(arr)):
            raise GameError(f"{name}: expected finite probabilities")
        check_distribution(arr, name)
        out.append(arr)
    return tuple(out)


def uniform_policy(game: MarkovGame) -> Policy:
    """Every player mixes uniformly over its actions at every step and state."""
    H, S = game.horizon, game.n_states
    return tuple(np.full((H, S, a), 1.0 / a) for a in game.action_sizes)


def deterministic_policy(game: MarkovGame, actions: Sequence[np.ndarray]) -> Policy:
    """One-hot policy from integer action tables ``actions[i][h, s]``."""
    out = []
    for i, (table, a_i) in enumerate(zip(actions, game.action_sizes)):
        table = np.broadcast_to(np.asarray(table, dtype=np.int64), (game.horizon, game.n_states))
        if np.any(table < 0) or np.any(table >= a_i):
            raise GameError(f"actions[{i}]: expected integers in [0, {a_i - 1}]")
        out.append(np.eye(a_i)[table])
    return tuple(out)


def random_policy(game: MarkovGame, seed: int | np.random.Generator | None = None, deterministic: bool = False) -> Policy:
    """A random product policy: Dirichlet(1) rows, or uniformly random one-hot rows."""
    rng = np.random.default_rng(seed)
    H, S = game.horizon, game.n_states
    if deterministic:
        return deterministic_policy(game, [rng.integers(0, a, size=(H, S)) for a in game.action_sizes])
    return tuple(rng.dirichlet(np.ones(a), size=(H, S)) for a in game.action_sizes)


def replace_player(policy: Policy, player: int, pi_i: np.ndarray) -> Policy:
    """The unilateral deviation ``(pi_i, pi_{-i})``."""
    out = list(policy)
    out[player] = np.asarray(pi_i, dtype=np.float64)
    return tuple(out)


def joint_action_probs(policy: Policy, skip: int | None = None) -> np.ndarray:
    """``pi_h(a | s) = prod_i pi[i][h, s, a_i]`` with shape ``[H, S, A_1, ..., A_m]``.

    With ``skip = j`` player j's factor is left out (its axis has length 1), which gives the
    distribution of ``a_{-j}`` broadcastable against the joint-action axes.
    """
    m = len(policy)
    H, S = policy[0].shape[:2]
    joint = np.ones((H, S) + (1,) * m)
    for i, pi_i in enumerate(policy):
        if i == skip:
            continue
        shape = [H, S] + [1] * m
        shape[2 + i] = pi_i.shape[-1]
        joint = joint * pi_i.reshape(shape)
    return joint
