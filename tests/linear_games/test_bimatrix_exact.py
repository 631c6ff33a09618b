"""The flags of ``all_equilibria`` against exact rational ground truth.

Degenerate games (ties, duplicated rows) are perturbed by 1e-12 .. 1e-4; the ground truth is
the independent sympy enumeration of ``exact_reference``, run on the exact binary values of the
perturbed float game.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.matrix_games import all_equilibria, nash_gap_bimatrix, support_enumeration
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL

from .exact_reference import exact_reference

NOISE = [0.0, 1e-12, 1e-10, 1e-9, 1e-8, 1e-6, 1e-4]


def _as_float(profiles):
    return [(np.array([float(v) for v in x]), np.array([float(v) for v in y])) for x, y in profiles]


def _bijective(ours, truth, atol) -> bool:
    if len(ours) != len(truth):
        return False
    used = set()
    for x, y in ours:
        hit = next(
            (j for j, (u, v) in enumerate(truth) if j not in used and np.abs(x - u).max() <= atol and np.abs(y - v).max() <= atol), None
        )
        if hit is None:
            return False
        used.add(hit)
    return True


def _exact_gap(A, B, x, y) -> Fraction:
    """Nash gap of the float profile in the exact (rational) game."""
    FA = [[Fraction(float(v)) for v in r] for r in A]
    FB = [[Fraction(float(v)) for v in r] for r in B]
    fx, fy = [Fraction(float(v)) for v in x], [Fraction(float(v)) for v in y]
    Ay = [sum(a * q for a, q in zip(r, fy)) for r in FA]
    xB = [sum(fx[i] * FB[i][j] for i in range(len(fx))) for j in range(len(fy))]
    return (max(Ay) - sum(p * v for p, v in zip(fx, Ay))) + (max(xB) - sum(q * v for q, v in zip(fy, xB)))


@st.composite
def perturbed_degenerate_games(draw, max_rows=5, max_cols=3):
    """Small integer games made degenerate (a duplicated row or column, ties from a 3-value
    range), plus noise of a drawn magnitude with drawn signs."""
    n0 = draw(st.integers(2, max_rows))
    n1 = draw(st.integers(2, max_cols))
    cell = st.integers(0, 2)
    A = np.array(draw(st.lists(st.lists(cell, min_size=n1, max_size=n1), min_size=n0, max_size=n0)), float)
    B = np.array(draw(st.lists(st.lists(cell, min_size=n1, max_size=n1), min_size=n0, max_size=n0)), float)
    if draw(st.booleans()):
        A[-1], B[-1] = A[0], B[0]
    eps = draw(st.sampled_from(NOISE))
    signs = st.lists(st.floats(-1.0, 1.0), min_size=n0 * n1, max_size=n0 * n1)
    A = A + eps * np.array(draw(signs)).reshape(n0, n1)
    B = B + eps * np.array(draw(signs)).reshape(n0, n1)
    return A, B


@settings(max_examples=40, deadline=None)
@given(perturbed_degenerate_games())
def test_complete_flag_is_exactly_right_on_small_games(game):
    A, B = game
    truth, degenerate, finite = exact_reference(A.tolist(), B.tolist())
    res = all_equilibria(A, B)
    assert res.complete == finite  # never a confident wrong answer
    assert res.degenerate == degenerate or not res.exact
    ours = [(e.strategies[0], e.strategies[1]) for e in res]
    # every extreme point, and only those; float vertices of games with 1e-6 entries carry ~1e-10
    # of rounding (the conditioning of the vertex systems), inside PROB_ATOL
    assert _bijective(ours, _as_float(truth), atol=PROB_ATOL)
    for x, y in ours:
        assert nash_gap_bimatrix(A, B, x, y) <= VALUE_ATOL


@settings(max_examples=40, deadline=None)
@given(perturbed_degenerate_games())
def test_float_answer_never_claims_completeness_wrongly(game):
    A, B = game
    truth, _, finite = exact_reference(A.tolist(), B.tolist())
    res = all_equilibria(A, B, exact=False)
    assert not res.exact
    if res.complete:
        assert finite and not res.near_degenerate
        assert _bijective([(e.strategies[0], e.strategies[1]) for e in res], _as_float(truth), PROB_ATOL)
    # every listed profile is an equilibrium of the exact game, up to rounding
    for e in res:
        assert float(_exact_gap(A, B, *e.strategies)) <= VALUE_ATOL


def test_issue_18_five_by_two_near_degenerate():
    # a degenerate 5 x 2 game (column player indifferent against rows 0 and 1) plus 1e-9
    # noise: the float answer must not claim completeness unless it is right
    A = np.array([[1, 0], [1, 0], [0, 1], [0, 2], [2, 0]], float)
    B = np.array([[1, 1], [1, 1], [0, 2], [1, 0], [2, 1]], float)
    noise = 1e-9 * np.random.default_rng(3).uniform(-1, 1, (2, 5, 2))
    A, B = A + noise[0], B + noise[1]
    truth, _, finite = exact_reference(A.tolist(), B.tolist())
    res = all_equilibria(A, B)
    assert res.complete == finite and res.exact and res.near_degenerate
    assert res.separation < 1e-7
    assert _bijective([(e.strategies[0], e.strategies[1]) for e in res], _as_float(truth), 1e-12)


def test_duplicated_rows_give_only_extreme_points():
    # rows 0 and 1 are copies: the mixtures of them are equilibria but not extreme points
    A = np.array([[2, 0, 1], [2, 0, 1], [0, 2, 1], [1, 1, 0]], float)
    B = np.array([[0, 2, 1], [0, 2, 1], [2, 0, 1], [1, 1, 3]], float)
    truth, degenerate, _ = exact_reference(A.tolist(), B.tolist())
    assert degenerate
    for exact in (None, False):
        res = all_equilibria(A, B, exact=exact)
        assert _bijective([(e.strategies[0], e.strategies[1]) for e in res], _as_float(truth), PROB_ATOL)


@st.composite
def generic_games(draw, max_size=6):
    n0, n1 = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    entries = st.floats(-10.0, 10.0, allow_nan=False)
    A = np.array(draw(st.lists(entries, min_size=n0 * n1, max_size=n0 * n1))).reshape(n0, n1)
    B = np.array(draw(st.lists(entries, min_size=n0 * n1, max_size=n0 * n1))).reshape(n0, n1)
    return A, B


@settings(max_examples=60, deadline=None)
@given(generic_games())
def test_vertex_enumeration_agrees_with_support_enumeration(game):
    A, B = game
    res = all_equilibria(A, B, exact=False)
    X, Y, degenerate = support_enumeration(A, B)
    if res.complete:  # certified nondegenerate and separated: support enumeration is complete too
        assert not degenerate
        assert _bijective([(e.strategies[0], e.strategies[1]) for e in res], list(zip(X, Y)), 1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("n", [8, 10])
def test_larger_random_games_agree_with_support_enumeration(n):
    rng = np.random.default_rng(n)
    for _ in range(2):
        A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
        res = all_equilibria(A, B)
        X, Y, _ = support_enumeration(A, B)
        assert res.complete and len(res) % 2 == 1
        assert _bijective([(e.strategies[0], e.strategies[1]) for e in res], list(zip(X, Y)), 1e-8)


def test_exact_mode_on_request():
    res = all_equilibria([[3, 3], [2, 5], [0, 6]], [[3, 2], [2, 6], [3, 1]], exact=True)
    assert res.exact and res.complete and not res.degenerate and len(res) == 3


def test_more_than_64_labels():
    # 2 x 70: 72 labels, past the integer keys; support enumeration (supports of size <= 2)
    # is cheap here and independent
    rng = np.random.default_rng(70)
    A, B = rng.random((2, 70)), rng.random((2, 70))
    res = all_equilibria(A, B)
    X, Y, degenerate = support_enumeration(A, B)
    assert res.complete and not degenerate
    assert _bijective([(e.strategies[0], e.strategies[1]) for e in res], list(zip(X, Y)), 1e-9)
