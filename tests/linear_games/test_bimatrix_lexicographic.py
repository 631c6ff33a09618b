"""Lemke-Howson on degenerate games: the compiled kernel follows the lexicographic path.

The reference below pivots in exact rational arithmetic with the textbook lexicographic
minimum-ratio rule (von Stengel 2007, AGT ch. 3, degenerate games): among the rows that minimise
``rhs_i / c_i``, the one whose row of the inverse basis (the columns of the initial slack
basis), divided by ``c_i``, is lexicographically smallest. It shares no code with the package.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.bimatrix import nash_gap_bimatrix
from marlcov.linear_games.lemke_howson import _exact_path, lemke_howson, lemke_howson_batch
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL

VON_STENGEL_A = [[3, 3], [2, 5], [0, 6]]
VON_STENGEL_B_DEGENERATE = [[3, 3], [2, 6], [3, 1]]


def _normalised(M) -> list[list[Fraction]]:
    """``1 + (M - min) / (max - min)`` (all ones if constant), exactly: the package's scaling."""
    F = [[Fraction(float(v)) for v in row] for row in M]
    lo = min(min(r) for r in F)
    span = max(max(r) for r in F) - lo
    return [[1 + ((v - lo) / span if span > 0 else 0) for v in r] for r in F]


def exact_lexicographic_path(A, B, k: int) -> tuple[tuple[Fraction, ...], tuple[Fraction, ...]]:
    """The equilibrium that Lemke-Howson from label ``k`` reaches with the lexicographic rule.

    Tableau P: ``B'^T x + s = 1`` (labels ``x_i = i``, ``s_j = n0 + j``); tableau Q:
    ``r + A' y = 1`` (``r_i = i``, ``y_j = n0 + j``); columns are the labels, then the
    right-hand side.
    """
    n0, n1 = len(A), len(A[0])
    L = n0 + n1
    Ap, Bp = _normalised(A), _normalised(B)
    one, zero = Fraction(1), Fraction(0)
    TP = [[Bp[i][j] for i in range(n0)] + [one if t == j else zero for t in range(n1)] + [one] for j in range(n1)]
    TQ = [[one if t == i else zero for t in range(n0)] + list(Ap[i]) + [one] for i in range(n0)]
    tableaux, bases = (TP, TQ), (list(range(n0, L)), list(range(n0)))
    slack_columns = (range(n0, L), range(n0))
    entering, side = k, (0 if k < n0 else 1)
    while True:  # the lexicographic rule never cycles
        T, basis = tableaux[side], bases[side]
        rows = [i for i in range(len(T)) if T[i][entering] > 0]
        r = min(rows, key=lambda i: tuple(T[i][c] / T[i][entering] for c in (L, *slack_columns[side])))  # noqa: B023
        piv = T[r][entering]
        T[r] = [v / piv for v in T[r]]
        for i in range(len(T)):
            c = T[i][entering]
            if i != r and c != 0:
                T[i] = [a - c * b for a, b in zip(T[i], T[r])]
        leaving, basis[r] = basis[r], entering
        if leaving == k:
            break
        entering, side = leaving, 1 - side
    x, y = [zero] * L, [zero] * L
    for t, label in enumerate(bases[0]):
        x[label] = TP[t][L]
    for t, label in enumerate(bases[1]):
        y[label] = TQ[t][L]
    x, y = x[:n0], y[n0:]
    return tuple(v / sum(x) for v in x), tuple(v / sum(y) for v in y)


def _assert_path(A, B, k, eq) -> None:
    x, y = exact_lexicographic_path(A, B, k)
    np.testing.assert_allclose(eq.strategies[0], [float(v) for v in x], atol=PROB_ATOL, rtol=0)
    np.testing.assert_allclose(eq.strategies[1], [float(v) for v in y], atol=PROB_ATOL, rtol=0)


def test_a_tie_that_only_the_lexicographic_rule_breaks_this_way():
    # Payoffs already span [1, 2], so the normalised game is the game itself. From label 0 the
    # path pivots x0 into P (rhs tie of rows s0, s2: the lexicographic rule takes s2), y2 into
    # Q (tie of r0, r1: r1 leaves), x1 into P (s0 leaves), y0 into Q (y2 leaves), then s2 into
    # P with the right-hand-side ratios of rows s1 and x0 tied at 1/2. Their slack rows over c
    # are (-3/2, 1, 1) and (-1/2, 0, 1): the lexicographic rule pivots on s1's row and goes on
    # (y1 into Q, s0 into P, where x0 leaves) to ((0, 1), (0, 1, 0)); pivoting on x0's row
    # instead would stop at once at the other equilibrium ((0, 1), (1, 0, 0)).
    A = [[1, 2, 2], [2, 2, 2]]
    B = [[2, 1, 2], [2, 2, 1]]
    eq = lemke_howson(A, B, 0)
    np.testing.assert_allclose(eq.strategies[0], [0, 1], atol=PROB_ATOL, rtol=0)
    np.testing.assert_allclose(eq.strategies[1], [0, 1, 0], atol=PROB_ATOL, rtol=0)
    _assert_path(A, B, 0, eq)
    _assert_path(A, B, 0, lemke_howson_batch(np.array(A, float), np.array(B, float), 0)[0])


