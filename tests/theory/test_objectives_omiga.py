"""OMIGA objectives: Proposition 4.4's closed form and the global-to-local factorisation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.theory.objectives import omiga
from tests.strategies import distributions, float_arrays, floats


def test_closed_form_hand_value():
    q = np.array([[0.0, math.log(3.0)]])
    # alpha = w = 1, mu uniform: V = log((1 + 3)/2) = log 2
    assert omiga.local_value_closed_form(q, np.array([1.0]), 1.0, np.array([[0.5, 0.5]]))[0] == pytest.approx(math.log(2.0))
    assert omiga.local_value_closed_form(q, np.array([1.0]), 1.0)[0] == pytest.approx(math.log(2.0))


def test_loss_hand_value():
    q, v, w = np.array([[1.0, 3.0]]), np.array([1.0]), np.array([2.0])
    expected = 0.5 * (1.0 + math.exp(2 * 2.0 / 0.5)) + 2.0 * 1.0 / 0.5
    assert omiga.local_value_loss(q, v, w, 0.5, np.array([[0.5, 0.5]]))[0] == pytest.approx(expected)


#: The loss at the closed-form minimiser against nearby points: float64 rounding relative to the
#: size of the summed terms (the exponential term is 1 at the minimiser, by its first-order
#: condition, so the terms have size 1 + |loss|).
LOSS_RTOL = 1e-12
#: A policy row sums to one up to the rounding of a few products.
SUM_ATOL = 1e-12


@settings(max_examples=25, deadline=None)
@given(
    mu=distributions((3, 4)),
    q=float_arrays((3, 4), -5.0, 5.0),
    w=float_arrays(3, 0.2, 2.0),
    alpha=floats(0.2, 2.0),
)
def test_prop4_4_closed_form_minimises_loss(mu, q, w, alpha):
    v = omiga.local_value_closed_form(q, w, alpha, mu)
    base = omiga.local_value_loss(q, v, w, alpha, mu)
    for dv in (1e-3, -1e-3, 0.5, -0.5):
        assert np.all(omiga.local_value_loss(q, v + dv, w, alpha, mu) >= base - LOSS_RTOL * (1.0 + np.abs(base)))
    np.testing.assert_allclose(omiga.local_policy(mu, q, v, w, alpha).sum(axis=1), 1.0, atol=SUM_ATOL)


@settings(max_examples=25, deadline=None)
@given(
    mu=st.tuples(distributions(2), distributions(3)),
    q=st.tuples(float_arrays(2, -3.0, 3.0), float_arrays(3, -3.0, 3.0)),
    w=float_arrays(2, 0.3, 2.0),
    b=floats(-3.0, 3.0),
    alpha=floats(0.3, 2.0),
)
def test_global_policy_factorises(mu, q, w, b, alpha):
    q_tot = w[0] * q[0][:, None] + w[1] * q[1][None, :] + b
    mu_joint = np.outer(mu[0], mu[1])
    glob = omiga.global_policy(mu_joint, q_tot, alpha, (0, 1))
    local = [omiga.local_policy(mu[i], q[i], omiga.local_value_closed_form(q[i], w[i], alpha, mu[i]), w[i], alpha) for i in range(2)]
    np.testing.assert_allclose(glob, np.outer(*local), atol=SUM_ATOL)
