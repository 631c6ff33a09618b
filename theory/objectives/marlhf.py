"""MARLHF objectives (Zhang et al., "Multi-agent RLHF: data coverage and algorithmic techniques",
section 5, equations (1)-(4)), for numpy arrays or torch tensors.

Symbols: per-step, per-agent predicted rewards ``r_phi[..., h, i]`` (``[B, H, m]``), preference
labels ``y_i`` in {+1, -1} (+1: the first trajectory is preferred by agent i), the MSE
coefficient ``alpha``, the KL coefficient ``beta``, and ``valid[B, H]``: the real steps of
trajectories padded to ``H`` (True everywhere when episodes are not padded).

- (1) reward loss: ``L = E_pairs[sum_i -log sigma(y_i (R_{phi,i}(tau1) - R_{phi,i}(tau2)))]
  + alpha / Var_D(r_phi) * L_MSE``, with ``R_{phi,i}(tau) = sum_h r_phi[h, i]``;
- (2) temporal MSE: ``L_MSE = E_tau[sum_{h=1}^{H-1} ||r_phi[h+1, :] - r_phi[h, :]||_2^2]``;
- (3) the KL reward ``-beta log(pi_w / pi_ref)`` with pi_w replaced by the uniform ``1/|A_i|``
  (section 5.3): agent i's term ``beta (log pi_ref(a_i|o_i) + log |A_i|)``, clipped to
  ``KL_CLIP`` per agent as in the paper's public code;
- (4) standardised reward: ``r_std = sum_i (r_phi[h, i] - E_D r_phi) / sqrt(Var_D r_phi)``.

The Bradley-Terry term uses ``-log sigma(x) = -log_sigmoid(x)`` (no overflow at large margins).
Functions that need no gradient decision take any namespace; the caller detaches what the
paper holds fixed (``Var_D`` in (1) has no gradient).
"""

from __future__ import annotations

from typing import NamedTuple

from . import log_sigmoid, namespace

__all__ = [
    "KL_CLIP",
    "VAR_FLOOR",
    "RewardLossTerms",
    "kl_reward_terms",
    "preference_nll",
    "reward_loss",
    "reward_variance",
    "standardised_rewards",
    "team_reward",
    "temporal_mse",
    "trajectory_returns",
]

#: Per-agent bounds of the KL reward term, as clipped by the paper's public code
#: (``jnp.clip(REF_LOG_COEF * (log_prob + log |A|), -10.0, 1.0)``). None disables the clip.
KL_CLIP = (-10.0, 1.0)
#: Var_D(r_phi) below this is replaced by it: a constant reward model has no scale to divide by.
VAR_FLOOR = 1e-8


class RewardLossTerms(NamedTuple):
    """The terms of loss (1): ``total = nll + alpha / variance * mse``."""

    total: object
    nll: object
    mse: object
    variance: object


def _masked(rewards, valid):
    xp = namespace(rewards)
    if valid is None:
        return rewards
    return xp.where(valid[..., None], rewards, xp.zeros_like(rewards))


def trajectory_returns(rewards, valid=None):
    """R_{phi,i}(tau) ``[B, m]``: ``rewards [B, H, m]`` summed over the real steps ``valid [B, H]``."""
    xp = namespace(rewards)
    return xp.sum(_masked(rewards, valid), axis=-2)


def preference_nll(r_first, r_second, labels, valid_first=None, valid_second=None):
    """First term of (1): mean over pairs of ``sum_i -log sigma(y_i (R_i(tau1) - R_i(tau2)))``.

    ``r_first``, ``r_second`` ``[P, H, m]``; ``labels [P, m]`` in {+1, -1}; ``valid_*`` ``[P, H]``.
    """
    xp = namespace(r_first, r_second)
    margin = labels * (trajectory_returns(r_first, valid_first) - trajectory_returns(r_second, valid_second))
    return xp.mean(-xp.sum(log_sigmoid(margin), axis=-1))


def temporal_mse(rewards, valid=None):
    """L_MSE (2): mean over trajectories of ``sum_h ||r[h+1, :] - r[h, :]||^2`` over pairs of
    consecutive real steps; ``rewards [B, H, m]``, ``valid [B, H]``."""
    xp = namespace(rewards)
    diff = rewards[..., 1:, :] - rewards[..., :-1, :]
    sq = diff * diff
    if valid is not None:
        # Real steps come first, so (h, h+1) are both real exactly when h+1 is.
        sq = xp.where(valid[..., 1:, None], sq, xp.zeros_like(sq))
    return xp.mean(xp.sum(sq, axis=(-2, -1)))


def reward_variance(rewards, valid=None):
    """Var_D(r_phi): the population variance of ``rewards [B, H, m]`` over every agent and real step."""
    xp = namespace(rewards)
    return xp.var(rewards if valid is None else rewards[valid])


def reward_loss(r_first, r_second, labels, alpha: float, variance, valid_first=None, valid_second=None) -> RewardLossTerms:
    """Loss (1) on a batch of pairs. ``variance``: Var_D(r_phi), held fixed (detach it before the
    call when it was computed from the same network), floored at ``VAR_FLOOR``; pass 1 for the
    unnormalised ablation ``nll + alpha * L_MSE``. L_MSE averages over both trajectories of
    every pair."""
    xp = namespace(r_first, r_second)
    if (valid_first is None) != (valid_second is None):
        raise ValueError("valid_first, valid_second: give the step masks of both trajectories of the pairs, or neither")
    both = xp.concat([r_first, r_second], axis=0)
    valid = None if valid_first is None else xp.concat([valid_first, valid_second], axis=0)
    nll = preference_nll(r_first, r_second, labels, valid_first, valid_second)
    mse = temporal_mse(both, valid)
    var = xp.maximum(
        xp.asarray(variance, dtype=both.dtype, device=getattr(both, "device", None)),
        xp.asarray(VAR_FLOOR, dtype=both.dtype, device=getattr(both, "device", None)),
    )
    return RewardLossTerms(nll + alpha / var * mse, nll, mse, var)


def standardised_rewards(rewards, mean: float, var: float):
    """The per-agent terms of (4): ``(r_phi - E_D r_phi) / sqrt(Var_D r_phi)`` (Var floored at
    ``VAR_FLOOR``); r_std is their sum over agents (``team_reward``)."""
    return (rewards - mean) / (max(float(var), VAR_FLOOR) ** 0.5)


def kl_reward_terms(log_ref_taken, n_available, beta: float, clip: tuple[float, float] | None = KL_CLIP):
    """Agent i's KL reward of (3) after the substitution pi_w = 1/|A_i| (section 5.3):
    ``beta (log pi_ref(a_i|o_i) + log |A_i|)``, clipped to ``clip`` per agent (None: unclipped).

    ``log_ref_taken [..., m]``: log pi_ref of the taken actions; ``n_available [..., m]``: |A_i|.
    """
    xp = namespace(log_ref_taken)
    terms = beta * (log_ref_taken + xp.log(xp.astype(n_available, log_ref_taken.dtype)))
    if clip is None:
        return terms
    lo, hi = float(clip[0]), float(clip[1])
    if not lo <= hi:
        raise ValueError(f"clip: expected (low, high) with low <= high, got {clip!r}")
    return xp.clip(terms, lo, hi)


def team_reward(agent_terms, valid=None):
    """The team reward ``[B, H]`` of per-agent terms ``[B, H, m]`` (the sums over i of (3) and
    (4)); 0 on padded steps."""
    xp = namespace(agent_terms)
    return xp.sum(_masked(agent_terms, valid), axis=-1)
