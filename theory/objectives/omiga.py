"""OMIGA objectives (Wang et al., "Offline Multi-Agent Reinforcement Learning with Implicit
Global-to-Local Value Regularization", section 4).

Symbols: regularisation strength ``alpha``; behaviour ``mu_tot = prod_i mu_i``; value
decomposition ``Q_tot = sum_i w_i Q_i + b``, ``V_tot = sum_i w_i V_i + b`` (``w_i > 0``).
With the reverse-KL regulariser ``f = log(pi_tot/mu_tot)`` the optimal global policy is
``pi_tot* = mu_tot exp((Q_tot - V_tot*)/alpha)`` and it factorises into
``pi_i* = mu_i exp(w_i (Q_i - V_i*)/alpha)`` (section 4.2).

- Proposition 4.4: ``V_i*`` minimises ``E_{a_i ~ mu_i}[exp(w_i (Q_i - V_i)/alpha) + w_i V_i/alpha]``
  (convex in ``V_i``); its closed form is ``V_i* = (alpha/w_i) log E_{mu_i} exp(w_i Q_i/alpha)``.
- Local policy learning (weighted regression): ``E_mu[exp(w_i (Q_i - V_i)/alpha) log pi_i(a_i|o_i)]``.

All functions accept numpy arrays or torch tensors.
"""

from __future__ import annotations

import math

from . import logsumexp, namespace

__all__ = [
    "local_value_loss",
    "local_value_closed_form",
    "local_policy",
    "local_policy_objective",
    "global_policy",
]


def local_value_loss(q_local, v_local, weight, alpha: float, mu=None):
    """Proposition 4.4's objective ``E_mu[exp(w (Q_i - V_i)/alpha) + w V_i/alpha]`` per observation.

    Args:
        q_local: ``Q_i[..., A_i]``; v_local: ``V_i[...]``; weight: ``w_i[...]``.
        mu: behaviour ``mu_i[..., A_i]`` (exact expectation); ``None``: ``q_local``'s last axis
            holds samples of the dataset, averaged uniformly.
    Returns the objective ``[...]`` (sum it for the dataset loss).
    """
    xp = namespace(q_local, v_local)
    w = weight[..., None]
    terms = xp.exp(w * (q_local - v_local[..., None]) / alpha)
    expectation = xp.mean(terms, axis=-1) if mu is None else xp.sum(mu * terms, axis=-1)
    return expectation + weight * v_local / alpha


def local_value_closed_form(q_local, weight, alpha: float, mu=None):
    """``V_i* = (alpha / w_i) log E_{mu_i} exp(w_i Q_i / alpha)``, the minimiser of ``local_value_loss``."""
    xp = namespace(q_local, weight)
    w = weight[..., None]
    if mu is None:
        n = q_local.shape[-1]
        lse = logsumexp(w * q_local / alpha, axis=-1) - math.log(n)
    else:
        lse = logsumexp(w * q_local / alpha + xp.log(mu), axis=-1)
    return alpha / weight * lse


def local_policy(mu_local, q_local, v_local, weight, alpha: float):
    """``pi_i* = mu_i exp(w_i (Q_i - V_i)/alpha)``; a distribution when ``V_i = V_i*``."""
    xp = namespace(q_local, v_local)
    return mu_local * xp.exp(weight[..., None] * (q_local - v_local[..., None]) / alpha)


def local_policy_objective(log_pi_taken, q_taken, v_local, weight, alpha: float):
    """The in-sample policy loss ``E_D[exp(w_i (Q_i(a_i) - V_i)/alpha) log pi_i(a_i)]`` (maximised)."""
    xp = namespace(log_pi_taken, q_taken)
    return xp.mean(xp.exp(weight * (q_taken - v_local) / alpha) * log_pi_taken)


def global_policy(mu_joint, q_tot, alpha: float, axes):
    """``pi_tot* = mu_tot exp(Q_tot/alpha) / Z``: the maximiser of ``E_pi Q_tot - alpha KL(pi || mu_tot)``.

    Args:
        mu_joint, q_tot: ``[..., A_1, ..., A_n]``; axes: the joint-action axes (a tuple).
    """
    xp = namespace(mu_joint, q_tot)
    logits = q_tot / alpha + xp.log(mu_joint)
    return xp.exp(logits - logsumexp(logits, axis=axes, keepdims=True))
