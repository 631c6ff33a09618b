import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marlcov.theory.games import GameError, MarkovGame, linear_markov_game, random_linear_markov_game
from marlcov.theory.tolerances import REWARD_ATOL
from tests.strategies import markov_games

#: A norm of a few float64 numbers of size <= 1 against its bound.
NORM_ATOL = 1e-12


def small_game(**overrides):
    P = np.full((2, 2, 2, 3, 2), 0.5)
    R = np.full((2, 2, 2, 2, 3), 0.25)
    kw = dict(transitions=P, rewards=R, initial_state=0)
    kw.update(overrides)
    return MarkovGame(**kw)


def test_sizes_are_read_from_the_arrays():
    g = small_game()
    assert (g.horizon, g.n_states, g.action_sizes, g.n_players) == (2, 2, (2, 3), 2)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(transitions=np.full((2, 2, 2, 3, 2), 0.6)), "transitions"),
        (dict(transitions=np.full((2, 2, 2, 3, 3), 1 / 3)), "transitions"),
        (dict(rewards=np.full((2, 2, 2, 2, 3), 1.5)), "rewards"),
        (dict(rewards=np.full((2, 2, 2, 3, 2), 0.5)), "rewards"),
        (dict(rewards=np.full((2, 2, 2, 2, 3), np.nan)), "rewards"),
        (dict(initial_state=2), "initial_state"),
        (dict(initial_state=0.5), "initial_state"),
        (dict(features=np.zeros((2, 2, 4))), "features"),
        (dict(features=np.zeros((2, 2, 3, 4)), theta=np.zeros((2, 2, 4))), "theta"),
    ],
)
def test_invalid_games_are_refused_naming_the_field(overrides, field):
    with pytest.raises(GameError, match=field):
        small_game(**overrides)


def test_negative_probability_is_refused_even_if_rows_sum_to_one():
    P = np.full((1, 2, 2, 2), 0.5)
    P[0, 0, 0] = [1.5, -0.5]
    with pytest.raises(GameError, match="probabilities >= 0"):
        MarkovGame(P, np.zeros((1, 1, 2, 2)))


@given(markov_games(min_players=2, max_players=2, max_actions=3, max_states=3))
def test_one_hot_form_reproduces_rewards_and_transitions(g):
    H, S, sizes = g.horizon, g.n_states, g.action_sizes
    lin = g.with_one_hot_features()
    psi = lin.features
    assert psi.shape == (H, S, *sizes, S * int(np.prod(sizes)))
    np.testing.assert_allclose(np.einsum("h...d,hid->hi...", psi, lin.theta), g.rewards, atol=1e-15)
    # Assumption 1 with mu_h(s') = P_h(., ., s') flattened.
    mu = g.transitions.reshape(H, -1, S)
    np.testing.assert_allclose(np.einsum("h...d,hdt->h...t", psi, mu), g.transitions, atol=1e-15)


# The seed is the input under test: the seeded generator's games are valid by construction.
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.booleans())
def test_random_linear_games_are_valid_by_construction(seed, S, H, d, step_dependent):
    g = random_linear_markov_game(S, (2, 2, 2), H, d, seed, step_dependent_features=step_dependent)
    assert g.features.shape == (H, S, 2, 2, 2, d)
    assert np.all(np.linalg.norm(g.features, axis=-1) <= 1 + NORM_ATOL)
    assert np.all(np.linalg.norm(g.theta, axis=-1) <= np.sqrt(d) + NORM_ATOL)
    # r = <psi, theta> with psi summing to one up to rounding: at most 1 + REWARD_ATOL, like MarkovGame checks.
    assert g.rewards.min() >= 0 and g.rewards.max() <= 1 + REWARD_ATOL


def test_linear_game_with_invalid_factors_is_refused():
    psi = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # S=1, A=2, d=2
    mu = np.array([[[0.7, 0.7]]])  # H=1, S'=1, d=2: a row of P equal to 0.7
    theta = np.zeros((1, 1, 2))
    with pytest.raises(GameError, match="transitions"):
        linear_markov_game(psi, mu, theta)


def test_seeded_generators_are_reproducible():
    a = random_linear_markov_game(3, (2, 2), 2, 4, seed=7)
    b = random_linear_markov_game(3, (2, 2), 2, 4, seed=7)
    np.testing.assert_array_equal(a.transitions, b.transitions)
    np.testing.assert_array_equal(a.features, b.features)
