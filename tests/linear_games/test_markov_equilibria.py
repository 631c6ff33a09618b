"""Markov perfect equilibria by backward induction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.markov_equilibria import is_zero_sum_game, markov_equilibrium
from marlcov.linear_games.n_player import has_gambit
from marlcov.linear_games.solve import solve_game
from marlcov.theory.games import MarkovGame, random_markov_game
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import evaluate_policy

from .sequence_form_reference import sequence_form_value

# The LP value of the whole game and the backward-induction value differ by solver rounding.
VALUE_AGREE_ATOL = 1e-8


@st.composite
def markov_games(draw, max_states=3, max_actions=3, max_horizon=3, zero_sum=False, players=2):
    """Transition rows and rewards drawn entry by entry (rows normalised), so failures shrink."""
    S = draw(st.integers(1, max_states))
    H = draw(st.integers(1, max_horizon))
    sizes = tuple(draw(st.integers(1, max_actions)) for _ in range(players))
    shape = (H, S, *sizes)
    n = int(np.prod(shape))
    w = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=n * S, max_size=n * S))).reshape(*shape, S)
    r = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n * players, max_size=n * players)))
    R = r.reshape(H, S, *sizes, players).transpose(0, -1, *range(1, 2 + players))
    if zero_sum:
        R = np.stack([R[:, 0], 1.0 - R[:, 0]], axis=1)
    return MarkovGame(w / w.sum(axis=-1, keepdims=True), R)


@settings(max_examples=40, deadline=None)
@given(markov_games())
def test_general_sum_equilibrium_has_zero_nash_gap(game):
    eq = markov_equilibrium(game)
    assert eq.nash_gap <= VALUE_ATOL
    assert eq.stage_games == game.horizon * game.n_states
    for pi, a in zip(eq.policy, game.action_sizes):
        assert pi.shape == (game.horizon, game.n_states, a)
        np.testing.assert_allclose(pi.sum(axis=-1), 1.0, atol=1e-12)
    # the values carried through the induction are the policy's own values
    V = evaluate_policy(game.transitions, game.rewards, eq.policy).V
    np.testing.assert_allclose(eq.values, V, atol=VALUE_ATOL)


@settings(max_examples=25, deadline=None)
@given(markov_games(max_states=2, max_actions=2, max_horizon=3, zero_sum=True))
def test_zero_sum_value_equals_the_sequence_form_lp(game):
    assert is_zero_sum_game(game)
    eq = markov_equilibrium(game)
    assert eq.zero_sum and eq.nash_gap <= VALUE_ATOL
    s1 = game.initial_state
    lp = sequence_form_value(game.transitions, game.rewards[:, 0], s1)
    assert eq.values[0, 0, s1] == pytest.approx(lp, abs=VALUE_AGREE_ATOL)


@settings(max_examples=20, deadline=None)
@given(markov_games(players=1, max_actions=4))
def test_single_player_is_optimal_control(game):
    eq = markov_equilibrium(game)
    assert eq.nash_gap <= VALUE_ATOL


def test_matching_pennies_repeated_has_value_h_over_two():
    # H independent rounds of matching pennies with payoffs in {0, 1}: value H / 2
    H, S = 3, 2
    pennies = np.array([[1.0, 0.0], [0.0, 1.0]])
    R = np.zeros((H, 2, S, 2, 2))
    R[:, 0], R[:, 1] = pennies, 1.0 - pennies
    P = np.full((H, S, 2, 2, S), 1.0 / S)
    eq = markov_equilibrium(MarkovGame(P, R))
    assert eq.zero_sum
    np.testing.assert_allclose(eq.values[0, :, 0], [H / 2, H / 2], atol=VALUE_ATOL)
    np.testing.assert_allclose(eq.policy[0], 0.5, atol=VALUE_ATOL)


@pytest.mark.skipif(not has_gambit(), reason="pygambit (the gambit extra) is not installed")
@settings(max_examples=15, deadline=None)
@given(st.sampled_from([3, 4]).flatmap(lambda m: markov_games(max_states=2, max_actions=3 if m == 3 else 2, max_horizon=3, players=m)))
def test_three_and_four_players_equilibrium_has_zero_nash_gap(game):
    eq = markov_equilibrium(game)
    assert eq.nash_gap <= VALUE_ATOL
    assert eq.stage_games == game.horizon * game.n_states and eq.complete_stages is None
    V = evaluate_policy(game.transitions, game.rewards, eq.policy).V
    np.testing.assert_allclose(eq.values, V, atol=VALUE_ATOL)


def test_solve_game_json_for_a_markov_game():
    game = random_markov_game(3, (2, 3), 2, seed=4)
    doc = solve_game(game)
    assert doc["nash_gap"] <= VALUE_ATOL and doc["stage_games"] == 6
    assert doc["policy"]["format"] == "marlcov.policy/1"
    assert [np.asarray(p).shape for p in doc["policy"]["probs"]] == [(2, 3, 2), (2, 3, 3)]
    assert doc["value"] is None and len(doc["values"]) == 2
