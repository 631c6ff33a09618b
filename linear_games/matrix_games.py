"""Two-player matrix games in float64: zero-sum LP, all equilibria, Lemke-Howson.

Conventions (see ``DESIGN.md``): ``A`` is the payoff matrix of player 0, who owns the rows
(the first action axis), ``B`` that of player 1, who owns the columns; both have shape
``[n0, n1]``. A mixed strategy is a float64 vector on the simplex. In a zero-sum game the row
player maximises ``x^T A y`` and the column player minimises it.

Numerics. Equilibria are invariant under a positive affine change of each player's payoffs,
so every solver works internally on the *normalised* game in which each player's payoffs span
``[0, 1]`` (shifted to ``[1, 2]`` where a solver needs positive payoffs). The tolerances of
:mod:`theory.tolerances` are applied in these normalised units, which makes them scale-free;
the payoffs reported back are computed from the original matrices.

Public API
----------
- :func:`zero_sum_solve` -> :class:`ZeroSumSolution`
- :func:`all_equilibria` -> :class:`EquilibriumSet` of :class:`Equilibrium`
- :func:`is_degenerate`, :class:`DegenerateGameError`
- :func:`lemke_howson` -> :class:`Equilibrium`
- :func:`nash_gap_bimatrix`
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.optimize import linprog

from marlcov.theory.tolerances import PIVOT_ATOL, PROB_ATOL, VALUE_ATOL

__all__ = [
    "ZeroSumSolution",
    "Equilibrium",
    "EquilibriumSet",
    "DegenerateGameError",
    "zero_sum_solve",
    "is_degenerate",
    "all_equilibria",
    "lemke_howson",
    "nash_gap_bimatrix",
]

#: Number of (row-support, column-support) pairs solved in one batched ``np.linalg.solve``
#: (bounds the memory of the vectorised enumeration; not a numerical tolerance).
_ENUM_CHUNK = 1 << 15


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ZeroSumSolution:
    """Value and maximin/minimax strategies of a zero-sum matrix game.

    ``value = row_strategy @ A @ col_strategy``; the row strategy guarantees the row player at
    least ``value`` and the column strategy holds him to at most ``value`` (up to the solver's
    accuracy; after polishing usually to rounding error).
    """

    value: float
    row_strategy: np.ndarray
    col_strategy: np.ndarray


@dataclass(frozen=True, eq=False)
class Equilibrium:
    """A Nash equilibrium ``(x, y)`` of a bimatrix game and its payoffs ``(x^T A y, x^T B y)``."""

    strategies: tuple[np.ndarray, np.ndarray]
    payoffs: tuple[float, float]


@dataclass(frozen=True, eq=False)
class EquilibriumSet:
    """The output of :func:`all_equilibria`.

    ``complete`` is True only if ``equilibria`` is the whole (finite) set of Nash equilibria.
    ``degenerate`` says whether the game is degenerate; for a degenerate game the list holds
    every *extreme* equilibrium, and ``complete`` is False whenever some of them span a
    continuum of equilibria (the equilibrium set is then the union of the products of convex
    hulls of the maximal bicliques of extreme equilibria).
    """

    equilibria: list[Equilibrium]
    complete: bool
    degenerate: bool

    def __len__(self) -> int:
        return len(self.equilibria)

    def __iter__(self):
        return iter(self.equilibria)

    def __getitem__(self, i: int) -> Equilibrium:
        return self.equilibria[i]


class DegenerateGameError(ValueError):
    """Raised by :func:`all_equilibria` for a degenerate game unless ``allow_degenerate=True``."""


# --------------------------------------------------------------------------------------------
# Validation and normalisation
# --------------------------------------------------------------------------------------------


def _as_payoff_matrix(M, name: str) -> np.ndarray:
    try:
        arr = np.asarray(M)
    except Exception as exc:  # ragged nested lists etc.
        raise ValueError(f"{name}: expected a 2-D array of finite real numbers ({exc})") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(
            f"{name}: expected a 2-D array of finite real numbers, got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D payoff matrix, got {arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one action per player, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite entries, found NaN or inf")
    return arr


def _as_bimatrix(A, B) -> tuple[np.ndarray, np.ndarray]:
    A = _as_payoff_matrix(A, "A")
    B = _as_payoff_matrix(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"B: expected the shape of A {A.shape}, got {B.shape}")
    return A, B


def _as_strategy(v, size: int, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name}: expected a probability vector of shape ({size},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite entries, found NaN or inf")
    if arr.min() < -PROB_ATOL or abs(arr.sum() - 1.0) > PROB_ATOL:
        raise ValueError(
            f"{name}: expected a probability vector (entries >= 0, sum 1 within PROB_ATOL), "
            f"got min {arr.min():.3g}, sum {arr.sum():.17g}"
        )
    return arr


def _normalise(M: np.ndarray) -> np.ndarray:
    """Positive affine image of ``M`` with entries spanning [0, 1] (all zeros if constant)."""
    lo, hi = M.min(), M.max()
    if hi > lo:
        return (M - lo) / (hi - lo)
    return np.zeros_like(M)


def _to_simplex(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, None)
    return v / v.sum()


# --------------------------------------------------------------------------------------------
# Nash gap
# --------------------------------------------------------------------------------------------


def _gaps(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    Ay = A @ y
    xB = x @ B
    return max(0.0, float(Ay.max() - x @ Ay)), max(0.0, float(xB.max() - xB @ y))


def nash_gap_bimatrix(A, B, x, y) -> float:
    """Sum over both players of (best-response payoff - payoff) at the profile ``(x, y)``.

    Zero exactly at a Nash equilibrium; ``x`` and ``y`` must be probability vectors (within
    ``PROB_ATOL``). Each player's term is clipped at 0 against rounding.
    """
    A, B = _as_bimatrix(A, B)
    x = _as_strategy(x, A.shape[0], "x")
    y = _as_strategy(y, A.shape[1], "y")
    g0, g1 = _gaps(A, B, x, y)
    return g0 + g1


# --------------------------------------------------------------------------------------------
# Zero-sum games
# --------------------------------------------------------------------------------------------


def _zs_highs(An: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row LP ``min 1^T u s.t. A'^T u >= 1, u >= 0`` with ``A' = An + 1 > 0``; the column
    strategy is read from the dual marginals of the same solve."""
    n0, n1 = An.shape
    Ap = An + 1.0
    res = linprog(
        np.ones(n0),
        A_ub=-Ap.T,
        b_ub=-np.ones(n1),
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"zero_sum_solve: HiGHS failed: {res.message}")
    u = np.asarray(res.x, dtype=np.float64)
    w = -np.asarray(res.ineqlin.marginals, dtype=np.float64)
    return _to_simplex(u), _to_simplex(w)


