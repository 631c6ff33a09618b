"""Zero-sum matrix games: value and optimal strategies by linear programming, polished.

The row player receives ``x^T A y`` and maximises it; the column player minimises it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from marlcov.theory.tolerances import HIGHS_FEASIBILITY_TOL, PIVOT_ATOL, PROB_ATOL

from .bimatrix import as_payoff_matrix, frozen, normalised, to_simplex
from .dense_ipm import zero_sum_ipm, zero_sum_ipm_batch

__all__ = ["ZeroSumSolution", "zero_sum_solve", "zero_sum_solve_batch"]


@dataclass(frozen=True, eq=False)
class ZeroSumSolution:
    """Value and maximin/minimax strategies of a zero-sum matrix game.

    ``value = row_strategy @ A @ col_strategy``. ``exploitability = max_i (A y)_i -
    min_j (x^T A)_j`` is computed from the returned strategies in the payoffs of ``A``: the row
    strategy guarantees at least ``value - exploitability`` and the column strategy concedes at
    most ``value + exploitability``, so it certifies how far both are from optimal.
    """

    value: float
    row_strategy: np.ndarray
    col_strategy: np.ndarray
    exploitability: float = 0.0


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
        # HiGHS's default feasibility tolerances (1e-7) let it trade a payoff of that size for
        # another: a game with a 6e-8 entry came back 6e-8 from optimal.
        options={"primal_feasibility_tolerance": HIGHS_FEASIBILITY_TOL, "dual_feasibility_tolerance": HIGHS_FEASIBILITY_TOL},
    )
    if res.status != 0:
        raise RuntimeError(f"zero_sum_solve: HiGHS failed: {res.message}")
    u = np.asarray(res.x, dtype=np.float64)
    w = -np.asarray(res.ineqlin.marginals, dtype=np.float64)
    return to_simplex(u), to_simplex(w)


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
        tol = dict(tol_gap_abs=PIVOT_ATOL, tol_gap_rel=PIVOT_ATOL, tol_feas=PIVOT_ATOL, tol_ktratio=PIVOT_ATOL)
        prob.solve(solver="CLARABEL", **tol)
    else:  # pragma: no cover - CLARABEL ships with cvxpy
        prob.solve()
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or x.value is None or (cons[0].dual_value is None):
        raise RuntimeError(f"zero_sum_solve: cvxpy failed with status {prob.status}")
    if prob.status == cp.OPTIMAL_INACCURATE:
        warnings.warn("zero_sum_solve: cvxpy reports an inaccurate solution", RuntimeWarning, stacklevel=3)
    return to_simplex(np.asarray(x.value)), to_simplex(np.asarray(cons[0].dual_value))


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
    if xS.min() >= -PROB_ATOL and yT.min() >= -PROB_ATOL:
        xp, yp = np.zeros_like(x), np.zeros_like(y)
        xp[S], yp[T] = xS, yT
        xp, yp = to_simplex(xp), to_simplex(yp)
        if _zs_exploitability(An, xp, yp) <= _zs_exploitability(An, x, y):
            x, y = xp, yp
    if _zs_exploitability(An, x, y) <= PIVOT_ATOL:
        return x, y
    # A degenerate game: the optimal set of a player can be a face, and the least-squares point
    # of an underdetermined indifference system need not be optimal. Each player's simplex LP
    # restricted to its support guess (against every action of the other) lands on a vertex of
    # that face, exact to rounding.
    xr, yr = np.zeros_like(x), np.zeros_like(y)
    xr[S] = _zs_highs(An[S, :])[0]
    yr[T] = _zs_highs(An[:, T])[1]
    if _zs_exploitability(An, xr, yr) <= _zs_exploitability(An, x, y):
        return xr, yr
    return x, y


def _less_exploitable(An: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The polished interior-point pair ``(x, y)`` if it is within ``PIVOT_ATOL`` of optimal,
    else the less exploitable of it and HiGHS's polished pair (either can be the better one
    on a near-degenerate game)."""
    exploit = _zs_exploitability(An, x, y)
    if exploit <= PIVOT_ATOL:
        return x, y
    hx, hy = _zs_polish(An, *_zs_highs(An))
    return (hx, hy) if _zs_exploitability(An, hx, hy) < exploit else (x, y)


