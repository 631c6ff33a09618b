"""O-MAPL objectives (Bui, Mai and Nguyen, "O-MAPL: Offline Multi-agent Preference Learning", section 4).

Symbols: local soft Q-values ``q_i(o_i, a_i)`` and values ``v_i(o_i)``; a mixing network
``M_theta`` with state-dependent weights ``w(s)`` (non-negative) and bias ``b(s)`` gives
``Q_tot = M[q]`` and ``V_tot = M[v]``; temperature ``beta``; discount ``gamma``.

- The reward implied by a soft Q-function (inverse soft Bellman operator ``T*``):
  ``R(s, a, s') = Q_tot(s, a) - gamma V_tot(s')`` (``V_tot = 0`` after the last step).
- Preference likelihood (Bradley-Terry in Q-space) with the chi^2 regulariser
  ``phi(x) = x - x^2/2``: ``L = E[y log sigma(G1 - G2) + (1-y) log sigma(G2 - G1)] + c E[phi(R)]``,
  ``G = sum_t R_t``; L is maximised.
- Extreme-V objective (Gumbel regression): ``J = E[exp(z) - z - 1]``, ``z = (Q_tot - V_tot)/beta``;
  its minimiser over ``V_tot`` is ``beta log E_mu exp(Q_tot/beta)``.
- Weighted behaviour cloning of agent i: ``Psi_i = E_mu[exp((Q_tot - V_tot)/beta) log pi_i(a_i|o_i)]``.

All functions accept numpy arrays or torch tensors (one namespace per call).
"""

from __future__ import annotations

from . import log_sigmoid, namespace

__all__ = [
    "linear_mix",
    "two_layer_mix",
    "implied_rewards",
    "preference_log_likelihood",
    "chi2_regulariser",
    "preference_objective",
    "extreme_v_loss",
    "wbc_weights",
    "wbc_objective",
    "wbc_local_policy",
]


def linear_mix(local, weights, bias):
    """``M[x] = sum_i w_i x_i + b`` (section 4.2, linear mixing).

    Args:
        local: ``x[..., n]`` local values of the n agents.
        weights: ``w[..., n]`` (broadcast against ``local``).
        bias: ``b[...]``.
    """
    xp = namespace(local, weights)
    return xp.sum(local * weights, axis=-1) + bias


def _elu(x):
    xp = namespace(x)
    return xp.where(x > 0, x, xp.exp(xp.minimum(x, xp.zeros_like(x))) - 1.0)


def two_layer_mix(local, w1, b1, w2, b2):
    """The QMIX-style two-layer mixer of Proposition 4.2: ``|w2| . elu(x |W1| + b1) + b2``.

    Args:
        local: ``x[..., n]``; w1: ``[..., n, k]``; b1: ``[..., k]``; w2: ``[..., k]``; b2: ``[...]``.
    Absolute values keep the mixer monotone in every local value, as in QMIX.
    """
    xp = namespace(local, w1)
    hidden = xp.sum(local[..., :, None] * xp.abs(w1), axis=-2) + b1
    return xp.sum(_elu(hidden) * xp.abs(w2), axis=-1) + b2


def implied_rewards(q_tot, v_tot_next, gamma: float):
    """``R = Q_tot(s, a) - gamma V_tot(s')``: the inverse soft Bellman operator on samples.

    ``v_tot_next`` must already be zero where ``s'`` is terminal.
    """
    return q_tot - gamma * v_tot_next


def preference_log_likelihood(rewards_1, rewards_2, labels):
    """Mean Bradley-Terry log-likelihood of trajectory pairs in Q-space.

    Args:
        rewards_1, rewards_2: implied rewards ``R[N, T]`` along the two trajectories of each pair.
        labels: ``y[N]`` in [0, 1], the probability (or indicator) that the first is preferred.
    """
    xp = namespace(rewards_1, rewards_2)
    margin = xp.sum(rewards_1, axis=-1) - xp.sum(rewards_2, axis=-1)
    return xp.mean(labels * log_sigmoid(margin) + (1.0 - labels) * log_sigmoid(-margin))


