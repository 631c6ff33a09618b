"""All extreme equilibria of a small bimatrix game in exact rational arithmetic.

A float64 number is a dyadic rational, so ``fractions.Fraction`` reads the input game exactly
and every tie, zero and feasibility test below is decided without rounding. This is the
ground truth that :func:`all_equilibria` falls back to when its floating-point answer is not
separated (near-degenerate games), and the reference of the tests.

With payoffs shifted to be positive (``D = M - min M + 1``; equilibria are invariant) the
best-response polytope of the player who owns the first axis of ``D`` is
``{z >= 0 : D^T z <= 1}``. Each vertex other than 0 solves ``D[S, T]^T z_S = 1`` for a row
support ``S`` and tight columns ``T`` with ``|S| = |T|`` and a nonsingular matrix (von Stengel,
"Equilibrium computation for two-player games in strategic and extensive form", AGT ch. 3).
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import numpy as np

#: Largest number of square (support, tight set) systems per polytope that the exact
#: enumeration will solve (a cost cap: ~0.1 s of Fraction arithmetic per 250 systems).
EXACT_MAX_SYSTEMS = 1000


def exact_systems(n0: int, n1: int) -> int:
    """Number of square systems per polytope: ``C(n0 + n1, n0) - 1``."""
    return comb(n0 + n1, n0) - 1


def _positive(M: np.ndarray) -> list[list[Fraction]]:
    F = [[Fraction(float(v)) for v in row] for row in M]
    lo = min(min(row) for row in F)
    return [[v - lo + 1 for v in row] for row in F]


def _solve(M: list[list[Fraction]]) -> list[Fraction] | None:
    """``M z = 1`` by Gaussian elimination; None if ``M`` is singular."""
    k = len(M)
    aug = [row[:] + [Fraction(1)] for row in M]
    for c in range(k):
        p = next((r for r in range(c, k) if aug[r][c] != 0), None)
        if p is None:
            return None
        aug[c], aug[p] = aug[p], aug[c]
        piv = aug[c][c]
        for r in range(k):
            if r != c and aug[r][c] != 0:
                f = aug[r][c] / piv
                aug[r] = [a - f * b for a, b in zip(aug[r], aug[c])]
    return [aug[r][k] / aug[r][r] for r in range(k)]


def exact_vertices(D: list[list[Fraction]]) -> list[tuple[tuple[Fraction, ...], frozenset, frozenset]]:
    """Vertices ``z != 0`` of ``{z >= 0 : D^T z <= 1}`` with their labels: the set of own
    actions with ``z_i = 0`` and the set of opponent actions with ``(D^T z)_j = 1``."""
    n_own, n_other = len(D), len(D[0])
    found: dict[tuple[Fraction, ...], tuple[frozenset, frozenset]] = {}
    for k in range(1, min(n_own, n_other) + 1):
        for S in itertools.combinations(range(n_own), k):
            for T in itertools.combinations(range(n_other), k):
                zS = _solve([[D[i][j] for i in S] for j in T])
                if zS is None or min(zS) < 0:
                    continue
                z = [Fraction(0)] * n_own
                for i, v in zip(S, zS):
                    z[i] = v
                key = tuple(z)
                if key in found:
                    continue
                pay = [sum(z[i] * D[i][j] for i in S) for j in range(n_other)]
                if max(pay) > 1:
                    continue
                found[key] = (
                    frozenset(i for i in range(n_own) if z[i] == 0),
                    frozenset(j for j in range(n_other) if pay[j] == 1),
                )
    return [(z, zeros, tight) for z, (zeros, tight) in found.items()]


def exact_extreme_equilibria(A: np.ndarray, B: np.ndarray):
    """Exact extreme equilibria of ``(A, B)``.

    Returns ``(profiles, degenerate, finite)``: ``profiles`` a list of ``(x, y)`` tuples of
    Fractions (strategies on the simplex), ``degenerate`` whether some vertex has more labels
    than its dimension, ``finite`` whether the equilibrium set is exactly this list (the
    bipartite graph of completely labelled vertex pairs is a matching).
    """
    n0, n1 = A.shape
    VX = exact_vertices(_positive(B))  # x: own = rows, opponent = columns
    VY = exact_vertices(_positive(A.T))  # y: own = columns, opponent = rows
    degenerate = any(len(zx) + len(tx) > n0 for _, zx, tx in VX) or any(len(zy) + len(ty) > n1 for _, zy, ty in VY)
    rows, cols = frozenset(range(n0)), frozenset(range(n1))
    pairs = [(ix, iy) for ix, (_, zx, tx) in enumerate(VX) for iy, (_, zy, ty) in enumerate(VY) if (zx | ty) == rows and (tx | zy) == cols]
    finite = len({ix for ix, _ in pairs}) == len(pairs) == len({iy for _, iy in pairs})
    profiles = []
    for ix, iy in pairs:
        x, y = VX[ix][0], VY[iy][0]
        sx, sy = sum(x), sum(y)
        profiles.append((tuple(v / sx for v in x), tuple(v / sy for v in y)))
    return profiles, degenerate, finite