@pytest.mark.parametrize("k", range(5))
def test_von_stengel_degenerate_game_every_label(k):
    # von Stengel (2007), AGT ch. 3: the degenerate variant of the 3 x 2 example (x = (1, 0, 0)
    # has two best responses); labels 0, 2 and 3 meet ties in the ratio test
    _assert_path(VON_STENGEL_A, VON_STENGEL_B_DEGENERATE, k, lemke_howson(VON_STENGEL_A, VON_STENGEL_B_DEGENERATE, k))


@st.composite
def small_integer_games(draw):
    """Small integer payoffs: ties in the ratio test are common, and exact in rationals."""
    n0, n1 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    entries = st.lists(st.integers(-2, 2), min_size=n0 * n1, max_size=n0 * n1)
    A = np.array(draw(entries), dtype=float).reshape(n0, n1)
    B = np.array(draw(entries), dtype=float).reshape(n0, n1)
    return A, B


@settings(max_examples=80, deadline=None)
@given(small_integer_games())
def test_every_label_follows_the_exact_lexicographic_path(game):
    A, B = game
    L = sum(A.shape)
    batch = lemke_howson_batch(np.repeat(A[None], L, 0), np.repeat(B[None], L, 0), range(L))
    for k in range(L):
        _assert_path(A.tolist(), B.tolist(), k, lemke_howson(A, B, k))
        _assert_path(A.tolist(), B.tolist(), k, batch[k])


# near-degenerate games (payoff differences of 1e-9) on which ties taken at PIVOT_ATOL pivoted
# on a larger ratio: the path cycled, or ended at a profile with Nash gap 0.25 or just above
# VALUE_ATOL. Floating point may leave the exact path here (pivot elements near PIVOT_ATOL), so
# the claim is an equilibrium, found the same way alone and in a batch.
NEAR_TIES = [
    ([[0, 1, 0, -2], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], [[-3, 0, 1e-9, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]),
    ([[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, -1, 0, 0]], [[0, -1, 1e-9, 0], [-2, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]),
    ([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, -1, 0, 0]], [[0, -3, 1e-9, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]]),
]


@pytest.mark.parametrize("game", NEAR_TIES)
def test_near_ties_end_at_an_equilibrium(game):
    A, B = np.array(game[0], float), np.array(game[1], float)
    batch = lemke_howson_batch(np.repeat(A[None], 8, 0), np.repeat(B[None], 8, 0), range(8))
    for k in range(8):
        eq = lemke_howson(A, B, k)
        assert nash_gap_bimatrix(A, B, *eq.strategies) <= VALUE_ATOL
        np.testing.assert_allclose(batch[k].strategies[0], eq.strategies[0], atol=PROB_ATOL, rtol=0)
        np.testing.assert_allclose(batch[k].strategies[1], eq.strategies[1], atol=PROB_ATOL, rtol=0)


@st.composite
def near_degenerate_games(draw):
    """Small integer payoffs, some moved by 1e-9 (near ties), or none."""
    A, B = draw(small_integer_games())
    nudge = st.sampled_from([0.0, 0.0, 1e-9, -1e-9])
    A = A + np.array(draw(st.lists(nudge, min_size=A.size, max_size=A.size))).reshape(A.shape)
    B = B + np.array(draw(st.lists(nudge, min_size=B.size, max_size=B.size))).reshape(B.shape)
    return A, B


@settings(max_examples=40, deadline=None)
@given(near_degenerate_games())
def test_the_exact_fallback_is_the_lexicographic_path(game):
    # the fallback for paths that floating point loses pivots in rationals: it must be the
    # reference's path exactly
    A, B = game
    for k in range(sum(A.shape)):
        x, y = _exact_path(A, B, k)
        ref_x, ref_y = exact_lexicographic_path(A.tolist(), B.tolist(), k)
        np.testing.assert_array_equal(x, [float(v) for v in ref_x])
        np.testing.assert_array_equal(y, [float(v) for v in ref_y])
        eq = lemke_howson(A, B, k)
        assert nash_gap_bimatrix(A, B, *eq.strategies) <= VALUE_ATOL
