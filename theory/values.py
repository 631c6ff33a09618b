"""Exact dynamic programming: values, best responses and the Nash gap (MARLHF paper, section 3).

All routines are vectorised over states and joint actions: the only Python loop is over the
horizon (and over players where a per-player quantity is asked for). They accept any reward
tensor, so the coverage measures reuse them with the bonus as the reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .games import MarkovGame
from .policies import Policy, check_policy, joint_action_probs


def _expected_next(P_h: np.ndarray, V_next: np.ndarray) -> np.ndarray:
    """``sum_{s'} P_h(s'|s,a) V(s')`` for value rows ``V_next[k, s']``; shape ``[k, S, A..]``."""
    S = P_h.shape[-1]
    flat = P_h.reshape(-1, S) @ V_next.T
    return flat.T.reshape(V_next.shape[0], *P_h.shape[:-1])


@dataclass(frozen=True)
class PolicyValues:
    """``V[h, k, s]`` (``h = 0..H``, ``V[H] = 0``) and ``Q[h, k, s, a_1..a_m]`` for reward channel k."""

    V: np.ndarray
    Q: np.ndarray


def evaluate_policy(transitions: np.ndarray, rewards: np.ndarray, policy: Policy) -> PolicyValues:
    """Exact ``V^pi`` and ``Q^pi`` of a product Markov policy.

    Args:
        transitions: ``P[h, s, a_1..a_m, s']``.
        rewards: ``r[h, k, s, a_1..a_m]`` for k reward channels (players, or a bonus).
        policy: ``pi[i][h, s, a_i]``.
    """
    H, S = transitions.shape[:2]
    m = transitions.ndim - 3
    k = rewards.shape[1]
    joint = joint_action_probs(policy)
    action_axes = tuple(range(2, 2 + m))
    V = np.zeros((H + 1, k, S))
    Q = np.empty((H, k, *transitions.shape[1:-1]))
    for h in range(H - 1, -1, -1):
        Q[h] = rewards[h] + _expected_next(transitions[h], V[h + 1])
        V[h] = np.sum(Q[h] * joint[h][None], axis=action_axes)
    return PolicyValues(V, Q)


@dataclass(frozen=True)
class BestResponse:
    """Best response of one player against the others' fixed policy.

    Attributes:
        values: ``V^{dagger, pi_{-i}}[h, s]``, ``h = 0..H``.
        policy: a deterministic best response ``pi_i[h, s, a_i]`` (one-hot rows).
        q_marginal: ``E_{a_{-i} ~ pi_{-i}} Q^dagger[h, s, a]``, shape ``[H, S, A_i]``.
    """

    values: np.ndarray
    policy: np.ndarray
    q_marginal: np.ndarray


def best_response(transitions: np.ndarray, reward: np.ndarray, policy: Policy, player: int) -> BestResponse:
    """Exact best response of ``player`` to ``policy[-player]`` for the reward ``r[h, s, a_1..a_m]``."""
    H, S = transitions.shape[:2]
    m = transitions.ndim - 3
    others = joint_action_probs(policy, skip=player)
    sum_axes = tuple(1 + j for j in range(m) if j != player)
    A_i = transitions.shape[2 + player]
    V = np.zeros((H + 1, S))
    q_marg = np.empty((H, S, A_i))
    for h in range(H - 1, -1, -1):
        Q_h = reward[h] + _expected_next(transitions[h], V[h + 1][None])[0]
        q_marg[h] = np.sum(Q_h * others[h], axis=sum_axes).reshape(S, A_i)
        V[h] = q_marg[h].max(axis=1)
    br = np.eye(A_i)[np.argmax(q_marg, axis=2)]
    return BestResponse(V, br, q_marg)


def optimal_joint_values(transitions: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """``max_pi V^pi[h, s]`` over all (joint) policies for a single reward ``r[h, s, a_1..a_m]``.

    The maximum over joint policies is attained by a deterministic joint policy, which is a
    product policy, so this is also the maximum over product policies.
    """
    H, S = transitions.shape[:2]
    V = np.zeros((H + 1, S))
    for h in range(H - 1, -1, -1):
        Q_h = reward[h] + _expected_next(transitions[h], V[h + 1][None])[0]
        V[h] = Q_h.reshape(S, -1).max(axis=1)
    return V


@dataclass(frozen=True)
class NashGap:
    """``Nash-Gap(pi) = sum_i [V_{1,i}^{dagger, pi_{-i}}(s_1) - V_{1,i}^pi(s_1)]``.

    Attributes:
        total: the sum over players.
        per_player: the player-wise terms, shape ``[m]``.
        values: ``V_{1,i}^pi(s_1)``, shape ``[m]``.
        best_response_values: ``V_{1,i}^{dagger, pi_{-i}}(s_1)``, shape ``[m]``.
        best_responses: one deterministic best response per player.
    """

    total: float
    per_player: np.ndarray
    values: np.ndarray
    best_response_values: np.ndarray
    best_responses: tuple[np.ndarray, ...]


def nash_gap(game: MarkovGame, policy: Policy) -> NashGap:
    """Exact Nash gap of a product Markov policy (section 3 of the MARLHF paper).

    One backward pass computes ``V^pi`` for every player and the ``m`` best-response values
    ``V^{dagger, pi_{-i}}`` together: at each step the ``2m`` value rows are pushed through
    ``P_h`` by a single matrix product, so ``P`` is read once in all (the physical floor: a best
    response must read ``P``). The remaining work, the expectations over the policies, costs
    ``O(m^2 S prod_i A_i)`` per step, a factor ``S / m^2`` below that read. Memory beyond the
    game: ``2m S prod_i A_i`` floats for one step's Q-values (8 MiB at m = 5, S = 100, four
    actions each) and ``H S prod_i A_i`` for the joint policy (8 MiB there). It stops
    scaling where the game itself does: ``P`` holds ``H S^2 prod_i A_i`` floats (0.8 GB at m = 5, S = 100, H = 10, four actions each), and
    the joint action space grows as ``A^m``.

    Each per-player term is ``max(0, .)`` of a difference that is non-negative in exact
    arithmetic; rounding can make it ``-1e-16``, which is reported as 0.
    """
    policy = check_policy(policy, game)
    P, R = game.transitions, game.rewards
    H, S, m = game.horizon, game.n_states, game.n_players
    sizes = game.action_sizes
    joint = joint_action_probs(policy)
    letters = "abcdefghijklmnopqrtuvwxyz"[:m]  # not "s", the state axis
    br_sums = [",".join([f"s{letters}"] + [f"s{c}" for j, c in enumerate(letters) if j != i]) + f"->s{letters[i]}" for i in range(m)]
    W = np.zeros((2 * m, S))  # rows 0..m-1: V^pi[h+1]; rows m..2m-1: best-response values
    brs = tuple(np.zeros((H, S, a)) for a in sizes)
    for h in range(H - 1, -1, -1):
        # W @ P^T (rather than P @ W^T): the faster BLAS layout for a wide P and 2m rows
        cont = (W @ P[h].reshape(-1, S).T).reshape(2 * m, S, *sizes)
        W_new = np.empty_like(W)
        W_new[:m] = np.einsum("ksj,sj->ks", (R[h] + cont[:m]).reshape(m, S, -1), joint[h].reshape(S, -1))
        for i in range(m):
            others = [policy[j][h] for j in range(m) if j != i]
            q = np.einsum(br_sums[i], R[h, i] + cont[m + i], *others)
            W_new[m + i] = q.max(axis=1)
            brs[i][h, np.arange(S), np.argmax(q, axis=1)] = 1.0
        W = W_new
    s1 = game.initial_state
    own, br_vals = W[:m, s1].copy(), W[m:, s1].copy()
    per = np.maximum(br_vals - own, 0.0)
    return NashGap(float(per.sum()), per, own, br_vals, brs)
