"""Score decomposition: Gaussian-mixture scores, the chain rule, and the coordination game."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs_checks.score_decomposition import finite_difference_gradient, random_gmm
from theory.objectives import score_decomposition as sd


def test_single_gaussian_hand_values():
    w, m, C = np.array([1.0]), np.array([[1.0, -1.0]]), np.array([np.diag([2.0, 0.5])])
    x = np.array([0.0, 0.0])
    expected = -0.5 * (1 / 2 + 1 / 0.5) - 0.5 * math.log(1.0) - math.log(2 * math.pi)
    assert sd.gmm_log_density(x, w, m, C) == pytest.approx(expected)
    np.testing.assert_allclose(sd.gmm_score(x, w, m, C), [0.5, -2.0])


def test_conditional_of_correlated_gaussian():
    C = np.array([[[1.0, 0.8], [0.8, 1.0]]])
    x = np.array([0.5, 1.0])
    # a_2 | a_1 ~ N(0.8 a_1, 0.36)
    expected = -0.5 * (1.0 - 0.4) ** 2 / 0.36 - 0.5 * math.log(2 * math.pi * 0.36)
    assert sd.conditional_log_density(x, np.array([1.0]), np.zeros((1, 2)), C, [0], [1]) == pytest.approx(expected)


def test_coordination_tables():
    data = np.array([[0.5, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(sd.product_of_marginals(data), np.full((2, 2), 0.25))
    np.testing.assert_allclose(sd.compose_sequential(sd.sequential_conditionals(data)), data)
    assert sd.miscoordination_mass(sd.product_of_marginals(data), np.eye(2)) == pytest.approx(0.5)
    pol = sd.kl_regularised_policy(np.eye(2), np.full((2, 2), 0.25), 1.0)
    assert sd.miscoordination_mass(pol, np.eye(2)) == pytest.approx(1 / (1 + math.e))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 3), st.integers(1, 2))
def test_sequential_scores_sum_to_joint_and_match_finite_differences(seed, n_agents, dims):
    rng = np.random.default_rng(seed)
    w, m, C, blocks = random_gmm(rng, n_agents, dims, 3)
    x = m[0] + rng.normal(size=(4, m.shape[1]))
    joint = sd.gmm_score(x, w, m, C)
    seq = sd.sequential_conditional_scores(x, w, m, C, blocks)
    np.testing.assert_allclose(sum(seq), joint, atol=1e-9)
    prefix = []
    for block, s in zip(blocks, seq):
        f = lambda y, g=list(prefix), t=block: sd.conditional_log_density(y, w, m, C, g, t)  # noqa: E731
        np.testing.assert_allclose(finite_difference_gradient(f, x), s, rtol=1e-5, atol=1e-6)
        prefix += block


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_sequential_composition_reproduces_any_joint_table(seed):
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.ones(12)).reshape(2, 3, 2)
    np.testing.assert_allclose(sd.compose_sequential(sd.sequential_conditionals(joint)), joint, atol=1e-12)
