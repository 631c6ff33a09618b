"""One Nash equilibrium of a normal-form game of ``m >= 3`` players, by pygambit's solvers.

A game is the payoff tensor ``U[i, a_1, ..., a_m]`` (player ``i``'s payoff at the joint action
``a``); a mixed profile is one probability vector per player.

**Solver and selection rule.** ``gambit.nash.enumpoly_solve(stop_after=1)``: gambit
enumerates the support profiles without dominated strategies and solves each one's
indifference equations by a branch-and-bound Newton method; the equilibrium returned is the
first one found in gambit's order of support profiles (pure profiles came first in the games
we tried). Measured on random 3- and 4-player games (benchmarks/bench_markov_games.py, rows
``n_player_stage_*``), it was the most exact (regret at rounding level, where
``logit_solve``, ``simpdiv_solve`` and ``ipa_solve`` stop at their 1e-8..1e-7 acceptance
criterion) and within 2x of the fastest (``ipa_solve``); ``gnm_solve`` returned no
equilibrium on about one random game in ten, and ``simpdiv_solve`` took minutes on some.
enumpoly found one on each of 300 small games with integer payoffs in {0, 1, 2} (degenerate).
Should it return none (its per-support budget can skip a support of a degenerate game), the
first equilibrium on ``gnm_solve``'s path that passes the check below is taken.

**Check.** Every equilibrium returned is verified here, not trusted: in the *normalised* game
(each player's payoffs shifted and scaled to span [0, 1], as for two players in
:mod:`.bimatrix`), no player may gain more than ``VALUE_ATOL`` by a pure deviation.

pygambit is an optional dependency (the ``gambit`` extra: ``pip install "marlcov[gambit]"``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from marlcov.theory.tolerances import VALUE_ATOL

__all__ = ["NPlayerEquilibrium", "n_player_equilibrium", "deviation_gains", "has_gambit", "GAMBIT_EXTRA"]

GAMBIT_EXTRA = 'the "gambit" extra: pip install "marlcov[gambit]" (pygambit >= 17.0.0b2)'
SELECTION_RULE = "first equilibrium of gambit's enumpoly (support enumeration; gnm if none)"


@dataclass(frozen=True, eq=False)
class NPlayerEquilibrium:
    """A verified Nash equilibrium of an m-player game.

    Attributes:
        strategies: one mixed strategy per player (float64, on the simplex).
        payoffs: ``u_i(x)`` for each player, in the game's own units.
        regret: the largest gain of a pure deviation, normalised units (``<= VALUE_ATOL``).
        solver: ``"enumpoly"`` or ``"gnm"``.
    """

    strategies: tuple[np.ndarray, ...]
    payoffs: np.ndarray
    regret: float
    solver: str


def has_gambit() -> bool:
    """Whether pygambit is importable."""
    return importlib.util.find_spec("pygambit") is not None


def _action_values(U_i: np.ndarray, strategies, i: int) -> np.ndarray:
    """``u_i(a_i, x_{-i})`` for every action ``a_i`` of player ``i``."""
    T = U_i
    for j in range(len(strategies) - 1, -1, -1):  # from the last axis, so axis numbers stay valid
        if j != i:
            T = np.tensordot(T, strategies[j], axes=([j], [0]))
    return T


def deviation_gains(U: np.ndarray, strategies) -> np.ndarray:
    """``max_a u_i(a, x_{-i}) - u_i(x)`` for each player ``i`` (non-negative up to rounding)."""
    gains = np.empty(len(strategies))
    for i, x in enumerate(strategies):
        v = _action_values(U[i], strategies, i)
        gains[i] = v.max() - v @ x
    return gains


def _normalised(U: np.ndarray) -> np.ndarray:
    """Each player's payoffs shifted and scaled to span [0, 1] (a constant player gets 0)."""
    flat = U.reshape(U.shape[0], -1)
    lo = flat.min(axis=1)
    span = flat.max(axis=1) - lo
    scale = np.where(span > 0, span, 1.0)
    return (U - lo.reshape(-1, *[1] * (U.ndim - 1))) / scale.reshape(-1, *[1] * (U.ndim - 1))


def _to_arrays(profile, game) -> tuple[np.ndarray, ...]:
    """A gambit mixed profile as float64 simplex vectors (strategies in gambit's label order)."""
    out = []
    for label in game.players:
        x = np.clip(np.array([float(p) for _, p in profile[label]]), 0.0, None)
        out.append(x / x.sum())
    return tuple(out)


def _candidates(Un: np.ndarray):
    """``(solver, profile)`` pairs in the order of the selection rule, computed lazily."""
    import pygambit as gbt

    game = gbt.StrategicGame.from_arrays(*Un)
    for eq in gbt.nash.enumpoly_solve(game, stop_after=1).equilibria:
        yield "enumpoly", _to_arrays(eq, game)
    for eq in gbt.nash.gnm_solve(game).equilibria:
        yield "gnm", _to_arrays(eq, game)


def n_player_equilibrium(U) -> NPlayerEquilibrium:
    """One Nash equilibrium of the game with payoff tensor ``U[i, a_1, ..., a_m]``.

    The selection rule and the check are those of the module doc. Raises ``ImportError``
    naming the extra without pygambit, ``ValueError`` for a malformed tensor, and
    ``RuntimeError`` if no candidate passes the check (never a silent approximation).
    """
    U = np.asarray(U, dtype=np.float64)
    if U.ndim < 2 or U.shape[0] != U.ndim - 1:
        raise ValueError(f"U: expected shape (m, A_1, ..., A_m), got {U.shape}")
    if not np.isfinite(U).all():
        raise ValueError("U: expected finite payoffs, found NaN or inf")
    if not has_gambit():
        raise ImportError(f"games of {U.shape[0]} players need pygambit's n-player solvers: install {GAMBIT_EXTRA}")
    Un = _normalised(U)
    best = np.inf
    for solver, strategies in _candidates(Un):
        regret = float(deviation_gains(Un, strategies).max())
        if regret <= VALUE_ATOL:
            payoffs = np.array([_action_values(U[i], strategies, i) @ x for i, x in enumerate(strategies)])
            return NPlayerEquilibrium(strategies, payoffs, regret, solver)
        best = min(best, regret)
    raise RuntimeError(
        f"n_player_equilibrium: pygambit returned no equilibrium within VALUE_ATOL = {VALUE_ATOL:g} (best normalised regret {best:.3g})"
    )
