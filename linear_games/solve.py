"""Equilibria of a game file for ``marlcov solve``: all extreme equilibria of a one-state,
one-step two-player game, a Markov perfect equilibrium of any other game."""

from __future__ import annotations

import numpy as np

from marlcov.theory.games import GameError, MarkovGame
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL

from .markov_equilibria import markov_equilibrium
from .matrix_games import all_equilibria, zero_sum_solve


def payoff_matrices(game: MarkovGame) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)``: the rewards of players 0 and 1, rows indexed by player 0's actions."""
    if game.n_players != 2:
        raise GameError(f"n_players: solve handles two-player games, the game has {game.n_players}")
    if game.n_states != 1 or game.horizon != 1:
        raise GameError(f"horizon/n_states: solve handles one-state, one-step games, got H = {game.horizon}, S = {game.n_states}")
    return game.rewards[0, 0, 0], game.rewards[0, 1, 0]


def is_constant_sum(A: np.ndarray, B: np.ndarray) -> bool:
    """Whether ``A + B`` is constant: the game is then strategically zero-sum."""
    total = A + B
    return bool(np.ptp(total) <= VALUE_ATOL)


def solve_one_shot(game: MarkovGame) -> dict:
    """The JSON of ``marlcov solve`` (docs/formats.md).

    Two-player games: every equilibrium of a nondegenerate game (support enumeration); for a
    degenerate game the equilibria found and ``complete: false``. Constant-sum games also get
    the value for player 0 and a maximin/minimax pair by linear programming, and that pair is
    listed first among the equilibria.
    """
    A, B = payoff_matrices(game)
    zero_sum = is_constant_sum(A, B)
    found = all_equilibria(A, B)
    equilibria = [
        {"strategies": [eq.strategies[0].tolist(), eq.strategies[1].tolist()], "payoffs": [float(p) for p in eq.payoffs]}
        for eq in found.equilibria
    ]
    value, sol = None, None
    if zero_sum:
        sol = zero_sum_solve(A)
        value = float(sol.value)
        lp_eq = {
            "strategies": [sol.row_strategy.tolist(), sol.col_strategy.tolist()],
            "payoffs": [float(sol.row_strategy @ A @ sol.col_strategy), float(sol.row_strategy @ B @ sol.col_strategy)],
        }
        same = [
            np.allclose(e["strategies"][0], lp_eq["strategies"][0], atol=PROB_ATOL)
            and np.allclose(e["strategies"][1], lp_eq["strategies"][1], atol=PROB_ATOL)
            for e in equilibria
        ]
        equilibria = [lp_eq] + [e for e, dup in zip(equilibria, same) if not dup]
    return {
        "zero_sum": zero_sum,
        "value": value,
        "equilibria": equilibria,
        "complete": bool(found.complete),
        "degenerate": bool(found.degenerate),
        "near_degenerate": bool(found.near_degenerate),
        "separation": float(found.separation),
        "exact": bool(found.exact),
        "exploitability": None if not zero_sum else float(sol.exploitability),
    }


def solve_markov(game: MarkovGame) -> dict:
    """The JSON of ``marlcov solve`` for a game with ``H > 1`` or ``S > 1`` (or ``m != 2``):
    a Markov perfect equilibrium by backward induction (:mod:`.markov_equilibria`), its exact
    Nash gap, the value at ``s_1`` of each player, and the policy in ``marlcov.policy/1`` form."""
    eq = markov_equilibrium(game)
    s1 = game.initial_state
    values = [float(v) for v in eq.values[0, :, s1]]
    return {
        "zero_sum": eq.zero_sum,
        "value": values[0] if eq.zero_sum else None,
        "values": values,
        "nash_gap": float(eq.nash_gap),
        "per_player": [float(g) for g in eq.per_player],
        "stage_games": eq.stage_games,
        "complete_stages": eq.complete_stages,
        "selection": eq.selection,
        "policy": {"format": "marlcov.policy/1", "probs": [p.tolist() for p in eq.policy]},
    }


def solve_game(game: MarkovGame) -> dict:
    """``solve_one_shot`` for a one-state, one-step two-player game, else ``solve_markov``."""
    if game.n_players == 2 and game.n_states == 1 and game.horizon == 1:
        return solve_one_shot(game)
    return solve_markov(game)
