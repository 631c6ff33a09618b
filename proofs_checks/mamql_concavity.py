"""MAMQL's critic objective: is the chi^2-regularised IQ-Learn criterion concave in the critic?

Player i's criterion on its marginal MDP (``theory.objectives.mamql.iq_learn_objective``) is
``J(qbar) = E_E[sum_h phi(x_h)] - E[V_1(s_1)]`` with ``x_h = qbar_h(s_h, a_h) - V_{h+1}(s_{h+1})``,
``V = (1/lam) log sum exp(lam qbar)`` and ``phi(x) = x - c x^2``. ``x_h`` is concave in ``qbar``
(``V`` is convex) and ``phi`` is concave, but ``phi`` decreases beyond ``1/(2c)``; a concave
non-decreasing function of a concave one is concave, a decreasing one need not be. The check
probes the Hessian (central differences of the shared criterion) at random critics, separately
where every expert ``x_h <= 1/(2c)`` and where some ``x_h`` exceeds it, and confirms a witness of
positive curvature by a finite chord.
"""

from __future__ import annotations

import numpy as np

from marlcov.theory.policies import random_policy
from marlcov.theory.soft_games import marginal_mdp

from .mamql import (
    PAPER,
    SUMMARY,
    expert_trajectories,
    implied_expert_rewards,
    iq_objective_of_critic,
    marginal_mdp_soft_critic,
    random_general_sum_game,
)
from .omapl_numerics import slice_figure
from .registry import CheckContext, Source, Verdict, check
from .tolerances import HESSIAN_FD_ATOL, HESSIAN_FD_STEP, SECOND_DIFF_TOL


def fd_hessian(f, x: np.ndarray, h: float = HESSIAN_FD_STEP) -> np.ndarray:
    """Symmetric central-difference Hessian of a scalar ``f`` at ``x``."""
    n = x.size
    eye = np.eye(n) * h
    f0 = f(x)
    H = np.empty((n, n))
    for i in range(n):
        H[i, i] = (f(x + eye[i]) + f(x - eye[i]) - 2.0 * f0) / h**2
        for j in range(i):
            H[i, j] = H[j, i] = (f(x + eye[i] + eye[j]) - f(x + eye[i] - eye[j]) - f(x - eye[i] + eye[j]) + f(x - eye[i] - eye[j])) / (
                4 * h**2
            )
    return H


def critic_problem(rng: np.random.Generator, horizon: int) -> dict:
    """Player 0's marginal MDP (3 actions, 2 states) against a random ``pi_-0``, its expert
    trajectories under a random policy (enumerated, with probabilities), ``lam`` and ``c``."""
    game = random_general_sum_game(rng, n_players=2, n_states=2, n_actions=3, horizon=horizon)
    pi = random_policy(game, rng)
    rbar, Pbar = marginal_mdp(game.transitions, game.rewards[:, 0], pi, 0)
    states, actions, probs = expert_trajectories(Pbar, pi[0], game.initial_state)
    keep = probs > 0
    return {
        "rbar": rbar,
        "Pbar": Pbar,
        "states": states[keep],
        "actions": actions[keep],
        "probs": probs[keep],
        "lam": float(rng.uniform(0.5, 3.0)),
        "c": float(rng.uniform(0.1, 1.0)),
        "shape": rbar.shape,
    }


def random_critic(rng: np.random.Generator, prob: dict, j: int, c: float) -> np.ndarray:
    """A random critic; every other one lifted at the first step so that some ``x_1 > 1/(2c)``."""
    q = rng.normal(scale=(0.3, 1.0, 3.0)[j % 3], size=prob["shape"])
    if j % 2:
        q[0] += rng.uniform(1.0, 3.0) / c
    return q


