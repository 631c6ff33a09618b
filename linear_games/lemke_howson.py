"""One Nash equilibrium of a bimatrix game by Lemke-Howson complementary pivoting.

Labels ``0..n0-1`` are the row player's actions and ``n0..n0+n1-1`` the column player's (as
in nashpy and quantecon). Every starting label is available, and the ratio test is
lexicographic, so the path terminates on degenerate games too.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np

from marlcov.theory.tolerances import PIVOT_ATOL, VALUE_ATOL

from .bimatrix import Equilibrium, as_bimatrix, make_equilibrium, normalised, player_gaps, to_simplex

__all__ = ["lemke_howson"]


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
    A, B = as_bimatrix(A, B)
    n0, n1 = A.shape
    L = n0 + n1
    if isinstance(initial_dropped_label, bool) or not isinstance(initial_dropped_label, (int, np.integer)):
        raise ValueError(f"initial_dropped_label: expected an int in [0, {L}), got {initial_dropped_label!r}")
    k = int(initial_dropped_label)
    if not 0 <= k < L:
        raise ValueError(f"initial_dropped_label: expected an int in [0, {L}), got {k}")
    Ap = 1.0 + normalised(A)
    Bp = 1.0 + normalised(B)
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
    x, y = to_simplex(x), to_simplex(y)
    g0, g1 = player_gaps(Ap, Bp, x, y)
    if g0 + g1 > VALUE_ATOL:  # pragma: no cover - a numerical failure, never silent
        raise RuntimeError(f"lemke_howson: result is not an equilibrium (normalised gap {g0 + g1:.3g})")
    return make_equilibrium(A, B, x, y)
