"""Named constructions of the MARLHF paper (appendix A.1): the two games of Table 4 and the
dataset of the proof of Theorem 3.

Table 4 prints the reward of the row player ``b`` (who maximises) against the column player
``a`` (who minimises). In the proof ``A_1 = {a_1, a_2}`` is player 0 and ``A_2 = {b_1, b_2}``
player 1, so the arrays here hold ``R[0, 0, 0, a, b] = 1 - M[b, a]`` (player ``a``) and
``R[0, 1, 0, a, b] = M[b, a]`` (player ``b``): a constant-sum game with rewards in [0, 1].
Features are ``psi(a_j, b_k) = e_{2j + k}`` as in the proof.
"""

from __future__ import annotations

import numpy as np

from marlcov.theory.games import MarkovGame
from marlcov.theory.preferences import PreferenceDataset, label_pairs

#: Table 4, rows ``b_1, b_2``, columns ``a_1, a_2``: the maximising row player's reward.
TABLE4_M1 = np.array([[0.5, 1.0], [0.0, 0.5]])
TABLE4_M2 = np.array([[0.5, 0.0], [1.0, 0.5]])


def _table4_game(table: np.ndarray, name: str) -> MarkovGame:
    r_b = table.T  # indexed [a, b]
    rewards = np.stack([1.0 - r_b, r_b])[None, :, None]  # [H=1, m=2, S=1, 2, 2]
    transitions = np.ones((1, 1, 2, 2, 1))
    psi = np.eye(4).reshape(1, 2, 2, 4)
    theta = rewards.reshape(1, 2, 4)
    return MarkovGame(transitions, rewards, 0, psi, theta, name)


def table4_games() -> tuple[MarkovGame, MarkovGame]:
    """``(M_1, M_2)`` of Table 4 as one-step, one-state, two-player linear Markov games."""
    return _table4_game(TABLE4_M1, "table4_M1"), _table4_game(TABLE4_M2, "table4_M2")


def table4_equilibria() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The pure equilibria stated under Table 4 as policies: ``(a_1, b_1)`` in M_1, ``(a_2, b_2)`` in M_2."""
    e = np.eye(2)
    return (e[0][None, None], e[0][None, None]), (e[1][None, None], e[1][None, None])


def theorem3_dataset(game: MarkovGame, n_pairs: int, seed: int | np.random.Generator | None = None) -> PreferenceDataset:
    """The compliant dataset of the Theorem 3 proof for ``game`` (one of Table 4's pair).

    The behaviour policy plays ``(a_1, b_1)`` or ``(a_2, b_2)`` with probability 1/2 each (a
    correlated joint policy); both trajectories of every pair follow it, and labels are
    Bradley-Terry (sigmoid) draws from ``game``'s rewards.
    """
    rng = np.random.default_rng(seed)
    joint = rng.integers(0, 2, size=(n_pairs, 2))
    actions = np.repeat(joint[..., None], 2, axis=-1)[:, :, None, :]  # [N, 2, H=1, m=2]
    states = np.zeros((n_pairs, 2, 2), dtype=np.int64)
    return label_pairs(game, states, actions, rng)
