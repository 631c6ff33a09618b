"""Score decomposition: Gaussian-mixture scores, the chain rule, and the coordination game."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.proofs_checks.score_decomposition import finite_difference_gradient, random_gmm
from marlcov.theory.objectives import score_decomposition as sd
from tests.strategies import distributions, float_arrays, gaussian_mixtures


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


@st.composite
def mixtures_and_points(draw):
    """A 3-component Gaussian mixture over 2-3 agents of 1-2 dimensions each, and 4 points near
    its first mean."""
    n_agents, dims = draw(st.integers(2, 3)), draw(st.integers(1, 2))
    w, m, C, blocks = draw(gaussian_mixtures(n_agents, dims, 3))
    x = m[0] + draw(float_arrays((4, m.shape[1]), -3.0, 3.0))
    return w, m, C, blocks, x


@settings(max_examples=15, deadline=None)
@given(mixtures_and_points())
def test_sequential_scores_sum_to_joint_and_match_finite_differences(mixture):
    w, m, C, blocks, x = mixture
    joint = sd.gmm_score(x, w, m, C)
    seq = sd.sequential_conditional_scores(x, w, m, C, blocks)
    np.testing.assert_allclose(sum(seq), joint, atol=1e-9)
    prefix = []
    for block, s in zip(blocks, seq):
        f = lambda y, g=list(prefix), t=block: sd.conditional_log_density(y, w, m, C, g, t)  # noqa: E731
        np.testing.assert_allclose(finite_difference_gradient(f, x), s, rtol=1e-5, atol=1e-6)
        prefix += block


@settings(max_examples=25, deadline=None)
@given(distributions(12).map(lambda p: p.reshape(2, 3, 2)))
def test_sequential_composition_reproduces_any_joint_table(joint):
    np.testing.assert_allclose(sd.compose_sequential(sd.sequential_conditionals(joint)), joint, atol=1e-12)


def test_noised_gmm_is_the_prefix_noised_law_with_nothing_given():
    w, m, c, _ = random_gmm(np.random.default_rng(0), n_agents=3, dims_per_agent=1, n_components=2)
    w1, m1, c1 = sd.noised_gmm(w, m, c, 0.3)
    w2, m2, c2 = sd.prefix_noised_gmm(w, m, c, [], [0, 1, 2], 0.3)
    np.testing.assert_allclose(m1, m2)
    np.testing.assert_allclose(c1, c2)
    np.testing.assert_allclose(w1, w2)
    # variance preservation: a unit-variance coordinate stays unit-variance
    _, _, c3 = sd.noised_gmm(np.ones(1), np.zeros((1, 1)), np.ones((1, 1, 1)), 0.3)
    assert c3[0, 0, 0] == pytest.approx(1.0)


def test_prefix_noised_law_keeps_the_given_block_clean():
    """Given block (0,) clean, target (1,) noised: mean (m_0, sqrt(abar) m_1), covariance
    [[C_00, sqrt(abar) C_01], [sqrt(abar) C_10, abar C_11 + 1 - abar]] (hand-computed)."""
    w, m, c = np.array([1.0]), np.array([[1.0, 2.0]]), np.array([[[2.0, 0.5], [0.5, 1.0]]])
    _, m2, c2 = sd.prefix_noised_gmm(w, m, c, [0], [1], 0.25)
    np.testing.assert_allclose(m2, [[1.0, 1.0]])
    np.testing.assert_allclose(c2, [[[2.0, 0.25], [0.25, 0.25 + 0.75]]])


def test_posterior_noise_mean_of_one_gaussian_by_hand():
    """x0 ~ N(m, s0^2) in 1-D: E[eps | x_t] = sigma (x_t - sqrt(abar) m) / (abar s0^2 + sigma^2)."""
    from marlcov.proofs_checks.score_denoising import posterior_noise_mean

    ab, s0, mean, x = 0.36, 2.0, 1.0, np.array([[0.5]])
    sigma = math.sqrt(1 - ab)
    got = posterior_noise_mean(x, np.array([1.0]), np.array([[mean]]), np.array([[[s0**2]]]), np.sqrt(ab) * np.eye(1), ab, 1)
    assert got[0, 0] == pytest.approx(sigma * (0.5 - 0.6 * mean) / (ab * s0**2 + sigma**2))
    assert sd.score_from_noise(got, ab)[0, 0] == pytest.approx(
        sd.gmm_score(x, *sd.noised_gmm(np.ones(1), np.array([[mean]]), np.array([[[s0**2]]]), ab))[0, 0]
    )
