"""Experiments that make the coverage theorems of the MARLHF paper visible (appendix A).

Plain functions returning numbers and dataclasses, for ``proofs_checks`` and
``linear_games.certificate_experiments`` to call:

- ``two_player_markov_equilibrium``: an exact equilibrium of a two-player Markov game;
- ``table4_experiment``: Theorem 3 / Table 4. On the single-policy data of the proof SBSM sees the
  same data in both games, so its output is the same policy, whose Nash gaps sum to 1: it is at
  best 0.5-Nash in one of them. Adding unilateral deviations lets SBSM find the equilibrium;
- ``theorem4_instance`` and ``coverage_data``: the games (random linear, or Table 4) and the
  unilateral or single-policy datasets of the Theorem 4 and certificate experiments.

Printed constants (``C = 1``, clipping) make the surrogate constant in one-step games: with
features whose span holds the constant function (one-hot, simplex), ``||psibar_h||_{Sigma_r^-1}``
stays >= ``1 / sqrt(d lambda)`` along the unidentified reward offset, so ``C_r ||psibar||`` >= 1,
Algorithm 2's ``Q_under`` clips to 0 and Algorithm 3's ``Q_bar`` to ``H``. The experiments
therefore take ``clip`` and ``constant`` as arguments and report which was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from marlcov.theory.games import GameError, MarkovGame, random_linear_markov_game
from marlcov.theory.policies import Policy
from marlcov.theory.values import nash_gap

from .constructions import table4_equilibria, table4_games, theorem3_dataset
from .coverage_datasets import single_policy_dataset, unilateral_dataset
from .sbsm import bimatrix_equilibrium, sbsm


def two_player_markov_equilibrium(game: MarkovGame) -> Policy:
    """A Markov perfect equilibrium of a two-player game by backward induction.

    At each ``(h, s)`` the stage game ``Q_i = R_{h,i}(s) + P_h(s) V_{h+1,i}`` is solved exactly
    (``bimatrix_equilibrium``); a Markov policy that is an equilibrium of every stage game is a
    Nash equilibrium of the Markov game.
    """
    if game.n_players != 2:
        raise GameError(f"game: expected two players, got {game.n_players}")
    H, S = game.horizon, game.n_states
    A0, A1 = game.action_sizes
    x = np.empty((H, S, A0))
    y = np.empty((H, S, A1))
    V = np.zeros((H + 1, 2, S))
    for h in range(H - 1, -1, -1):
        Q = game.rewards[h] + np.einsum("sabt,it->isab", game.transitions[h], V[h + 1])
        for s in range(S):
            x[h, s], y[h, s] = bimatrix_equilibrium(Q[0, s], Q[1, s])
            V[h, :, s] = np.einsum("a,iab,b->i", x[h, s], Q[:, s], y[h, s])
    return (x, y)


# --- Theorem 3 / Table 4 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Table4Outcome:
    """Theorem 3 on Table 4.

    Attributes:
        same_output: SBSM's output on the single-policy data is the same policy in M1 and M2.
        single_gaps: its true Nash gaps ``[gap in M1, gap in M2]``.
        single_max_gap: ``max`` of those (Theorem 3: >= 0.5).
        unilateral_ns: dataset sizes of the unilateral runs.
        unilateral_gaps: ``[game, n]`` true Nash gap of SBSM's output in M_k on M_k's data
            (Theorem 3's pairs plus pairs over ``pi*_k`` and its unilateral deviations).
        clip, constant: the SBSM settings.
    """

    same_output: bool
    single_gaps: list[float]
    single_max_gap: float
    unilateral_ns: list[int]
    unilateral_gaps: list[list[float]]
    clip: bool
    constant: float


def table4_experiment(
    n_pairs: int = 2000,
    unilateral_ns: Sequence[int] = (100, 1000, 10000),
    seed: int = 0,
    clip: bool = False,
    constant: float = 1.0,
    policy_class: str = "mixed",
    **sbsm_kwargs,
) -> Table4Outcome:
    """SBSM on Table 4 with single-policy data, then with the unilateral deviations added."""
    games = table4_games()
    equilibria = table4_equilibria()
    kw = dict(clip=clip, constant=constant, policy_class=policy_class, **sbsm_kwargs)
    outputs = [sbsm(g, theorem3_dataset(g, n_pairs, seed), **kw).policy for g in games]
    same = all(np.array_equal(a, b) for a, b in zip(outputs[0], outputs[1]))
    single_gaps = [nash_gap(g, outputs[k]).total for k, g in enumerate(games)]
    uni = []
    for g, eq in zip(games, equilibria):
        row = []
        for j, n in enumerate(unilateral_ns):
            data = theorem3_dataset(g, n, seed + j) + unilateral_dataset(g, eq, n, seed + 1000 + j).dataset
            row.append(nash_gap(g, sbsm(g, data, **kw).policy).total)
        uni.append(row)
    return Table4Outcome(same, single_gaps, float(max(single_gaps)), list(unilateral_ns), uni, clip, constant)


def theorem4_instance(
    family: str, seed: int, n_states: int = 1, action_sizes: Sequence[int] = (3, 3), horizon: int = 1, dim: int = 4
) -> tuple[MarkovGame, Policy]:
    """A game and an exact equilibrium of it.

    ``family="random"``: a random two-player linear Markov game (``theory.games``) and its Markov
    perfect equilibrium. ``family="table4"``: M1 or M2 of Table 4 (by the parity of ``seed``) and
    its stated equilibrium: the pair that single-policy data cannot tell apart (Theorem 3).
    """
    if family == "random":
        game = random_linear_markov_game(n_states, action_sizes, horizon, dim, seed=seed)
        return game, two_player_markov_equilibrium(game)
    if family == "table4":
        return table4_games()[seed % 2], table4_equilibria()[seed % 2]
    raise ValueError(f"family: expected 'random' or 'table4', got {family!r}")


def coverage_data(family: str, coverage: str, game: MarkovGame, equilibrium: Policy, n: int, seed: int):
    """Single-policy or unilateral data around ``equilibrium``.

    For ``family="table4"`` single-policy data is the compliant dataset of Theorem 3's proof, and
    unilateral data adds pairs over ``pi*`` and its unilateral deviations to it.
    """
    if coverage not in ("unilateral", "single"):
        raise ValueError(f"coverage: expected 'unilateral' or 'single', got {coverage!r}")
    if family == "table4":
        data = theorem3_dataset(game, n, seed)
        return data + unilateral_dataset(game, equilibrium, n, seed + 1).dataset if coverage == "unilateral" else data
    if coverage == "unilateral":
        return unilateral_dataset(game, equilibrium, n, seed).dataset
    return single_policy_dataset(game, equilibrium, n, seed).dataset
