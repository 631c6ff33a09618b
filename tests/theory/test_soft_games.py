"""Soft Bellman operators, their inverse, soft best responses and logit QRE."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.theory.games import random_markov_game
from marlcov.theory.policies import random_policy, replace_player
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


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(1, 3))
def test_inverse_soft_bellman_round_trip_and_optimality(seed, n_agents, horizon):
    rng = np.random.default_rng(seed)
    game = random_markov_game(2, [2] * n_agents, horizon, rng)
    P = game.transitions
    ref = rng.dirichlet(np.ones(2**n_agents), size=P.shape[:2]).reshape(P.shape[:-1])
    r = rng.normal(size=ref.shape)
    beta = float(rng.uniform(0.3, 2.0))
    sol = soft_bellman_solve(P, r, ref, beta)
    np.testing.assert_allclose(inverse_soft_bellman(P, sol.Q, ref, beta), r, atol=1e-10)
    np.testing.assert_allclose(regularised_value(P, r, sol.policy, ref, beta), sol.V, atol=1e-10)
    other = rng.dirichlet(np.ones(2**n_agents), size=P.shape[:2]).reshape(ref.shape)
    assert np.all(regularised_value(P, r, other, ref, beta) <= sol.V + 1e-10)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_soft_best_response_beats_alternatives(seed):
    rng = np.random.default_rng(seed)
    game = random_markov_game(2, [2, 3], 2, rng)
    pi = random_policy(game, rng)
    lam = float(rng.uniform(0.5, 3.0))
    br = soft_best_response(game.transitions, game.rewards[:, 0], pi, 0, lam)
    rbar, Pbar = marginal_mdp(game.transitions, game.rewards[:, 0], pi, 0)
    np.testing.assert_allclose(br.q_bar[-1], rbar[-1], atol=1e-12)
    alt = random_policy(game, rng)[0]
    assert np.all(soft_evaluation(game.transitions, game.rewards[:, 0], replace_player(pi, 0, alt), 0, lam).V <= br.V + 1e-10)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_logit_qre_is_fixed_point_with_zero_regularised_gap(seed):
    rng = np.random.default_rng(seed)
    game = random_markov_game(2, [2, 2], 2, rng)
    lam = float(rng.uniform(0.5, 3.0))
    eq = logit_qre(game.transitions, game.rewards, lam)
    assert eq.residual <= 1e-9
    assert np.all(np.abs(regularised_nash_gap(game.transitions, game.rewards, eq.policy, lam)) <= 1e-9)
    off = random_policy(game, rng)
    assert boltzmann_residual(game.transitions, game.rewards, off, lam) > 1e-6
    assert np.sum(regularised_nash_gap(game.transitions, game.rewards, off, lam)) > 1e-9
