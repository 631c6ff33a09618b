"""Checks of the sequential score decomposition (Qiao et al., "Offline Multi-agent Reinforcement
Learning via (Sequential) Score Decomposition", arXiv 2505.05968),
``papers/score-decomposition-2505.05968.md``: the sequential identity and the coordination game;
the denoising objective of the diffusion behaviour model is ``score_denoising``.

Only the abstract is at hand, so each quote is the abstract's, as given in that file
(``verbatim=False``: not checked against the paper's text).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import sympy as sp
from scipy.stats import norm

from marlcov.theory.objectives import score_decomposition as sd

from .conic import solve_tight
from .registry import CheckContext, Source, Verdict, check
from .tolerances import CLARABEL_TIGHT_ATOL, LOG_DENSITY_ATOL, SCORE_FD_RTOL, SCORE_FD_STEP

PAPER = "Score decomposition (Qiao et al.)"

#: Where every quote comes from.
ABSTRACT = "abstract, as given in papers/score-decomposition-2505.05968.md (the full text is not in papers/)"


def random_gmm(rng: np.random.Generator, n_agents: int, dims_per_agent: int, n_components: int):
    """A random multimodal joint behaviour: well-separated means, random full covariances."""
    D = n_agents * dims_per_agent
    weights = rng.dirichlet(np.full(n_components, 2.0))
    means = rng.normal(scale=2.0, size=(n_components, D))
    L = rng.normal(scale=0.6, size=(n_components, D, D))
    covs = L @ np.swapaxes(L, 1, 2) + 0.2 * np.eye(D)
    blocks = [list(range(i * dims_per_agent, (i + 1) * dims_per_agent)) for i in range(n_agents)]
    return weights, means, covs, blocks


def finite_difference_gradient(f, x: np.ndarray, step: float = SCORE_FD_STEP) -> np.ndarray:
    """Central differences of a vectorised scalar field ``f(x[..., D]) -> [...]``."""
    D = x.shape[-1]
    eye = np.eye(D) * step
    return np.stack([(f(x + eye[k]) - f(x - eye[k])) / (2 * step) for k in range(D)], axis=-1)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))


def sequential_scores_under_test(ctx: CheckContext, x, w, m, C, blocks) -> list[np.ndarray]:
    """The per-agent scores of the decomposition: ``sd.sequential_conditional_scores``, or a planted misreading."""
    if ctx.mutated("marginal_scores"):
        return [sd.sequential_conditional_scores(x, w, m, C, [b])[0] for b in blocks]
    if ctx.mutated("condition_on_previous_agent_only"):
        return [sd.sequential_conditional_scores(x, w, m, C, [blocks[i - 1], b] if i else [b])[-1] for i, b in enumerate(blocks)]
    return sd.sequential_conditional_scores(x, w, m, C, blocks)


@check(
    "score.sequential_identity",
    PAPER,
    "The joint behaviour score equals the sum of the sequential conditional scores grad log mu(a_i | a_<i) (multimodal joint behaviour); "
    "each per-agent score is that of the conditional given all previous agents.",
    "exact",
    source=Source(
        "we design a sequential score function decomposition method that distills per-agent regularization signals from the joint behavior "
        "policy, which induces coordinated modality selection under decentralized execution constraints.",
        ABSTRACT,
        verbatim=False,
    ),
    mutations={
        "marginal_scores": "agent i's signal is its marginal score grad log mu_i(a_i) (independent regularisation), not the conditional on a_<i",
        "condition_on_previous_agent_only": "agent i's signal conditions on a_{i-1} only (a Markov chain over agents), not on all of a_<i",
    },
)
def sequential_identity(ctx: CheckContext) -> Verdict:
    """The scores under test come from ``sd.sequential_conditional_scores`` (differences of marginal
    scores); the references are computed without it: the joint score by central differences of
    ``sd.gmm_log_density``, each conditional's by central differences of the Schur-complement
    conditional density ``sd.conditional_log_density``, whose chain-rule sum is compared with the
    joint log density. Mathematically the identity is the chain rule; what can fail is the
    decomposition the package trains with."""
    rng = np.random.default_rng(ctx.seed)
    n_mix = 20 if ctx.quick else 200
    n_points = 50 if ctx.quick else 200
    worst_sum = worst_cond = worst_density = 0.0
    product_dev = []
    for k in range(n_mix):
        w, m, C, blocks = random_gmm(rng, n_agents=2 + k % 2, dims_per_agent=1 + k % 2, n_components=2 + k % 3)
        centres = m[rng.integers(0, len(w), size=n_points)]
        x = centres + rng.normal(scale=1.0, size=centres.shape)
        joint_fd = finite_difference_gradient(lambda y: sd.gmm_log_density(y, w, m, C), x)
        seq = sequential_scores_under_test(ctx, x, w, m, C, blocks)
        worst_sum = max(worst_sum, rel_err(sum(seq), joint_fd))
        prefixes = [[d for b in blocks[:i] for d in b] for i in range(len(blocks))]
        cond_logs = [lambda y, g=g, t=b: sd.conditional_log_density(y, w, m, C, g, t) for g, b in zip(prefixes, blocks)]
        worst_density = max(worst_density, float(np.max(np.abs(sum(f(x) for f in cond_logs) - sd.gmm_log_density(x, w, m, C)))))
        for f, s_i in zip(cond_logs, seq):
            worst_cond = max(worst_cond, rel_err(s_i, finite_difference_gradient(f, x)))
        product_dev.append(rel_err(sd.marginal_product_score(x, w, m, C, blocks), joint_fd))
    holds = worst_sum <= SCORE_FD_RTOL and worst_cond <= SCORE_FD_RTOL and worst_density <= LOG_DENSITY_ATOL
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_mix} mixtures x {n_points} points: |sum_i seq_i - joint score (FD)| <= {worst_sum:.1e}, each seq_i vs FD of its Schur conditional <= {worst_cond:.1e}; "
        f"product of marginals off by up to {max(product_dev):.2f}",
        evidence={
            "mixtures": n_mix,
            "points_per_mixture": n_points,
            "max_rel_sum_of_sequential_scores_minus_fd_joint_score": worst_sum,
            "max_rel_each_sequential_score_minus_fd_of_schur_conditional": worst_cond,
            "max_abs_chain_rule_log_density_error": worst_density,
            "max_rel_marginal_product_score_minus_joint_score": max(product_dev),
            "fd_step": SCORE_FD_STEP,
            "tolerance_relative": SCORE_FD_RTOL,
            "note": "the identity is the chain rule of densities; the references (finite differences of the log densities, Schur-complement "
            "conditionals) do not use the decomposition under test",
        },
        counterexample=None if holds else {"errors": [worst_sum, worst_cond, worst_density], "seed": ctx.seed},
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


def kl_regularised_optimum(payoff: np.ndarray, reference: np.ndarray, alpha: float) -> np.ndarray:
    """``argmax_pi E_pi[payoff] - alpha KL(pi || reference)`` over joint tables, by cvxpy (exponential cone).

    ``pi`` is zero where the reference is (KL is infinite there); the solver knows nothing of the
    closed form ``reference exp(payoff/alpha)/Z``.
    """
    support = reference.ravel() > 0
    r, ref = payoff.ravel()[support], reference.ravel()[support]
    pi = cp.Variable(int(support.sum()), nonneg=True)
    prob = cp.Problem(cp.Maximize(r @ pi - alpha * cp.sum(cp.kl_div(pi, ref))), [cp.sum(pi) == 1])
    solve_tight(prob, "KL-regularised policy")
    out = np.zeros(reference.size)
    out[support] = np.maximum(pi.value, 0.0)
    return out.reshape(reference.shape)


def coordination_references(ctx: CheckContext, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The regularisation targets: the product of the data's marginals (independent per-agent
    regularisation) and the sequential composition ``mu(a_1) mu(a_2 | a_1)`` (or a planted misreading)."""
    product = sd.product_of_marginals(data)
    if ctx.mutated("sequential_ignores_prefix"):
        return product, sd.compose_sequential([data.sum(axis=1), data.sum(axis=0)])
    return product, sd.compose_sequential(sd.sequential_conditionals(data))