def chi2_regulariser(rewards):
    """``E[phi(R)]`` with the concave ``phi(x) = x - x^2/2`` (chi^2 divergence), over all entries."""
    xp = namespace(rewards)
    return xp.mean(rewards - 0.5 * rewards * rewards)


def preference_objective(rewards_1, rewards_2, labels, reg_coef: float = 0.5):
    """O-MAPL's ``L``: preference log-likelihood plus ``reg_coef * E[phi(R)]`` over both trajectories (maximised)."""
    xp = namespace(rewards_1, rewards_2)
    both = xp.concat([xp.reshape(rewards_1, (-1,)), xp.reshape(rewards_2, (-1,))])
    return preference_log_likelihood(rewards_1, rewards_2, labels) + reg_coef * chi2_regulariser(both)


def extreme_v_loss(q_tot, v_tot, beta: float, weights=None):
    """O-MAPL's ``J`` (Extreme-V): ``E[exp(z) - z - 1]`` with ``z = (Q_tot - V_tot)/beta`` (minimised).

    ``weights`` (same shape, summing to one) turn the sample mean into an exact expectation
    under the behaviour distribution.
    """
    xp = namespace(q_tot, v_tot)
    z = (q_tot - v_tot) / beta
    terms = xp.exp(z) - z - 1.0
    if weights is None:
        return xp.mean(terms)
    return xp.sum(weights * terms)


def wbc_weights(q_tot, v_tot, beta: float):
    """The behaviour-cloning weights ``exp((Q_tot - V_tot)/beta)`` of section 4.3."""
    xp = namespace(q_tot, v_tot)
    return xp.exp((q_tot - v_tot) / beta)


def wbc_objective(log_pi_taken, q_tot, v_tot, beta: float, weights=None):
    """Agent i's weighted behaviour cloning ``Psi_i = E_mu[exp((Q_tot - V_tot)/beta) log pi_i(a_i|o_i)]`` (maximised).

    Args:
        log_pi_taken: ``log pi_i(a_i|o_i)`` at the data's actions.
        q_tot, v_tot: global values at the same samples.
        weights: optional probability weights (exact expectation under mu) instead of the mean.
    """
    xp = namespace(log_pi_taken, q_tot)
    terms = wbc_weights(q_tot, v_tot, beta) * log_pi_taken
    if weights is None:
        return xp.mean(terms)
    return xp.sum(weights * terms)


def wbc_local_policy(mu_local, q_local, v_local, weights, bias_q, bias_v, beta: float, player: int):
    """Theorem 4.4: the maximiser of agent i's WBC under linear mixing and ``mu = prod_j mu_j``.

    ``pi_i(a_i) = mu_i(a_i) exp(w_i (q_i(a_i) - v_i)/beta) * eta_{-i} / Delta`` with
    ``eta_{-i} = exp((b_Q - b_V)/beta) prod_{j != i} E_{mu_j} exp(w_j (q_j - v_j)/beta)`` (the other
    agents' share of the weight) and ``Delta = E_mu exp((Q_tot - V_tot)/beta)`` (the total weight),
    which makes each row a distribution whatever ``v`` is.

    Args:
        mu_local, q_local: sequences over agents of ``[..., A_j]`` (behaviour policies, local Q).
        v_local, weights: ``[..., n]`` local values and mixing weights.
        bias_q, bias_v: ``[...]`` mixing biases of ``Q_tot`` and ``V_tot``.
        player: i.
    Returns ``pi_i[..., A_i]``.
    """
    xp = namespace(q_local[0], v_local)
    n = len(q_local)
    factors = []
    for j in range(n):
        wj = weights[..., j : j + 1]
        vj = v_local[..., j : j + 1]
        factors.append(mu_local[j] * xp.exp(wj * (q_local[j] - vj) / beta))
    eta = xp.exp((bias_q - bias_v) / beta)
    for j in range(n):
        if j != player:
            eta = eta * xp.sum(factors[j], axis=-1)
    delta = eta * xp.sum(factors[player], axis=-1)
    return factors[player] * (eta / delta)[..., None]
