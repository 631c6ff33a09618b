"""Sequential score decomposition (Qiao et al., "Offline Multi-agent Reinforcement Learning via
(Sequential) Score Decomposition", section 4).

The joint behaviour policy ``mu(a|s)`` over ``a = (a_1, ..., a_n)`` factorises by the chain rule
``log mu(a) = sum_i log mu(a_i | a_<i)``, so the joint score is the sum of the sequential
conditional scores ``grad_a log mu(a) = sum_i grad_a log mu(a_i | a_<i)``. Independent per-agent
regularisation uses the marginals instead, ``sum_i grad_{a_i} log mu_i(a_i)``: the score of the
product of marginals, which is a different distribution when the data are multimodal.

The diffusion model of the behaviour (section 4, a DDPM on the variance-preserving schedule)
is trained by the denoising loss ``E ||eps_theta(x_t, t) - eps||^2`` on ``x_t = sqrt(abar_t) x_0 +
sigma_t eps``, ``sigma_t = sqrt(1 - abar_t)``; its minimiser is ``E[eps | x_t] = -sigma_t grad log
p_t(x_t)`` (Tweedie), so a trained denoiser gives the score ``-eps_theta / sigma_t`` of the noised
behaviour ``p_t``. ``noised_gmm`` and ``prefix_noised_gmm`` are the laws of ``x_t`` (and of
``(a_<i, x_t^i)``) when the behaviour is a Gaussian mixture, where every such score is exact.

Here the behaviour is a Gaussian mixture (weights ``pi[K]``, means ``m[K, D]``, covariances
``C[K, D, D]``), agent i owning the coordinates ``blocks[i]`` (consecutive, in agent order), so
every score is available in closed form; and a finite joint-action table for the coordination
game. All functions accept numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..tolerances import MISCOORDINATION_ATOL
from . import logsumexp, namespace

__all__ = [
    "gmm_log_density",
    "gmm_score",
    "marginal_gmm",
    "conditional_log_density",
    "sequential_conditional_scores",
    "marginal_product_score",
    "product_of_marginals",
    "sequential_conditionals",
    "compose_sequential",
    "kl_regularised_policy",
    "miscoordination_mass",
    "vp_alpha_bars",
    "noised_actions",
    "denoising_loss",
    "score_from_noise",
    "noised_gmm",
    "prefix_noised_gmm",
]


def _component_terms(x, weights, means, covs):
    """``log pi_k + log N(x; m_k, C_k)`` ``[..., K]`` and ``C_k^{-1}(x - m_k)`` ``[..., K, D]``."""
    xp = namespace(x, means)
    D = means.shape[-1]
    prec = xp.linalg.inv(covs)
    _, logdet = xp.linalg.slogdet(covs)
    diff = x[..., None, :] - means
    prec_diff = xp.sum(prec * diff[..., None, :], axis=-1)
    quad = xp.sum(diff * prec_diff, axis=-1)
    log_terms = xp.log(weights) - 0.5 * (quad + logdet + D * math.log(2 * math.pi))
    return log_terms, prec_diff


def gmm_log_density(x, weights, means, covs):
    """``log sum_k pi_k N(x; m_k, C_k)`` for points ``x[..., D]``."""
    log_terms, _ = _component_terms(x, weights, means, covs)
    return logsumexp(log_terms, axis=-1)


def gmm_score(x, weights, means, covs):
    """``grad_x log p(x) = -sum_k r_k(x) C_k^{-1}(x - m_k)`` with responsibilities ``r_k``; ``[..., D]``."""
    xp = namespace(x, means)
    log_terms, prec_diff = _component_terms(x, weights, means, covs)
    resp = xp.exp(log_terms - logsumexp(log_terms, axis=-1, keepdims=True))
    return -xp.sum(resp[..., None] * prec_diff, axis=-2)


def marginal_gmm(weights, means, covs, dims: Sequence[int]):
    """The marginal mixture of the coordinates ``dims``: same weights, sub-means, sub-covariances."""
    xp = namespace(means)
    idx = xp.asarray(list(dims))
    sub_means = xp.take(means, idx, axis=-1)
    sub_covs = xp.take(xp.take(covs, idx, axis=-1), idx, axis=-2)
    return weights, sub_means, sub_covs


def conditional_log_density(x, weights, means, covs, given: Sequence[int], target: Sequence[int]):
    """``log mu(x_target | x_given)`` by the Gaussian conditioning formulas (Schur complements).

    Each component conditions to ``N(m_t + C_tg C_gg^{-1}(x_g - m_g), C_tt - C_tg C_gg^{-1} C_gt)``
    and its weight becomes ``pi_k N(x_g; m_g, C_gg)`` renormalised. With ``given`` empty this is
    the marginal density of ``x_target``.
    """
    xp = namespace(x, means)
    t_idx = xp.asarray(list(target))
    x_t = xp.take(x, t_idx, axis=-1)
    w_t, m_t, c_tt = marginal_gmm(weights, means, covs, target)
    if len(given) == 0:
        return gmm_log_density(x_t, w_t, m_t, c_tt)
    g_idx = xp.asarray(list(given))
    x_g = xp.take(x, g_idx, axis=-1)
    _, m_g, c_gg = marginal_gmm(weights, means, covs, given)
    c_tg = xp.take(xp.take(covs, t_idx, axis=-2), g_idx, axis=-1)
    log_w, prec_diff_g = _component_terms(x_g, weights, m_g, c_gg)
    log_w = log_w - logsumexp(log_w, axis=-1, keepdims=True)
    cond_means = m_t + xp.sum(c_tg * prec_diff_g[..., None, :], axis=-1)
    gain = c_tg @ xp.linalg.inv(c_gg)
    cond_covs = c_tt - gain @ xp.matrix_transpose(c_tg)
    D_t = len(target)
    prec = xp.linalg.inv(cond_covs)
    _, logdet = xp.linalg.slogdet(cond_covs)
    diff = x_t[..., None, :] - cond_means
    quad = xp.sum(diff * xp.sum(prec * diff[..., None, :], axis=-1), axis=-1)
    log_terms = log_w - 0.5 * (quad + logdet + D_t * math.log(2 * math.pi))
    return logsumexp(log_terms, axis=-1)


def _padded_marginal_score(x, weights, means, covs, dims: Sequence[int]):
    """``grad_x log mu(x_dims)`` as a full ``[..., D]`` vector (zeros off ``dims``)."""
    xp = namespace(x, means)
    D = means.shape[-1]
    if len(dims) == 0:
        return xp.zeros_like(x)
    idx = xp.asarray(list(dims))
    w, m, c = marginal_gmm(weights, means, covs, dims)
    sub = gmm_score(xp.take(x, idx, axis=-1), w, m, c)
    embed = xp.zeros((len(dims), D), dtype=x.dtype)
    embed = xp.where(xp.arange(D)[None, :] == idx[:, None], xp.ones_like(embed), embed)
    return sub @ embed


def sequential_conditional_scores(x, weights, means, covs, blocks: Sequence[Sequence[int]]):
    """``[grad_x log mu(a_i | a_<i) for i]``, each ``[..., D]`` (gradient in the whole joint action).

    ``log mu(a_i | a_<i) = log mu(a_<=i) - log mu(a_<i)``, so each is a difference of marginal
    scores; their sum is the joint score.
    """
    scores = []
    prefix: list[int] = []
    for block in blocks:
        upto = prefix + list(block)
        scores.append(_padded_marginal_score(x, weights, means, covs, upto) - _padded_marginal_score(x, weights, means, covs, prefix))
        prefix = upto
    return scores


def marginal_product_score(x, weights, means, covs, blocks: Sequence[Sequence[int]]):
    """``sum_i grad log mu_i(a_i)``: the score of independent per-agent regularisation, ``[..., D]``."""
    xp = namespace(x, means)
    total = xp.zeros_like(x)
    for block in blocks:
        total = total + _padded_marginal_score(x, weights, means, covs, list(block))
    return total


def product_of_marginals(joint):
    """``prod_i mu_i(a_i)`` of a joint table ``mu[A_1, ..., A_n]``: what independent regularisation targets."""
    xp = namespace(joint)
    n = joint.ndim
    out = xp.ones_like(joint)
    for i in range(n):
        others = tuple(j for j in range(n) if j != i)
        out = out * xp.sum(joint, axis=others, keepdims=True)
    return out


def sequential_conditionals(joint):
    """``[mu(a_1), mu(a_2 | a_1), ..., mu(a_n | a_<n)]``, each as ``[A_1, .., A_i]`` (0/0 read as uniform)."""
    xp = namespace(joint)
    n = joint.ndim
    out = []
    for i in range(n):
        upto = xp.sum(joint, axis=tuple(range(i + 1, n))) if i + 1 < n else joint
        prefix = xp.sum(upto, axis=-1, keepdims=True)
        uniform = xp.ones_like(upto) / upto.shape[-1]
        safe = xp.where(prefix > 0, prefix, xp.ones_like(prefix))
        out.append(xp.where(prefix > 0, upto / safe, uniform))
    return out


def compose_sequential(conditionals):
    """``prod_i mu(a_i | a_<i)`` as a joint table: the sequential decomposition's joint distribution."""
    xp = namespace(conditionals[0])
    n = len(conditionals)
    joint = conditionals[0]
    for i in range(1, n):
        joint = joint[..., None] * conditionals[i]
    shape = tuple(c.shape[-1] for c in conditionals)
    return xp.reshape(joint, shape)


