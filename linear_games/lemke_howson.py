"""Nash equilibria of bimatrix games by Lemke-Howson complementary pivoting.

Labels ``0..n0-1`` are the row player's actions and ``n0..n0+n1-1`` the column player's (as
in nashpy and quantecon). Every starting label is available, and the ratio test is
lexicographic, so the path terminates on degenerate games too.

:func:`lemke_howson` follows one path. :func:`lemke_howson_batch` follows many paths (many
games of one shape, any starting labels) in lockstep, one vectorised pivot per step for all
of them: a pivot of one small tableau is a dozen numpy calls whose fixed cost dominates, and
the batch pays it once per step instead of once per path. Path lengths have a long tail
(random 30 x 30 games: median 25 pivots, mean 58, the longest of 20 games often over 250),
and a lockstep batch runs as long as its longest path, so it pays off for small games and
many paths; benchmarks/bench_matrix_games.py measures both against quantecon's compiled
implementation.
"""

from __future__ import annotations

import itertools
import math
from math import comb

import numpy as np

from marlcov.theory.tolerances import PIVOT_ATOL, VALUE_ATOL

from .bimatrix import Equilibrium, as_bimatrix, frozen, make_equilibrium, normalised, player_gaps, to_simplex

__all__ = ["lemke_howson", "lemke_howson_batch"]


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


def _pivot(T: np.ndarray, basis: list[int], col: int, lex_cols: np.ndarray, ratios: np.ndarray) -> int:
    """Pivot ``col`` into the basis of ``T`` in place; returns the label that leaves.

    The ratio test runs on the right-hand side alone (``ratios``: a work buffer, one entry per
    row) and falls back to the lexicographic test only when the minimum is tied within
    ``PIVOT_ATOL``. The row operation leaves the entering column exactly a unit vector
    (``c_i - c_i * 1.0 == 0`` in floating point).
    """
    c = T[:, col]
    ratios.fill(np.inf)
    np.divide(T[:, -1], c, out=ratios, where=c > PIVOT_ATOL)
    r = int(ratios.argmin())
    low = ratios[r]
    if low == np.inf:
        raise RuntimeError("lemke_howson: unbounded ray (cannot happen with positive payoffs)")
    if np.add.reduce(ratios <= low + PIVOT_ATOL) > 1:
        r = _lex_ratio_row(T, col, lex_cols)
    prow = T[r] / c[r]
    T -= np.multiply.outer(c, prow)
    T[r] = prow
    leaving = basis[r]
    basis[r] = col
    return leaving


def _follow_path(TP: np.ndarray, TQ: np.ndarray, basis_P: list, basis_Q: list, k: int, entering: int, side: int) -> None:
    """Pivot ``entering`` into tableau ``side``, then the leaving label into the other, and so
    on, until label ``k`` leaves a basis (in place)."""
    n0 = TQ.shape[0]
    L = TP.shape[1] - 1
    tableaux = ((TP, basis_P, np.arange(n0, L), np.empty(L - n0)), (TQ, basis_Q, np.arange(n0), np.empty(n0)))
    for _ in range(4 * comb(L, n0) + 4 * L):
        T, basis, lex, ratios = tableaux[side]
        leaving = _pivot(T, basis, entering, lex, ratios)
        if leaving == k:
            return
        entering = leaving
        side = 1 - side
    raise RuntimeError("lemke_howson: no equilibrium reached (cycling)")  # pragma: no cover - the path is finite


