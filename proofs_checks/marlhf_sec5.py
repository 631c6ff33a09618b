"""Checks of the MARLHF paper's practical techniques (section 5): the time-axis MSE regulariser
of section 5.2 and the 1/|A| substitution in the KL reward of section 5.3."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
from scipy.linalg import null_space

from marlcov.theory.coverage import step_features
from marlcov.theory.games import random_markov_game
from marlcov.theory.policies import uniform_policy
from marlcov.theory.preferences import sample_preference_dataset

from .figures import pyplot, saved_figure
from .registry import CheckContext, Source, Verdict, check
from .tolerances import ARGMAX_MARGIN, CLARABEL_DEFAULT_ATOL, EXACT_ATOL, QUOTIENT_ATOL

PAPER = "MARLHF (Zhang et al.)"

#: The random one-state instances of the KL check: coefficient beta and number of actions |A|.
KL_BETA_RANGE = (0.1, 10.0)
KL_ACTIONS_RANGE = (2, 6)

#: The MSE coefficients alpha of the section 5.2 check; the smallest decides "picks the smoothest"
#: (the fit's distance to it is O(alpha), compared with ``QUOTIENT_ATOL``).
SMOOTHNESS_ALPHAS_QUICK = (1e-6, 1e-4, 1e-2, 1.0)
SMOOTHNESS_ALPHAS_FULL = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100)


def kl_regularised_optimum(reward: np.ndarray, ref: np.ndarray, beta: float) -> np.ndarray:
    """``argmax_{pi in simplex} <pi, r> - beta KL(pi || pi_ref)`` by cvxpy.

    Solved as a conic program, independently of the closed form ``pi_ref exp(r / beta) / Z``.
    """
    pi = cp.Variable(reward.size, nonneg=True)
    # kl_div(x, y) = x log(x/y) - x + y sums to KL(x || y) on the simplex.
    problem = cp.Problem(cp.Maximize(reward @ pi - beta * cp.sum(cp.kl_div(pi, ref))), [cp.sum(pi) == 1])
    problem.solve(solver=cp.CLARABEL)
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"the KL-regularised optimum did not solve: status {problem.status}")
    return np.asarray(pi.value, dtype=np.float64)


@check(
    "marlhf.kl_uniform_substitution",
    PAPER,
    "Section 5.3: substituting 1/|A| for pi_w in the KL reward makes a Q-learner choose the deterministic policy "
    "closest to the KL-regularised optimum (with zero reward: the reference policy's most likely action).",
    "exact",
    source=Source(
        "the replaced reward is equivalent to encouraging the agent to match its deterministic choices with the "
        "actions most preferred by the reference policy. In other words, it seeks the closest element in the "
        "deterministic policy family to the reference policy",
        "section 5.3, after equation (4)",
        verbatim=True,
    ),
    mutations={
        "log_ratio_sign_flipped": "the substituted reward written +beta log((1/|A|) / pi_ref) instead of -beta log(...)",
        "beta_dropped_from_kl_reward": "the substituted KL reward written without its coefficient beta of equation (3)",
    },
)
def kl_uniform_substitution(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_cases = 60 if ctx.quick else 400
    sign = -1.0 if ctx.mutated("log_ratio_sign_flipped") else 1.0
    drop_beta = ctx.mutated("beta_dropped_from_kl_reward")
    compared = mismatched = mode_mismatched = 0
    worst_closed_form = 0.0
    for _ in range(n_cases):
        A = int(rng.integers(KL_ACTIONS_RANGE[0], KL_ACTIONS_RANGE[1] + 1))
        beta = float(rng.uniform(*KL_BETA_RANGE))
        ref = rng.dirichlet(np.ones(A))
        reward = rng.uniform(0.0, 1.0, A)
        substituted = reward - sign * (1.0 if drop_beta else beta) * np.log((1.0 / A) / ref)
        top2 = np.sort(substituted)[-2:]
        if top2[1] - top2[0] <= ARGMAX_MARGIN:
            continue
        optimum = kl_regularised_optimum(reward, ref, beta)
        closed = ref * np.exp(reward / beta)
        worst_closed_form = max(worst_closed_form, float(np.abs(optimum - closed / closed.sum()).max()))
        compared += 1
        # KL(delta_a || pi*) = -log pi*(a): the closest deterministic policy is the mode of pi*.
        mismatched += int(np.argmax(substituted) != np.argmax(optimum))
        no_reward = -sign * beta * np.log((1.0 / A) / ref)
        mode_mismatched += int(np.argmax(no_reward) != np.argmax(ref))
    evidence = {
        "cases": n_cases,
        "cases_compared_(no_tie)": compared,
        "argmax_differs_from_closest_deterministic_to_kl_optimum": mismatched,
        "zero_reward_argmax_differs_from_mode_of_pi_ref": mode_mismatched,
        "max_abs_cvxpy_minus_closed_form_optimum": worst_closed_form,
    }
    holds = mismatched == 0 and mode_mismatched == 0
    return Verdict(
        "holds" if holds else "refuted",
        f"argmax of the substituted reward = mode of the cvxpy KL optimum in "
        f"{compared - mismatched}/{compared} cases (beta in [{KL_BETA_RANGE[0]:g}, {KL_BETA_RANGE[1]:g}], |A| in "
        f"{KL_ACTIONS_RANGE[0]}..{KL_ACTIONS_RANGE[1]})",
        evidence=evidence,
        counterexample=None if holds else {"mismatched": mismatched, "mode_mismatched": mode_mismatched},
        seeds=[ctx.seed],
    )


def per_step_design(game, dataset, player: int = 0):
    """The objects of section 5.2 for tabular per-step rewards ``theta = r_h(s, a)`` flattened.

    Returns ``X`` (``psi(tau_n) - psi(tau'_n)``, ``[N, Hd]``), ``y`` (``[N]`` in {+1,-1}) and ``D``
    (one row ``psibar_h(s_h, a_h) - psibar_{h+1}(s_{h+1}, a_{h+1})`` per trajectory and step, so
    that ``||D theta||^2`` is the time-axis MSE term (2) summed over the data).
    """
    lin = game.with_one_hot_features()
    H, d = game.horizon, lin.feature_dim
    phi = step_features(lin.features, dataset.states, dataset.actions)  # [N, 2, H, d]
    lifted = np.zeros(phi.shape[:3] + (H * d,))
    for h in range(H):
        lifted[:, :, h, h * d : (h + 1) * d] = phi[:, :, h]
    X = lifted[:, 0].sum(axis=1) - lifted[:, 1].sum(axis=1)
    D = (lifted[:, :, :-1] - lifted[:, :, 1:]).reshape(-1, H * d)
    return X, dataset.prefs[:, player].astype(np.float64), D


def regularised_reward_fit(X: np.ndarray, y: np.ndarray, D: np.ndarray, alpha: float) -> np.ndarray:
    """``argmin_theta sum_n log(1 + exp(-y_n <x_n, theta>)) + alpha ||D theta||^2`` (loss (1), Var fixed)."""
    theta = cp.Variable(X.shape[1])
    objective = cp.sum(cp.logistic(-cp.multiply(y, X @ theta))) + alpha * cp.sum_squares(D @ theta)
    problem = cp.Problem(cp.Minimize(objective))
    if not problem.is_dcp():
        raise RuntimeError("the regularised preference loss must be DCP (convex)")
    problem.solve(solver=cp.CLARABEL)
    return np.asarray(theta.value)


def quotient_distance(a: np.ndarray, b: np.ndarray, common_null: np.ndarray) -> float:
    """``max |P (a - b)|`` with ``P`` the projector onto the complement of ``common_null`` (orthonormal
    columns): the distance between two rewards that neither the likelihood nor the MSE term can tell apart."""
    diff = a - b
    return float(np.abs(diff - common_null @ (common_null.T @ diff)).max())


@check(
    "marlhf.sec52_unidentified_smoothest",
    PAPER,
    "Section 5.2: trajectory-level preferences leave per-step rewards unidentified (spreading reward along a "
    "trajectory is equivalent to summing it at the last step), and the time-axis MSE term picks the smoothest member.",
    "exact",
    source=Source(
        "When calculating NLL losses, spreading the reward signal along the trajectories is equivalent to summing "
        "it at the last time step (Figure 2a).",
        "section 5.2, item 1, and equations (1)-(2)",
        verbatim=True,
    ),
    mutations={
        "l2_instead_of_time_mse": "the regulariser taken as ||theta||^2 instead of the time-axis differences of (2)",
        "shift_within_step": "the unidentified direction taken as moving reward between actions of one step",
    },
)
def sec52_unidentified_smoothest(ctx: CheckContext) -> Verdict:
    game = random_markov_game(2, (2,), 4, ctx.seed)
    data = sample_preference_dataset(game, uniform_policy(game), 300 if ctx.quick else 2000, ctx.seed + 1)
    X, y, D = per_step_design(game, data)
    H, d = game.horizon, X.shape[1] // game.horizon
    null = null_space(X)
    common_null = null_space(np.vstack([X, D]))
    shift = np.zeros(H * d)
    if ctx.mutated("shift_within_step"):
        shift[0], shift[1] = 1.0, -1.0
    else:  # a constant moved from every (s, a) of step 1 to step 2 keeps every trajectory's sum
        shift[:d], shift[d : 2 * d] = 1.0, -1.0
    shift_residual = float(np.abs(X @ shift).max())
    alphas = list(SMOOTHNESS_ALPHAS_QUICK if ctx.quick else SMOOTHNESS_ALPHAS_FULL)
    D_fit = np.eye(X.shape[1]) if ctx.mutated("l2_instead_of_time_mse") else D
    fits = [regularised_reward_fit(X, y, D_fit, a) for a in alphas]
    mse = [float(np.sum((D @ th) ** 2)) for th in fits]
    base = regularised_reward_fit(X, y, np.zeros_like(D), 0.0)
    # The smoothest member of the maximum-likelihood set {base + null z}: a least-squares problem.
    smoothest = base + null @ np.linalg.lstsq(D @ null, -(D @ base), rcond=None)[0]
    distances = [quotient_distance(th, smoothest, common_null) for th in fits]
    figures, captions = [], {}
    path = ctx.path("marlhf_sec52_smoothness.png")
    if path is not None:
        fig, ax = pyplot().subplots(1, 2, figsize=(9, 3.4))
        ax[0].loglog(alphas, mse, "o-")
        ax[0].set_xlabel("MSE coefficient alpha")
        ax[0].set_ylabel("time-axis MSE of the fit")
        ax[1].loglog(alphas, np.maximum(distances, np.finfo(float).tiny), "o-")
        ax[1].set_xlabel("MSE coefficient alpha")
        ax[1].set_ylabel("distance to smoothest MLE\n(identifiable quotient)")
        figures, captions = saved_figure(
            fig,
            path,
            f"Left: time-axis MSE (2) of the fit of loss (1) against alpha. Right: its distance to the smoothest "
            f"maximum-likelihood reward, after removing the {common_null.shape[1]} directions that neither term sees.",
        )
    evidence = {
        "parameters": H * d,
        "likelihood_null_space_dimension": int(null.shape[1]),
        "common_null_space_dimension": int(common_null.shape[1]),
        "step_shift_direction_residual": shift_residual,
        "alphas": alphas,
        "time_axis_mse": mse,
        "quotient_distance_to_smoothest_mle": distances,
        "mse_of_an_mle": float(np.sum((D @ base) ** 2)),
        "mse_of_smoothest_mle": float(np.sum((D @ smoothest) ** 2)),
    }
    monotone = all(b <= a + CLARABEL_DEFAULT_ATOL * max(1.0, a) for a, b in zip(mse, mse[1:]))
    unidentified = null.shape[1] > 0 and shift_residual <= EXACT_ATOL
    picks_smoothest = distances[0] <= QUOTIENT_ATOL
    holds = unidentified and monotone and picks_smoothest
    return Verdict(
        "holds" if holds else "refuted",
        f"{evidence['likelihood_null_space_dimension']} of {evidence['parameters']} directions unidentified; fit at "
        f"alpha={alphas[0]:g} is {distances[0]:.1e} from the smoothest MLE (quotient)",
        evidence=evidence,
        counterexample=None
        if holds
        else {"seed": ctx.seed, "alphas": alphas, "mse": mse, "distances": distances, "shift_residual": shift_residual},
        figures=figures,
        captions=captions,
        seeds=[ctx.seed, ctx.seed + 1],
    )
