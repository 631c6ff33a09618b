"""All equilibria of a nondegenerate bimatrix game by vectorised support enumeration.

The independent cross-check of :mod:`.vertex_enumeration` (the tests compare the two): for each
support size ``k`` every pair (row support, column support) of size ``k`` is stacked and the
indifference systems are solved by one batched ``np.linalg.solve``. A pair gives an
equilibrium when both solutions are probability vectors (entries above ``-PROB_ATOL``, then
clipped and renormalised) and their supports are best responses (within ``VALUE_ATOL``).
Complete for nondegenerate games only, and exponential in ``min(n0, n1)``.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np

from marlcov.theory.tolerances import PIVOT_ATOL, PROB_ATOL, VALUE_ATOL

from .bimatrix import as_bimatrix, normalised

__all__ = ["support_enumeration"]

#: Number of (row-support, column-support) pairs solved in one batched ``np.linalg.solve``
#: (bounds the memory of the vectorised enumeration; not a numerical tolerance).
_ENUM_CHUNK = 1 << 15


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
    z: np.ndarray,
    ok: np.ndarray,
    supp: np.ndarray,
    other_supp: np.ndarray,
    Pn: np.ndarray,
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
    labels = np.concatenate([zero_lab, tight_lab], axis=1) if own_first else np.concatenate([tight_lab, zero_lab], axis=1)
    return good, strat, labels


def _enumerate(A: np.ndarray, B: np.ndarray):
    """One vectorised pass over all square support pairs.

    Returns (degenerate, (X, Y)): whether a solution with surplus labels was seen, and the
    equilibrium strategy pairs from matching supports.
    """
    n0, n1 = A.shape
    Ap = 1.0 + normalised(A)
    Bp = 1.0 + normalised(B)
    Bn, An_T = Bp - 1.0, (Ap - 1.0).T
    degenerate = False
    eq_x, eq_y = [], []
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
            if both.any():
                eq_x.append(sx[both])
                eq_y.append(sy[both])
    cat = lambda parts, width: np.concatenate(parts) if parts else np.zeros((0, width))  # noqa: E731
    eqs = (cat(eq_x, n0), cat(eq_y, n1))
    return degenerate, eqs


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


def support_enumeration(A, B) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(X [K, n0], Y [K, n1], degenerate)``: the equilibria from square supports (deduplicated
    within ``PROB_ATOL``) and whether a vertex with surplus labels was seen."""
    A, B = as_bimatrix(A, B)
    degenerate, (EX, EY) = _enumerate(A, B)
    keep = _dedupe(np.concatenate([EX, EY], axis=1))
    return EX[keep], EY[keep], degenerate
