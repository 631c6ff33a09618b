"""Nash equilibria of bimatrix games by Lemke-Howson complementary pivoting.

Labels ``0..n0-1`` are the row player's actions and ``n0..n0+n1-1`` the column player's (as
in nashpy and quantecon). Every starting label is available, and the ratio test is
lexicographic, so the path terminates on degenerate games too.

:func:`lemke_howson` follows one path, :func:`lemke_howson_batch` one path per game of a
stack; both run the same kernel, :func:`_paths`, compiled by numba (``njit(cache=True)``):
a pivot of a small tableau is a few hundred flops, which numpy calls would bury under their
fixed cost. numba is imported on the first call, not at import (0.2 s that the rest of
:mod:`marlcov.linear_games` does not need). Near-degenerate games (payoff differences near
``PIVOT_ATOL``) can make floating point lose the path; such a path, detected by the kernel or
by the Nash gap of its end, is followed again in exact rational arithmetic
(:func:`_exact_path`), so every result is an equilibrium.

The compiled kernel is cached on disk: in ``__pycache__`` beside this file, or, where that
is not writable (a read-only install), in numba's per-user cache (``~/.cache/numba`` on
Linux); ``NUMBA_CACHE_DIR`` overrides both. A fresh process that imports this module and
solves one 12 x 12 game took 0.65 s of CPU in all with the cache warm (interpreter, numpy,
numba and the cache load; the same process with quantecon's: 1.0 s), and 3.9 s with the
cache cold (compiling the kernel, once per installation and Python version; quantecon's:
7.4 s), on a shared 2-core machine. Warm calls: about 15 us per 12 x 12 path and 75 us per
30 x 30 path, 0.7-1.0x and 0.9-1.1x quantecon's over four runs.
benchmarks/bench_matrix_games.py measures all of these against quantecon in the same run.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from marlcov.theory.tolerances import PIVOT_ATOL, RATIO_TIE_ATOL, VALUE_ATOL

from .bimatrix import Equilibrium, as_bimatrix, frozen, normalised, player_gaps

__all__ = ["lemke_howson", "lemke_howson_batch"]


def _paths(A, B, labels, pivot_atol, tie_atol, value_atol, keys):
    """Lemke-Howson from label ``labels[g]`` in game ``(A[g], B[g])`` for every ``g``; returns
    the equilibria ``x[K, n0]``, ``y[K, n1]``, their payoffs ``(x^T A y, x^T B y)`` as
    ``payoffs[K, 2]``, and ``failed[K]``: True where floating point lost the path (no pivot
    row, an infeasible basis, a state visited twice, or an end whose Nash gap in the
    normalised game exceeds ``value_atol``), the other outputs of that path being void.

    Payoffs are normalised to [1, 2]. Tableau P is ``B'^T x + s = 1`` (``n1`` rows; ``x_i`` is
    label ``i``, ``s_j`` label ``n0 + j``), tableau Q is ``r + A' y = 1`` (``n0`` rows;
    ``r_i`` is label ``i``, ``y_j`` label ``n0 + j``); columns are the labels, then the
    right-hand side. Label ``k`` enters P if ``k < n0`` (else Q), the label that leaves
    enters the other tableau, and so on until ``k`` leaves.

    Ratio test: the minimum of ``rhs_i / c_i`` over the rows with ``c_i > pivot_atol``, the
    first such row; when it is tied (within ``tie_atol``) the ties are broken
    lexicographically, by ``T_ij / c_i`` over the columns ``j`` of the tableau's initial
    slack basis in order, which is the ratio test of the right-hand side perturbed by
    ``(eps, eps^2, ...)`` and makes every pivot nondegenerate. The row operation leaves the
    entering column exactly a unit vector (``c_i - c_i * 1.0 == 0`` in floating point).
    Exact lexicographic pivoting never visits a state (the two bases and the entering label)
    twice; a float path that does is cycling, found by hashing the states (``keys[3, L]``:
    random 64-bit keys of label ``l`` in basis P, in basis Q, and entering; XOR of the keys
    of a state). Compiled by numba (module doc); the tolerances are arguments so that the
    kernel holds no constant of its own.
    """
    K, n0, n1 = A.shape
    L = n0 + n1
    xs = np.zeros((K, n0))
    ys = np.zeros((K, n1))
    payoffs = np.zeros((K, 2))
    failed = np.zeros(K, dtype=np.bool_)
    seen = {keys[0, 0]}  # a set of int64 (numba infers the type from its first element)
    cand = np.empty(max(n0, n1), dtype=np.int64)
    c_col = np.empty(max(n0, n1))
    ratios = np.empty(max(n0, n1))
    p_row = np.empty(L + 1)
    T = np.empty((2, max(n0, n1), L + 1))
    basis = np.empty((2, max(n0, n1)), dtype=np.int64)
    for g in range(K):
        Ap = np.empty((n0, n1))
        Bp = np.empty((n0, n1))
        for M, Mp in ((A[g], Ap), (B[g], Bp)):
            lo = M.min()
            span = M.max() - lo
            for i in range(n0):
                for j in range(n1):
                    Mp[i, j] = 1.0 + ((M[i, j] - lo) / span if span > 0.0 else 0.0)
        # T[0] is P (n1 rows), T[1] is Q (n0 rows), in one array so that switching tableaux
        # is an index, not a new array reference per pivot
        T.fill(0.0)
        for j in range(n1):
            for i in range(n0):
                T[0, j, i] = Bp[i, j]
            T[0, j, n0 + j] = 1.0
            T[0, j, L] = 1.0
            basis[0, j] = n0 + j
        for i in range(n0):
            T[1, i, i] = 1.0
            for j in range(n1):
                T[1, i, n0 + j] = Ap[i, j]
            T[1, i, L] = 1.0
            basis[1, i] = i
        k = labels[g]
        entering = k
        side = 0 if k < n0 else 1
        reached = False
        state = 0
        for t in range(L):
            state ^= keys[0, basis[0, t]] if t < n1 else keys[1, basis[1, t - n1]]
        seen.clear()
        while True:
            m, lex0 = (n1, n0) if side == 0 else (n0, 0)
            r = -1
            low = np.inf
            for i in range(m):
                if T[side, i, L] < -pivot_atol:  # infeasible: rounding has lost the path
                    r = -2
                    break
                c = T[side, i, entering]
                c_col[i] = c
                ratios[i] = T[side, i, L] / c if c > pivot_atol else np.inf
                if ratios[i] < low:
                    low = ratios[i]
                    r = i
            if r < 0:  # or an unbounded ray: impossible with positive payoffs in exact arithmetic
                break
            n_cand = 0
            for i in range(m):
                if ratios[i] <= low + tie_atol:
                    cand[n_cand] = i
                    n_cand += 1
            col = lex0
            while n_cand > 1 and col < lex0 + m:
                best = np.inf
                for t in range(n_cand):
                    best = min(best, T[side, cand[t], col] / c_col[cand[t]])
                kept = 0
                for t in range(n_cand):
                    if T[side, cand[t], col] / c_col[cand[t]] <= best + tie_atol:
                        cand[kept] = cand[t]
                        kept += 1
                n_cand = kept
                col += 1
            r = cand[0]
            # the pivot row is copied out so that the row updates read a separate buffer
            # (no aliasing: the inner loop vectorises)
            for j in range(L + 1):
                p_row[j] = T[side, r, j] / c_col[r]
            for i in range(m):
                c = c_col[i]
                if i != r and c != 0.0:
                    for j in range(L + 1):
                        T[side, i, j] -= c * p_row[j]
            for j in range(L + 1):
                T[side, r, j] = p_row[j]
            leaving = basis[side, r]
            basis[side, r] = entering
            if leaving == k:
                reached = True
                break
            state ^= keys[side, leaving] ^ keys[side, entering]
            if (state ^ keys[2, leaving]) in seen:  # cycling
                break
            seen.add(state ^ keys[2, leaving])
            entering = leaving
            side = 1 - side
        if not reached:  # no pivot row, an infeasible basis, or cycling
            failed[g] = True
            continue
        x = xs[g]
        y = ys[g]
        for t in range(n1):
            if basis[0, t] < n0:
                x[basis[0, t]] = max(T[0, t, L], 0.0)
        for t in range(n0):
            if basis[1, t] >= n0:
                y[basis[1, t] - n0] = max(T[1, t, L], 0.0)
        x /= x.sum()
        y /= y.sum()
        # each player's gain from a best response in the normalised game (scale-free), and
        # the payoffs
        best, now = -np.inf, 0.0
        for i in range(n0):
            v = 0.0
            w = 0.0
            for j in range(n1):
                v += Ap[i, j] * y[j]
                w += A[g, i, j] * y[j]
            best = max(best, v)
            now += x[i] * v
            payoffs[g, 0] += x[i] * w
        gap = max(best - now, 0.0)
        best, now = -np.inf, 0.0
        for j in range(n1):
            v = 0.0
            w = 0.0
            for i in range(n0):
                v += x[i] * Bp[i, j]
                w += x[i] * B[g, i, j]
            best = max(best, v)
            now += y[j] * v
            payoffs[g, 1] += y[j] * w
        failed[g] = gap + max(best - now, 0.0) > value_atol
    return xs, ys, payoffs, failed


@functools.cache
def _compiled_paths():
    """:func:`_paths` compiled by numba, loaded from or written to the on-disk cache."""
    import numba  # here, not at module import (module doc)

    return numba.njit(cache=True)(_paths)


@functools.cache
def _state_keys(L: int) -> np.ndarray:
    """Random 64-bit keys (fixed seed) of the labels in basis P, in basis Q, and entering, for
    the cycling test of :func:`_paths`; a hash collision can only send a path to the exact
    fallback."""
    return np.random.default_rng(L).integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=(3, L), dtype=np.int64)


def _exact_path(A: np.ndarray, B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The path of :func:`_paths` from label ``k`` in exact rational arithmetic: the same
    normalisation, tableaux and lexicographic rule, with every tie exact. The fallback for the
    near-degenerate paths that floating point loses (pivot elements near ``PIVOT_ATOL``); slow
    (pure Python), so never the first try."""
    n0, n1 = A.shape
    L = n0 + n1

    def scaled(M):
        F = [[Fraction(float(v)) for v in row] for row in M]
        lo = min(map(min, F))
        span = max(map(max, F)) - lo
        return [[1 + ((v - lo) / span if span else 0) for v in row] for row in F]

    Ap, Bp = scaled(A), scaled(B)
    one, zero = Fraction(1), Fraction(0)
    P = [[Bp[i][j] for i in range(n0)] + [one if t == j else zero for t in range(n1)] + [one] for j in range(n1)]
    Q = [[one if t == i else zero for t in range(n0)] + Ap[i] + [one] for i in range(n0)]
    tableaux, bases, slacks = (P, Q), (list(range(n0, L)), list(range(n0))), (range(n0, L), range(n0))
    entering, side = k, 0 if k < n0 else 1
    while True:  # the lexicographic rule visits no basis twice
        T, basis = tableaux[side], bases[side]
        rows = [i for i in range(len(T)) if T[i][entering] > 0]
        r = min(rows, key=lambda i: [T[i][c] / T[i][entering] for c in (L, *slacks[side])])  # noqa: B023
        pivot_row = [v / T[r][entering] for v in T[r]]
        for i, row in enumerate(T):
            if i != r and row[entering]:
                T[i] = [a - row[entering] * b for a, b in zip(row, pivot_row)]
        T[r] = pivot_row
        leaving, basis[r] = basis[r], entering
        if leaving == k:
            break
        entering, side = leaving, 1 - side
    x, y = np.zeros(L), np.zeros(L)
    for z, T, basis in ((x, P, bases[0]), (y, Q, bases[1])):
        total = sum(row[L] for row, label in zip(T, basis) if (label < n0) == (z is x))
        for row, label in zip(T, basis):
            z[label] = row[L] / total
    return x[:n0], y[n0:]