@check(
    "score.coordination_game",
    PAPER,
    "With two equally good equilibria in the data, independent per-agent regularisation puts mass on miscoordinated joint actions; the sequential decomposition does not.",
    "exact",
    source=Source(
        "a fundamental challenge in offline MARL arises from the multi-equilibrium nature of cooperative tasks, which induces a highly multimodal "
        "joint behavior policy space coupled with heterogeneous-quality behavior data. This makes it difficult for individual policy regularization "
        "to align with a consistent coordination pattern, leading to the policy distribution shift problems.",
        ABSTRACT,
        verbatim=False,
    ),
    mutations={
        "sequential_ignores_prefix": "the second agent's 'conditional' ignores the first agent's action (its marginal), so the sequential target is the product again",
        "miscoordination_on_support": "counts miscoordination only on joint actions the data contain, so mass moved off the data is never seen",
    },
)
def coordination_game(ctx: CheckContext) -> Verdict:
    """Two agents, payoff 1 on the diagonal; the data mix the conventions (a, a) with random weights
    ``p`` (two or three of them). Exact: product-of-marginals miscoordination ``1 - sum_a p_a^2``;
    its KL-regularised optimum puts ``(1 - sum p^2) / (1 - sum p^2 + e^{1/alpha} sum p^2)`` off the
    diagonal (sympy at ``p = (1/2, 1/2)``). The KL-regularised optima are solved by cvxpy, not by
    ``sd.kl_regularised_policy``, and miscoordination is counted by enumeration of the joint table.
    """
    rng = np.random.default_rng(ctx.seed)
    n_instances = 6 if ctx.quick else 60
    a_sym = sp.symbols("alpha", positive=True)
    exact = coordination_exact(a_sym, sp.symbols("sigma", positive=True))
    worst_closed = worst_solver = 0.0
    min_product_off = min_product_kl_off = np.inf
    max_sequential_off = max_sequential_kl_off = 0.0
    rows = []
    for k in range(n_instances):
        n_conv = 2 if k == 0 else 2 + k % 2
        p = np.full(n_conv, 0.5) if k == 0 else rng.dirichlet(np.full(n_conv, 2.0))
        n_actions = n_conv + k % 2
        payoff = np.eye(n_actions)
        data = np.zeros((n_actions, n_actions))
        data[np.arange(n_conv), np.arange(n_conv)] = p
        alpha = 0.5 if k == 0 else float(rng.uniform(0.2, 2.0))
        product, sequential = coordination_references(ctx, data)
        off = (payoff < 1.0) & ((data > 0) if ctx.mutated("miscoordination_on_support") else True)
        mass_off = lambda pi: float(np.sum(pi[off]))  # noqa: E731
        kl_product = kl_regularised_optimum(payoff, product, alpha)
        kl_sequential = kl_regularised_optimum(payoff, sequential, alpha)
        s2 = float(np.sum(p**2))
        closed_product = 1.0 - s2
        closed_kl = (1.0 - s2) / (1.0 - s2 + np.exp(1.0 / alpha) * s2)
        worst_solver = max(worst_solver, float(np.max(np.abs(kl_product - sd.kl_regularised_policy(payoff, product, alpha)))))
        worst_closed = max(
            worst_closed,
            abs(float(np.sum(product[payoff < 1.0])) - closed_product),
            abs(float(np.sum(kl_product[payoff < 1.0])) - closed_kl),
        )
        if k == 0:
            worst_closed = max(worst_closed, abs(closed_kl - float(exact["product_kl_policy_miscoordination"].subs(a_sym, alpha))))
        min_product_off = min(min_product_off, mass_off(product))
        min_product_kl_off = min(min_product_kl_off, mass_off(kl_product))
        max_sequential_off = max(max_sequential_off, mass_off(sequential))
        max_sequential_kl_off = max(max_sequential_kl_off, mass_off(kl_sequential))
        rows.append(
            {
                "p": p.tolist(),
                "alpha": alpha,
                "product_off": mass_off(product),
                "product_kl_off": mass_off(kl_product),
                "sequential_kl_off": mass_off(kl_sequential),
            }
        )
    # The continuous analogue: two Gaussian modes (-1,-1), (1,1); the product of marginals' sign-mismatch mass.
    sigma_v = 0.6
    w = np.array([0.5, 0.5])
    m = np.array([[-1.0, -1.0], [1.0, 1.0]])
    C = np.stack([np.eye(2) * sigma_v**2] * 2)
    marg = [sd.marginal_gmm(w, m, C, [i]) for i in range(2)]
    p_pos = [float(np.sum(mw * norm.sf(0.0, loc=mm[:, 0], scale=np.sqrt(mc[:, 0, 0])))) for mw, mm, mc in marg]
    continuous_product = p_pos[0] * (1 - p_pos[1]) + (1 - p_pos[0]) * p_pos[1]
    continuous_joint = float(2 * np.sum(w * norm.cdf(0.0, loc=m[:, 0], scale=sigma_v) * norm.sf(0.0, loc=m[:, 1], scale=sigma_v)))
    continuous_closed = float(exact["continuous_joint_miscoordination"].subs(sp.symbols("sigma", positive=True), sigma_v))
    worst_closed = max(worst_closed, abs(continuous_product - 0.5), abs(continuous_joint - continuous_closed))
    holds = (
        worst_closed <= CLARABEL_TIGHT_ATOL
        and worst_solver <= CLARABEL_TIGHT_ATOL
        and min_product_off > CLARABEL_TIGHT_ATOL
        and min_product_kl_off > CLARABEL_TIGHT_ATOL
        and max_sequential_off <= CLARABEL_TIGHT_ATOL
        and max_sequential_kl_off <= CLARABEL_TIGHT_ATOL
        and continuous_product > continuous_joint
    )
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_instances} data mixes: miscoordinated mass of the product-of-marginals target >= {min_product_off:.3f} "
        f"(its KL-regularised optimum by cvxpy >= {min_product_kl_off:.4f}); sequential target <= {max_sequential_off:.1e}, its optimum <= {max_sequential_kl_off:.1e}",
        evidence={
            "instances": rows,
            "min_miscoordination_product_target": min_product_off,
            "min_miscoordination_product_kl_optimum": min_product_kl_off,
            "max_miscoordination_sequential_target": max_sequential_off,
            "max_miscoordination_sequential_kl_optimum": max_sequential_kl_off,
            "max_abs_cvxpy_minus_package_kl_policy": worst_solver,
            "max_abs_numeric_minus_closed_form": worst_closed,
            "continuous_product_miscoordination": continuous_product,
            "continuous_joint_miscoordination": continuous_joint,
            "closed_forms": {k: sp.sstr(v) for k, v in exact.items()},
            "tolerance": CLARABEL_TIGHT_ATOL,
        },
        counterexample=None if holds else {"instances": rows, "seed": ctx.seed},
        seeds=[ctx.seed],
    )
