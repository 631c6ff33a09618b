"""Check of the diffusion behaviour model of the sequential score decomposition (Qiao et al.,
arXiv 2505.05968): the denoising loss is minimised by the noise posterior mean, whose score
(Tweedie) is that of the noised joint behaviour and of each sequential conditional. Behaviours
are random Gaussian mixtures (``score_decomposition.random_gmm``), where every score is exact.
"""

from __future__ import annotations

import numpy as np

from marlcov.theory.objectives import score_decomposition as sd

from .registry import CheckContext, Source, Verdict, check
from .score_decomposition import ABSTRACT, PAPER, finite_difference_gradient, random_gmm, rel_err
from .tolerances import MC_Z_MAX, SCORE_FD_RTOL, TWEEDIE_RTOL


def posterior_noise_mean(y, weights, means, covs, observe, alpha_bar: float, n_noised: int):
    """``E[eps | y]`` by Gaussian conditioning of the joint law of ``(x0, eps)``, written out
    independently of ``theory.objectives``: ``x0`` the mixture, ``eps ~ N(0, I_d)`` with
    ``d = n_noised``, and ``y = observe @ x0 + sqrt(1 - abar) [0; eps]`` where ``observe``
    ``[n_y, D]`` selects the clean coordinates (the first rows of ``y``) and ``sqrt(abar)`` times
    the noised ones (its last ``d`` rows). Returns ``[..., d]``."""
    D, d = means.shape[-1], int(n_noised)
    n_y = observe.shape[0]
    sigma = np.sqrt(1.0 - alpha_bar)
    noise_map = np.zeros((n_y, d))
    noise_map[n_y - d :] = sigma * np.eye(d)
    lin = np.concatenate([observe, noise_map], axis=1)  # y = lin @ (x0, eps)
    log_w, cond = [], []
    for w_k, m_k, c_k in zip(weights, means, covs):
        joint = np.zeros((D + d, D + d))
        joint[:D, :D], joint[D:, D:] = c_k, np.eye(d)
        cov_y = lin @ joint @ lin.T
        cross = joint[D:] @ lin.T  # Cov(eps, y)
        diff = y - observe @ m_k
        sol = np.linalg.solve(cov_y, diff[..., None])[..., 0]
        cond.append(sol @ cross.T)
        _, logdet = np.linalg.slogdet(cov_y)
        log_w.append(np.log(w_k) - 0.5 * (np.sum(diff * sol, axis=-1) + logdet + n_y * np.log(2 * np.pi)))
    log_w = np.stack(log_w, axis=-1)
    resp = np.exp(log_w - log_w.max(axis=-1, keepdims=True))
    resp /= resp.sum(axis=-1, keepdims=True)
    return np.sum(resp[..., None] * np.stack(cond, axis=-2), axis=-2)