def _equilibria(A: np.ndarray, B: np.ndarray, labels: np.ndarray, who: str) -> list[Equilibrium]:
    """The kernel on the C-ordered, writeable stacks ``A[K, n0, n1]``, ``B[K, n0, n1]`` (one
    signature, so one compilation); a path that it lost, or whose end has a Nash gap above
    ``VALUE_ATOL`` in the normalised game, is followed again in exact arithmetic
    (:func:`_exact_path`); every result is verified, never silently wrong."""
    K, n0, n1 = A.shape
    x, y, payoffs, failed = _compiled_paths()(A, B, labels, PIVOT_ATOL, RATIO_TIE_ATOL, VALUE_ATOL, _state_keys(n0 + n1))
    if failed.any():  # rare: near-degenerate games
        for g in np.flatnonzero(failed):
            x[g], y[g] = _exact_path(A[g], B[g], int(labels[g]))
            payoffs[g] = x[g] @ A[g] @ y[g], x[g] @ B[g] @ y[g]
            gap = sum(player_gaps(normalised(A[g]), normalised(B[g]), x[g], y[g]))
            if gap > VALUE_ATOL:  # pragma: no cover - exact pivots end at an equilibrium
                where = f"game {g}: " if K > 1 else ""
                raise RuntimeError(f"{who}: {where}result is not an equilibrium (normalised gap {gap:.3g})")
    return [Equilibrium(strategies=(frozen(x[g]), frozen(y[g])), payoffs=(float(payoffs[g, 0]), float(payoffs[g, 1]))) for g in range(K)]


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
    right-hand side, then the columns of the initial slack basis, ties within
    ``RATIO_TIE_ATOL``; pivot elements above ``PIVOT_ATOL``), so the algorithm terminates on
    degenerate games too. The pivots run in compiled code
    (module doc for the one-off compilation).
    """
    A, B = as_bimatrix(A, B)  # writeable copies
    if not (A.flags.c_contiguous and B.flags.c_contiguous):
        A, B = np.ascontiguousarray(A), np.ascontiguousarray(B)
    k = _check_label(initial_dropped_label, A.shape[0] + A.shape[1])
    return _equilibria(A[None], B[None], np.array([k], dtype=np.int64), "lemke_howson")[0]


def _as_game_stack(M, name: str) -> np.ndarray:
    try:
        arr = np.asarray(M, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected an array of real payoff matrices ({exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name}: expected payoff matrices of shape (K, n0, n1) with K, n0, n1 >= 1, got shape {arr.shape}")
    if not np.isfinite(arr.sum()) and not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite entries, found NaN or inf")
    return arr


def lemke_howson_batch(A, B, initial_dropped_labels=0) -> list[Equilibrium]:
    """One equilibrium per game of the stacks ``A[K, n0, n1]``, ``B[K, n0, n1]``.

    Game ``g`` starts from label ``initial_dropped_labels[g]`` (an int applies to every game;
    the labels of :func:`lemke_howson`). The result equals ``[lemke_howson(A[g], B[g],
    labels[g]) for g in range(K)]``: the same compiled pivots, one path after another in one
    call, so a batch saves the per-call overhead. To follow every starting label of one game,
    stack the game ``n0 + n1`` times with labels ``range(n0 + n1)``. Each result is verified
    as an equilibrium (normalised gap at most ``VALUE_ATOL``).
    """
    A = _as_game_stack(A, "A")
    B = _as_game_stack(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"B: expected the shape of A {A.shape}, got {B.shape}")
    K, n0, n1 = A.shape
    L = n0 + n1
    if np.ndim(initial_dropped_labels) == 0:
        labels = np.full(K, _check_label(initial_dropped_labels, L, "initial_dropped_labels"), dtype=np.int64)
    else:
        raw = list(initial_dropped_labels)
        if len(raw) != K:
            raise ValueError(f"initial_dropped_labels: expected an int or {K} ints (one per game), got {len(raw)}")
        labels = np.array([_check_label(v, L, "initial_dropped_labels") for v in raw], dtype=np.int64)
    return _equilibria(np.require(A, requirements="CW"), np.require(B, requirements="CW"), labels, "lemke_howson_batch")
