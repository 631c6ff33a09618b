"""All extreme Nash equilibria of a bimatrix game by vertex enumeration (scipy's qhull).

With payoffs normalised to ``[1, 2]`` the best-response polytopes are (von Stengel, AGT ch. 3)

    P = {x in R^n0 : x >= 0, B'^T x <= 1},    Q = {y in R^n1 : y >= 0, A' y <= 1}.

A label of ``x in P`` is a row ``i`` with ``x_i = 0`` or a column ``j`` with
``(B'^T x)_j = 1``; an extreme equilibrium is a completely labelled pair of vertices
``(x, y) != (0, 0)``, normalised to the simplex. The vertices of each polytope are the facets of
the convex hull of its polar points (each constraint ``g.z <= d`` at an interior point becomes
the point ``g / d``), which qhull enumerates; each facet's hyperplane is a vertex. Labels are
then read from the slacks of *all* constraints with ``PIVOT_ATOL``, so a degenerate vertex (more tight constraints than dimensions, which qhull
triangulates into several facets with one hyperplane) gets all its labels and appears once.

Only vertices are returned, so every profile is an extreme point. The smallest slack of a
non-tight constraint is the ``separation`` of the answer: below ``SEPARATION_ATOL`` the game is
near-degenerate and the float answer is not certified; small games are then solved again in
exact rational arithmetic (:mod:`.exact_enumeration`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull

from marlcov.theory.tolerances import PIVOT_ATOL, SEPARATION_ATOL, VALUE_ATOL

from .bimatrix import (
    DegenerateGameError,
    EquilibriumSet,
    as_bimatrix,
    make_equilibrium,
    normalised,
    sorted_order,
)
from .exact_enumeration import EXACT_MAX_SYSTEMS, exact_extreme_equilibria, exact_systems

__all__ = ["all_equilibria", "is_degenerate", "polytope_vertices"]

#: Rows of the label-matching product computed at once (bounds memory; not a tolerance).
_MATCH_CHUNK = 4096


def polytope_vertices(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices other than 0 of ``{z >= 0 : D^T z <= 1}`` for ``D`` with entries in [1, 2].

    Returns ``(strategies [V, n], slacks [V, n + m])``: each vertex normalised to the simplex,
    and the slack of every constraint at it in normalised units: the probability ``s_i`` for
    ``z_i >= 0`` and ``max_j (D^T s)_j - (D^T s)_j`` (the opponent's loss from action ``j``)
    for the other ``m``.
    """
    n, m = D.shape
    if n == 1:
        z = np.array([[1.0 / D[0].max()]])
    else:
        G = np.vstack([-np.eye(n), D.T])
        b = np.concatenate([np.zeros(n), np.ones(m)])
        c = np.full(n, 0.5 / D.sum(axis=0).max())  # interior: D^T c <= 1/2, c > 0
        eq = ConvexHull(G / (b - G @ c)[:, None]).equations
        # the facet w.p + o = 0 of the polar is the vertex c - w / o (qhull's hyperplanes are
        # accurate to ~1e-14 here, well inside PIVOT_ATOL; the slacks below are recomputed)
        z = c - eq[:, :-1] / eq[:, -1:]
        z = z[z.sum(axis=1) > 0.25]  # drop the origin
    z = np.where(z / z.sum(axis=1, keepdims=True) <= PIVOT_ATOL, 0.0, z)  # exact zeros
    total = z.sum(axis=1, keepdims=True)
    strat = z / total
    pay = strat @ D
    slacks = np.concatenate([strat, 1.0 / total - pay], axis=1)
    return strat, slacks


def _label_keys(L: np.ndarray) -> np.ndarray:
    """One sortable key per row of a boolean label matrix: a uint64 for up to 64 labels (fast
    integer sorting), else a byte string."""
    packed = np.packbits(L, axis=1)
    if packed.shape[1] <= 8:
        wide = np.zeros((len(L), 8), dtype=np.uint8)
        wide[:, : packed.shape[1]] = packed
        return wide.view("<u8")[:, 0]
    packed = np.ascontiguousarray(packed)
    return packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]


def _unique_vertices(strat: np.ndarray, slacks: np.ndarray):
    """Deduplicate by label set (distinct vertices have distinct tight sets)."""
    labels = slacks <= PIVOT_ATOL
    _, first = np.unique(_label_keys(labels), return_index=True)
    first = np.sort(first)
    return strat[first], slacks[first], labels[first]


def _completely_labelled(LX: np.ndarray, LY: np.ndarray, n0: int, n1: int):
    """Index pairs ``(i, j)`` with ``LX[i] | LY[j]`` all True.

    A vertex with exactly its dimension of labels (every vertex of a nondegenerate game)
    pairs only with the vertex whose labels are its complement: a hash lookup. Pairs that
    involve a vertex with extra labels are found by a float32 product of the complements
    (it counts the labels both miss; exact for counts below 2^24)."""
    simple_x, simple_y = LX.sum(axis=1) == n0, LY.sum(axis=1) == n1
    sx, sy = np.flatnonzero(simple_x), np.flatnonzero(simple_y)
    ky = _label_keys(LY[sy])
    order = np.argsort(ky)
    kx = _label_keys(~LX[sx])
    pos = np.minimum(np.searchsorted(ky, kx, sorter=order), max(len(ky) - 1, 0))
    hit = (ky[order[pos]] == kx) if len(ky) else np.zeros(len(kx), dtype=bool)
    ii, jj = [sx[hit]], [sy[order[pos[hit]]]]
    if simple_x.all() and simple_y.all():
        return ii[0], jj[0]
    CX, CY = (~LX).astype(np.float32), (~LY).astype(np.float32).T
    for rows, cols in ((np.flatnonzero(~simple_x), np.arange(len(LY))), (sx, np.flatnonzero(~simple_y))):
        for start in range(0, len(rows), _MATCH_CHUNK):
            r = rows[start : start + _MATCH_CHUNK]
            i, j = np.nonzero(CX[r] @ CY[:, cols] == 0)
            ii.append(r[i])
            jj.append(cols[j])
    return np.concatenate(ii), np.concatenate(jj)


