"""Checks of the sequential score decomposition (Qiao et al., "Offline Multi-agent Reinforcement
Learning via (Sequential) Score Decomposition", arXiv 2505.05968),
``papers/score-decomposition-2505.05968.md``."""

from __future__ import annotations

import importlib.util

import numpy as np
import sympy as sp
from scipy.stats import norm

from marlcov.theory.objectives import score_decomposition as sd

from .registry import CheckContext, Verdict, check

PAPER = "Score decomposition (Qiao et al.)"

#: Central finite differences with step ``FD_STEP`` agree with analytic scores to this (relative to 1 + |score|).
FD_STEP = 1e-5
FD_RTOL = 1e-6

#: Probabilities closer than this are equal (the exact numbers of the coordination game).
PROB_ATOL = 1e-12

#: Tweedie's noise posterior mean and the noised mixture's score agree to this (relative to 1 + |score|).
TWEEDIE_RTOL = 1e-9
#: A Monte Carlo mean that should be zero may lie this many standard errors from it.
MC_Z_MAX = 5.0


def random_gmm(rng: np.random.Generator, n_agents: int, dims_per_agent: int, n_components: int):
    """A random multimodal joint behaviour: well-separated means, random full covariances."""
    D = n_agents * dims_per_agent
    weights = rng.dirichlet(np.full(n_components, 2.0))
    means = rng.normal(scale=2.0, size=(n_components, D))
    L = rng.normal(scale=0.6, size=(n_components, D, D))
    covs = L @ np.swapaxes(L, 1, 2) + 0.2 * np.eye(D)
    blocks = [list(range(i * dims_per_agent, (i + 1) * dims_per_agent)) for i in range(n_agents)]
    return weights, means, covs, blocks


def finite_difference_gradient(f, x: np.ndarray, step: float = FD_STEP) -> np.ndarray:
    """Central differences of a vectorised scalar field ``f(x[..., D]) -> [...]``."""
    D = x.shape[-1]
    eye = np.eye(D) * step
    return np.stack([(f(x + eye[k]) - f(x - eye[k])) / (2 * step) for k in range(D)], axis=-1)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))


@check(
    "score.sequential_identity",
    PAPER,
    "The joint behaviour score equals the sum of the sequential conditional scores grad log mu(a_i | a_<i) (multimodal joint behaviour).",
    "exact",
)
def sequential_identity(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_mix = 20 if ctx.quick else 200
    n_points = 50 if ctx.quick else 200
    worst_sum = worst_fd_joint = worst_fd_cond = worst_density = 0.0
    product_dev = []
    for k in range(n_mix):
        w, m, C, blocks = random_gmm(rng, n_agents=2 + k % 2, dims_per_agent=1 + k % 2, n_components=2 + k % 3)
        centres = m[rng.integers(0, len(w), size=n_points)]
        x = centres + rng.normal(scale=1.0, size=centres.shape)
        joint = sd.gmm_score(x, w, m, C)
        seq = sd.sequential_conditional_scores(x, w, m, C, blocks)
        worst_sum = max(worst_sum, _rel_err(sum(seq), joint))
        prefixes = [[d for b in blocks[:i] for d in b] for i in range(len(blocks))]
        cond_logs = [lambda y, g=g, t=b: sd.conditional_log_density(y, w, m, C, g, t) for g, b in zip(prefixes, blocks)]
        chain = lambda y: sum(f(y) for f in cond_logs)  # noqa: E731
        worst_density = max(worst_density, float(np.max(np.abs(chain(x) - sd.gmm_log_density(x, w, m, C)))))
        worst_fd_joint = max(worst_fd_joint, _rel_err(finite_difference_gradient(chain, x), joint))
        for f, s in zip(cond_logs, seq):
            worst_fd_cond = max(worst_fd_cond, _rel_err(finite_difference_gradient(f, x), s))
        product_dev.append(float(np.max(np.abs(sd.marginal_product_score(x, w, m, C, blocks) - joint))))
    autograd = "torch not installed"
    if importlib.util.find_spec("torch") is not None:
        import torch

        xt = torch.tensor(x, requires_grad=True)
        sd.gmm_log_density(xt, torch.tensor(w), torch.tensor(m), torch.tensor(C)).sum().backward()
        autograd = float(np.max(np.abs(xt.grad.numpy() - joint)))
    holds = worst_sum <= FD_RTOL and worst_fd_joint <= FD_RTOL and worst_fd_cond <= FD_RTOL and worst_density <= 1e-9
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_mix} mixtures x {n_points} points: |joint - sum_i seq_i| <= {worst_sum:.1e}; finite differences <= {max(worst_fd_joint, worst_fd_cond):.1e}",
        evidence={
            "mixtures": n_mix,
            "points_per_mixture": n_points,
            "max_rel_joint_minus_sum_of_sequential_scores": worst_sum,
            "max_rel_fd_of_chain_rule_density_minus_joint_score": worst_fd_joint,
            "max_rel_fd_minus_each_conditional_score": worst_fd_cond,
            "max_abs_chain_rule_log_density_error": worst_density,
            "marginal_product_score_minus_joint_score_max": max(product_dev),
            "torch_autograd_minus_analytic_last_mixture": autograd,
            "fd_step": FD_STEP,
            "tolerance_relative": FD_RTOL,
        },
        counterexample=None if holds else {"errors": [worst_sum, worst_fd_joint, worst_fd_cond, worst_density], "seed": ctx.seed},
        seeds=[ctx.seed],
    )


