"""hypothesis strategies for the objects the property tests check: bounded float arrays,
probability distributions, tabular Markov games, product policies and Gaussian mixtures.

The tests draw these objects themselves (not a seed for a random generator), so that a failing
example shrinks to small, readable numbers.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.theory.games import MarkovGame, linear_markov_game
from marlcov.theory.policies import deterministic_policy
from marlcov.theory.preferences import PreferenceDataset

#: Smallest unnormalised weight of a drawn distribution: every probability is at least
#: MIN_WEIGHT / n, so drawn distributions have full support like Dirichlet draws.
MIN_WEIGHT = 0.01


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Finite float64 numbers in ``[lo, hi]``."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def float_arrays(shape, lo: float = -1.0, hi: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` (a tuple or a strategy of tuples) with entries in ``[lo, hi]``."""
    return arrays(np.float64, shape, elements=floats(lo, hi))


def int_arrays(shape, lo: int, hi: int) -> st.SearchStrategy[np.ndarray]:
    """int64 arrays of ``shape`` with entries in ``[lo, hi]`` (inclusive)."""
    return arrays(np.int64, shape, elements=st.integers(lo, hi))


def distributions(shape, min_weight: float = MIN_WEIGHT) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` whose last axis is a probability distribution: weights in
    ``[min_weight, 1]`` normalised (equal weights, the uniform distribution, shrink first)."""
    return float_arrays(shape, min_weight, 1.0).map(lambda w: w / w.sum(axis=-1, keepdims=True))


@st.composite
def markov_games(
    draw,
    max_players=3,
    max_actions=2,
    max_states=2,
    max_horizon=3,
    min_players=1,
    min_actions=1,
    action_sizes=None,
    n_states=None,
    horizon=None,
):
    """A tabular game with drawn transition rows (full support) and rewards in [0, 1]; the
    sizes are drawn up to the maxima unless ``action_sizes``, ``n_states`` or ``horizon`` fix them."""
    if action_sizes is None:
        m = draw(st.integers(min_players, max_players))
        action_sizes = tuple(draw(st.integers(min_actions, max_actions)) for _ in range(m))
    S = draw(st.integers(1, max_states)) if n_states is None else n_states
    H = draw(st.integers(1, max_horizon)) if horizon is None else horizon
    P = draw(distributions((H, S, *action_sizes, S)))
    R = draw(float_arrays((H, len(action_sizes), S, *action_sizes), 0.0, 1.0))
    return MarkovGame(P, R, initial_state=draw(st.integers(0, S - 1)))


@st.composite
def linear_markov_games(
    draw, max_players=2, max_actions=2, max_states=3, max_horizon=3, max_dim=3, action_sizes=None, step_dependent=True, min_dim=1
):
    """A game of Assumption 1 from drawn factors: features ``psi`` on the simplex of R^d (per step
    with ``step_dependent``), next-state distributions ``mu_h[:, k]`` and ``theta`` in [0, 1]^d,
    so that ``P`` is a distribution and ``r`` lies in [0, 1]."""
    if action_sizes is None:
        action_sizes = tuple(draw(st.integers(1, max_actions)) for _ in range(draw(st.integers(1, max_players))))
    S, H, d = draw(st.integers(1, max_states)), draw(st.integers(1, max_horizon)), draw(st.integers(min_dim, max_dim))
    psi = draw(distributions(((H,) if step_dependent else ()) + (S, *action_sizes, d)))
    mu = draw(distributions((H, d, S))).transpose(0, 2, 1)
    theta = draw(float_arrays((H, len(action_sizes), d), 0.0, 1.0))
    return linear_markov_game(psi, mu, theta, initial_state=draw(st.integers(0, S - 1)))


def product_policies(game: MarkovGame, deterministic: bool = False) -> st.SearchStrategy[tuple]:
    """Product policies of ``game``: one drawn distribution per player, step and state, or one
    drawn action (a one-hot row) with ``deterministic``."""
    H, S = game.horizon, game.n_states
    if deterministic:
        return st.tuples(*(int_arrays((H, S), 0, a - 1) for a in game.action_sizes)).map(lambda t: deterministic_policy(game, t))
    return st.tuples(*(distributions((H, S, a)) for a in game.action_sizes))


@st.composite
def preference_datasets(draw, game: MarkovGame, min_pairs=0, max_pairs=25):
    """Pairs of trajectories of ``game`` from its initial state (every drawn transition has positive
    probability: drawn games have full support) with drawn labels in {+1, -1}."""
    N, H, m = draw(st.integers(min_pairs, max_pairs)), game.horizon, game.n_players
    states = draw(int_arrays((N, 2, H + 1), 0, game.n_states - 1))
    states[:, :, 0] = game.initial_state
    actions = np.stack([draw(int_arrays((N, 2, H), 0, a - 1)) for a in game.action_sizes], axis=-1).reshape(N, 2, H, m)
    prefs = draw(arrays(np.int64, (N, m), elements=st.sampled_from([-1, 1])))
    return PreferenceDataset(states, actions, prefs)


@st.composite
def gaussian_mixtures(draw, n_agents: int, dims_per_agent: int, n_components: int):
    """``(weights [K], means [K, D], covariances [K, D, D], blocks)``: covariances ``L L^T + 0.2 I``
    with drawn ``L`` (positive definite), ``blocks`` the coordinates of each agent."""
    D = n_agents * dims_per_agent
    weights = draw(distributions(n_components, min_weight=0.1))
    means = draw(float_arrays((n_components, D), -4.0, 4.0))
    L = draw(float_arrays((n_components, D, D), -1.0, 1.0))
    covs = L @ np.swapaxes(L, 1, 2) + 0.2 * np.eye(D)
    blocks = [list(range(i * dims_per_agent, (i + 1) * dims_per_agent)) for i in range(n_agents)]
    return weights, means, covs, blocks


@st.composite
def games_and_policies(draw, n_policies=1, **game_sizes):
    """``(game, policy_1, ..., policy_n)``: a drawn ``markov_games(**game_sizes)`` and
    ``n_policies`` drawn product policies of it."""
    game = draw(markov_games(**game_sizes))
    return (game, *(draw(product_policies(game)) for _ in range(n_policies)))