def chord_witness(f, x: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """The largest chord second difference along ``d`` over a few finite steps, and its step."""
    steps = (0.01, 0.03, 0.1, 0.3)
    vals = [f(x + t * d) + f(x - t * d) - 2.0 * f(x) for t in steps]
    k = int(np.argmax(vals))
    return float(vals[k]), steps[k]


MAMQL_CONCAVE_PRINTED = (
    "MAMQL's critic criterion (IQ-Learn's objective with the concave chi^2 regulariser phi(x) = x - c x^2, on soft marginalised critics) "
    "is a concave (non-adversarial) optimisation objective in the critic."
)
MAMQL_CONCAVE_CORRECTED = (
    "The criterion is concave at every critic whose implied rewards x = qbar(s, a) - V(s') on the expert transitions satisfy x <= 1/(2c) "
    "(phi non-decreasing there), and everywhere when c = 0; it is not concave in general: V is convex in qbar and phi decreases beyond "
    "1/(2c), so phi(qbar - V(s')) has positive curvature once some expert x exceeds 1/(2c) (horizon >= 2)."
)


@check(
    "mamql.concavity",
    PAPER,
    "MAMQL's chi^2-regularised IQ-Learn criterion is concave in the marginalised critic.",
    "counterexample",
    source=Source(
        "The method uses a direct Q-learning objective with a concave regularizer (Pearson χ²) rather than adversarial training [...] "
        "allowing direct application of IQ-Learn's concave optimization objective.",
        f"section IV (critic objective, Eq. 8), as paraphrased in 'Method Summary' and 'Mechanism 1' of {SUMMARY}",
        verbatim=False,
    ),
    mutations={
        "unregularised_criterion": "probes only c = 0 (the telescoped log-likelihood), never the chi^2 term",
        "regulariser_sign_flipped": "the chi^2 term enters with the wrong sign, phi(x) = x + c x^2",
    },
)
def concavity(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_inst, n_points = (6, 15) if ctx.quick else (30, 20)
    in_max = out_max = true_max_eig = -np.inf
    n_in = n_out = n_out_positive = 0
    true_in_region = 0
    witness = None
    for k in range(n_inst):
        prob = critic_problem(rng, horizon=2 + k % 2)
        c = 0.0 if ctx.mutated("unregularised_criterion") else (-prob["c"] if ctx.mutated("regulariser_sign_flipped") else prob["c"])
        lam, states, actions, probs, shape = prob["lam"], prob["states"], prob["actions"], prob["probs"], prob["shape"]

        def f(qflat, lam=lam, states=states, actions=actions, probs=probs, shape=shape, c=c):
            return iq_objective_of_critic(qflat.reshape(shape), lam, states, actions, probs, reg_coef=c)

        for j in range(n_points):
            q = random_critic(rng, prob, j, prob["c"])
            eigval, eigvec = np.linalg.eigh(fd_hessian(f, q.ravel()))
            # phi'(x) = 1 - 2 c x >= 0 at every expert transition: phi is non-decreasing where the criterion uses it.
            in_region = bool(np.min(1.0 - 2.0 * c * implied_expert_rewards(q, lam, states, actions)) >= 0.0)
            if in_region:
                n_in += 1
                in_max = max(in_max, float(eigval[-1]))
            else:
                n_out += 1
                n_out_positive += int(eigval[-1] > HESSIAN_FD_ATOL)
                out_max = max(out_max, float(eigval[-1]))
            if eigval[-1] > HESSIAN_FD_ATOL and (
                witness is None or (in_region and not witness["in_region"]) or eigval[-1] > witness["eigenvalue"]
            ):
                witness = {
                    "f": f,
                    "q": q,
                    "direction": eigvec[:, -1],
                    "eigenvalue": float(eigval[-1]),
                    "in_region": in_region,
                    "c": c,
                    "lam": lam,
                }
        # The soft-optimal critic of the marginal MDP implies x = rbar in [0, 1] on every expert step.
        q_star, _ = marginal_mdp_soft_critic(prob["rbar"], prob["Pbar"], lam)
        true_in_region += int(np.min(1.0 - 2.0 * c * implied_expert_rewards(q_star, lam, states, actions)) >= 0.0)
        true_max_eig = max(true_max_eig, float(np.linalg.eigvalsh(fd_hessian(f, q_star.ravel()))[-1]))
    chord = step = None
    figures: list[str] = []
    captions: dict[str, str] = {}
    if witness is not None:
        chord, step = chord_witness(witness["f"], witness["q"].ravel(), witness["direction"])
        wf, wq, wd = witness["f"], witness["q"].ravel(), witness["direction"]
        figures, captions = slice_figure(
            ctx,
            "mamql_concavity_slice.png",
            [("IQ-Learn criterion along the top Hessian eigenvector", lambda s: wf(wq + s * wd), 3 * step)],
            f"The chi^2-regularised criterion (c = {witness['c']:.3f}, lam = {witness['lam']:.2f}) along the eigenvector of its largest Hessian "
            f"eigenvalue {witness['eigenvalue']:.3f} at a random critic where some expert implied reward exceeds 1/(2c): the curve falls below its chord, so the criterion is not concave there.",
        )
    evidence = {
        "instances": n_inst,
        "critics_per_instance": n_points,
        "critics_inside_region": n_in,
        "critics_outside_region": n_out,
        "max_hessian_eigenvalue_inside_region": in_max,
        "max_hessian_eigenvalue_outside_region": out_max,
        "critics_outside_region_with_positive_curvature": n_out_positive,
        "witness_chord_second_difference": chord,
        "witness_chord_step": step,
        "soft_optimal_critics_inside_region": f"{true_in_region}/{n_inst}",
        "max_hessian_eigenvalue_at_soft_optimal_critics": true_max_eig,
        "region": "phi'(x) = 1 - 2 c x >= 0 at every expert transition, i.e. x <= 1/(2c)",
        "hessian": f"central differences, step {HESSIAN_FD_STEP}, positive above {HESSIAN_FD_ATOL}",
    }
    counterexample = None
    if witness is not None:
        counterexample = {
            "critic": witness["q"].tolist(),
            "direction": witness["direction"].tolist(),
            "eigenvalue": witness["eigenvalue"],
            "inside_region": witness["in_region"],
            "reg_coef": witness["c"],
            "lam": witness["lam"],
            "chord_second_difference": chord,
            "chord_step": step,
            "seed": ctx.seed,
        }
    if in_max > HESSIAN_FD_ATOL:
        return Verdict(
            "refuted",
            f"positive curvature inside the region x <= 1/(2c): Hessian eigenvalue up to {in_max:.2e}",
            evidence=evidence,
            counterexample=counterexample,
            figures=figures,
            captions=captions,
            seeds=[ctx.seed],
        )
    beyond = f"up to {out_max:.2f} at {n_out_positive}/{n_out} critics beyond it" if n_out else "no critic beyond it"
    summary = f"max Hessian eigenvalue {in_max:.1e} at {n_in} critics with every expert x <= 1/(2c); {beyond}"
    if witness is not None and chord is not None and chord > SECOND_DIFF_TOL:
        return Verdict(
            "erratum",
            summary + f" (chord +{chord:.1e})",
            evidence=evidence,
            printed=MAMQL_CONCAVE_PRINTED,
            corrected=MAMQL_CONCAVE_CORRECTED,
            figures=figures,
            captions=captions,
            seeds=[ctx.seed],
        )
    return Verdict("holds", summary, evidence=evidence, figures=figures, captions=captions, seeds=[ctx.seed])
