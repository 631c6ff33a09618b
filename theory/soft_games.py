"""Entropy- and KL-regularised finite Markov games: soft Bellman operators and their inverse,
soft best responses over marginalised critics, and logit quantal-response equilibria.

Conventions are those of ``theory.games``: ``P[h, s, a_1..a_m, s']``, rewards
``r[h, s, a_1..a_m]`` (one channel) or ``R[h, i, s, a_1..a_m]`` (one per player), product
policies ``pi[i][h, s, a_i]``, joint policies ``pi[h, s, a_1..a_m]``; ``V[H] = 0``. Rewards
here may be any real numbers (an inverse Bellman operator returns whatever reward a
Q-function implies), so the functions take arrays rather than a validated ``MarkovGame``.

Two regularisations appear in the papers:

- cooperative, KL to a reference (behaviour) joint policy ``mu`` with temperature ``beta``
  (O-MAPL, OMIGA): ``V_h(s) = beta log sum_a mu_h(a|s) exp(Q_h(s,a)/beta)``,
  ``Q_h(s,a) = r_h(s,a) + gamma sum_s' P_h(s'|s,a) V_{h+1}(s')``;
- general-sum, entropy with rationality ``lam`` per player (MAMQL): player i's marginalised
  critic ``qbar_i(s,a_i) = E_{a_-i ~ pi_-i} Q_i(s,a)`` and the Boltzmann policy
  ``pi_i(a_i|s) ∝ exp(lam qbar_i(s,a_i))``.

Loops run over the horizon and players only; states and joint actions are vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, softmax

from .policies import Policy
from .tolerances import QRE_TOL

#: Floor on probabilities inside logarithms (a Boltzmann policy is never exactly zero).
LOG_FLOOR = 1e-300


def _check_shapes(P: np.ndarray, r: np.ndarray, name: str = "reward") -> None:
    if P.ndim < 4:
        raise ValueError(f"transitions: expected shape [H, S, A_1..A_m, S], got {list(P.shape)}")
    if r.shape != P.shape[:-1]:
        raise ValueError(f"{name}: expected shape {list(P.shape[:-1])} ([H, S, A_1..A_m]), got {list(r.shape)}")


def expected_next(P_h: np.ndarray, V_next: np.ndarray) -> np.ndarray:
    """``sum_s' P_h(s'|s,a) V(s')`` for one step: ``P_h[S, A.., S]``, ``V_next[S]`` -> ``[S, A..]``."""
    return P_h @ V_next


def soft_value(Q_h: np.ndarray, ref_h: np.ndarray, beta: float) -> np.ndarray:
    """``beta log sum_a ref(a|s) exp(Q(s,a)/beta)`` over all joint-action axes; ``[S, A..] -> [S]``."""
    S = Q_h.shape[0]
    with np.errstate(divide="ignore"):
        log_ref = np.log(ref_h.reshape(S, -1))
    return beta * logsumexp(Q_h.reshape(S, -1) / beta + log_ref, axis=1)


@dataclass(frozen=True)
class SoftSolution:
    """Solution of a KL-regularised cooperative game.

    Attributes:
        Q: soft Q-function ``Q[h, s, a_1..a_m]``.
        V: soft value ``V[h, s]``, ``h = 0..H`` with ``V[H] = 0``.
        policy: the optimal joint policy ``pi[h, s, a] = mu(a|s) exp((Q - V)/beta)``.
    """

    Q: np.ndarray
    V: np.ndarray
    policy: np.ndarray


def soft_bellman_solve(P: np.ndarray, reward: np.ndarray, ref: np.ndarray, beta: float, gamma: float = 1.0) -> SoftSolution:
    """Soft value iteration (backward induction) for ``max_pi E[sum_h gamma^h (r - beta KL(pi||ref))]``.

    Args:
        P: transitions ``[H, S, A_1..A_m, S]``.
        reward: team reward ``r[H, S, A_1..A_m]``.
        ref: reference (behaviour) joint policy ``mu[H, S, A_1..A_m]``.
        beta: temperature > 0.
    """
    _check_shapes(P, reward)
    if ref.shape != reward.shape:
        raise ValueError(f"ref: expected shape {list(reward.shape)}, got {list(ref.shape)}")
    if beta <= 0:
        raise ValueError(f"beta: expected a positive temperature, got {beta}")
    H, S = P.shape[:2]
    Q = np.empty_like(reward, dtype=np.float64)
    V = np.zeros((H + 1, S))
    for h in range(H - 1, -1, -1):
        Q[h] = reward[h] + gamma * expected_next(P[h], V[h + 1])
        V[h] = soft_value(Q[h], ref[h], beta)
    policy = ref * np.exp((Q - V[:H].reshape(H, S, *([1] * (Q.ndim - 2)))) / beta)
    return SoftSolution(Q, V, policy)


def inverse_soft_bellman(P: np.ndarray, Q: np.ndarray, ref: np.ndarray, beta: float, gamma: float = 1.0) -> np.ndarray:
    """The reward a soft Q-function implies: ``r_h = Q_h - gamma P_h V^Q_{h+1}`` (O-MAPL's ``T* Q``).

    ``V^Q_{h+1}(s) = beta log E_{a ~ ref} exp(Q_{h+1}(s,a)/beta)``; ``V^Q_H = 0``. This map and
    ``soft_bellman_solve`` are inverse to each other.
    """
    _check_shapes(P, Q, "Q")
    H = P.shape[0]
    r = np.empty_like(Q, dtype=np.float64)
    V_next = np.zeros(P.shape[1])
    for h in range(H - 1, -1, -1):
        r[h] = Q[h] - gamma * expected_next(P[h], V_next)
        V_next = soft_value(Q[h], ref[h], beta)
    return r


def regularised_value(
    P: np.ndarray, reward: np.ndarray, joint_policy: np.ndarray, ref: np.ndarray, beta: float, gamma: float = 1.0
) -> np.ndarray:
    """``V^pi[h, s] = E_pi[sum gamma^t (r - beta log(pi/ref))]`` of a joint policy; shape ``[H+1, S]``."""
    _check_shapes(P, reward)
    H, S = P.shape[:2]
    V = np.zeros((H + 1, S))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(joint_policy > 0, np.log(np.maximum(joint_policy, LOG_FLOOR)) - np.log(np.maximum(ref, LOG_FLOOR)), 0.0)
    for h in range(H - 1, -1, -1):
        inner = reward[h] + gamma * expected_next(P[h], V[h + 1]) - beta * log_ratio[h]
        V[h] = np.sum((joint_policy[h] * inner).reshape(S, -1), axis=1)
    return V


# ----------------------------------------------------------------------------------------------
# General-sum games with entropy: marginalised critics and logit equilibria (MAMQL)
# ----------------------------------------------------------------------------------------------


def marginalise_others(x_h: np.ndarray, policy_h: Sequence[np.ndarray], player: int) -> np.ndarray:
    """``E_{a_-i ~ pi_-i} x(s, a_i, a_-i)`` for one step.

    Args:
        x_h: ``[S, A_1..A_m, *trailing]`` (trailing axes, e.g. the next state, are kept).
        policy_h: per player ``pi_j[s, a_j]`` at this step.
        player: i.
    Returns ``[S, A_i, *trailing]``.
    """
    m = len(policy_h)
    S = x_h.shape[0]
    trailing = x_h.shape[1 + m :]
    out = x_h
    for j in range(m - 1, -1, -1):
        if j == player:
            continue
        shape = [S] + [1] * (out.ndim - 1)
        shape[1 + j] = policy_h[j].shape[-1]
        out = np.sum(out * policy_h[j].reshape(shape), axis=1 + j, keepdims=True)
    return out.reshape(S, policy_h[player].shape[-1], *trailing)


def marginal_mdp(P: np.ndarray, reward_i: np.ndarray, policy: Policy, player: int) -> tuple[np.ndarray, np.ndarray]:
    """Player i's MDP against fixed ``pi_-i``: ``rbar[h, s, a_i]`` and ``Pbar[h, s, a_i, s']``."""
    _check_shapes(P, reward_i)
    H = P.shape[0]
    rbar = np.stack([marginalise_others(reward_i[h], [p[h] for p in policy], player) for h in range(H)])
    Pbar = np.stack([marginalise_others(P[h], [p[h] for p in policy], player) for h in range(H)])
    return rbar, Pbar


@dataclass(frozen=True)
class MarginalCritic:
    """A player's marginalised critic and value.

    Attributes:
        q_bar: ``qbar_i[h, s, a_i]``.
        V: ``V_i[h, s]``, ``h = 0..H``.
        policy: the Boltzmann policy ``softmax(lam * qbar_i)`` (for a soft best response) or the
            evaluated policy (for a soft evaluation).
    """

    q_bar: np.ndarray
    V: np.ndarray
    policy: np.ndarray


def soft_best_response(P: np.ndarray, reward_i: np.ndarray, policy: Policy, player: int, lam: float, gamma: float = 1.0) -> MarginalCritic:
    """Player i's entropy-regularised best response to ``pi_-i``, computed on the joint game.

    ``Q_i(s,a) = r_i(s,a) + gamma E_s' V_i(s')`` over joint actions, ``qbar_i = E_{pi_-i} Q_i``,
    ``V_i = (1/lam) log sum_{a_i} exp(lam qbar_i)`` and ``pi_i ∝ exp(lam qbar_i)``: the maximiser of
    ``E[sum_h r_i + (1/lam) H(pi_i(.|s_h))]`` against ``pi_-i``.
    """
    _check_shapes(P, reward_i)
    H, S = P.shape[:2]
    A_i = P.shape[2 + player]
    q_bar = np.empty((H, S, A_i))
    V = np.zeros((H + 1, S))
    for h in range(H - 1, -1, -1):
        Q_joint = reward_i[h] + gamma * expected_next(P[h], V[h + 1])
        q_bar[h] = marginalise_others(Q_joint, [p[h] for p in policy], player)
        V[h] = logsumexp(lam * q_bar[h], axis=1) / lam
    return MarginalCritic(q_bar, V, softmax(lam * q_bar, axis=2))


def soft_evaluation(
    P: np.ndarray, reward_i: np.ndarray, policy: Policy, player: int, lam: float, gamma: float = 1.0, entropy: bool = True
) -> MarginalCritic:
    """Player i's marginalised critic of the profile ``pi`` (its own entropy bonus included when ``entropy``).

    ``V_i(s) = sum_{a_i} pi_i(a_i|s) [qbar_i(s,a_i) - (1/lam) log pi_i(a_i|s)]``; with
    ``entropy=False`` the bonus is left out (the plain value of the profile).
    """
    _check_shapes(P, reward_i)
    H, S = P.shape[:2]
    pi_i = policy[player]
    q_bar = np.empty((H, S, pi_i.shape[-1]))
    V = np.zeros((H + 1, S))
    bonus = -np.sum(pi_i * np.log(np.maximum(pi_i, LOG_FLOOR)), axis=2) / lam if entropy else np.zeros((H, S))
    for h in range(H - 1, -1, -1):
        Q_joint = reward_i[h] + gamma * expected_next(P[h], V[h + 1])
        q_bar[h] = marginalise_others(Q_joint, [p[h] for p in policy], player)
        V[h] = np.sum(pi_i[h] * q_bar[h], axis=1) + bonus[h]
    return MarginalCritic(q_bar, V, pi_i)


def boltzmann_residual(P: np.ndarray, rewards: np.ndarray, policy: Policy, lam: float, gamma: float = 1.0, entropy: bool = True) -> float:
    """``max_i max |pi_i - softmax(lam qbar_i^pi)|``: zero exactly at a fixed point of Boltzmann over critics."""
    worst = 0.0
    for i in range(len(policy)):
        crit = soft_evaluation(P, rewards[:, i], policy, i, lam, gamma, entropy)
        worst = max(worst, float(np.max(np.abs(policy[i] - softmax(lam * crit.q_bar, axis=2)))))
    return worst


def regularised_nash_gap(
    P: np.ndarray, rewards: np.ndarray, policy: Policy, lam: float, initial_state: int = 0, gamma: float = 1.0
) -> np.ndarray:
    """Per player ``V_i^{soft BR to pi_-i}(s_1) - V_i^{pi, entropy}(s_1) >= 0``; zero iff ``pi_i`` is the soft best response."""
    gaps = []
    for i in range(len(policy)):
        br = soft_best_response(P, rewards[:, i], policy, i, lam, gamma)
        ev = soft_evaluation(P, rewards[:, i], policy, i, lam, gamma)
        gaps.append(br.V[0, initial_state] - ev.V[0, initial_state])
    return np.array(gaps)


@dataclass(frozen=True)
class LogitEquilibrium:
    """A Markov logit quantal-response equilibrium.

    Attributes:
        policy: product policy ``pi[i][h, s, a_i]``.
        values: ``V[h, i, s]`` (continuation values used in the fixed point).
        residual: ``max |pi_i - softmax(lam qbar_i)|`` at the returned policy.
        iterations: damped iterations spent in all stage games.
    """

    policy: Policy
    values: np.ndarray
    residual: float
    iterations: int


def _stage_logit_equilibrium(
    G: np.ndarray, lam: float, damping: float, tol: float, max_iter: int, homotopy_steps: int
) -> tuple[list[np.ndarray], int]:
    """Logit equilibria of the stage games ``G[i, s, a_1..a_m]`` at every state at once.

    Follows the principal branch by homotopy in the rationality (``lam/K, 2 lam/K, .., lam``,
    starting from the uniform profile at ``lam = 0``) with a damped simultaneous update at each.
    """
    m = G.shape[0]
    S = G.shape[1]
    actions = G.shape[2:]
    pis = [np.full((S, a), 1.0 / a) for a in actions]
    total = 0
    for k in range(1, homotopy_steps + 1):
        lam_k = lam * k / homotopy_steps
        for _ in range(max_iter):
            total += 1
            targets = [softmax(lam_k * marginalise_others(G[i], pis, i), axis=1) for i in range(m)]
            move = max(float(np.max(np.abs(t - p))) for t, p in zip(targets, pis))
            pis = [(1 - damping) * p + damping * t for p, t in zip(pis, targets)]
            if move < tol:
                break
    return pis, total


def logit_qre(
    P: np.ndarray,
    rewards: np.ndarray,
    lam: float,
    gamma: float = 1.0,
    entropy: bool = True,
    damping: float = 0.5,
    tol: float = QRE_TOL,
    max_iter: int = 5000,
    homotopy_steps: int = 10,
) -> LogitEquilibrium:
    """A Markov-perfect logit QRE of a finite general-sum game by backward induction.

    At each step the stage games ``G_i(s, a) = r_i(s,a) + gamma E V_{i,h+1}(s')`` are solved for
    ``pi_i = softmax(lam E_{pi_-i} G_i)`` (damped iteration with homotopy in ``lam``).
    Continuation values include each player's entropy bonus when ``entropy`` (the equilibrium
    of the entropy-regularised game, where Boltzmann over soft marginalised critics is a soft
    best response); with ``entropy=False`` they are the plain values of the profile (the agent
    QRE of McKelvey and Palfrey). The two coincide when ``H = 1``.

    Args:
        P: ``[H, S, A_1..A_m, S]``; rewards: ``R[H, m, S, A_1..A_m]``; lam: rationality > 0.
    """
    if rewards.shape[0] != P.shape[0] or rewards.shape[2:] != P.shape[1:-1]:
        raise ValueError(f"rewards: expected shape [H, m, S, A_1..A_m] matching transitions {list(P.shape)}, got {list(rewards.shape)}")
    if lam <= 0:
        raise ValueError(f"lam: expected a positive rationality, got {lam}")
    H, S = P.shape[:2]
    m = rewards.shape[1]
    V = np.zeros((H + 1, m, S))
    policy = [np.empty((H, S, a)) for a in P.shape[2:-1]]
    iterations = 0
    for h in range(H - 1, -1, -1):
        G = np.stack([rewards[h, i] + gamma * expected_next(P[h], V[h + 1, i]) for i in range(m)])
        pis, it = _stage_logit_equilibrium(G, lam, damping, tol, max_iter, homotopy_steps)
        iterations += it
        for i in range(m):
            policy[i][h] = pis[i]
            q_bar = marginalise_others(G[i], pis, i)
            V[h, i] = np.sum(pis[i] * q_bar, axis=1)
            if entropy:
                V[h, i] -= np.sum(pis[i] * np.log(np.maximum(pis[i], LOG_FLOOR)), axis=1) / lam
    policy = tuple(policy)
    residual = boltzmann_residual(P, rewards, policy, lam, gamma, entropy)
    return LogitEquilibrium(policy, V, residual, iterations)
