"""General-sum bimatrix games: vertex enumeration, degeneracy, Lemke-Howson, Nash gap."""

from __future__ import annotations

import dataclasses
import warnings

import nashpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.matrix_games import (
    DegenerateGameError,
    Equilibrium,
    EquilibriumSet,
    all_equilibria,
    is_degenerate,
    lemke_howson,
    nash_gap_bimatrix,
)
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL

# Agreement with nashpy, as sets of strategy profiles (the figure the tests promise).
AGREE_ATOL = 1e-8

VON_STENGEL_A = [[3, 3], [2, 5], [0, 6]]
VON_STENGEL_B = [[3, 2], [2, 6], [3, 1]]
VON_STENGEL_B_DEGENERATE = [[3, 3], [2, 6], [3, 1]]


def _profiles(eqs) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for e in eqs:
        if isinstance(e, Equilibrium):
            out.append((np.asarray(e.strategies[0]), np.asarray(e.strategies[1])))
        else:
            out.append((np.asarray(e[0], dtype=float), np.asarray(e[1], dtype=float)))
    return out


def _same_set(ours, theirs, atol=AGREE_ATOL) -> bool:
    """Bijective matching of two lists of profiles within ``atol``."""
    ours, theirs = _profiles(ours), _profiles(theirs)
    if len(ours) != len(theirs):
        return False
    used = [False] * len(theirs)
    for x, y in ours:
        for j, (u, v) in enumerate(theirs):
            if not used[j] and np.allclose(x, u, atol=atol, rtol=0) and np.allclose(y, v, atol=atol, rtol=0):
                used[j] = True
                break
        else:
            return False
    return True


def _contains(ours, profile, atol=AGREE_ATOL) -> bool:
    x, y = profile
    return any(np.allclose(u, x, atol=atol, rtol=0) and np.allclose(v, y, atol=atol, rtol=0) for u, v in _profiles(ours))


def _check_equilibrium(A, B, eq: Equilibrium) -> None:
    A, B = np.asarray(A, float), np.asarray(B, float)
    x, y = eq.strategies
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert x.shape == (A.shape[0],) and y.shape == (A.shape[1],)
    assert x.min() >= -PROB_ATOL and y.min() >= -PROB_ATOL
    assert abs(x.sum() - 1) <= PROB_ATOL and abs(y.sum() - 1) <= PROB_ATOL
    assert nash_gap_bimatrix(A, B, x, y) <= VALUE_ATOL
    assert eq.payoffs[0] == pytest.approx(float(x @ A @ y), abs=VALUE_ATOL)
    assert eq.payoffs[1] == pytest.approx(float(x @ B @ y), abs=VALUE_ATOL)


# ------------------------------------------------------------------ literature values


def test_von_stengel_3x2_three_equilibria():
    # von Stengel, "Equilibrium computation for two-player games in strategic and extensive
    # form", Algorithmic Game Theory ch. 3: exactly three equilibria
    res = all_equilibria(VON_STENGEL_A, VON_STENGEL_B)
    assert isinstance(res, EquilibriumSet)
    assert res.complete and not res.degenerate
    expected = [
        ((1, 0, 0), (1, 0)),
        ((4 / 5, 1 / 5, 0), (2 / 3, 1 / 3)),
        ((0, 1 / 3, 2 / 3), (1 / 3, 2 / 3)),
    ]
    # sorted by decreasing lexicographic (x, y): exactly the order above
    assert len(res.equilibria) == 3
    for eq, (x, y) in zip(res.equilibria, expected):
        np.testing.assert_allclose(eq.strategies[0], x, atol=PROB_ATOL)
        np.testing.assert_allclose(eq.strategies[1], y, atol=PROB_ATOL)
        _check_equilibrium(VON_STENGEL_A, VON_STENGEL_B, eq)
    payoffs = [eq.payoffs for eq in res.equilibria]
    np.testing.assert_allclose(payoffs, [(3, 3), (3, 14 / 5), (4, 8 / 3)], atol=VALUE_ATOL)
    assert not is_degenerate(VON_STENGEL_A, VON_STENGEL_B)


def test_von_stengel_3x2_lemke_howson_all_labels():
    res = all_equilibria(VON_STENGEL_A, VON_STENGEL_B)
    for k in range(5):
        eq = lemke_howson(VON_STENGEL_A, VON_STENGEL_B, initial_dropped_label=k)
        _check_equilibrium(VON_STENGEL_A, VON_STENGEL_B, eq)
        assert _contains(res, _profiles([eq])[0], atol=PROB_ATOL)
    # LH never reaches the middle equilibrium (it has the opposite index)
    reached = {tuple(np.round(lemke_howson(VON_STENGEL_A, VON_STENGEL_B, k).strategies[0], 6)) for k in range(5)}
    assert (0.8, 0.2, 0.0) not in reached


