"""Markov perfect equilibria of finite-horizon Markov games by backward induction.

At step ``h`` (from ``H - 1`` down to 0) the continuation values ``V_{h+1}`` of the policy
chosen for the later steps turn every state ``s`` into a one-shot *stage game* with payoffs

    Q_{h,i}(s, a) = r_{h,i}(s, a) + sum_{s'} P_h(s' | s, a) V_{h+1,i}(s'),

and the stage equilibria, put together, form a Markov perfect equilibrium (a subgame-perfect
equilibrium in Markov policies; Shapley 1953 for the zero-sum case, Fink 1964 in general).

- One player: a greedy (deterministic) optimal policy.
- Two players, zero-sum (``r_{h,0} + r_{h,1}`` the same constant at every state and joint
  action of a step, so every stage game is constant-sum): the value and a maximin/minimax pair
  of each stage game, all states of a step in one batched interior-point run
  (:func:`zero_sum_solve_batch`), each polished. The
  value ``V_{0,0}(s_1)`` is then *the* value of the game.
- Two players, general-sum: every extreme equilibrium of each stage game
  (:func:`all_equilibria`) and the **selection rule**: the one with the largest sum of the
  two players' stage payoffs, ties broken by the enumeration's deterministic order
  (decreasing lexicographic ``(x, y)``). Different rules give different (equally valid)
  equilibria; no rule makes the Markov equilibrium unique.
- Three or more players: one equilibrium of each stage game from pygambit's n-player solvers
  (:func:`.n_player.n_player_equilibrium`; the optional ``gambit`` extra). **Selection
  rule**: the first equilibrium that gambit's support enumeration (``enumpoly``) finds, in
  gambit's order of support profiles (``gnm`` if it finds none); each one verified to have
  normalised regret at most ``VALUE_ATOL`` (payoffs of each player scaled to span [0, 1]).
  Without pygambit such games are refused with a message naming the extra.

The returned policy's exact Nash gap is computed independently by
:func:`marlcov.theory.values.nash_gap` (best responses over all policies by dynamic
programming), and is 0 up to the stage solvers' accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marlcov.theory.games import GameError, MarkovGame
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import nash_gap

from .n_player import GAMBIT_EXTRA, has_gambit, n_player_equilibrium
from .n_player import SELECTION_RULE as N_PLAYER_SELECTION_RULE
from .vertex_enumeration import all_equilibria
from .zero_sum import zero_sum_solve_batch

__all__ = ["MarkovEquilibrium", "markov_equilibrium", "is_zero_sum_game"]

SELECTION_RULE = "max-welfare stage equilibrium, ties by decreasing lexicographic (x, y)"


@dataclass(frozen=True, eq=False)
class MarkovEquilibrium:
    """A Markov perfect equilibrium found by backward induction.

    Attributes:
        policy: ``pi[i][h, s, a_i]``, one array per player.
        values: ``V[h, i, s]`` of the policy, ``h = 0..H`` (``V[H] = 0``).
        zero_sum: whether the game was solved as a two-player zero-sum game.
        nash_gap: the exact Nash gap of ``policy`` (theory.values), and ``per_player`` its terms.
        stage_games: the number of stage games solved (``H * S``).
        complete_stages: how many stage games had a certified complete equilibrium set
            (two-player general-sum only; ``None`` otherwise).
        selection: the rule that picked the stage equilibria.
    """

    policy: tuple[np.ndarray, ...]
    values: np.ndarray
    zero_sum: bool
    nash_gap: float
    per_player: np.ndarray
    stage_games: int
    complete_stages: int | None
    selection: str


def is_zero_sum_game(game: MarkovGame) -> bool:
    """Two players and ``r_{h,0} + r_{h,1}`` constant over states and joint actions at each step."""
    if game.n_players != 2:
        return False
    total = (game.rewards[:, 0] + game.rewards[:, 1]).reshape(game.horizon, -1)
    return bool((np.ptp(total, axis=1) <= VALUE_ATOL).all())


def _stage_payoffs(game: MarkovGame, h: int, V_next: np.ndarray) -> np.ndarray:
    """``Q[i, s, a_1..a_m]`` of step ``h`` for continuation values ``V_next[i, s']``."""
    P = game.transitions[h]
    S = game.n_states
    cont = (P.reshape(-1, S) @ V_next.T).T.reshape(game.n_players, *P.shape[:-1])
    return game.rewards[h] + cont


def _selection_rule(m: int, zero_sum: bool) -> str:
    if zero_sum:
        return "zero-sum LP (maximin/minimax)"
    return {1: "greedy", 2: SELECTION_RULE}.get(m, N_PLAYER_SELECTION_RULE)


def markov_equilibrium(game: MarkovGame) -> MarkovEquilibrium:
    """A Markov perfect equilibrium of ``game`` by backward induction (see the module doc)."""
    m, H, S = game.n_players, game.horizon, game.n_states
    if m >= 3 and not has_gambit():
        raise GameError(f"n_players: equilibria of games with {m} players need pygambit's n-player solvers; install {GAMBIT_EXTRA}")
    zero_sum = is_zero_sum_game(game)
    sizes = game.action_sizes
    policy = tuple(np.zeros((H, S, a)) for a in sizes)
    V = np.zeros((H + 1, m, S))
    complete = 0
    for h in range(H - 1, -1, -1):
        Q = _stage_payoffs(game, h, V[h + 1])
        if m == 1:
            policy[0][h, np.arange(S), Q[0].argmax(axis=1)] = 1.0
        elif zero_sum:
            for s, sol in enumerate(zero_sum_solve_batch(Q[0])):
                policy[0][h, s], policy[1][h, s] = sol.row_strategy, sol.col_strategy
        elif m >= 3:
            for s in range(S):
                stage = n_player_equilibrium(Q[:, s])
                for i in range(m):
                    policy[i][h, s] = stage.strategies[i]
        else:
            for s in range(S):
                found = all_equilibria(Q[0, s], Q[1, s])
                complete += found.complete
                welfare = np.array([sum(e.payoffs) for e in found])
                best = found[int(np.flatnonzero(welfare >= welfare.max() - VALUE_ATOL)[0])]
                policy[0][h, s], policy[1][h, s] = best.strategies
        joint = policy[0][h]
        for i in range(1, m):
            joint = np.einsum("s...,sa->s...a", joint, policy[i][h])
        V[h] = (Q * joint[None]).reshape(m, S, -1).sum(axis=2)
    gap = nash_gap(game, policy)
    return MarkovEquilibrium(
        policy=policy,
        values=V,
        zero_sum=zero_sum,
        nash_gap=gap.total,
        per_player=gap.per_player,
        stage_games=H * S,
        complete_stages=int(complete) if (m == 2 and not zero_sum) else None,
        selection=_selection_rule(m, zero_sum),
    )
