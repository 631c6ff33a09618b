"""Checks of MAMQL (Haynam et al., "Multi-Agent Inverse Q-Learning from Demonstrations",
arXiv 2503.04679), ``papers/mamql-2503.04679.md``.

Only a summary of the paper is at hand, so each quote is the summary's (``verbatim=False``).
The equilibrium checked is the logit QRE of the entropy-regularised game (continuation values
include each player's entropy bonus), the fixed point of Boltzmann policies over soft marginalised
critics; McKelvey and Palfrey's agent QRE (plain continuation values) is a different profile when
the horizon exceeds one, and ``mamql.qre_fixed_point`` reports by how much.
"""

from __future__ import annotations

import itertools

import numpy as np

from marlcov.theory.games import random_markov_game
from marlcov.theory.objectives import mamql
from marlcov.theory.policies import random_policy, replace_player
from marlcov.theory.soft_games import (
    boltzmann_residual,
    logit_qre,
    marginal_mdp,
    regularised_nash_gap,
    soft_best_response,
    soft_evaluation,
)

from .registry import CheckContext, Source, Verdict, check
from .tolerances import EXACT_ATOL, FIXED_POINT_ATOL

PAPER = "MAMQL (Haynam et al.)"

#: Where every MAMQL quote comes from.
SUMMARY = "the summary papers/mamql-2503.04679.md (the full text is not in papers/; wording not checked against it)"


def random_general_sum_game(rng: np.random.Generator, n_players: int = 2, n_states: int = 2, n_actions: int = 2, horizon: int = 2):
    return random_markov_game(n_states, [n_actions] * n_players, horizon, rng)


