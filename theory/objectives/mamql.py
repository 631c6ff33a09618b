"""MAMQL objectives (Haynam et al., "Multi-Agent Inverse Q-Learning from Demonstrations", section IV).

Symbols: player i's marginalised critic ``qbar_i(s, a_i) = E_{a_-i ~ pi_-i} Q_i(s, a_i, a_-i)``;
rationality ``lam``; Boltzmann policy ``pi_i(a_i|s) ∝ exp(lam qbar_i(s, a_i))``; soft value
``V_i(s) = (1/lam) log sum_{a_i} exp(lam qbar_i(s, a_i))``.

- Inverse soft Bellman operator on the marginal MDP: ``rbar_i = qbar_i(s, a_i) - gamma E V_i(s')``.
- IQ-Learn criterion for the critic (finite horizon, expert trajectories):
  ``J(qbar) = E_E[sum_h phi(qbar_h(s_h, a_h) - gamma V_{h+1}(s_{h+1}))] - E[V_1(s_1)]`` with the
  concave ``phi(x) = x - c x^2`` (``c = 0``: no regulariser); maximised.
- Reward regression (the constraint of Eq. 9): ``E[(R_i(s, a) - (qbar_i - gamma V_i(s')))^2]``.

All functions accept numpy arrays or torch tensors.
"""

from __future__ import annotations

from . import logsumexp, namespace, softmax

__all__ = [
    "marginalise",
    "soft_value",
    "boltzmann_policy",
    "inverse_soft_bellman",
    "iq_learn_objective",
    "reward_regression_loss",
]


def marginalise(q_joint, others, player: int):
    """``qbar_i = E_{a_-i ~ pi_-i} Q_i``.

    Args:
        q_joint: ``Q_i[..., A_1, ..., A_m]`` (the last m axes are the joint action).
        others: sequence over all m players of ``pi_j[..., A_j]`` (entry ``player`` is ignored).
        player: i.
    Returns ``qbar_i[..., A_i]``.
    """
    xp = namespace(q_joint)
    m = len(others)
    lead = q_joint.ndim - m
    out = q_joint
    for j in range(m - 1, -1, -1):
        if j == player:
            continue
        shape = list(others[j].shape[:-1]) + [1] * m
        shape[lead + j] = others[j].shape[-1]
        out = xp.sum(out * xp.reshape(others[j], tuple(shape)), axis=lead + j, keepdims=True)
    return xp.reshape(out, tuple(q_joint.shape[:lead]) + (q_joint.shape[lead + player],))


def soft_value(q_bar, lam: float):
    """``V_i = (1/lam) log sum_{a_i} exp(lam qbar_i)`` over the last axis."""
    return logsumexp(lam * q_bar, axis=-1) / lam


def boltzmann_policy(q_bar, lam: float):
    """``pi_i(a_i|s) = exp(lam qbar_i) / sum exp(lam qbar_i)`` over the last axis."""
    return softmax(lam * q_bar, axis=-1)


def inverse_soft_bellman(q_bar, expected_next_value, gamma: float = 1.0):
    """``rbar_i(s, a_i) = qbar_i(s, a_i) - gamma E[V_i(s') | s, a_i]`` (next values already averaged)."""
    return q_bar - gamma * expected_next_value


def iq_learn_objective(q_taken, v_next, v_initial, gamma: float = 1.0, reg_coef: float = 0.0, weights=None):
    """IQ-Learn's concave criterion on expert trajectories (maximised).

    Args:
        q_taken: ``qbar_h(s_h, a_h)`` along each trajectory, ``[N, H]``.
        v_next: ``V_{h+1}(s_{h+1})``, ``[N, H]`` (zero after the last step).
        v_initial: ``V_1(s_1)``, ``[N]``.
        reg_coef: ``c`` in ``phi(x) = x - c x^2``.
        weights: optional trajectory probabilities ``[N]`` (exact expectation) instead of the mean.
    """
    xp = namespace(q_taken, v_next)
    x = q_taken - gamma * v_next
    per_traj = xp.sum(x - reg_coef * x * x, axis=-1) - v_initial
    if weights is None:
        return xp.mean(per_traj)
    return xp.sum(weights * per_traj)


def reward_regression_loss(reward_pred, q_taken, v_next, gamma: float = 1.0):
    """Mean squared gap between a reward model and the reward the critic implies, ``qbar - gamma V(s')``."""
    xp = namespace(reward_pred, q_taken)
    gap = reward_pred - inverse_soft_bellman(q_taken, v_next, gamma)
    return xp.mean(gap * gap)
