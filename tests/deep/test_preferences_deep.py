"""Bradley-Terry labels over normalised returns (MARLHF section 6, appendix B.1; min-max as in
the paper's public code, standardised as in its text)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.deep.data.hdf5 import DatasetReader, DatasetWriter
from marlcov.deep.data.preferences import (
    DEFAULT_STEEPNESS,
    label_dataset,
    label_pairs,
    min_max_returns,
    normalised_returns,
    preference_probabilities,
    sample_pairs,
    standardised_returns,
)
from tests.deep.synthetic import SPEC, random_batch

pytestmark = pytest.mark.deep

finite = st.floats(-50, 50, allow_nan=False, width=64)
#: Rounding of a sigmoid value in [0, 1] (a few ulps of 1).
PROB_ROUNDING = 1e-15


def test_probability_against_hand_computed_values():
    # Returns 0, 1, 2 for agent 0 and 5, 5, 8 for agent 1.
    returns = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 8.0]])
    z, mean, std = standardised_returns(returns)
    s0, s1 = math.sqrt(2 / 3), math.sqrt(2.0)  # population std of (0, 1, 2) and of (5, 5, 8)
    np.testing.assert_allclose(mean, [1.0, 6.0])
    np.testing.assert_allclose(std, [s0, s1])
    np.testing.assert_allclose(z, [[-1 / s0, -1 / s1], [0.0, -1 / s1], [1 / s0, 2 / s1]])
    p = preference_probabilities(z, np.array([2, 0, 1]), np.array([0, 1, 1]), steepness=5.0)
    hand = [
        [1 / (1 + math.exp(-5 * 2 / s0)), 1 / (1 + math.exp(-5 * 3 / s1))],
        [1 / (1 + math.exp(5 / s0)), 0.5],
        [0.5, 0.5],
    ]
    np.testing.assert_allclose(p, hand, rtol=1e-12)
    assert DEFAULT_STEEPNESS == 5.0


@settings(max_examples=30, deadline=None)
@given(a=finite, b=finite, k1=st.floats(0, 20), k2=st.floats(0, 20))
def test_steepness_sharpens_preferences(a, b, k1, k2):
    z = np.array([[a], [b]])
    lo, hi = sorted((k1, k2))
    p_lo = preference_probabilities(z, np.array([0]), np.array([1]), lo)[0, 0]
    p_hi = preference_probabilities(z, np.array([0]), np.array([1]), hi)[0, 0]
    if a > b:
        assert p_hi >= p_lo - PROB_ROUNDING
    elif a < b:
        assert p_hi <= p_lo + PROB_ROUNDING
    assert preference_probabilities(z, np.array([0]), np.array([1]), 0.0)[0, 0] == 0.5


@settings(max_examples=30, deadline=None)
@given(R=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 3)), elements=finite), scale=st.floats(0.1, 10), shift=finite)
def test_standardisation(R, scale, shift):
    z, _, std = standardised_returns(R)
    varying = std >= 1e-6
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z[:, varying].std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_array_equal(z[:, std < 1e-8], 0.0)
    # Labels depend on returns only through their standardisation: invariant to a * R + b, a > 0.
    z2, _, std2 = standardised_returns(scale * R + shift)
    both = varying & (std2 >= 1e-6)
    np.testing.assert_allclose(z2[:, both], z[:, both], atol=1e-6)


def test_min_max_against_hand_computed_values():
    returns = np.array([[0.0, 5.0], [1.0, 5.0], [4.0, 8.0]])
    z, low, high = min_max_returns(returns)
    np.testing.assert_allclose(low, [0.0, 5.0])
    np.testing.assert_allclose(high, [4.0, 8.0])
    np.testing.assert_allclose(z, [[0.0, 0.0], [0.25, 0.0], [1.0, 1.0]])
    pairs = label_pairs(returns, np.array([2, 0]), np.array([0, 1]), steepness=5.0, seed=0)
    hand = [[1 / (1 + math.exp(-5.0)), 1 / (1 + math.exp(-5.0))], [1 / (1 + math.exp(5 * 0.25)), 0.5]]
    np.testing.assert_allclose(pairs.probs, hand, rtol=1e-12)
    assert pairs.attrs["model"] == "bradley-terry/min-max-returns"
    assert pairs.attrs["return_min"] == [0.0, 5.0] and pairs.attrs["return_max"] == [4.0, 8.0]


@settings(max_examples=30, deadline=None)
@given(R=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 3)), elements=finite), scale=st.floats(0.1, 10), shift=finite)
def test_min_max_lies_in_the_unit_interval_and_ignores_affine_changes(R, scale, shift):
    z, low, high = min_max_returns(R)
    assert np.all(z >= 0.0) and np.all(z <= 1.0)
    varying = (high - low) >= 1e-6
    np.testing.assert_allclose(z[:, varying].min(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, varying].max(axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(z[:, (high - low) < 1e-8], 0.0)
    z2, low2, high2 = min_max_returns(scale * R + shift)
    both = varying & ((high2 - low2) >= 1e-6)
    np.testing.assert_allclose(z2[:, both], z[:, both], atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(R=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 3)), elements=finite))
def test_both_normalisations_keep_the_order_of_returns(R):
    for normalisation in ("min-max", "standardised"):
        z, _ = normalised_returns(R, normalisation)
        for i in range(R.shape[1]):
            order = np.argsort(R[:, i], kind="stable")
            assert np.all(np.diff(z[order, i]) >= -1e-12)
    with pytest.raises(ValueError, match="normalisation"):
        normalised_returns(R, "z")


def test_constant_returns_give_fair_coins():
    for normalisation in ("min-max", "standardised"):
        pairs = label_pairs(np.full((4, 2), 3.0), [0, 1, 2], [1, 2, 3], seed=0, normalisation=normalisation)
        np.testing.assert_array_equal(pairs.probs, 0.5)


def test_labels_follow_their_probabilities():
    rng = np.random.default_rng(0)
    returns = rng.normal(size=(200, 3))
    first, second = sample_pairs(200, 50, seed=1)
    pairs = label_pairs(returns, first, second, steepness=1.0, seed=2)
    assert set(np.unique(pairs.labels)) <= {-1, 1} and pairs.labels.shape == (10_000, 3)
    expected = 2 * pairs.probs - 1
    sigma = np.sqrt((1 - expected**2).sum(axis=0))
    assert np.all(np.abs((pairs.labels - expected).sum(axis=0)) < 5 * sigma)
    again = label_pairs(returns, first, second, steepness=1.0, seed=2)
    np.testing.assert_array_equal(again.labels, pairs.labels)


def test_pair_sampling():
    first, second = sample_pairs(30, 10, seed=4)
    assert len(first) == 300
    np.testing.assert_array_equal(np.bincount(first, minlength=30), 10)
    assert np.all(first != second) and second.min() >= 0 and second.max() < 30
    f2, s2 = sample_pairs(30, 10, seed=4)
    np.testing.assert_array_equal(first, f2)
    np.testing.assert_array_equal(second, s2)
    with pytest.raises(ValueError, match="n_trajectories"):
        sample_pairs(1)


def test_label_dataset_streams_returns_from_hdf5(tmp_path):
    path = tmp_path / "d.h5"
    with DatasetWriter(path, SPEC) as w:
        w.append(random_batch(7, 0))
        w.append(random_batch(5, 1))
    with DatasetReader(path) as r:
        pairs = label_dataset(r, seed=3, batch_size=4)
        returns = r.returns()
    assert len(pairs) == 10 * 12 and pairs.n_agents == 2
    span = returns.max(axis=0) - returns.min(axis=0)
    z = (returns - returns.min(axis=0)) / span
    np.testing.assert_allclose(pairs.probs, 1 / (1 + np.exp(-DEFAULT_STEEPNESS * (z[pairs.first] - z[pairs.second]))), rtol=1e-12)
    assert pairs.attrs["pairs_per_trajectory"] == 10 and pairs.attrs["seed"] == 3
    with DatasetReader(path) as r:
        standard = label_dataset(r, seed=3, batch_size=4, normalisation="standardised")
    zs = (returns - returns.mean(axis=0)) / returns.std(axis=0)
    np.testing.assert_allclose(
        standard.probs, 1 / (1 + np.exp(-DEFAULT_STEEPNESS * (zs[standard.first] - zs[standard.second]))), rtol=1e-12
    )