def zero_sum_solve(A, method: str = "auto") -> ZeroSumSolution:
    """Value and optimal strategies of the zero-sum game where the row player receives
    ``x^T A y`` (and maximises it) and the column player pays it (and minimises it).

    ``method="ipm"``: the dense interior-point method of :mod:`.dense_ipm` (2.8x faster than
    HiGHS's interior point on a dense 1000 x 1000 game, see benchmarks/bench_matrix_games.py).
    ``method="auto"`` (default): ``ipm``, and if the polished ``ipm`` pair is more than
    ``PIVOT_ATOL`` (normalised units) from optimal, the less exploitable of it and HiGHS's. ``method="highs"``: one ``scipy.optimize.linprog(method="highs")`` solve of the row
    player's LP; the column strategy is read from its dual marginals. ``method="cvxpy"``: the
    equivalent LP in cvxpy (Clarabel, an interior-point method, with its tolerances set to
    ``PIVOT_ATOL``). Either way the LP solution is then polished by solving the indifference
    systems on its supports (kept only if it is feasible and no more exploitable), so the two
    methods agree to rounding error on games with a unique solution. Payoffs are normalised
    to [0, 1] for the solve. ``value`` is ``x^T A y`` of the returned strategies and
    ``exploitability`` certifies them (see :class:`ZeroSumSolution`): after polishing it is
    at rounding level (~1e-15 of the payoff span) on the random, integer and duplicated-row
    games of the tests and benchmarks.
    """
    A = as_payoff_matrix(A, "A")
    if method not in ("auto", "ipm", "highs", "cvxpy"):
        raise ValueError(f"method: expected 'auto', 'ipm', 'highs' or 'cvxpy', got {method!r}")
    n0, n1 = A.shape
    if not A.max() > A.min():  # constant game: everything is optimal
        x, y = np.full(n0, 1.0 / n0), np.full(n1, 1.0 / n1)
    else:
        An = normalised(A)
        solver = {"auto": zero_sum_ipm, "ipm": zero_sum_ipm, "highs": _zs_highs, "cvxpy": _zs_cvxpy}[method]
        x, y = _zs_polish(An, *solver(An))
        if method == "auto":
            x, y = _less_exploitable(An, x, y)
    exploit = max(0.0, float((A @ y).max() - (x @ A).min()))
    return ZeroSumSolution(value=float(x @ A @ y), row_strategy=frozen(x), col_strategy=frozen(y), exploitability=exploit)


def _solution(A: np.ndarray, x: np.ndarray, y: np.ndarray) -> ZeroSumSolution:
    exploit = max(0.0, float((A @ y).max() - (x @ A).min()))
    return ZeroSumSolution(value=float(x @ A @ y), row_strategy=frozen(x), col_strategy=frozen(y), exploitability=exploit)


def zero_sum_solve_batch(As) -> list[ZeroSumSolution]:
    """:func:`zero_sum_solve` (``method="auto"``) for a stack ``As [k, n0, n1]`` of games of
    one shape: one batched interior-point run for all of them (the stage games of a Markov
    game), then each polished, with the HiGHS fallback per game."""
    As = np.asarray(As, dtype=np.float64)
    if As.ndim != 3 or not np.all(np.isfinite(As)):
        raise ValueError(f"As: expected a finite array [k, n0, n1], got shape {As.shape}")
    lo = As.min(axis=(1, 2), keepdims=True)
    span = As.max(axis=(1, 2), keepdims=True) - lo
    constant = span[:, 0, 0] <= 0
    An = (As - lo) / np.where(span > 0, span, 1.0)
    X, Y = zero_sum_ipm_batch(An)
    out = []
    for k, A in enumerate(As):
        if constant[k]:
            x, y = np.full(A.shape[0], 1.0 / A.shape[0]), np.full(A.shape[1], 1.0 / A.shape[1])
        else:
            x, y = _less_exploitable(An[k], *_zs_polish(An[k], X[k], Y[k]))
        out.append(_solution(A, x, y))
    return out