@check(
    "score.denoising_score",
    PAPER,
    "The denoising loss E||eps_theta(x_t, t) - eps||^2 of the diffusion behaviour model is minimised by E[eps | x_t] = -sigma_t grad log mu_t, "
    "for the joint behaviour and for each sequential conditional mu_t(a_i | a_<i), so the trained denoiser's score -eps_theta/sigma_t is the score the decomposition uses.",
    "statistical",
    source=Source(
        "Then we leverage a flexible diffusion-based generative model to learn these score functions from multimodal offline data, and integrate "
        "them into joint-action critics to guide policy updates toward high-reward, in-distribution regions under a shared team reward.",
        ABSTRACT,
        verbatim=False,
    ),
    mutations={
        "score_scaled_by_variance": "reads the denoiser's score as -eps/(1 - abar) (dividing by the variance) instead of -eps/sqrt(1 - abar)",
        "noised_prefix": "agent i's denoiser conditions on the noised previous actions x_t[a_<i] instead of the clean a_<i",
    },
)
def denoising_score(ctx: CheckContext) -> Verdict:
    """On random Gaussian-mixture behaviours and steps of ``vp_alpha_bars``: (1) Tweedie, exact:
    ``score_from_noise(E[eps | x_t])`` (the posterior mean by ``posterior_noise_mean``) is the score
    of ``noised_gmm``; (2) the same for each sequential conditional ``mu_t(a_i | a_<i)`` (the law
    ``prefix_noised_gmm`` conditioned by ``conditional_log_density``, differentiated by central
    differences); (3) Monte Carlo on ``noised_actions`` draws: the ``denoising_loss`` of the
    posterior mean plus a perturbation ``delta(x_t)`` exceeds that of the posterior mean by
    ``E||delta||^2`` (within ``MC_Z_MAX`` standard errors), so the posterior mean minimises it."""
    rng = np.random.default_rng(ctx.seed)

    def score_from_noise(eps, ab):
        return -eps / (1.0 - ab) if ctx.mutated("score_scaled_by_variance") else sd.score_from_noise(eps, ab)

    n_mix = 6 if ctx.quick else 40
    n_points = 40 if ctx.quick else 200
    n_mc = 20_000 if ctx.quick else 200_000
    alpha_bars = sd.vp_alpha_bars(5)
    worst_joint = worst_cond = 0.0
    worst_z, min_gap = 0.0, np.inf
    for k in range(n_mix):
        w, m, C, blocks = random_gmm(rng, n_agents=2 + k % 2, dims_per_agent=1 + k % 2, n_components=2 + k % 3)
        D = m.shape[-1]
        ab = float(alpha_bars[k % len(alpha_bars)])
        x_t = sd.noised_actions(m[rng.integers(0, len(w), size=n_points)], rng.normal(size=(n_points, D)), ab)
        eps_star = posterior_noise_mean(x_t, w, m, C, np.sqrt(ab) * np.eye(D), ab, D)
        worst_joint = max(worst_joint, rel_err(score_from_noise(eps_star, ab), sd.gmm_score(x_t, *sd.noised_gmm(w, m, C, ab))))
        prefix: list[int] = []
        for block in blocks:
            n_g, d = len(prefix), len(block)
            observe = np.zeros((n_g + d, D))
            observe[np.arange(n_g), prefix] = 1.0
            observe[n_g + np.arange(d), block] = np.sqrt(ab)
            y = np.concatenate([x_t[:, prefix], x_t[:, block]], axis=-1)
            eps_i = posterior_noise_mean(y, w, m, C, observe, ab, d)
            if ctx.mutated("noised_prefix"):
                law = sd.marginal_gmm(*sd.noised_gmm(w, m, C, ab), prefix + list(block))
            else:
                law = sd.prefix_noised_gmm(w, m, C, prefix, block, ab)
            target = list(range(n_g, n_g + d))

            def log_cond(z, y=y, law=law, n_g=n_g, target=target):
                given = np.broadcast_to(y[:, :n_g], z.shape[:-1] + (n_g,))
                return sd.conditional_log_density(np.concatenate([given, z], axis=-1), *law, list(range(n_g)), target)

            worst_cond = max(worst_cond, rel_err(score_from_noise(eps_i, ab), finite_difference_gradient(log_cond, y[:, n_g:])))
            prefix = prefix + list(block)
        # The loss: L(f) - L(eps*) = E||f - eps*||^2, the cross term having mean zero.
        comp = rng.choice(len(w), size=n_mc, p=w)
        x0 = m[comp] + np.einsum("nij,nj->ni", np.linalg.cholesky(C)[comp], rng.normal(size=(n_mc, D)))
        eps = rng.normal(size=(n_mc, D))
        xt = sd.noised_actions(x0, eps, ab)
        oracle = posterior_noise_mean(xt, w, m, C, np.sqrt(ab) * np.eye(D), ab, D)
        delta = 0.3 * np.tanh(xt @ rng.normal(size=(D, D)))
        gap = sd.denoising_loss(oracle + delta, eps) - sd.denoising_loss(oracle, eps)
        cross = 2.0 * np.sum(delta * (oracle - eps), axis=-1)
        z = (gap - float(np.mean(np.sum(delta**2, axis=-1)))) / (float(np.std(cross)) / np.sqrt(n_mc))
        worst_z, min_gap = max(worst_z, abs(z)), min(min_gap, gap)
    holds = worst_joint <= TWEEDIE_RTOL and worst_cond <= SCORE_FD_RTOL and worst_z <= MC_Z_MAX and min_gap > 0
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_mix} mixtures: |score_from_noise(E[eps|x_t]) - score of noised_gmm| <= {worst_joint:.1e}, sequential conditionals <= {worst_cond:.1e}; "
        f"loss gap of a perturbed denoiser within {worst_z:.1f} s.e. of E||delta||^2",
        evidence={
            "mixtures": n_mix,
            "points_per_mixture": n_points,
            "monte_carlo_samples": n_mc,
            "alpha_bars": alpha_bars.tolist(),
            "max_rel_tweedie_joint": worst_joint,
            "max_rel_tweedie_sequential_conditionals_fd": worst_cond,
            "max_abs_z_loss_gap_minus_perturbation_norm": worst_z,
            "min_loss_gap_of_perturbed_denoiser": min_gap,
            "tolerance_tweedie_relative": TWEEDIE_RTOL,
            "tolerance_fd_relative": SCORE_FD_RTOL,
            "z_max": MC_Z_MAX,
        },
        counterexample=None if holds else {"errors": [worst_joint, worst_cond, worst_z, min_gap], "seed": ctx.seed},
        seeds=[ctx.seed],
    )
