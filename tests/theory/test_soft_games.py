"""Soft Bellman operators, their inverse, soft best responses and logit QRE."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marlcov.theory.policies import replace_player
from marlcov.theory.soft_games import (
    boltzmann_residual,
    inverse_soft_bellman,
    logit_qre,
    marginal_mdp,
    regularised_nash_gap,
    regularised_value,
    soft_bellman_solve,
    soft_best_response,
    soft_evaluation,
)
from tests.strategies import distributions, float_arrays, floats, markov_games, product_policies

#: Soft values of a few steps (log-sum-exp of rewards of size <= 3) computed two ways agree to this.
SOFT_VALUE_ATOL = 1e-10
#: The logit QRE's fixed-point residual and regularised gaps (its iteration stops at moves below QRE_TOL = 1e-12).
QRE_ATOL = 1e-9


def test_one_step_soft_value_hand_value():
    P = np.ones((1, 1, 2, 1))
    r = np.array([[[0.0, math.log(3.0)]]])
    ref = np.full((1, 1, 2), 0.5)
    sol = soft_bellman_solve(P, r, ref, 1.0)
    assert sol.V[0, 0] == pytest.approx(math.log(2.0))
    np.testing.assert_allclose(sol.policy[0, 0], [0.25, 0.75])


def test_matching_pennies_qre_is_uniform():
    P = np.ones((1, 1, 2, 2, 1))
    R = np.zeros((1, 2, 1, 2, 2))
    R[0, 0, 0] = np.eye(2)
    R[0, 1, 0] = 1 - np.eye(2)
    eq = logit_qre(P, R, 2.0)
    for p in eq.policy:
        np.testing.assert_allclose(p[0, 0], [0.5, 0.5], atol=1e-10)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="reward"):
        soft_bellman_solve(np.ones((1, 1, 2, 1)), np.zeros((1, 1, 3)), np.ones((1, 1, 3)) / 3, 1.0)
    with pytest.raises(ValueError, match="beta"):
        soft_bellman_solve(np.ones((1, 1, 2, 1)), np.zeros((1, 1, 2)), np.ones((1, 1, 2)) / 2, 0.0)


@st.composite
def soft_problems(draw):
    """A game of 1-3 agents with 2 actions each and 2 states, a joint reference policy, a joint
    reward, a temperature, and another joint policy."""
    n_agents = draw(st.integers(1, 3))
    P = draw(markov_games(action_sizes=(2,) * n_agents, n_states=2)).transitions
    joint = distributions((*P.shape[:2], 2**n_agents)).map(lambda p: p.reshape(P.shape[:-1]))
    ref, other = draw(joint), draw(joint)
    return P, ref, draw(float_arrays(ref.shape, -3.0, 3.0)), draw(floats(0.3, 2.0)), other


@settings(max_examples=20, deadline=None)
@given(soft_problems())
def test_inverse_soft_bellman_round_trip_and_optimality(problem):
    P, ref, r, beta, other = problem
    sol = soft_bellman_solve(P, r, ref, beta)
    np.testing.assert_allclose(inverse_soft_bellman(P, sol.Q, ref, beta), r, atol=SOFT_VALUE_ATOL)
    np.testing.assert_allclose(regularised_value(P, r, sol.policy, ref, beta), sol.V, atol=SOFT_VALUE_ATOL)
    assert np.all(regularised_value(P, r, other, ref, beta) <= sol.V + SOFT_VALUE_ATOL)


@st.composite
def games_and_policies(draw, action_sizes):
    """A 2-state, 2-step game with ``action_sizes``, a product policy and another policy of player 0."""
    game = draw(markov_games(action_sizes=action_sizes, n_states=2, horizon=2))
    return game, draw(product_policies(game)), draw(distributions((2, 2, action_sizes[0])))


@settings(max_examples=15, deadline=None)
@given(games_and_policies((2, 3)), floats(0.5, 3.0))
def test_soft_best_response_beats_alternatives(drawn, lam):
    game, pi, alt = drawn
    br = soft_best_response(game.transitions, game.rewards[:, 0], pi, 0, lam)
    rbar, Pbar = marginal_mdp(game.transitions, game.rewards[:, 0], pi, 0)
    np.testing.assert_allclose(br.q_bar[-1], rbar[-1], atol=1e-12)
    assert np.all(soft_evaluation(game.transitions, game.rewards[:, 0], replace_player(pi, 0, alt), 0, lam).V <= br.V + SOFT_VALUE_ATOL)


#: A policy that differs from the logit QRE by this much in some probability is not a fixed point.
OFF_EQUILIBRIUM = 1e-3
#: ... and its Boltzmann residual is then at least this.
OFF_RESIDUAL = 1e-6


@settings(max_examples=10, deadline=None)
@given(games_and_policies((2, 2)), floats(0.5, 3.0))
def test_logit_qre_is_fixed_point_with_zero_regularised_gap(drawn, lam):
    game, off, _ = drawn
    eq = logit_qre(game.transitions, game.rewards, lam)
    assert eq.residual <= QRE_ATOL
    assert np.all(np.abs(regularised_nash_gap(game.transitions, game.rewards, eq.policy, lam)) <= QRE_ATOL)
    assume(max(np.max(np.abs(a - b)) for a, b in zip(off, eq.policy)) > OFF_EQUILIBRIUM)
    assert boltzmann_residual(game.transitions, game.rewards, off, lam) > OFF_RESIDUAL
    assert np.sum(regularised_nash_gap(game.transitions, game.rewards, off, lam)) > QRE_ATOL
