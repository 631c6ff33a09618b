"""Zero-sum matrix games: literature values, LP optimality, solver agreement, invariances."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.matrix_games import ZeroSumSolution, zero_sum_solve
from marlcov.linear_games.zero_sum import zero_sum_solve_batch
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL
from tests.strategies import float_arrays

METHODS = ["auto", "ipm", "highs", "cvxpy"]

# Agreement required between the two LP back ends (the figure the tests promise).
AGREE_ATOL = 1e-8


def _span(A) -> float:
    A = np.asarray(A, dtype=float)
    return max(1.0, float(A.max() - A.min()))


def _assert_simplex(v: np.ndarray, size: int) -> None:
    assert v.shape == (size,)
    assert v.dtype == np.float64
    assert v.min() >= -PROB_ATOL
    assert abs(v.sum() - 1.0) <= PROB_ATOL


def _assert_optimal(A, sol: ZeroSumSolution) -> None:
    """value = x^T A y, the row strategy guarantees it and the column strategy holds to it."""
    A = np.asarray(A, dtype=float)
    tol = VALUE_ATOL * _span(A)
    x, y = sol.row_strategy, sol.col_strategy
    _assert_simplex(x, A.shape[0])
    _assert_simplex(y, A.shape[1])
    assert sol.value == pytest.approx(float(x @ A @ y), abs=tol)
    # the row player's best-response payoff against y equals the value (y is a minimax strategy)
    assert float((A @ y).max()) == pytest.approx(sol.value, abs=tol)
    # the column player's best response against x concedes exactly the value (x is maximin)
    assert float((x @ A).min()) == pytest.approx(sol.value, abs=tol)


# ------------------------------------------------------------------ literature / closed form


@pytest.mark.parametrize("method", METHODS)
def test_matching_pennies(method):
    A = [[1.0, -1.0], [-1.0, 1.0]]
    sol = zero_sum_solve(A, method=method)
    assert sol.value == pytest.approx(0.0, abs=VALUE_ATOL)
    np.testing.assert_allclose(sol.row_strategy, [0.5, 0.5], atol=PROB_ATOL)
    np.testing.assert_allclose(sol.col_strategy, [0.5, 0.5], atol=PROB_ATOL)
    _assert_optimal(A, sol)


@pytest.mark.parametrize("method", METHODS)
def test_rock_paper_scissors(method):
    A = [[0, -1, 1], [1, 0, -1], [-1, 1, 0]]
    sol = zero_sum_solve(A, method=method)
    assert sol.value == pytest.approx(0.0, abs=VALUE_ATOL)
    np.testing.assert_allclose(sol.row_strategy, np.full(3, 1 / 3), atol=PROB_ATOL)
    np.testing.assert_allclose(sol.col_strategy, np.full(3, 1 / 3), atol=PROB_ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_two_by_two_closed_form(method):
    # no saddle point: v = (ad - bc) / (a + d - b - c), x1 = (d - c) / (a + d - b - c)
    a, b, c, d = 2.0, -1.0, -1.0, 1.0
    sol = zero_sum_solve([[a, b], [c, d]], method=method)
    den = a + d - b - c
    assert sol.value == pytest.approx((a * d - b * c) / den, abs=VALUE_ATOL)
    np.testing.assert_allclose(sol.row_strategy, [(d - c) / den, (a - b) / den], atol=PROB_ATOL)
    np.testing.assert_allclose(sol.col_strategy, [(d - b) / den, (a - c) / den], atol=PROB_ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_saddle_point(method):
    A = [[1.0, 2.0], [0.0, 3.0]]  # pure saddle at (row 0, col 0), value 1
    sol = zero_sum_solve(A, method=method)
    assert sol.value == pytest.approx(1.0, abs=VALUE_ATOL)
    np.testing.assert_allclose(sol.row_strategy, [1.0, 0.0], atol=PROB_ATOL)
    np.testing.assert_allclose(sol.col_strategy, [1.0, 0.0], atol=PROB_ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_single_row_and_single_column(method):
    sol = zero_sum_solve([[3.0, -2.0, 5.0]], method=method)
    assert sol.value == pytest.approx(-2.0, abs=VALUE_ATOL)
    np.testing.assert_allclose(sol.col_strategy, [0, 1, 0], atol=PROB_ATOL)
    sol = zero_sum_solve([[3.0], [-2.0], [5.0]], method=method)
    assert sol.value == pytest.approx(5.0, abs=VALUE_ATOL)
    np.testing.assert_allclose(sol.row_strategy, [0, 0, 1], atol=PROB_ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_constant_game(method):
    sol = zero_sum_solve(np.full((2, 3), 7.0), method=method)
    assert sol.value == pytest.approx(7.0, abs=VALUE_ATOL)
    _assert_optimal(np.full((2, 3), 7.0), sol)


def test_solution_is_frozen_and_read_only():
    sol = zero_sum_solve([[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.value = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        sol.row_strategy[0] = 1.0
    assert isinstance(sol.value, float)


# ------------------------------------------------------------------ properties

shapes = st.tuples(st.integers(1, 6), st.integers(1, 6))


@st.composite
def float_games(draw):
    """Generic (nondegenerate with probability one) real payoffs of varied scale. A seeded normal
    draw: the uniqueness of the solution needs payoffs in general position, which drawn arrays
    (shrinking to ties) are not; ``drawn_games`` serves the claims that hold for every game."""
    m, n = draw(shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3]))
    return scale * np.random.default_rng(seed).standard_normal((m, n))


@st.composite
def drawn_games(draw):
    """Payoffs drawn entry by entry in [-3, 3], times a scale of 1e-3 to 1e3 (ties and degenerate games included)."""
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3]))
    return scale * draw(shapes.flatmap(lambda shape: float_arrays(shape, -3.0, 3.0)))


int_games = shapes.flatmap(
    lambda s: st.lists(st.lists(st.integers(-10, 10), min_size=s[1], max_size=s[1]), min_size=s[0], max_size=s[0])
).map(lambda rows: np.array(rows, dtype=float))


@settings(max_examples=40, deadline=None)
@given(float_games())
def test_highs_and_cvxpy_agree_generic(A):
    h = zero_sum_solve(A, method="highs")
    c = zero_sum_solve(A, method="cvxpy")
    _assert_optimal(A, h)
    _assert_optimal(A, c)
    assert abs(h.value - c.value) <= AGREE_ATOL * _span(A)
    # a generic game has a unique solution: the strategies agree too
    np.testing.assert_allclose(h.row_strategy, c.row_strategy, atol=AGREE_ATOL)
    np.testing.assert_allclose(h.col_strategy, c.col_strategy, atol=AGREE_ATOL)


@settings(max_examples=40, deadline=None)
@given(int_games)
def test_highs_and_cvxpy_agree_integer(A):
    # integer payoffs are often degenerate (ties, non-unique optimal strategies): the value
    # is still unique and both strategies must still be optimal
    h = zero_sum_solve(A, method="highs")
    c = zero_sum_solve(A, method="cvxpy")
    assert abs(h.value - c.value) <= AGREE_ATOL
    for sol in (h, c):
        x, y = sol.row_strategy, sol.col_strategy
        _assert_simplex(x, A.shape[0])
        _assert_simplex(y, A.shape[1])
        assert float((A @ y).max()) <= h.value + AGREE_ATOL
        assert float((x @ A).min()) >= h.value - AGREE_ATOL


@settings(max_examples=30, deadline=None)
@given(drawn_games(), st.floats(-100.0, 100.0), st.floats(0.01, 100.0))
def test_value_invariances(A, c, k):
    v = zero_sum_solve(A).value
    tol = VALUE_ATOL * _span(A) * max(1.0, abs(c), k)
    assert zero_sum_solve(A + c).value == pytest.approx(v + c, abs=tol)
    assert zero_sum_solve(k * A).value == pytest.approx(k * v, abs=tol)
    # the transposed game: the column player's value is minus the row player's
    assert zero_sum_solve(-A.T).value == pytest.approx(-v, abs=tol)


@settings(max_examples=30, deadline=None)
@given(drawn_games())
def test_value_is_max_min_against_pure_strategies(A):
    # max_x min_j (x^T A)_j >= max_i min_j A_ij and min_y max_i (A y)_i <= min_j max_i A_ij
    v = zero_sum_solve(A).value
    tol = VALUE_ATOL * _span(A)
    assert v >= A.min(axis=1).max() - tol
    assert v <= A.max(axis=0).min() + tol


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.array([1.0, 2.0]), "2-D"),
        (np.zeros((2, 2, 2)), "2-D"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "finite"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "finite"),
        (np.zeros((0, 3)), "at least one"),
        (np.array([["a", "b"]]), "real"),
        ([[1.0, 2.0], [3.0]], "2-D"),
        (np.array([[1 + 1j, 0]]), "real"),
    ],
)
def test_invalid_matrix(bad, fragment):
    with pytest.raises(ValueError) as info:
        zero_sum_solve(bad)
    assert str(info.value).startswith("A:")
    assert fragment in str(info.value)


def test_invalid_method():
    with pytest.raises(ValueError, match="method"):
        zero_sum_solve([[1.0]], method="simplex")


# ------------------------------------------------------------------ certified accuracy

#: The accuracy promised after polishing, in units of the payoff span.
POLISHED_RTOL = 1e-10


@settings(max_examples=40, deadline=None)
@given(int_games)
def test_interior_point_is_polished_and_certified_on_integer_games(A):
    ipm = zero_sum_solve(A, method="ipm")
    highs = zero_sum_solve(A, method="highs")
    span = _span(A)
    # the reported exploitability is what the returned strategies concede, recomputed here
    x, y = ipm.row_strategy, ipm.col_strategy
    assert ipm.exploitability == pytest.approx(max(0.0, float((A @ y).max() - (x @ A).min())), abs=1e-15 * span)
    assert ipm.exploitability <= POLISHED_RTOL * span
    assert abs(ipm.value - highs.value) <= POLISHED_RTOL * span


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["integers", "duplicated"])
def test_degenerate_integer_games_n300_polished_to_rounding(kind):
    rng = np.random.default_rng(300)
    if kind == "integers":
        A = rng.integers(-1, 2, (300, 300)).astype(float)
    else:  # every row and column twice: optimal strategies are far from unique
        A = np.repeat(np.repeat(rng.integers(0, 5, (150, 150)), 2, 0), 2, 1).astype(float)
    sol = zero_sum_solve(A)
    assert sol.exploitability <= POLISHED_RTOL * _span(A)
    _assert_optimal(A, sol)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 6).flatmap(lambda k: st.lists(st.integers(-3, 3), min_size=k * 16, max_size=k * 16)),
)
def test_batched_games_match_one_at_a_time(n0, n1, entries):
    k = len(entries) // 16
    As = np.array(entries, dtype=float).reshape(k, 16)[:, : n0 * n1].reshape(k, n0, n1)
    for A, sol in zip(As, zero_sum_solve_batch(As)):
        _assert_optimal(A, sol)
        assert sol.exploitability <= POLISHED_RTOL * _span(A)
        assert sol.value == pytest.approx(zero_sum_solve(A, method="highs").value, abs=POLISHED_RTOL * _span(A))


def test_polish_reaches_a_vertex_when_the_optimal_set_is_a_face():
    """Column strategies (0, 0, 1 - t, t) are optimal for every t in [2/3, 1] (value -2): the
    least-squares point of the underdetermined indifference system (t = 1/2) is not, and the
    restricted simplex LPs must be used to certify the interior-point answer."""
    A = np.array([[0, 0, 0, -3], [0, -1, -2, -2]], dtype=float)
    for method in ("ipm", "highs", "auto"):
        sol = zero_sum_solve(A, method=method)
        assert sol.value == pytest.approx(-2.0, abs=1e-12)
        assert sol.exploitability <= POLISHED_RTOL * _span(A)
        assert sol.col_strategy[3] >= 2 / 3 - 1e-12


@pytest.mark.parametrize("transpose", [False, True])
def test_a_payoff_below_highs_default_tolerance_is_not_traded_away(transpose):
    """Found by hypothesis: diag(1, 0, 0, 6e-8) has value 0 (a zero column), and its negated
    transpose -0; with HiGHS's default feasibility tolerance (1e-7) the fallback returned a pair
    6e-8 from optimal, and ``auto`` kept it."""
    A = np.zeros((4, 4))
    A[0, 0], A[3, 3] = 1.0, 5.96046448e-08
    game = -A.T if transpose else A
    for method in ("auto", "highs", "ipm"):
        sol = zero_sum_solve(game, method=method)
        assert sol.exploitability <= VALUE_ATOL and abs(sol.value) <= VALUE_ATOL
