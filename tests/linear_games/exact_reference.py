"""Independent exact ground truth for small bimatrix games (sympy rationals, test-only).

Every vertex of ``P = {x >= 0 : B'^T x <= 1}`` is the solution of ``n0`` linearly independent
tight constraints out of the ``n0 + n1``; this brute force tries every such choice (unlike the
package, which pairs supports with tight columns), reads the float game exactly and decides
every tie in rational arithmetic.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import sympy


def _rational_positive(M) -> sympy.Matrix:
    F = [[Fraction(float(v)) for v in row] for row in M]
    lo = min(min(r) for r in F)
    return sympy.Matrix([[sympy.Rational(v - lo + 1) for v in r] for r in F])


def _vertices(D: sympy.Matrix):
    """Nonzero vertices of {z >= 0 : D^T z <= 1} with their label sets (own i, then n + j)."""
    n, m = D.shape
    G = sympy.Matrix.vstack(-sympy.eye(n), D.T)
    b = sympy.Matrix([0] * n + [1] * m)
    out = {}
    for K in itertools.combinations(range(n + m), n):
        M = G.extract(list(K), list(range(n)))
        if M.det() == 0:
            continue
        z = M.LUsolve(b.extract(list(K), [0]))
        if all(v == 0 for v in z):
            continue
        slack = b - G * z
        if any(v < 0 for v in slack):
            continue
        out[tuple(z)] = frozenset(i for i in range(n + m) if slack[i] == 0)
    return out


def exact_reference(A, B):
    """``(profiles, degenerate, finite)``: exact extreme equilibria as tuples of Fractions."""
    n0, n1 = len(A), len(A[0])
    VX = _vertices(_rational_positive(B))
    VY = {
        z: frozenset((k + n0) if k < n1 else (k - n1) for k in lab)  # to row-then-column labels
        for z, lab in _vertices(_rational_positive([list(r) for r in zip(*A)])).items()
    }
    degenerate = any(len(v) > n0 for v in VX.values()) or any(len(v) > n1 for v in VY.values())
    every = frozenset(range(n0 + n1))
    pairs = [(x, y) for x, lx in VX.items() for y, ly in VY.items() if lx | ly == every]
    finite = len({x for x, _ in pairs}) == len(pairs) == len({y for _, y in pairs})
    norm = lambda z: tuple(Fraction(int(v.p), int(v.q)) / Fraction(sum(z)) for v in z)  # noqa: E731
    return [(norm(x), norm(y)) for x, y in pairs], degenerate, finite