def coordination_exact(alpha: sp.Expr, sigma: sp.Expr) -> dict:
    """Closed forms for the two-equilibrium coordination game (sympy).

    Data: half (0, 0), half (1, 1); payoff 1 on the diagonal. Independent regularisation targets
    the product of marginals (uniform), sequential decomposition the data itself. With a KL
    regulariser of strength ``alpha`` the optimal joint policy is ``ref exp(r/alpha)/Z``. For the
    continuous analogue (modes (-1,-1), (1,1), isotropic ``sigma``), miscoordination is the mass
    of the quadrants where the signs differ.
    """
    Phi = lambda z: (1 + sp.erf(z / sp.sqrt(2))) / 2  # noqa: E731
    return {
        "product_miscoordination": sp.Rational(1, 2),
        "sequential_miscoordination": sp.Integer(0),
        "product_kl_policy_miscoordination": sp.simplify(1 / (1 + sp.exp(1 / alpha))),
        "sequential_kl_policy_miscoordination": sp.Integer(0),
        "continuous_product_miscoordination": sp.Rational(1, 2),
        "continuous_joint_miscoordination": sp.simplify(2 * Phi(1 / sigma) * Phi(-1 / sigma)),
    }


@check(
    "score.coordination_game",
    PAPER,
    "With two equally good equilibria in the data, independent per-agent regularisation puts mass on miscoordinated joint actions; the sequential decomposition does not.",
    "exact",
)
def coordination_game(ctx: CheckContext) -> Verdict:
    payoff = np.eye(2)
    data = np.array([[0.5, 0.0], [0.0, 0.5]])
    product = sd.product_of_marginals(data)
    sequential = sd.compose_sequential(sd.sequential_conditionals(data))
    alpha_v, sigma_v = 0.5, 0.6
    numeric = {
        "product_miscoordination": float(sd.miscoordination_mass(product, payoff)),
        "sequential_miscoordination": float(sd.miscoordination_mass(sequential, payoff)),
        "product_kl_policy_miscoordination": float(sd.miscoordination_mass(sd.kl_regularised_policy(payoff, product, alpha_v), payoff)),
        "sequential_kl_policy_miscoordination": float(sd.miscoordination_mass(sd.kl_regularised_policy(payoff, sequential, alpha_v), payoff)),
    }
    # Continuous: the product of the marginals of a two-mode mixture, by its per-agent marginals.
    w = np.array([0.5, 0.5])
    m = np.array([[-1.0, -1.0], [1.0, 1.0]])
    C = np.stack([np.eye(2) * sigma_v**2] * 2)
    marg = [sd.marginal_gmm(w, m, C, [i]) for i in range(2)]
    p_pos = [float(np.sum(mw * norm.sf(0.0, loc=mm[:, 0], scale=np.sqrt(mc[:, 0, 0])))) for mw, mm, mc in marg]
    numeric["continuous_product_miscoordination"] = p_pos[0] * (1 - p_pos[1]) + (1 - p_pos[0]) * p_pos[1]
    numeric["continuous_joint_miscoordination"] = float(2 * np.sum(w * norm.cdf(0.0, loc=m[:, 0], scale=sigma_v) * norm.sf(0.0, loc=m[:, 1], scale=sigma_v)))
    a, s = sp.symbols("alpha sigma", positive=True)
    exact = coordination_exact(a, s)
    exact_values = {k: float(v.subs({a: alpha_v, s: sigma_v})) for k, v in exact.items()}
    worst = max(abs(numeric[k] - exact_values[k]) for k in exact_values)
    holds = (
        worst <= PROB_ATOL
        and numeric["product_miscoordination"] > PROB_ATOL
        and numeric["sequential_miscoordination"] <= PROB_ATOL
        and numeric["product_kl_policy_miscoordination"] > PROB_ATOL
        and numeric["sequential_kl_policy_miscoordination"] <= PROB_ATOL
        and numeric["continuous_product_miscoordination"] > numeric["continuous_joint_miscoordination"]
    )
    return Verdict(
        "holds" if holds else "refuted",
        f"miscoordinated mass: product of marginals {numeric['product_miscoordination']:.3f}, sequential {numeric['sequential_miscoordination']:.3f} "
        f"(KL policy, alpha={alpha_v}: {numeric['product_kl_policy_miscoordination']:.4f} vs {numeric['sequential_kl_policy_miscoordination']:.1f})",
        evidence={
            "data": data.tolist(),
            "product_of_marginals": product.tolist(),
            "sequential_composition": sequential.tolist(),
            "numeric": numeric,
            "closed_forms": {k: sp.sstr(v) for k, v in exact.items()},
            "closed_form_values": exact_values,
            "max_abs_numeric_minus_closed_form": worst,
            "alpha": alpha_v,
            "sigma": sigma_v,
        },
        counterexample=None if holds else {"numeric": numeric, "closed_form_values": exact_values},
        seeds=[],
    )


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
        worst_joint = max(worst_joint, _rel_err(sd.score_from_noise(eps_star, ab), sd.gmm_score(x_t, *sd.noised_gmm(w, m, C, ab))))
        prefix: list[int] = []
        for block in blocks:
            n_g, d = len(prefix), len(block)
            observe = np.zeros((n_g + d, D))
            observe[np.arange(n_g), prefix] = 1.0
            observe[n_g + np.arange(d), block] = np.sqrt(ab)
            y = np.concatenate([x_t[:, prefix], x_t[:, block]], axis=-1)
            eps_i = posterior_noise_mean(y, w, m, C, observe, ab, d)
            law = sd.prefix_noised_gmm(w, m, C, prefix, block, ab)
            target = list(range(n_g, n_g + d))
            log_cond = lambda z, y=y, law=law, n_g=n_g, target=target: sd.conditional_log_density(  # noqa: E731
                np.concatenate([np.broadcast_to(y[:, :n_g], z.shape[:-1] + (n_g,)), z], axis=-1), *law, list(range(n_g)), target)
            worst_cond = max(worst_cond, _rel_err(sd.score_from_noise(eps_i, ab), finite_difference_gradient(log_cond, y[:, n_g:])))
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
    holds = worst_joint <= TWEEDIE_RTOL and worst_cond <= FD_RTOL and worst_z <= MC_Z_MAX and min_gap > 0
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
            "tolerance_fd_relative": FD_RTOL,
            "z_max": MC_Z_MAX,
        },
        counterexample=None if holds else {"errors": [worst_joint, worst_cond, worst_z, min_gap], "seed": ctx.seed},
        seeds=[ctx.seed],
    )