def kl_regularised_policy(payoff, reference, alpha: float):
    """``argmax_pi E_pi[payoff] - alpha KL(pi || reference) = reference exp(payoff/alpha) / Z`` over a joint table."""
    xp = namespace(payoff, reference)
    unnorm = reference * xp.exp((payoff - xp.max(payoff)) / alpha)
    return unnorm / xp.sum(unnorm)


def miscoordination_mass(joint_policy, payoff, tol: float = MISCOORDINATION_ATOL):
    """Probability of joint actions whose payoff is below the best payoff by more than ``tol``."""
    xp = namespace(joint_policy, payoff)
    bad = payoff < xp.max(payoff) - tol
    return xp.sum(xp.where(bad, joint_policy, xp.zeros_like(joint_policy)))


def vp_alpha_bars(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> np.ndarray:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, t = 1..T, of the discretised variance-preserving
    SDE: ``beta_t = 1 - exp(-beta_min / T - (beta_max - beta_min)(2t - 1) / (2 T^2))``. ``[T]``, float64."""
    if steps < 1:
        raise ValueError(f"diffusion_steps: expected a positive integer, got {steps!r}")
    t = np.arange(1, steps + 1, dtype=np.float64)
    betas = 1.0 - np.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
    return np.cumprod(1.0 - betas)


def noised_actions(x0, eps, alpha_bar):
    """``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` (``alpha_bar`` broadcast against ``x0``)."""
    xp = namespace(x0, eps)
    return xp.sqrt(alpha_bar) * x0 + xp.sqrt(1.0 - alpha_bar) * eps


def denoising_loss(eps_pred, eps):
    """The denoising loss ``E ||eps_theta(x_t, t) - eps||^2``: squared error summed over the last
    axis, averaged over the rest."""
    xp = namespace(eps_pred, eps)
    return xp.mean(xp.sum((eps_pred - eps) ** 2, axis=-1))


def score_from_noise(eps_pred, alpha_bar):
    """``grad log p_t = -eps* / sigma_t`` with ``sigma_t = sqrt(1 - abar_t)`` (Tweedie)."""
    xp = namespace(eps_pred)
    return -eps_pred / xp.sqrt(1.0 - alpha_bar)


def noised_gmm(weights, means, covs, alpha_bar: float):
    """The law of ``x_t`` when ``x0`` is the Gaussian mixture ``(weights, means, covs)``: the
    mixture with means ``sqrt(abar) m_k`` and covariances ``abar C_k + (1 - abar) I``."""
    xp = namespace(means, covs)
    D = means.shape[-1]
    eye = xp.eye(D, dtype=covs.dtype)
    return weights, math.sqrt(alpha_bar) * means, alpha_bar * covs + (1.0 - alpha_bar) * eye


def prefix_noised_gmm(weights, means, covs, given: Sequence[int], target: Sequence[int], alpha_bar: float):
    """The joint mixture of ``(x0[given], x_t[target])``: the given coordinates clean, the target
    ones noised to level ``abar``, laid out ``given`` first. Conditioning it on the given block
    (``conditional_log_density``) is the law that agent i's denoiser models, ``mu_t(a_i | a_<i)``."""
    xp = namespace(means, covs)
    g, t = list(given), list(target)
    idx = xp.asarray(g + t)
    m = xp.take(means, idx, axis=-1)
    c = xp.take(xp.take(covs, idx, axis=-1), idx, axis=-2)
    n_g, n = len(g), len(g) + len(t)
    scale = xp.asarray([1.0] * n_g + [math.sqrt(alpha_bar)] * len(t), dtype=means.dtype)
    noise = xp.asarray([0.0] * n_g + [1.0 - alpha_bar] * len(t), dtype=means.dtype)
    eye = xp.eye(n, dtype=covs.dtype)
    return weights, m * scale, c * scale[:, None] * scale[None, :] + eye * noise