def _zs_cvxpy(An: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max v s.t. A^T x >= v 1, 1^T x = 1, x >= 0`` in cvxpy (an interior-point solver by
    default); the column strategy is the dual of the first constraint."""
    import cvxpy as cp

    n0, _ = An.shape
    x = cp.Variable(n0)
    v = cp.Variable()
    cons = [An.T @ x >= v, cp.sum(x) == 1, x >= 0]
    prob = cp.Problem(cp.Maximize(v), cons)
    if "CLARABEL" in cp.installed_solvers():
        # interior point: ask for a gap well below VALUE_ATOL (in normalised payoff units)
        tol = dict(tol_gap_abs=PIVOT_ATOL, tol_gap_rel=PIVOT_ATOL, tol_feas=PIVOT_ATOL,
                   tol_ktratio=PIVOT_ATOL)
        prob.solve(solver="CLARABEL", **tol)
    else:  # pragma: no cover - CLARABEL ships with cvxpy
        prob.solve()
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or x.value is None or (
        cons[0].dual_value is None
    ):
        raise RuntimeError(f"zero_sum_solve: cvxpy failed with status {prob.status}")
    if prob.status == cp.OPTIMAL_INACCURATE:
        warnings.warn("zero_sum_solve: cvxpy reports an inaccurate solution", RuntimeWarning,
                      stacklevel=3)
    return _to_simplex(np.asarray(x.value)), _to_simplex(np.asarray(cons[0].dual_value))


def _zs_exploitability(An: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float((An @ y).max() - (x @ An).min())


def _zs_polish(An: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crossover to an exact solution: guess the supports by strict complementarity (an action
    is in the support if its probability exceeds its regret, so no threshold is needed) and
    solve the indifference systems on them (square: ``solve``; degenerate: least squares).
    The polished pair is kept only if it is feasible and no more exploitable."""
    Ay, xA = An @ y, x @ An
    S = np.flatnonzero(x > Ay.max() - Ay)
    T = np.flatnonzero(y > xA - xA.min())
    if S.size == 0 or T.size == 0:
        return x, y

    def indifference(M: np.ndarray) -> np.ndarray:
        # unknowns (p, v): M^T p = v 1, 1^T p = 1, with M = An[S, T] for x and An[S, T]^T for y
        r, c = M.shape
        K = np.zeros((c + 1, r + 1))
        K[:c, :r], K[:c, r], K[c, :r] = M.T, -1.0, 1.0
        rhs = np.zeros(c + 1)
        rhs[-1] = 1.0
        if r == c:
            try:
                return np.linalg.solve(K, rhs)[:r]
            except np.linalg.LinAlgError:
                pass
        return np.linalg.lstsq(K, rhs, rcond=None)[0][:r]

    M = An[np.ix_(S, T)]
    xS, yT = indifference(M), indifference(M.T)
    if xS.min() < -PROB_ATOL or yT.min() < -PROB_ATOL:
        return x, y
    xp = np.zeros_like(x)
    yp = np.zeros_like(y)
    xp[S], yp[T] = xS, yT
    xp, yp = _to_simplex(xp), _to_simplex(yp)
    if _zs_exploitability(An, xp, yp) <= _zs_exploitability(An, x, y):
        return xp, yp
    return x, y


def zero_sum_solve(A, method: str = "highs") -> ZeroSumSolution:
    """Value and optimal strategies of the zero-sum game where the row player receives
    ``x^T A y`` (and maximises it) and the column player pays it (and minimises it).

    ``method="highs"``: one ``scipy.optimize.linprog(method="highs")`` solve of the row
    player's LP; the column strategy is read from its dual marginals. ``method="cvxpy"``: the
    equivalent LP in cvxpy (Clarabel, an interior-point method, with its tolerances set to
    ``PIVOT_ATOL``). Either way the LP solution is then polished by solving the indifference
    systems on its supports (kept only if it is feasible and no more exploitable), so the two
    methods agree to rounding error on games with a unique solution. Payoffs are normalised
    to [0, 1] for the solve. ``value`` is ``x^T A y`` of the returned strategies.
    """
    A = _as_payoff_matrix(A, "A")
    if method not in ("highs", "cvxpy"):
        raise ValueError(f"method: expected 'highs' or 'cvxpy', got {method!r}")
    n0, n1 = A.shape
    if not A.max() > A.min():  # constant game: everything is optimal
        x, y = np.full(n0, 1.0 / n0), np.full(n1, 1.0 / n1)
    else:
        An = _normalise(A)
        x, y = _zs_highs(An) if method == "highs" else _zs_cvxpy(An)
        x, y = _zs_polish(An, x, y)
    return ZeroSumSolution(value=float(x @ A @ y), row_strategy=_frozen(x), col_strategy=_frozen(y))


# --------------------------------------------------------------------------------------------
# Vectorised enumeration of the vertices of the best-response polytopes
# --------------------------------------------------------------------------------------------
#
# With payoffs shifted to A', B' in [1, 2] the best-response polytopes are
#   P = {x in R^n0 : x >= 0, B'^T x <= 1},   Q = {y in R^n1 : y >= 0, A' y <= 1}.
# A label of x in P is a row i with x_i = 0 or a column j with (B'^T x)_j = 1 (j is a best
# response to x); likewise for Q. For a pair of supports (S, T) with |S| = |T| = k the
# indifference systems  x_S^T B'_{S,T} = 1  and  A'_{S,T} y_T = 1  are the normalised form of
# "x_S^T B_{S,T} = u 1, sum x = 1" (u = 1 / sum x'), and every vertex of P other than 0 is the
# solution of such a square nonsingular system. The game is nondegenerate iff no point of P
# has more than n0 labels and no point of Q more than n1, which it suffices to check at the
# vertices. Equilibria are the completely labelled pairs; in a nondegenerate game they are
# exactly the pairs (S, T) whose two systems are both feasible.


def _subsets(n: int, k: int) -> np.ndarray:
    return np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(n), k)),
        dtype=np.intp,
        count=comb(n, k) * k,
    ).reshape(-1, k)


