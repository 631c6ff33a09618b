"""MAMQL objectives: marginalisation, Boltzmann policy, inverse operator, IQ-Learn criterion."""

import math

import numpy as np
import pytest
from hypothesis import given, settings

from marlcov.theory.objectives import mamql
from tests.strategies import float_arrays, floats, int_arrays


def test_marginalise_hand_value():
    q = np.array([[1.0, 2.0], [3.0, 4.0]])  # Q[a_0, a_1]
    pi = [np.array([0.25, 0.75]), np.array([0.5, 0.5])]
    np.testing.assert_allclose(mamql.marginalise(q, pi, 0), [1.5, 3.5])
    np.testing.assert_allclose(mamql.marginalise(q, pi, 1), [2.5, 3.5])


def test_soft_value_and_policy_hand_value():
    q = np.array([0.0, math.log(3.0)])
    assert mamql.soft_value(q, 1.0) == pytest.approx(math.log(4.0))
    np.testing.assert_allclose(mamql.boltzmann_policy(q, 1.0), [0.25, 0.75])


def test_inverse_and_regression():
    assert mamql.inverse_soft_bellman(np.array([2.0]), np.array([0.5]), 0.9)[0] == pytest.approx(1.55)
    assert mamql.reward_regression_loss(np.array([1.0]), np.array([2.0]), np.array([0.5]), 1.0) == pytest.approx(0.25)


def test_iq_learn_hand_value():
    q, vn, v0 = np.array([[1.0, 2.0]]), np.array([[0.5, 0.0]]), np.array([0.25])
    assert mamql.iq_learn_objective(q, vn, v0) == pytest.approx((0.5 + 2.0) - 0.25)
    assert mamql.iq_learn_objective(q, vn, v0, reg_coef=0.1) == pytest.approx((0.5 - 0.025 + 2.0 - 0.4) - 0.25)


@settings(max_examples=25, deadline=None)
@given(q=float_arrays((3, 3), -3.0, 3.0), actions=int_arrays((1, 3), 0, 2), lam=floats(0.3, 3.0))
def test_iq_learn_telescopes_to_log_likelihood(q, actions, lam):
    H = q.shape[0]  # one state per step: the trajectory is the action sequence
    V = np.append(mamql.soft_value(q, lam), 0.0)
    val = mamql.iq_learn_objective(q[np.arange(H), actions], V[1:][None], V[:1])
    loglik = np.sum(np.log(mamql.boltzmann_policy(q, lam)[np.arange(H), actions[0]])) / lam
    assert val == pytest.approx(loglik, abs=1e-12)