def marginal_mdp_soft_critic(rbar: np.ndarray, Pbar: np.ndarray, lam: float, hard_max: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Soft value iteration in player i's marginal MDP with the shared ``mamql.soft_value``
    (``hard_max``: a planted bug, the value is ``max_a qbar`` instead of the soft maximum)."""
    H, S, A = rbar.shape
    q = np.empty((H, S, A))
    V = np.zeros((H + 1, S))
    for h in range(H - 1, -1, -1):
        q[h] = rbar[h] + Pbar[h] @ V[h + 1]
        V[h] = q[h].max(axis=-1) if hard_max else mamql.soft_value(q[h], lam)
    return q, V


@check(
    "mamql.marginal_soft_bellman",
    PAPER,
    "Against fixed pi_-i, the marginalised critic qbar_i = E_{pi_-i} Q_i satisfies agent i's single-agent soft Bellman equation, and Boltzmann over it is the soft best response.",
    "exact",
    source=Source(
        "For each agent i, MAMQL computes Q̄ᵢ(s, aᵢ) = E[a₋ᵢ~π₋ᵢ][Q(s, aᵢ, a₋ᵢ)], converting the joint action-value function into a per-agent "
        "critic. This marginalization satisfies a soft Bellman condition equivalent to the single-agent case",
        f"section IV (marginalised critics), as paraphrased in 'Mechanism 1' of {SUMMARY}",
        verbatim=False,
    ),
    mutations={
        "hard_max_value": "the marginal MDP's value is max_a qbar instead of the soft maximum (1/lam) log sum exp(lam qbar)",
        "uniform_other_players": "the marginal MDP averages over uniform other players instead of the fixed pi_-i",
    },
)
def marginal_soft_bellman(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_games = 20 if ctx.quick else 200
    worst_route = worst_resid = worst_policy = worst_opt = worst_shared = 0.0
    for k in range(n_games):
        game = random_general_sum_game(
            rng, n_players=2 + k % 2, n_states=int(rng.integers(1, 4)), n_actions=int(rng.integers(2, 4)), horizon=int(rng.integers(1, 4))
        )
        lam = float(rng.uniform(0.3, 4.0))
        pi = random_policy(game, rng)
        P, R = game.transitions, game.rewards
        for i in range(game.n_players):
            br = soft_best_response(P, R[:, i], pi, i, lam)
            others = tuple(np.full_like(p, 1.0 / p.shape[-1]) for p in pi) if ctx.mutated("uniform_other_players") else pi
            rbar, Pbar = marginal_mdp(P, R[:, i], others, i)
            q_marg, _ = marginal_mdp_soft_critic(rbar, Pbar, lam, hard_max=ctx.mutated("hard_max_value"))
            worst_route = max(worst_route, float(np.max(np.abs(q_marg - br.q_bar))))
            next_v = np.stack([Pbar[h] @ br.V[h + 1] for h in range(game.horizon)])
            resid = br.q_bar - (rbar + next_v)
            worst_resid = max(worst_resid, float(np.max(np.abs(resid))), float(np.max(np.abs(br.V[:-1] - mamql.soft_value(br.q_bar, lam)))))
            worst_policy = max(worst_policy, float(np.max(np.abs(br.policy - mamql.boltzmann_policy(br.q_bar, lam)))))
            # The shared marginalisation gives the same critic from the joint Q-function.
            h = 0
            Q_joint = R[h, i] + P[h] @ br.V[h + 1]
            worst_shared = max(worst_shared, float(np.max(np.abs(mamql.marginalise(Q_joint, [p[h] for p in pi], i) - br.q_bar[h]))))
            # Soft best response: its own regularised value equals V, and no other policy beats it.
            own = soft_evaluation(P, R[:, i], replace_player(pi, i, br.policy), i, lam).V
            worst_opt = max(worst_opt, float(np.max(np.abs(own - br.V))))
            for _ in range(3):
                alt = random_policy(game, rng)[i]
                worst_opt = max(worst_opt, float(np.max(soft_evaluation(P, R[:, i], replace_player(pi, i, alt), i, lam).V - br.V)))
    worst = max(worst_route, worst_resid, worst_policy, worst_opt, worst_shared)
    holds = worst <= EXACT_ATOL
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_games} games: joint-route critic vs marginal-MDP soft VI {worst_route:.1e}; Bellman residual {worst_resid:.1e}",
        evidence={
            "games": n_games,
            "max_abs_joint_route_minus_marginal_mdp": worst_route,
            "max_abs_soft_bellman_residual": worst_resid,
            "max_abs_policy_minus_boltzmann": worst_policy,
            "max_abs_shared_marginalise_minus_critic": worst_shared,
            "max_soft_value_gain_of_other_policies": worst_opt,
            "tolerance": EXACT_ATOL,
        },
        counterexample=None if holds else {"max_error": worst, "seed": ctx.seed},
        seeds=[ctx.seed],
    )


@check(
    "mamql.qre_fixed_point",
    PAPER,
    "Boltzmann policies over the marginalised soft critics are a fixed point exactly at a logit QRE of the entropy-regularised game "
    "(continuation values include the entropy bonus; the McKelvey-Palfrey agent QRE with plain continuation values differs when H > 1).",
    "exact",
    source=Source(
        "The policy πᵢ(aᵢ|s) ∝ exp(λ Q̄ᵢ(s, aᵢ)) emerges from optimal response conditions where each agent optimally responds to fixed π₋ᵢ "
        "modulated by rationality parameter λ.",
        f"section IV (generalised Boltzmann policies), as paraphrased in 'Mechanism 2' of {SUMMARY}",
        verbatim=False,
    ),
    mutations={
        "plain_continuation_values": "computes the equilibrium with plain continuation values (the agent QRE of McKelvey and Palfrey) and tests it against soft critics",
    },
)
def qre_fixed_point(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_games = 8 if ctx.quick else 80
    n_profiles = 10 if ctx.quick else 40
    worst_resid = worst_gap = 0.0
    mismatches = 0
    min_gap_off = min_resid_off = np.inf
    plain_vs_soft_h1 = 0.0
    plain_vs_soft_multi = []
    plain_residual_multi = []
    iterations = []
    for k in range(n_games):
        game = random_general_sum_game(
            rng, n_players=2 + k % 2, n_states=int(rng.integers(1, 4)), n_actions=int(rng.integers(2, 4)), horizon=1 + k % 3
        )
        lam = float(rng.uniform(0.5, 4.0))
        P, R = game.transitions, game.rewards
        eq = logit_qre(P, R, lam, entropy=not ctx.mutated("plain_continuation_values"))
        eq_residual = boltzmann_residual(P, R, eq.policy, lam)
        iterations.append(eq.iterations)
        gap = regularised_nash_gap(P, R, eq.policy, lam, game.initial_state)
        worst_resid = max(worst_resid, eq_residual)
        worst_gap = max(worst_gap, float(np.max(np.abs(gap))))
        # Off the equilibrium: random and perturbed profiles; the residual is zero iff the gap is.
        for j in range(n_profiles):
            if j % 2 == 0:
                prof = random_policy(game, rng)
            else:
                # Perturbations large enough that the (quadratic) gap clears the tolerance.
                eps = 10.0 ** rng.uniform(-3, -1)
                prof = tuple((1 - eps) * p + eps * rng.dirichlet(np.ones(p.shape[-1]), size=p.shape[:2]) for p in eq.policy)
            r_res = boltzmann_residual(P, R, prof, lam)
            g_res = float(np.sum(regularised_nash_gap(P, R, prof, lam, game.initial_state)))
            # Interior policies and Dirichlet transitions reach every state, so the gap at s_1 sees every deviation.
            if (r_res <= FIXED_POINT_ATOL) != (g_res <= FIXED_POINT_ATOL):
                mismatches += 1
            min_gap_off, min_resid_off = min(min_gap_off, g_res), min(min_resid_off, r_res)
        # The agent QRE with plain continuation values coincides with the soft one in one-step games,
        # and in one-state games, where the entropy bonus shifts every continuation value alike.
        plain = logit_qre(P, R, lam, entropy=False)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(plain.policy, eq.policy))
        if game.horizon == 1 or game.n_states == 1:
            plain_vs_soft_h1 = max(plain_vs_soft_h1, diff)
        else:
            plain_vs_soft_multi.append(diff)
            plain_residual_multi.append(boltzmann_residual(P, R, plain.policy, lam))
    holds = worst_resid <= FIXED_POINT_ATOL and worst_gap <= FIXED_POINT_ATOL and mismatches == 0
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_games} games: soft-QRE residual {worst_resid:.1e}, regularised Nash gap {worst_gap:.1e}; residual=0 iff gap=0 on {n_games * n_profiles} profiles; "
        f"agent QRE (plain values) differs for H > 1, S > 1 by {min(plain_vs_soft_multi, default=0.0):.0e} to {max(plain_vs_soft_multi, default=0.0):.0e} "
        f"({len(plain_vs_soft_multi)} games)",
        evidence={
            "games": n_games,
            "profiles_per_game": n_profiles,
            "max_qre_boltzmann_residual": worst_resid,
            "max_regularised_nash_gap_at_qre": worst_gap,
            "residual_zero_iff_gap_zero_mismatches": mismatches,
            "min_gap_off_equilibrium": min_gap_off,
            "min_residual_off_equilibrium": min_resid_off,
            "stage_iterations_max": max(iterations),
            "plain_value_agent_qre_vs_soft_qre_one_step_or_one_state": plain_vs_soft_h1,
            "plain_value_agent_qre_vs_soft_qre_multi_step_max": max(plain_vs_soft_multi, default=0.0),
            "plain_value_agent_qre_vs_soft_qre_multi_step_min": min(plain_vs_soft_multi, default=0.0),
            "multi_step_multi_state_games": len(plain_vs_soft_multi),
            "plain_value_agent_qre_soft_residual_multi_step_max": max(plain_residual_multi, default=0.0),
            "note": "the fixed point is the logit QRE of the entropy-regularised game (continuation values include the entropy); "
            "the McKelvey-Palfrey agent QRE with plain continuation values coincides with it only when H = 1",
            "tolerance": FIXED_POINT_ATOL,
        },
        counterexample=None if holds else {"max_residual": worst_resid, "max_gap": worst_gap, "mismatches": mismatches, "seed": ctx.seed},
        seeds=[ctx.seed],
    )


def expert_trajectories(Pbar: np.ndarray, pi_i: np.ndarray, s1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All trajectories of player i's marginal MDP from ``s1``: states ``[N, H+1]``, actions ``[N, H]``, probabilities ``[N]``."""
    H, S, A = pi_i.shape
    states, actions, probs = [], [], []
    for acts in itertools.product(range(A), repeat=H):
        for nxt in itertools.product(range(S), repeat=H):
            path = (s1, *nxt)
            p = 1.0
            for h in range(H):
                p *= pi_i[h, path[h], acts[h]] * Pbar[h, path[h], acts[h], path[h + 1]]
            states.append(path)
            actions.append(acts)
            probs.append(p)
    return np.array(states), np.array(actions), np.array(probs)


def iq_objective_of_critic(
    q_bar: np.ndarray, lam: float, states: np.ndarray, actions: np.ndarray, probs: np.ndarray, reg_coef: float = 0.0
) -> float:
    """The shared IQ-Learn criterion (``phi(x) = x - reg_coef x^2``) of a critic on the enumerated expert trajectories."""
    H = q_bar.shape[0]
    V = np.concatenate([mamql.soft_value(q_bar, lam), np.zeros((1, q_bar.shape[1]))])
    steps = np.arange(H)
    q_taken = q_bar[steps, states[:, :-1], actions]
    v_next = V[steps + 1, states[:, 1:]]
    return float(mamql.iq_learn_objective(q_taken, v_next, V[0, states[:, 0]], reg_coef=reg_coef, weights=probs))


def implied_expert_rewards(q_bar: np.ndarray, lam: float, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``x = qbar_h(s_h, a_h) - V_{h+1}(s_{h+1})`` along each enumerated trajectory, ``[N, H]``: the argument of ``phi``."""
    H = q_bar.shape[0]
    V = np.concatenate([mamql.soft_value(q_bar, lam), np.zeros((1, q_bar.shape[1]))])
    steps = np.arange(H)
    return mamql.inverse_soft_bellman(q_bar[steps, states[:, :-1], actions], V[steps + 1, states[:, 1:]])


@check(
    "mamql.reward_recovery",
    PAPER,
    "Rewards recovered from the marginalised critics by the inverse soft Bellman operator are the true marginalised rewards E_{pi_-i} r_i.",
    "exact",
    source=Source(
        "By connecting marginalized critics to single-agent soft-Q IRL, MAMQL provides a direct optimization criterion [...] "
        "The method uses a direct Q-learning objective with a concave regularizer (Pearson χ²) rather than adversarial training, and recovers rewards via MSE constraints.",
        f"section IV (reward recovery, Eq. 9), as paraphrased in 'Executive Summary' and 'Method Summary' of {SUMMARY}",
        verbatim=False,
    ),
    mutations={
        "policy_only_without_shaping": "recovers the reward from the demonstrated policy alone (critic log(pi)/lam) and compares it with rbar without the potential-shaping term",
    },
)
def reward_recovery(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_games = 8 if ctx.quick else 80
    worst_recovery = worst_shaping = worst_iq_identity = worst_iq_max = 0.0
    shaping_size = []
    for k in range(n_games):
        game = random_general_sum_game(rng, n_players=2, n_states=2, n_actions=2, horizon=1 + k % 3)
        lam = float(rng.uniform(0.5, 3.0))
        P, R = game.transitions, game.rewards
        eq = logit_qre(P, R, lam)
        for i in range(game.n_players):
            crit = soft_evaluation(P, R[:, i], eq.policy, i, lam)
            rbar, Pbar = marginal_mdp(P, R[:, i], eq.policy, i)
            V = np.concatenate([mamql.soft_value(crit.q_bar, lam), np.zeros((1, game.n_states))])
            next_v = np.stack([Pbar[h] @ V[h + 1] for h in range(game.horizon)])
            recovered = mamql.inverse_soft_bellman(crit.q_bar, next_v)
            worst_recovery = max(worst_recovery, float(np.max(np.abs(recovered - rbar))))
            # From the policy alone the critic is log(pi)/lam up to a state potential, so the reward
            # is recovered up to potential shaping Phi_h(s) - E Phi_{h+1}(s').
            q_hat = np.log(eq.policy[i]) / lam
            V_hat = np.concatenate([mamql.soft_value(q_hat, lam), np.zeros((1, game.n_states))])
            r_hat = mamql.inverse_soft_bellman(q_hat, np.stack([Pbar[h] @ V_hat[h + 1] for h in range(game.horizon)]))
            shaping = V[:-1, :, None] - next_v
            shaping_used = 0.0 if ctx.mutated("policy_only_without_shaping") else shaping
            worst_shaping = max(worst_shaping, float(np.max(np.abs(r_hat - rbar + shaping_used))))
            shaping_size.append(float(np.max(np.abs(shaping))))
            # IQ-Learn: the criterion telescopes to the expert log-likelihood, maximal at the true critic.
            states, actions, probs = expert_trajectories(Pbar, eq.policy[i], game.initial_state)
            loglik = float(np.sum(probs * np.sum(np.log(eq.policy[i][np.arange(game.horizon), states[:, :-1], actions]), axis=1)) / lam)
            at_true = iq_objective_of_critic(crit.q_bar, lam, states, actions, probs)
            worst_iq_identity = max(worst_iq_identity, abs(at_true - loglik))
            for _ in range(3):
                other = crit.q_bar + rng.normal(scale=0.5, size=crit.q_bar.shape)
                worst_iq_max = max(worst_iq_max, iq_objective_of_critic(other, lam, states, actions, probs) - at_true)
    holds = max(worst_recovery, worst_shaping, worst_iq_identity, worst_iq_max) <= EXACT_ATOL
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_games} games at the logit QRE: max |T*qbar - rbar| = {worst_recovery:.1e}; from the policy alone: residual {worst_shaping:.1e} "
        f"after potential shaping (shaping term up to {max(shaping_size):.2f}); IQ-Learn = expert log-likelihood to {worst_iq_identity:.1e}",
        evidence={
            "games": n_games,
            "max_abs_recovered_minus_marginalised_reward": worst_recovery,
            "policy_only_recovery_residual_after_potential_shaping": worst_shaping,
            "policy_only_shaping_term_max_abs": max(shaping_size),
            "iq_learn_equals_expert_loglik_max_error": worst_iq_identity,
            "iq_learn_gain_of_perturbed_critics_max": worst_iq_max,
            "tolerance": EXACT_ATOL,
        },
        counterexample=None
        if holds
        else {"max_errors": [worst_recovery, worst_shaping, worst_iq_identity, worst_iq_max], "seed": ctx.seed},
        seeds=[ctx.seed],
    )