def _tableaux(Ap: np.ndarray, Bp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(TP, TQ)`` of the games ``(..., n0, n1)``: columns = labels, then the right-hand side.

    P: ``B'^T x + s = 1`` (``n1`` rows; ``x_i`` is label ``i``, ``s_j`` label ``n0 + j``);
    Q: ``r + A' y = 1`` (``n0`` rows; ``r_i`` is label ``i``, ``y_j`` label ``n0 + j``).
    """
    *batch, n0, n1 = Ap.shape
    L = n0 + n1
    TP = np.zeros((*batch, n1, L + 1))
    TP[..., :n0] = np.swapaxes(Bp, -1, -2)
    TP[..., n0:L] = np.eye(n1)
    TP[..., -1] = 1.0
    TQ = np.zeros((*batch, n0, L + 1))
    TQ[..., :n0] = np.eye(n0)
    TQ[..., n0:L] = Ap
    TQ[..., -1] = 1.0
    return TP, TQ


def _check_label(label, L: int, name: str = "initial_dropped_label") -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ValueError(f"{name}: expected an int in [0, {L}), got {label!r}")
    if not 0 <= label < L:
        raise ValueError(f"{name}: expected an int in [0, {L}), got {label}")
    return int(label)


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
    k = _check_label(initial_dropped_label, L)
    Ap = 1.0 + normalised(A)
    Bp = 1.0 + normalised(B)
    TP, TQ = _tableaux(Ap, Bp)
    basis_P = list(range(n0, L))
    basis_Q = list(range(n0))
    _follow_path(TP, TQ, basis_P, basis_Q, k, k, 0 if k < n0 else 1)  # label k is nonbasic in P iff k < n0
    x = np.zeros(L)
    y = np.zeros(L)
    x[basis_P] = TP[:, -1]
    y[basis_Q] = TQ[:, -1]
    x, y = to_simplex(x[:n0]), to_simplex(y[n0:])
    g0, g1 = player_gaps(Ap, Bp, x, y)
    if g0 + g1 > VALUE_ATOL:  # pragma: no cover - a numerical failure, never silent
        raise RuntimeError(f"lemke_howson: result is not an equilibrium (normalised gap {g0 + g1:.3g})")
    return make_equilibrium(A, B, x, y)


def _as_game_stack(M, name: str) -> np.ndarray:
    try:
        arr = np.asarray(M, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected an array of real payoff matrices ({exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name}: expected payoff matrices of shape (K, n0, n1) with K, n0, n1 >= 1, got shape {arr.shape}")
    if not math.isfinite(arr.sum()) and not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite entries, found NaN or inf")
    return arr


def _solutions(TP: np.ndarray, TQ: np.ndarray, basis_P: np.ndarray, basis_Q: np.ndarray, n0: int):
    """The basic solutions ``x[K, n0]``, ``y[K, n1]`` (unnormalised) of stacked tableaux."""
    K, L = TP.shape[0], TP.shape[2] - 1
    rows = np.arange(K)[:, None]
    x = np.zeros((K, L))
    x[rows, basis_P] = TP[:, :, -1]
    y = np.zeros((K, L))
    y[rows, basis_Q] = TQ[:, :, -1]
    return x[:, :n0], y[:, n0:]


def _run_paths(TP, TQ, k: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Follow the paths of the stacked tableaux ``TP[K]``, ``TQ[K]`` (dropped labels ``k``, all
    starting in tableau ``side``) in lockstep; returns the unnormalised ``x[K, n0]``, ``y[K, n1]``.

    One step pivots every unfinished path, with the pivot of :func:`_pivot`; a path leaves the
    batch when label ``k`` leaves its basis. Ties in the ratio test are broken
    lexicographically, path by path.
    """
    K, n1, n0 = TP.shape[0], TP.shape[1], TQ.shape[1]
    L = n0 + n1
    tabs = [TP, TQ]
    basis = [np.tile(np.arange(n0, L), (K, 1)), np.tile(np.arange(n0), (K, 1))]
    lex = (np.arange(n0, L), np.arange(n0))
    x_out, y_out = np.zeros((K, n0)), np.zeros((K, n1))
    origin = np.arange(K)
    entering = k.copy()
    for _ in range(4 * comb(L, n0) + 4 * L):
        T, bas = tabs[side], basis[side]
        m = T.shape[0]
        ar = np.arange(m)
        c = T[ar, :, entering]
        ratios = np.full(c.shape, np.inf)
        np.divide(T[:, :, -1], c, out=ratios, where=c > PIVOT_ATOL)
        r = ratios.argmin(axis=1)
        low = ratios[ar, r]
        if np.isinf(low).any():
            raise RuntimeError("lemke_howson: unbounded ray (cannot happen with positive payoffs)")
        for b in np.flatnonzero(np.count_nonzero(ratios <= (low + PIVOT_ATOL)[:, None], axis=1) > 1):
            r[b] = _lex_ratio_row(T[b], int(entering[b]), lex[side])
        prow = T[ar, r] / c[ar, r][:, None]
        T -= c[:, :, None] * prow[:, None, :]
        T[ar, r] = prow
        leaving = bas[ar, r]
        bas[ar, r] = entering
        done = leaving == k
        side = 1 - side
        if done.any():
            d = np.flatnonzero(done)
            x_out[origin[d]], y_out[origin[d]] = _solutions(tabs[0][d], tabs[1][d], basis[0][d], basis[1][d], n0)
            keep = ~done
            if not keep.any():
                return x_out, y_out
            tabs = [tabs[0][keep], tabs[1][keep]]
            basis = [basis[0][keep], basis[1][keep]]
            origin, k, leaving = origin[keep], k[keep], leaving[keep]
        entering = leaving
    raise RuntimeError("lemke_howson: no equilibrium reached (cycling)")  # pragma: no cover - the path is finite


def lemke_howson_batch(A, B, initial_dropped_labels=0) -> list[Equilibrium]:
    """One equilibrium per game of the stacks ``A[K, n0, n1]``, ``B[K, n0, n1]``.

    Game ``g`` starts from label ``initial_dropped_labels[g]`` (an int applies to every game;
    the labels of :func:`lemke_howson`). The result equals ``[lemke_howson(A[g], B[g],
    labels[g]) for g in range(K)]``: the same pivots, run in lockstep (module doc). To follow
    every starting label of one game, stack the game ``n0 + n1`` times with labels
    ``range(n0 + n1)``. Each result is verified as an equilibrium (normalised gap at most
    ``VALUE_ATOL``).
    """
    A = _as_game_stack(A, "A")
    B = _as_game_stack(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"B: expected the shape of A {A.shape}, got {B.shape}")
    K, n0, n1 = A.shape
    L = n0 + n1
    if np.ndim(initial_dropped_labels) == 0:
        labels = np.full(K, _check_label(initial_dropped_labels, L, "initial_dropped_labels"))
    else:
        raw = list(initial_dropped_labels)
        if len(raw) != K:
            raise ValueError(f"initial_dropped_labels: expected an int or {K} ints (one per game), got {len(raw)}")
        labels = np.array([_check_label(v, L, "initial_dropped_labels") for v in raw], dtype=np.int64)
    lo = A.min(axis=(1, 2), keepdims=True)
    span = A.max(axis=(1, 2), keepdims=True) - lo
    Ap = 1.0 + np.where(span > 0, (A - lo) / np.where(span > 0, span, 1.0), 0.0)
    lo = B.min(axis=(1, 2), keepdims=True)
    span = B.max(axis=(1, 2), keepdims=True) - lo
    Bp = 1.0 + np.where(span > 0, (B - lo) / np.where(span > 0, span, 1.0), 0.0)
    TP, TQ = _tableaux(Ap, Bp)
    x, y = np.zeros((K, n0)), np.zeros((K, n1))
    for side, group in ((0, labels < n0), (1, labels >= n0)):
        if group.any():
            x[group], y[group] = _run_paths(TP[group], TQ[group], labels[group], side)
    x = np.clip(x, 0.0, None)
    x /= x.sum(axis=1, keepdims=True)
    y = np.clip(y, 0.0, None)
    y /= y.sum(axis=1, keepdims=True)
    Ay = np.einsum("kij,kj->ki", Ap, y)
    xB = np.einsum("ki,kij->kj", x, Bp)
    gaps = np.maximum(Ay.max(axis=1) - (x * Ay).sum(axis=1), 0.0) + np.maximum(xB.max(axis=1) - (xB * y).sum(axis=1), 0.0)
    if (gaps > VALUE_ATOL).any():  # pragma: no cover - a numerical failure, never silent
        g = int(gaps.argmax())
        raise RuntimeError(f"lemke_howson_batch: game {g}: result is not an equilibrium (normalised gap {gaps[g]:.3g})")
    pay_A = np.einsum("ki,kij,kj->k", x, A, y)
    pay_B = np.einsum("ki,kij,kj->k", x, B, y)
    return [Equilibrium(strategies=(frozen(x[g]), frozen(y[g])), payoffs=(float(pay_A[g]), float(pay_B[g]))) for g in range(K)]