def _float_vertices(A: np.ndarray, B: np.ndarray):
    Ap, Bp = 1.0 + normalised(A), 1.0 + normalised(B)
    n0, n1 = A.shape
    sx, slx = polytope_vertices(Bp)
    sy, sly = polytope_vertices(Ap.T)
    # label order: rows 0..n0-1, then columns n0..n0+n1-1, on both sides
    sly = np.concatenate([sly[:, n1:], sly[:, :n1]], axis=1)
    sx, slx, lx = _unique_vertices(sx, slx)
    sy, sly, ly = _unique_vertices(sy, sly)
    degenerate = bool((lx.sum(axis=1) > n0).any() or (ly.sum(axis=1) > n1).any())
    nonlabel = np.concatenate([slx[~lx], sly[~ly]])
    separation = float(nonlabel.min()) if nonlabel.size else float("inf")
    # a constraint violated beyond PIVOT_ATOL at a computed vertex: qhull's facet was not
    # resolved in floating point; report it as the (negative) separation
    worst = min(float(slx.min(initial=np.inf)), float(sly.min(initial=np.inf)))
    if worst < -PIVOT_ATOL:
        separation = min(separation, worst)
    fx, fy = slx.min(axis=1) >= -PIVOT_ATOL, sly.min(axis=1) >= -PIVOT_ATOL
    sx, lx, sy, ly = sx[fx], lx[fx], sy[fy], ly[fy]
    return (sx, lx), (sy, ly), degenerate, separation


def _profile_gaps(A: np.ndarray, B: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Nash gap of each profile ``(X[k], Y[k])`` (both players' terms summed)."""
    AY, XB = Y @ A.T, X @ B
    return (AY.max(axis=1) - (X * AY).sum(axis=1)) + (XB.max(axis=1) - (XB * Y).sum(axis=1))


def is_degenerate(A, B) -> bool:
    """Whether some vertex of a best-response polytope of ``(A, B)`` has more labels than its
    dimension (a mixed strategy with support size ``k`` and more than ``k`` pure best
    responses), ties and zeros counted within ``PIVOT_ATOL`` in normalised units."""
    A, B = as_bimatrix(A, B)
    return _float_vertices(A, B)[2]


def _exact_set(A, B, near: bool, separation: float) -> EquilibriumSet:
    profiles, degenerate, finite = exact_extreme_equilibria(A, B)
    X = np.array([[float(v) for v in x] for x, _ in profiles]).reshape(len(profiles), A.shape[0])
    Y = np.array([[float(v) for v in y] for _, y in profiles]).reshape(len(profiles), A.shape[1])
    order = sorted_order(X, Y)
    eqs = [make_equilibrium(A, B, X[i], Y[i]) for i in order]
    return EquilibriumSet(eqs, complete=finite, degenerate=degenerate, near_degenerate=near, separation=separation, exact=True)


def all_equilibria(A, B, *, strict: bool = False, exact: bool | None = None) -> EquilibriumSet:
    """Every extreme Nash equilibrium of the bimatrix game ``(A, B)`` (any finite payoffs).

    Vertex enumeration of both best-response polytopes (qhull), then every completely
    labelled vertex pair; see :class:`EquilibriumSet` for the flags. The float answer is
    certified complete only for a nondegenerate game whose vertices are separated by
    ``SEPARATION_ATOL``; otherwise, when the game is small (at most ``EXACT_MAX_SYSTEMS``
    square systems per polytope), the answer is recomputed in exact rational arithmetic on
    the float input, and ``complete`` is then exactly right; a larger uncertified game
    returns its float extreme equilibria with ``complete=False``.

    Args:
        strict: raise :class:`DegenerateGameError` instead of returning a set that is not
            certified complete.
        exact: ``None`` (default) as above; ``True`` always use exact arithmetic; ``False``
            never.
    """
    A, B = as_bimatrix(A, B)
    n0, n1 = A.shape
    small = exact_systems(n0, n1) <= EXACT_MAX_SYSTEMS
    if exact:
        result = _exact_set(A, B, near=False, separation=float("nan"))
    else:
        (sx, lx), (sy, ly), degenerate, separation = _float_vertices(A, B)
        near = separation < SEPARATION_ATOL
        if (degenerate or near) and small and exact is None:
            result = _exact_set(A, B, near, separation)
        else:
            ix, iy = _completely_labelled(lx, ly, n0, n1)
            X, Y = sx[ix], sy[iy]
            if len(X) and _profile_gaps(normalised(A), normalised(B), X, Y).max() > VALUE_ATOL:
                raise RuntimeError("all_equilibria: a completely labelled pair is not an equilibrium")  # pragma: no cover
            order = sorted_order(X, Y)
            eqs = [make_equilibrium(A, B, X[i], Y[i]) for i in order]
            result = EquilibriumSet(
                eqs, complete=not (degenerate or near), degenerate=degenerate, near_degenerate=near, separation=separation
            )
    if strict and not result.complete:
        raise DegenerateGameError(
            f"A, B: the equilibrium set cannot be certified complete (degenerate={result.degenerate}, "
            f"near_degenerate={result.near_degenerate}, separation={result.separation:.3g}); "
            "call with strict=False to get its extreme equilibria and flags"
        )
    return result