def test_matching_pennies_bimatrix():
    A = np.array([[1.0, -1.0], [-1.0, 1.0]])
    res = all_equilibria(A, -A)
    assert res.complete and len(res) == 1
    np.testing.assert_allclose(res[0].strategies[0], [0.5, 0.5], atol=PROB_ATOL)
    np.testing.assert_allclose(res[0].strategies[1], [0.5, 0.5], atol=PROB_ATOL)
    np.testing.assert_allclose(res[0].payoffs, [0.0, 0.0], atol=VALUE_ATOL)


def test_rock_paper_scissors_bimatrix():
    A = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=float)
    res = all_equilibria(A, -A)
    assert res.complete and not res.degenerate and len(res) == 1
    np.testing.assert_allclose(res[0].strategies[0], np.full(3, 1 / 3), atol=PROB_ATOL)
    np.testing.assert_allclose(res[0].strategies[1], np.full(3, 1 / 3), atol=PROB_ATOL)
    for k in range(6):
        eq = lemke_howson(A, -A, k)
        np.testing.assert_allclose(eq.strategies[0], np.full(3, 1 / 3), atol=PROB_ATOL)


def test_prisoners_dilemma_unique_pure():
    A = np.array([[3.0, 0.0], [5.0, 1.0]])  # actions: cooperate, defect
    res = all_equilibria(A, A.T)
    assert res.complete and len(res) == 1
    np.testing.assert_allclose(res[0].strategies[0], [0, 1], atol=PROB_ATOL)
    np.testing.assert_allclose(res[0].strategies[1], [0, 1], atol=PROB_ATOL)
    np.testing.assert_allclose(res[0].payoffs, [1.0, 1.0], atol=VALUE_ATOL)
    # the gap at mutual cooperation: each player gains 5 - 3 by defecting
    assert nash_gap_bimatrix(A, A.T, [1, 0], [1, 0]) == pytest.approx(4.0, abs=VALUE_ATOL)


def test_battle_of_the_sexes():
    a, b = 3.0, 2.0
    A = np.array([[a, 0.0], [0.0, b]])
    B = np.array([[b, 0.0], [0.0, a]])
    res = all_equilibria(A, B)
    assert res.complete and len(res) == 3
    # mixed: x makes the column indifferent (b x1 = a x2), y the row (a y1 = b y2)
    x_mix = [a / (a + b), b / (a + b)]
    y_mix = [b / (a + b), a / (a + b)]
    expected = [([1, 0], [1, 0]), (x_mix, y_mix), ([0, 1], [0, 1])]
    for eq, (x, y) in zip(res.equilibria, expected):
        np.testing.assert_allclose(eq.strategies[0], x, atol=PROB_ATOL)
        np.testing.assert_allclose(eq.strategies[1], y, atol=PROB_ATOL)
    mixed_payoff = a * b / (a + b)
    np.testing.assert_allclose(res[1].payoffs, [mixed_payoff, mixed_payoff], atol=VALUE_ATOL)
    np.testing.assert_allclose(res[0].payoffs, [a, b], atol=VALUE_ATOL)
    np.testing.assert_allclose(res[2].payoffs, [b, a], atol=VALUE_ATOL)


def test_trivial_games():
    res = all_equilibria([[5.0]], [[-1.0]])
    assert res.complete and len(res) == 1 and res[0].payoffs == (5.0, -1.0)
    res = all_equilibria([[0.0, 0.0, 0.0]], [[1.0, 3.0, 2.0]])
    assert res.complete and len(res) == 1
    np.testing.assert_allclose(res[0].strategies[1], [0, 1, 0], atol=PROB_ATOL)
    # a tie in a single row is degenerate (one pure strategy, two best responses)
    assert is_degenerate([[0.0, 0.0]], [[1.0, 1.0]])


# ------------------------------------------------------------------ degenerate games


def test_von_stengel_degenerate_detected():
    A, B = VON_STENGEL_A, VON_STENGEL_B_DEGENERATE
    assert is_degenerate(A, B)
    with pytest.raises(DegenerateGameError, match="certified complete"):
        all_equilibria(A, B, strict=True)
    assert issubclass(DegenerateGameError, ValueError)
    res = all_equilibria(A, B)  # the default returns the extreme equilibria with flags
    assert res.degenerate and res.exact
    # x = (1,0,0) with every y whose second coordinate lies in [0, 1/3] is an equilibrium:
    # a continuum, so the list (its extreme points) is NOT the complete set
    assert not res.complete
    expected = [
        ((1, 0, 0), (1, 0)),
        ((1, 0, 0), (2 / 3, 1 / 3)),
        ((0, 1 / 3, 2 / 3), (1 / 3, 2 / 3)),
    ]
    assert _same_set(res, expected)
    for eq in res:
        _check_equilibrium(A, B, eq)
    # a point of the continuum that is not in the list is still an equilibrium
    assert nash_gap_bimatrix(A, B, [1, 0, 0], [5 / 6, 1 / 6]) <= VALUE_ATOL
    # Lemke-Howson with the lexicographic rule still terminates at an equilibrium
    for k in range(5):
        _check_equilibrium(A, B, lemke_howson(A, B, k))