def _batched_solve(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``M z = 1`` for a stack ``M [N, k, k]``; returns (z [N, k], ok [N]).

    Exactly singular systems (a zero pivot, which makes the batched LAPACK call fail) are
    replaced by the identity and flagged ``ok = False``; nearly singular ones are solved and
    left to the feasibility checks, which is all that matters for correctness."""
    N, k, _ = M.shape
    ones = np.ones((N, k, 1))
    try:
        return np.linalg.solve(M, ones)[..., 0], np.ones(N, dtype=bool)
    except np.linalg.LinAlgError:
        pass
    sign, _ = np.linalg.slogdet(M)
    ok = sign != 0  # exactly singular LU <=> a zero pivot, what made solve fail
    M = M.copy()
    M[~ok] = np.eye(k)
    try:
        return np.linalg.solve(M, ones)[..., 0], ok
    except np.linalg.LinAlgError:  # pragma: no cover - belt and braces
        sv = np.linalg.svd(M, compute_uv=False)
        ok &= sv[:, -1] > PIVOT_ATOL * sv[:, 0]
        M[~ok] = np.eye(k)
        return np.linalg.solve(M, ones)[..., 0], ok


def _side_check(
    z: np.ndarray, ok: np.ndarray, supp: np.ndarray, other_supp: np.ndarray, Pn: np.ndarray,
    own_first: bool,
):
    """Feasibility and labels of candidate strategies on one side.

    ``z`` [N, k] solves the indifference system on support ``supp`` [N, k] (own actions) that
    makes the opponent indifferent on ``other_supp`` [N, k]; ``Pn`` [own, other] are the
    opponent's normalised payoffs (in [0, 1]) with own actions along the first axis.
    Returns (feasible mask, strategies [N, own], labels [N, n0 + n1]).
    """
    with np.errstate(all="ignore"):  # nearly singular systems give huge z; they fail the checks
        return _side_check_impl(z, ok, supp, other_supp, Pn, own_first)


def _side_check_impl(z, ok, supp, other_supp, Pn, own_first):
    N, k = z.shape
    n_own, n_other = Pn.shape
    s = z.sum(axis=1)
    good = ok & (s > 0)
    s_safe = np.where(good, s, 1.0)
    zn = z / s_safe[:, None]
    good &= zn.min(axis=1) >= -PROB_ATOL
    strat = np.zeros((N, n_own))
    np.put_along_axis(strat, supp, np.clip(zn, 0.0, None), axis=1)
    tot = strat.sum(axis=1, keepdims=True)
    strat /= np.where(tot > 0, tot, 1.0)
    pay = strat @ Pn  # opponent's payoff of each of its pure actions [N, n_other]
    pay_T = np.take_along_axis(pay, other_supp, axis=1)
    best = pay.max(axis=1)
    good &= best - pay_T.min(axis=1) <= VALUE_ATOL
    zero_lab = strat <= PIVOT_ATOL
    tight_lab = pay >= best[:, None] - PIVOT_ATOL
    np.put_along_axis(tight_lab, other_supp, True, axis=1)
    labels = (
        np.concatenate([zero_lab, tight_lab], axis=1)
        if own_first
        else np.concatenate([tight_lab, zero_lab], axis=1)
    )
    return good, strat, labels


def _enumerate(A: np.ndarray, B: np.ndarray, want_equilibria: bool):
    """One vectorised pass over all square support pairs.

    Returns (degenerate, equilibrium strategy pairs from matching supports [list of (x, y)],
    x-vertices (strats, labels), y-vertices (strats, labels)).
    """
    n0, n1 = A.shape
    Ap = 1.0 + _normalise(A)
    Bp = 1.0 + _normalise(B)
    Bn, An_T = Bp - 1.0, (Ap - 1.0).T
    degenerate = False
    eq_x, eq_y = [], []
    vx_s, vx_l, vy_s, vy_l = [], [], [], []
    for k in range(1, min(n0, n1) + 1):
        R, C = _subsets(n0, k), _subsets(n1, k)
        n_pairs = len(R) * len(C)
        for start in range(0, n_pairs, _ENUM_CHUNK):
            idx = np.arange(start, min(start + _ENUM_CHUNK, n_pairs))
            rows, cols = R[idx // len(C)], C[idx % len(C)]
            # x_S^T B'_{S,T} = 1  <=>  (B'_{S,T})^T x_S = 1
            Bsub = Bp[rows[:, :, None], cols[:, None, :]]
            Asub = Ap[rows[:, :, None], cols[:, None, :]]
            zx, okx = _batched_solve(Bsub.transpose(0, 2, 1))
            zy, oky = _batched_solve(Asub)
            gx, sx, lx = _side_check(zx, okx, rows, cols, Bn, own_first=True)
            gy, sy, ly = _side_check(zy, oky, cols, rows, An_T, own_first=False)
            if (lx[gx].sum(axis=1) > n0).any() or (ly[gy].sum(axis=1) > n1).any():
                degenerate = True
            both = gx & gy
            if want_equilibria and both.any():
                eq_x.append(sx[both])
                eq_y.append(sy[both])
            vx_s.append(sx[gx])
            vx_l.append(lx[gx])
            vy_s.append(sy[gy])
            vy_l.append(ly[gy])
    cat = lambda parts, width: np.concatenate(parts) if parts else np.zeros((0, width))  # noqa: E731
    eqs = (cat(eq_x, n0), cat(eq_y, n1))
    vx = (cat(vx_s, n0), np.concatenate(vx_l).astype(bool) if vx_l else np.zeros((0, n0 + n1), bool))
    vy = (cat(vy_s, n1), np.concatenate(vy_l).astype(bool) if vy_l else np.zeros((0, n0 + n1), bool))
    return degenerate, eqs, vx, vy


def _dedupe(Z: np.ndarray) -> np.ndarray:
    """Indices of one representative of each cluster of rows equal within PROB_ATOL (exact
    duplicates on a PROB_ATOL grid are merged first, so memory stays linear)."""
    if len(Z) == 0:
        return np.zeros(0, dtype=np.intp)
    _, first = np.unique(np.round(Z / PROB_ATOL), axis=0, return_index=True)
    first = np.sort(first)
    U = Z[first]
    taken = np.zeros(len(U), dtype=bool)
    keep: list[int] = []
    for i in range(len(U)):
        if not taken[i]:
            keep.append(i)
            taken |= np.abs(U - U[i]).max(axis=1) <= PROB_ATOL
    return first[np.asarray(keep, dtype=np.intp)]


def _sorted_order(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Deterministic order: lexicographically decreasing (x, y), compared on a PROB_ATOL grid."""
    Z = np.round(np.concatenate([X, Y], axis=1) / PROB_ATOL)
    return np.lexsort((-Z).T[::-1])


def is_degenerate(A, B) -> bool:
    """Whether the bimatrix game ``(A, B)`` is degenerate: some mixed strategy with support
    size ``k`` has more than ``k`` pure best responses (ties and zero probabilities counted
    with ``PIVOT_ATOL`` in normalised payoff units). Checked exactly at every vertex of both
    best-response polytopes, by the same vectorised pass as :func:`all_equilibria`."""
    A, B = _as_bimatrix(A, B)
    return _enumerate(A, B, want_equilibria=False)[0]


def _make_equilibrium(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> Equilibrium:
    return Equilibrium(
        strategies=(_frozen(x), _frozen(y)), payoffs=(float(x @ A @ y), float(x @ B @ y))
    )


def all_equilibria(A, B, allow_degenerate: bool = False) -> EquilibriumSet:
    """All Nash equilibria of the bimatrix game ``(A, B)`` by vectorised support enumeration.

    For each support size ``k`` every pair (row support, column support) of size ``k`` is
    stacked and the indifference systems are solved with one batched ``np.linalg.solve``.
    A pair gives an equilibrium when both solutions are probability vectors (entries above
    ``-PROB_ATOL``, then clipped and renormalised) and their supports are best responses
    (within ``VALUE_ATOL``). The same pass counts the labels of every vertex of the
    best-response polytopes, which decides degeneracy.

    A degenerate game raises :class:`DegenerateGameError` unless ``allow_degenerate=True``;
    then every *extreme* equilibrium is returned (all completely labelled pairs of vertices,
    supports of any sizes) with ``degenerate=True``, and ``complete`` is True only if no two
    of them are interchangeable, i.e. the equilibrium set is exactly this finite list.
    Equilibria are deduplicated and sorted by decreasing lexicographic ``(x, y)``.
    """
    A, B = _as_bimatrix(A, B)
    n0, n1 = A.shape
    degenerate, (EX, EY), (VX, LX), (VY, LY) = _enumerate(A, B, want_equilibria=True)
    if not degenerate:
        keep = _dedupe(np.concatenate([EX, EY], axis=1))
        EX, EY = EX[keep], EY[keep]
        order = _sorted_order(EX, EY)
        eqs = [_make_equilibrium(A, B, EX[i], EY[i]) for i in order]
        return EquilibriumSet(equilibria=eqs, complete=True, degenerate=False)
    if not allow_degenerate:
        raise DegenerateGameError(
            "A, B: the game is degenerate (a mixed strategy with support size k has more than "
            "k pure best responses); pass allow_degenerate=True to get its extreme equilibria"
        )
    kx, ky = _dedupe(VX), _dedupe(VY)
    VX, LX, VY, LY = VX[kx], LX[kx], VY[ky], LY[ky]
    # completely labelled vertex pairs = extreme equilibria
    comp = (LX[:, None, :] | LY[None, :, :]).all(axis=2)
    ix, iy = np.nonzero(comp)
    EX, EY = VX[ix], VY[iy]
    # the equilibrium set is finite (= this list) iff the bipartite graph is a matching
    complete = bool(
        len(ix) > 0
        and np.unique(ix).size == len(ix)
        and np.unique(iy).size == len(iy)
    )
    order = _sorted_order(EX, EY)
    eqs = [_make_equilibrium(A, B, EX[i], EY[i]) for i in order]
    return EquilibriumSet(equilibria=eqs, complete=complete, degenerate=True)


# --------------------------------------------------------------------------------------------
# Lemke-Howson
# --------------------------------------------------------------------------------------------


def _lex_ratio_row(T: np.ndarray, col: int, lex_cols: np.ndarray) -> int:
    """Leaving row of the lexicographic minimum-ratio test for entering column ``col``."""
    c = T[:, col]
    cand = np.flatnonzero(c > PIVOT_ATOL)
    if cand.size == 0:
        raise RuntimeError("lemke_howson: unbounded ray (cannot happen with positive payoffs)")
    for j in itertools.chain((T.shape[1] - 1,), lex_cols):
        if cand.size == 1:
            break
        ratios = T[cand, j] / c[cand]
        cand = cand[ratios <= ratios.min() + PIVOT_ATOL]
    return int(cand[0])


def _pivot(T: np.ndarray, basis: list[int], col: int, lex_cols: np.ndarray) -> int:
    r = _lex_ratio_row(T, col, lex_cols)
    leaving = basis[r]
    T[r] /= T[r, col]
    factors = T[:, col].copy()
    factors[r] = 0.0
    T -= factors[:, None] * T[r][None, :]
    T[:, col] = 0.0
    T[r, col] = 1.0
    basis[r] = col
    return leaving


def lemke_howson(A, B, initial_dropped_label: int = 0) -> Equilibrium:
    """One Nash equilibrium by the Lemke-Howson complementary pivoting algorithm.

    Labels ``0..n0-1`` are the row player's actions and ``n0..n0+n1-1`` the column player's
    (as in nashpy). Payoffs are normalised to [1, 2] internally; each player's tableau has
    one column per label plus the right-hand side, and the ratio test is lexicographic (the
    right-hand side, then the columns of the initial slack basis, ties within ``PIVOT_ATOL``),
    so the algorithm terminates on degenerate games too.
    """
    A, B = _as_bimatrix(A, B)
    n0, n1 = A.shape
    L = n0 + n1
    if isinstance(initial_dropped_label, bool) or not isinstance(
        initial_dropped_label, (int, np.integer)
    ):
        raise ValueError(
            f"initial_dropped_label: expected an int in [0, {L}), got {initial_dropped_label!r}"
        )
    k = int(initial_dropped_label)
    if not 0 <= k < L:
        raise ValueError(f"initial_dropped_label: expected an int in [0, {L}), got {k}")
    Ap = 1.0 + _normalise(A)
    Bp = 1.0 + _normalise(B)
    # P: B'^T x + s = 1 (n1 rows); columns = labels (x_i -> i, s_j -> n0 + j), then rhs.
    TP = np.hstack([Bp.T, np.eye(n1), np.ones((n1, 1))])
    basis_P = list(range(n0, L))
    lex_P = np.arange(n0, L)
    # Q: A' y + r = 1 (n0 rows); columns = labels (r_i -> i, y_j -> n0 + j), then rhs.
    TQ = np.hstack([np.eye(n0), Ap, np.ones((n0, 1))])
    basis_Q = list(range(n0))
    lex_Q = np.arange(n0)
    tableaux = [(TP, basis_P, lex_P), (TQ, basis_Q, lex_Q)]
    side = 0 if k < n0 else 1  # label k is nonbasic in P iff it is a row label
    entering = k
    max_steps = 4 * comb(L, n0) + 4 * L
    for _ in range(max_steps):
        T, basis, lex = tableaux[side]
        leaving = _pivot(T, basis, entering, lex)
        if leaving == k:
            break
        entering = leaving
        side = 1 - side
    else:  # pragma: no cover - the path is finite
        raise RuntimeError("lemke_howson: no equilibrium reached (cycling)")
    x = np.zeros(n0)
    y = np.zeros(n1)
    for r, lab in enumerate(basis_P):
        if lab < n0:
            x[lab] = TP[r, -1]
    for r, lab in enumerate(basis_Q):
        if lab >= n0:
            y[lab - n0] = TQ[r, -1]
    x, y = _to_simplex(x), _to_simplex(y)
    g0, g1 = _gaps(Ap, Bp, x, y)
    if g0 + g1 > VALUE_ATOL:  # pragma: no cover - a numerical failure, never silent
        raise RuntimeError(f"lemke_howson: result is not an equilibrium (normalised gap {g0 + g1:.3g})")
    return _make_equilibrium(A, B, x, y)
