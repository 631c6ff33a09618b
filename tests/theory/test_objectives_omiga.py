"""OMIGA objectives: Proposition 4.4's closed form and the global-to-local factorisation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.theory.objectives import omiga


def test_closed_form_hand_value():
    q = np.array([[0.0, math.log(3.0)]])
    # alpha = w = 1, mu uniform: V = log((1 + 3)/2) = log 2
    assert omiga.local_value_closed_form(q, np.array([1.0]), 1.0, np.array([[0.5, 0.5]]))[0] == pytest.approx(math.log(2.0))
    assert omiga.local_value_closed_form(q, np.array([1.0]), 1.0)[0] == pytest.approx(math.log(2.0))


def test_loss_hand_value():
    q, v, w = np.array([[1.0, 3.0]]), np.array([1.0]), np.array([2.0])
    expected = 0.5 * (1.0 + math.exp(2 * 2.0 / 0.5)) + 2.0 * 1.0 / 0.5
    assert omiga.local_value_loss(q, v, w, 0.5, np.array([[0.5, 0.5]]))[0] == pytest.approx(expected)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_prop4_4_closed_form_minimises_loss(seed):
    rng = np.random.default_rng(seed)
    mu = rng.dirichlet(np.ones(4), size=3)
    q = rng.normal(scale=2.0, size=(3, 4))
    w = rng.uniform(0.2, 2.0, size=3)
    alpha = float(rng.uniform(0.2, 2.0))
    v = omiga.local_value_closed_form(q, w, alpha, mu)
    base = omiga.local_value_loss(q, v, w, alpha, mu)
    for dv in (1e-3, -1e-3, 0.5, -0.5):
        assert np.all(omiga.local_value_loss(q, v + dv, w, alpha, mu) >= base - 1e-12)
    np.testing.assert_allclose(omiga.local_policy(mu, q, v, w, alpha).sum(axis=1), 1.0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_global_policy_factorises(seed):
    rng = np.random.default_rng(seed)
    A = (2, 3)
    mu = [rng.dirichlet(np.ones(a)) for a in A]
    q = [rng.normal(size=a) for a in A]
    w, b, alpha = rng.uniform(0.3, 2.0, size=2), float(rng.normal()), float(rng.uniform(0.3, 2.0))
    q_tot = w[0] * q[0][:, None] + w[1] * q[1][None, :] + b
    mu_joint = np.outer(mu[0], mu[1])
    glob = omiga.global_policy(mu_joint, q_tot, alpha, (0, 1))
    local = [omiga.local_policy(mu[i], q[i], omiga.local_value_closed_form(q[i], w[i], alpha, mu[i]), w[i], alpha) for i in range(2)]
    np.testing.assert_allclose(glob, np.outer(*local), atol=1e-12)
