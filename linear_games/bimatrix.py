"""Two-player matrix games: result types, input checks, payoff normalisation and the Nash gap.

Conventions (docs/formats.md): ``A`` is the payoff matrix of player 0, who owns the rows
(the first action axis), ``B`` that of player 1, who owns the columns; both have shape
``[n0, n1]`` and may hold any finite real payoffs. A mixed strategy is a float64 vector on the
simplex.

Equilibria are invariant under a positive affine change of each player's payoffs, so every
solver works on the *normalised* game in which each player's payoffs span ``[0, 1]`` (shifted
to ``[1, 2]`` where a solver needs positive payoffs). The tolerances of
:mod:`marlcov.theory.tolerances` apply in these normalised units, which makes them scale-free;
the payoffs reported back are computed from the original matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from marlcov.theory.tolerances import PROB_ATOL

__all__ = [
    "Equilibrium",
    "EquilibriumSet",
    "DegenerateGameError",
    "nash_gap_bimatrix",
]


def frozen(a) -> np.ndarray:
    """A read-only float64 copy of ``a``."""
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Equilibrium:
    """A Nash equilibrium ``(x, y)`` of a bimatrix game and its payoffs ``(x^T A y, x^T B y)``."""

    strategies: tuple[np.ndarray, np.ndarray]
    payoffs: tuple[float, float]


@dataclass(frozen=True, eq=False)
class EquilibriumSet:
    """The output of :func:`all_equilibria`: the extreme Nash equilibria of a bimatrix game.

    Every listed profile is an *extreme* equilibrium: a pair of vertices of the two
    best-response polytopes that is completely labelled. The equilibrium set is the union of
    the products of convex hulls over the maximal bicliques of this list, so the list
    determines it whenever ``complete`` holds.

    Attributes:
        equilibria: the extreme equilibria, sorted by decreasing lexicographic ``(x, y)``.
        complete: True only if the list is the *whole* equilibrium set (finite, no continuum)
            and this is certified: either the game is nondegenerate with every vertex
            separated from its non-tight constraints by at least ``SEPARATION_ATOL``, or the
            answer was computed in exact rational arithmetic.
        degenerate: some vertex of a best-response polytope has more tight constraints than
            its dimension (exactly, when ``exact``; within ``PIVOT_ATOL`` otherwise).
        near_degenerate: the floating-point classification was not separated: a vertex had a
            non-tight constraint closer than ``SEPARATION_ATOL``, or an extra tie. The answer
            is then exact (``exact``) or not certified (``complete`` is False).
        separation: the smallest slack of a non-tight constraint over all vertices of both
            polytopes, in normalised payoff/probability units (``inf`` if there is none).
        exact: the equilibria and flags were computed in rational arithmetic on the exact
            binary values of the float input (then rounded to float64 for the output).
    """

    equilibria: list[Equilibrium]
    complete: bool
    degenerate: bool
    near_degenerate: bool = False
    separation: float = float("inf")
    exact: bool = False

    def __len__(self) -> int:
        return len(self.equilibria)

    def __iter__(self):
        return iter(self.equilibria)

    def __getitem__(self, i: int) -> Equilibrium:
        return self.equilibria[i]


class DegenerateGameError(ValueError):
    """Raised by :func:`all_equilibria` with ``strict=True`` for a degenerate or
    near-degenerate game whose complete equilibrium set cannot be certified."""


def as_payoff_matrix(M, name: str) -> np.ndarray:
    """``M`` as a finite 2-D float64 array; ValueError naming ``name`` otherwise."""
    if type(M) is np.ndarray and M.dtype == np.float64 and M.ndim == 2 and M.size and math.isfinite(M.sum()):
        return M.copy()  # the common case, checked in one pass (a finite sum has finite terms)
    try:
        arr = np.asarray(M)
    except Exception as exc:  # ragged nested lists etc.
        raise ValueError(f"{name}: expected a 2-D array of finite real numbers ({exc})") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name}: expected a 2-D array of finite real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D payoff matrix, got {arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one action per player, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite entries, found NaN or inf")
    return arr


def as_bimatrix(A, B) -> tuple[np.ndarray, np.ndarray]:
    A = as_payoff_matrix(A, "A")
    B = as_payoff_matrix(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"B: expected the shape of A {A.shape}, got {B.shape}")
    return A, B


def as_strategy(v, size: int, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name}: expected a probability vector of shape ({size},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite entries, found NaN or inf")
    if arr.min() < -PROB_ATOL or abs(arr.sum() - 1.0) > PROB_ATOL:
        raise ValueError(
            f"{name}: expected a probability vector (entries >= 0, sum 1 within PROB_ATOL), got min {arr.min():.3g}, sum {arr.sum():.17g}"
        )
    return arr


def normalised(M: np.ndarray) -> np.ndarray:
    """Positive affine image of ``M`` with entries spanning [0, 1] (all zeros if constant)."""
    lo, hi = M.min(), M.max()
    if hi > lo:
        return (M - lo) / (hi - lo)
    return np.zeros_like(M)


def to_simplex(v: np.ndarray) -> np.ndarray:
    v = np.maximum(v, 0.0)
    return v / v.sum()


def player_gaps(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Each player's gain from a best response at ``(x, y)``, clipped at 0 against rounding."""
    Ay = A @ y
    xB = x @ B
    return max(0.0, float(Ay.max() - x @ Ay)), max(0.0, float(xB.max() - xB @ y))


def nash_gap_bimatrix(A, B, x, y) -> float:
    """Sum over both players of (best-response payoff - payoff) at the profile ``(x, y)``.

    Zero exactly at a Nash equilibrium; ``x`` and ``y`` must be probability vectors (within
    ``PROB_ATOL``). Each player's term is clipped at 0 against rounding.
    """
    A, B = as_bimatrix(A, B)
    x = as_strategy(x, A.shape[0], "x")
    y = as_strategy(y, A.shape[1], "y")
    g0, g1 = player_gaps(A, B, x, y)
    return g0 + g1


def make_equilibrium(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> Equilibrium:
    return Equilibrium(strategies=(frozen(x), frozen(y)), payoffs=(float(x @ A @ y), float(x @ B @ y)))


def sorted_order(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Deterministic order: lexicographically decreasing (x, y), compared on a PROB_ATOL grid."""
    Z = np.round(np.concatenate([X, Y], axis=1) / PROB_ATOL)
    return np.lexsort((-Z).T[::-1])