def test_all_ties_game_is_degenerate_and_incomplete():
    A = np.ones((2, 2))
    assert is_degenerate(A, A)
    with pytest.raises(DegenerateGameError):
        all_equilibria(A, A, strict=True)
    res = all_equilibria(A, A)
    assert res.degenerate and not res.complete
    pure = [((1, 0), (1, 0)), ((1, 0), (0, 1)), ((0, 1), (1, 0)), ((0, 1), (0, 1))]
    assert _same_set(res, pure)


def test_degenerate_game_with_finitely_many_equilibria_is_complete():
    # row 0 strictly dominates; against row 1 the column player is indifferent (degenerate),
    # but row 1 is never played, so the unique equilibrium is (row 0, column 0)
    A = np.array([[1.0, 1.0], [0.0, 0.0]])
    B = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert is_degenerate(A, B)
    res = all_equilibria(A, B)
    assert res.degenerate and res.complete and res.exact
    assert _same_set(res, [((1, 0), (1, 0))])
    assert all_equilibria(A, B, strict=True).complete  # certified, so strict mode returns it
    # the float answer alone cannot certify a degenerate game
    assert not all_equilibria(A, B, exact=False).complete


# ------------------------------------------------------------------ properties


@st.composite
def generic_games(draw, max_size=5, min_size=1):
    """Real Gaussian payoffs: nondegenerate with probability one."""
    m = draw(st.integers(min_size, max_size))
    n = draw(st.integers(min_size, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.standard_normal((m, n)), rng.standard_normal((m, n))


@st.composite
def integer_games(draw):
    m = draw(st.integers(1, 4))
    n = draw(st.integers(1, 4))
    ints = st.integers(-3, 3)
    A = draw(st.lists(st.lists(ints, min_size=n, max_size=n), min_size=m, max_size=m))
    B = draw(st.lists(st.lists(ints, min_size=n, max_size=n), min_size=m, max_size=m))
    return np.array(A, dtype=float), np.array(B, dtype=float)


@settings(max_examples=60, deadline=None)
@given(generic_games())
def test_generic_games_all_equilibria_and_lemke_howson(game):
    A, B = game
    assert not is_degenerate(A, B)
    res = all_equilibria(A, B)
    assert res.complete and not res.degenerate
    # nondegenerate games have an odd number of equilibria
    assert len(res) % 2 == 1
    for eq in res:
        _check_equilibrium(A, B, eq)
    # no duplicates
    for i, e in enumerate(res):
        assert not _contains(res.equilibria[:i], _profiles([e])[0], atol=PROB_ATOL)
    # Lemke-Howson from every label lands on one of them
    for k in range(sum(A.shape)):
        eq = lemke_howson(A, B, initial_dropped_label=k)
        _check_equilibrium(A, B, eq)
        assert _contains(res, _profiles([eq])[0])


@settings(max_examples=40, deadline=None)
@given(generic_games(max_size=4, min_size=2))  # nashpy's qhull needs dimension >= 2
def test_agrees_with_nashpy(game):
    A, B = game
    res = all_equilibria(A, B)
    g = nashpy.Game(A, B)
    # nashpy's vertex enumeration (a different algorithm) gives the same set
    assert _same_set(res, list(g.vertex_enumeration()))
    # nashpy's support enumeration tests `prob >= 0` and `max == max` exactly, so in floating
    # point it MISSES equilibria of generic games (see the report); everything it returns
    # must be ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = list(g.support_enumeration())
    for prof in _profiles(se):
        assert _contains(res, prof)


@settings(max_examples=40, deadline=None)
@given(generic_games(max_size=3, min_size=2))  # nashpy's LH never returns on 1 x n games
def test_lemke_howson_matches_nashpy_path(game):
    # the LH path from a dropped label is unique in a nondegenerate game
    A, B = game
    compared = 0
    for k in range(sum(A.shape)):
        ours = lemke_howson(A, B, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                theirs = nashpy.Game(A, B).lemke_howson(initial_dropped_label=k)
            except KeyError:  # nashpy 0.0.43's float tableau sometimes loses a basis label
                continue
        compared += 1
        assert _same_set([ours], [theirs])
    assert compared >= 1


def test_agrees_with_nashpy_von_stengel():
    g = nashpy.Game(np.array(VON_STENGEL_A, float), np.array(VON_STENGEL_B, float))
    res = all_equilibria(VON_STENGEL_A, VON_STENGEL_B)
    assert _same_set(res, list(g.support_enumeration()))


@settings(max_examples=60, deadline=None)
@given(integer_games())
def test_integer_games_never_silently_incomplete(game):
    A, B = game
    res = all_equilibria(A, B)
    if is_degenerate(A, B):
        assert res.degenerate and res.exact  # small games are settled in exact arithmetic
    else:
        res = all_equilibria(A, B)
        assert res.complete and not res.degenerate
        assert len(res) % 2 == 1
        if min(A.shape) >= 2:  # nashpy's qhull needs dimension >= 2
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                assert _same_set(res, list(nashpy.Game(A, B).vertex_enumeration()))
    assert len(res) >= 1  # every finite game has an equilibrium
    for eq in res:
        _check_equilibrium(A, B, eq)
    # Lemke-Howson terminates at an equilibrium in degenerate games too
    for k in range(sum(A.shape)):
        eq = lemke_howson(A, B, k)
        _check_equilibrium(A, B, eq)
        # LH ends at a completely labelled vertex pair, i.e. an extreme equilibrium, which
        # the list holds even when it is not the complete set
        assert _contains(res, _profiles([eq])[0], atol=PROB_ATOL)


@settings(max_examples=30, deadline=None)
@given(generic_games(max_size=4), st.floats(0.01, 100), st.floats(-50, 50))
def test_equilibria_invariant_under_affine_payoffs(game, scale, shift):
    A, B = game
    res = all_equilibria(A, B)
    res2 = all_equilibria(scale * A + shift, B / scale - shift)
    assert _same_set(res, res2)
    # the order is deterministic
    for e, f in zip(res, res2):
        np.testing.assert_allclose(e.strategies[0], f.strategies[0], atol=AGREE_ATOL)


def test_zero_sum_bimatrix_agrees_with_lp():
    from marlcov.linear_games.matrix_games import zero_sum_solve

    rng = np.random.default_rng(7)
    A = rng.standard_normal((5, 4))
    res = all_equilibria(A, -A)
    sol = zero_sum_solve(A)
    assert len(res) == 1
    assert res[0].payoffs[0] == pytest.approx(sol.value, abs=VALUE_ATOL)
    np.testing.assert_allclose(res[0].strategies[0], sol.row_strategy, atol=AGREE_ATOL)


@pytest.mark.slow
def test_eight_by_eight_against_nashpy_vertex_enumeration():
    rng = np.random.default_rng(2024)
    for _ in range(3):
        A, B = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
        res = all_equilibria(A, B)
        assert len(res) % 2 == 1
        assert _same_set(res, list(nashpy.Game(A, B).vertex_enumeration()))


# ------------------------------------------------------------------ API and validation


def test_results_are_frozen():
    res = all_equilibria(VON_STENGEL_A, VON_STENGEL_B)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.complete = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res[0].payoffs = (0.0, 0.0)  # type: ignore[misc]
    with pytest.raises(ValueError):
        res[0].strategies[0][0] = 0.5
    assert isinstance(res[0].strategies, tuple) and isinstance(res[0].payoffs, tuple)
    assert all(isinstance(p, float) for p in res[0].payoffs)


@pytest.mark.parametrize("fn", [all_equilibria, is_degenerate, lemke_howson])
def test_invalid_bimatrix(fn):
    good = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^B:.*shape"):
        fn(good, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"^A:.*finite"):
        fn(np.array([[np.nan, 0, 0], [0, 0, 0]]), good)
    with pytest.raises(ValueError, match=r"^B:.*finite"):
        fn(good, np.array([[0, 0, 0], [0, np.inf, 0]]))
    with pytest.raises(ValueError, match=r"^A:.*2-D"):
        fn(np.zeros(3), good)
    with pytest.raises(ValueError, match=r"^B:.*2-D"):
        fn(good, np.zeros((2, 3, 1)))


def test_invalid_nash_gap_inputs():
    A = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^x:"):
        nash_gap_bimatrix(A, A, [1.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"^y:"):
        nash_gap_bimatrix(A, A, [1.0, 0.0], [0.5, 0.6, 0.0])
    with pytest.raises(ValueError, match=r"^y:"):
        nash_gap_bimatrix(A, A, [1.0, 0.0], [np.nan, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"^B:"):
        nash_gap_bimatrix(A, np.zeros((3, 2)), [1.0, 0.0], [1.0, 0.0, 0.0])


@pytest.mark.parametrize("label", [-1, 5, 2.0, True, "0"])
def test_invalid_dropped_label(label):
    with pytest.raises(ValueError, match="initial_dropped_label"):
        lemke_howson(np.zeros((2, 3)), np.zeros((2, 3)), initial_dropped_label=label)
