"""Lemke-Howson over many games and starting labels in one call (lemke_howson_batch)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.bimatrix import nash_gap_bimatrix
from marlcov.linear_games.lemke_howson import lemke_howson, lemke_howson_batch
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL

VON_STENGEL_A = np.array([[3, 3], [2, 5], [0, 6]], dtype=float)
VON_STENGEL_B = np.array([[3, 2], [2, 6], [3, 1]], dtype=float)


@st.composite
def game_stacks(draw):
    """``K`` games of one shape with a starting label each; small integers make degenerate games."""
    K = draw(st.integers(1, 5))
    n0, n1 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    entry = st.integers(-3, 3).map(float) if draw(st.booleans()) else st.floats(-10.0, 10.0)
    size = 2 * K * n0 * n1
    A, B = np.array(draw(st.lists(entry, min_size=size, max_size=size))).reshape(2, K, n0, n1)
    labels = draw(st.lists(st.integers(0, n0 + n1 - 1), min_size=K, max_size=K))
    return A, B, labels


@settings(max_examples=60, deadline=None)
@given(game_stacks())
def test_batch_follows_the_paths_of_lemke_howson(stack):
    A, B, labels = stack
    found = lemke_howson_batch(A, B, labels)
    assert len(found) == len(labels)
    for g, (eq, k) in enumerate(zip(found, labels)):
        one = lemke_howson(A[g], B[g], k)
        x, y = eq.strategies
        np.testing.assert_allclose(x, one.strategies[0], atol=PROB_ATOL, rtol=0)
        np.testing.assert_allclose(y, one.strategies[1], atol=PROB_ATOL, rtol=0)
        assert x.min() >= -PROB_ATOL and abs(x.sum() - 1.0) <= PROB_ATOL
        assert nash_gap_bimatrix(A[g], B[g], x, y) <= VALUE_ATOL
        assert eq.payoffs[0] == pytest.approx(float(x @ A[g] @ y), abs=VALUE_ATOL)
        assert eq.payoffs[1] == pytest.approx(float(x @ B[g] @ y), abs=VALUE_ATOL)


def test_batch_over_all_labels_of_von_stengels_game():
    # von Stengel (2007), AGT ch. 3: equilibria ((1, 0, 0), (1, 0)), ((4/5, 1/5, 0), (2/3, 1/3))
    # and ((0, 1/3, 2/3), (1/3, 2/3)); LH from any label reaches the first or the last only
    L = 5
    found = lemke_howson_batch(np.repeat(VON_STENGEL_A[None], L, 0), np.repeat(VON_STENGEL_B[None], L, 0), range(L))
    reached = {tuple(np.round(np.concatenate(eq.strategies), 6)) for eq in found}
    assert reached <= {(1.0, 0.0, 0.0, 1.0, 0.0), (0.0, 0.333333, 0.666667, 0.333333, 0.666667)}
    assert len(reached) == 2


def test_a_single_game_and_one_label_for_all():
    eq = lemke_howson_batch(VON_STENGEL_A, VON_STENGEL_B)
    assert len(eq) == 1
    np.testing.assert_allclose(eq[0].strategies[0], lemke_howson(VON_STENGEL_A, VON_STENGEL_B).strategies[0], atol=PROB_ATOL)


def test_invalid_batches_refused():
    good = np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match=r"^B:.*shape"):
        lemke_howson_batch(good, np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match=r"^A:.*finite"):
        lemke_howson_batch(np.full((2, 2, 3), np.nan), good)
    with pytest.raises(ValueError, match=r"^A:.*\(K, n0, n1\)"):
        lemke_howson_batch(np.zeros(3), good)
    with pytest.raises(ValueError, match="initial_dropped_labels: expected an int or 2 ints"):
        lemke_howson_batch(good, good, [0, 1, 2])
    with pytest.raises(ValueError, match="initial_dropped_labels"):
        lemke_howson_batch(good, good, [0, 5])
    with pytest.raises(ValueError, match="initial_dropped_labels"):
        lemke_howson_batch(good, good, True)


def test_any_memory_layout_gives_the_same_paths():
    # transposed, Fortran-ordered, integer and read-only (broadcast) inputs are the same games
    rng = np.random.default_rng(5)
    A, B = rng.integers(-3, 4, (2, 3, 4, 5))
    expected = lemke_howson_batch(A.astype(float), B.astype(float), range(3))
    for A2, B2 in [
        (np.asfortranarray(A), B.transpose(0, 2, 1).copy().transpose(0, 2, 1)),
        (np.broadcast_to(A[:1], A.shape) * 0 + A, np.broadcast_to(B, B.shape)),
    ]:
        for e, f in zip(expected, lemke_howson_batch(A2, B2, range(3))):
            np.testing.assert_allclose(f.strategies[0], e.strategies[0], atol=PROB_ATOL, rtol=0)
            np.testing.assert_allclose(f.strategies[1], e.strategies[1], atol=PROB_ATOL, rtol=0)
    one = lemke_howson(np.asfortranarray(A[1].T).T, B[1].T.copy().T, 2)
    np.testing.assert_allclose(one.strategies[0], expected[1].strategies[0], atol=PROB_ATOL, rtol=0)
