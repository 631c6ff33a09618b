import itertools

import numpy as np
import pytest
from hypothesis import given

from marlcov.theory.games import random_linear_markov_game, random_markov_game
from marlcov.theory.policies import check_policy, deterministic_policy, replace_player, uniform_policy
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import best_response, evaluate_policy, nash_gap, optimal_joint_values
from tests.strategies import games_and_policies, markov_games

from .brute_force import all_deterministic_policies, expected_return

#: Two float64 computations of one expected return (a backward pass and an enumeration of
#: trajectories) differ by the rounding of a few dozen products.
RETURN_ATOL = 1e-12


@given(games_and_policies())
def test_values_match_trajectory_enumeration(drawn):
    game, pi = drawn
    V = evaluate_policy(game.transitions, game.rewards, pi).V
    for i in range(game.n_players):
        assert V[0, i, game.initial_state] == pytest.approx(expected_return(game, pi, game.rewards[:, i]), abs=RETURN_ATOL)


@given(games_and_policies(max_players=2))
def test_best_response_is_the_maximum_over_all_deterministic_deviations(drawn):
    game, pi = drawn
    for i in range(game.n_players):
        br = best_response(game.transitions, game.rewards[:, i], pi, i)
        brute = max(expected_return(game, replace_player(pi, i, dev), game.rewards[:, i]) for dev in all_deterministic_policies(game, i))
        assert br.values[0, game.initial_state] == pytest.approx(brute, abs=RETURN_ATOL)
        achieved = evaluate_policy(game.transitions, game.rewards, replace_player(pi, i, br.policy)).V[0, i, game.initial_state]
        assert achieved == pytest.approx(brute, abs=RETURN_ATOL)


@given(games_and_policies(n_policies=2))
def test_best_response_value_dominates_every_policy(drawn):
    game, pi, others = drawn
    for i in range(game.n_players):
        br = best_response(game.transitions, game.rewards[:, i], pi, i).values[0, game.initial_state]
        v = evaluate_policy(game.transitions, game.rewards, replace_player(pi, i, others[i])).V[0, i, game.initial_state]
        assert br >= v - VALUE_ATOL


@given(games_and_policies())
def test_nash_gap_is_nonnegative_and_sums_players(drawn):
    game, pi = drawn
    gap = nash_gap(game, pi)
    assert np.all(gap.per_player >= 0)
    assert gap.total == pytest.approx(gap.per_player.sum())
    np.testing.assert_allclose(gap.per_player, np.maximum(gap.best_response_values - gap.values, 0))


# Horizon <= 2: with 2 states and 2 players of 2 actions, 3 steps make 4096 joint deterministic
# policies to enumerate (minutes), 2 steps make 256.
@given(markov_games(max_players=2, max_horizon=2))
def test_nash_gap_is_zero_at_pure_equilibria_found_by_enumeration(game):
    """Enumerate deterministic joint policies: each player's gap is what its best deterministic
    deviation gains (found by enumeration), so a joint policy that no player can improve is an
    exact equilibrium with a zero gap, and every other has a positive one."""
    for combo in itertools.product(*[list(all_deterministic_policies(game, i)) for i in range(game.n_players)]):
        pi = tuple(combo)
        gain = np.array(
            [
                max(expected_return(game, replace_player(pi, i, d), game.rewards[:, i]) for d in all_deterministic_policies(game, i))
                - expected_return(game, pi, game.rewards[:, i])
                for i in range(game.n_players)
            ]
        )
        gap = nash_gap(game, pi)
        np.testing.assert_allclose(gap.per_player, np.maximum(gain, 0.0), atol=RETURN_ATOL)
        if np.all(gain <= RETURN_ATOL):
            assert gap.total <= VALUE_ATOL


@given(games_and_policies())
def test_optimal_joint_value_dominates_product_policies(drawn):
    game, pi = drawn
    reward = game.rewards[:, 0]
    best = optimal_joint_values(game.transitions, reward)[0, game.initial_state]
    assert best >= expected_return(game, pi, reward) - VALUE_ATOL
    brute = max(
        expected_return(game, tuple(c), reward)
        for c in itertools.product(*[list(all_deterministic_policies(game, i)) for i in range(game.n_players)])
    )
    assert best == pytest.approx(brute, abs=RETURN_ATOL)


def test_value_of_a_uniform_policy_in_a_linear_game_is_bounded_by_horizon():
    g = random_linear_markov_game(5, (3, 3, 3), 5, 4, seed=1)
    V = evaluate_policy(g.transitions, g.rewards, uniform_policy(g)).V
    assert np.all(V[0] <= g.horizon) and np.all(V[0] >= 0)


def test_policy_validation_names_the_player():
    g = random_markov_game(2, (2, 3), 2, seed=0)
    bad = list(uniform_policy(g))
    bad[1] = bad[1] * 2
    with pytest.raises(ValueError, match=r"policy\[1\]"):
        check_policy(bad, g)
    with pytest.raises(ValueError, match="expected shape"):
        check_policy([bad[0], bad[0]], g)


def test_deterministic_policy_rejects_out_of_range_actions():
    g = random_markov_game(2, (2, 3), 2, seed=0)
    with pytest.raises(ValueError, match="actions"):
        deterministic_policy(g, [np.zeros((2, 2), int), np.full((2, 2), 3)])


@given(games_and_policies(max_players=4))
def test_one_pass_nash_gap_matches_separate_best_responses(drawn):
    """The single backward pass of nash_gap agrees with evaluate_policy and one best_response
    per player (m + 1 separate passes), and its best responses attain their values."""
    game, pi = drawn
    gap = nash_gap(game, pi)
    s1 = game.initial_state
    own = evaluate_policy(game.transitions, game.rewards, pi).V[0, :, s1]
    np.testing.assert_allclose(gap.values, own, atol=RETURN_ATOL)
    for i in range(game.n_players):
        br = best_response(game.transitions, game.rewards[:, i], pi, i).values[0, s1]
        assert gap.best_response_values[i] == pytest.approx(br, abs=RETURN_ATOL)
        achieved = evaluate_policy(game.transitions, game.rewards, replace_player(pi, i, gap.best_responses[i])).V[0, i, s1]
        assert achieved == pytest.approx(br, abs=RETURN_ATOL)
