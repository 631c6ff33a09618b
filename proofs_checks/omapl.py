"""Checks of O-MAPL (Bui, Mai and Nguyen, "O-MAPL: Offline Multi-agent Preference Learning",
arXiv 2501.18944 v1) on the objectives of section 4.2: the reward/soft-Q bijection (section 3)
and the curvature of ``L`` and ``J`` (Propositions 4.1 and 4.2). Statements are quoted from
``papers/omapl-statements.md``; policy extraction (section 4.3) is ``omapl_extraction``.

The objectives are those of ``theory.objectives.omapl`` (the functions the deep pipeline
trains), evaluated on the instances of ``proofs_checks.instances``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from marlcov.theory.soft_games import inverse_soft_bellman, regularised_value, soft_bellman_solve

from .instances import (
    Mixer,
    PreferenceInstance,
    extreme_v_objective,
    linear_mixer,
    preference_objective,
    random_soft_game,
    two_layer_mixer_from,
)
from .instances import mixer_from_params as _mixer_from_params
from .omapl_numerics import (
    GROUPS,
    PAPER,
    STATEMENTS,
    curvature_sweep,
    dcp_certificates,
    random_direction,
    save_json,
    second_difference,
    shifted,
    slice_figure,
    symbolic_bilinear_hessian,
    witness_json,
)
from .registry import CheckContext, Source, Verdict, check
from .tolerances import EXACT_ATOL, SECOND_DIFF_TOL


@check(
    "omapl.reward_q_bijection",
    PAPER,
    "Rewards and soft Q-functions are in one-to-one correspondence through the inverse soft Bellman operator r = T*Q.",
    "exact",
    source=Source(
        "the one-to-one mapping between any $Q_{tot}$ and $r(s,a)$, i.e., $r(s,a) = (\\mathcal{T}^*Q_{tot})(s,a)$",
        f"section 3 Background, inverse soft Bellman operator (unnumbered), after equation (1); {STATEMENTS}",
        verbatim=True,
    ),
    mutations={
        "undiscounted_inverse": "T*Q drops the discount: r = Q - E V(s') while the forward solve discounts by gamma",
        "uniform_reference_in_inverse": "the soft value inside T* averages exp(Q/beta) uniformly instead of under the behaviour mu",
    },
)
def reward_q_bijection(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_games = 30 if ctx.quick else 300
    worst_r = worst_q = worst_opt = 0.0

    def inverse(P, Q, ref, beta, gamma):
        gamma_used = 1.0 if ctx.mutated("undiscounted_inverse") else gamma
        ref_used = np.full_like(ref, 1.0 / np.prod(ref.shape[2:])) if ctx.mutated("uniform_reference_in_inverse") else ref
        return inverse_soft_bellman(P, Q, ref_used, beta, gamma_used)

    for _ in range(n_games):
        P, ref = random_soft_game(rng, n_agents=int(rng.integers(1, 4)), n_states=int(rng.integers(1, 5)))
        beta = float(rng.uniform(0.2, 3.0))
        gamma = float(rng.choice([1.0, 0.9]))
        r = rng.normal(size=ref.shape)
        sol = soft_bellman_solve(P, r, ref, beta, gamma)
        worst_r = max(worst_r, float(np.max(np.abs(inverse(P, sol.Q, ref, beta, gamma) - r))))
        Q = rng.normal(scale=2.0, size=ref.shape)
        back = soft_bellman_solve(P, inverse(P, Q, ref, beta, gamma), ref, beta, gamma).Q
        worst_q = max(worst_q, float(np.max(np.abs(back - Q))))
        # The policy mu exp((Q - V)/beta) attains V, and no other joint policy does better.
        own = regularised_value(P, r, sol.policy, ref, beta, gamma)
        worst_opt = max(worst_opt, float(np.max(np.abs(own - sol.V))))
        for _ in range(3):
            other = rng.dirichlet(np.ones(int(np.prod(ref.shape[2:]))), size=ref.shape[:2]).reshape(ref.shape)
            worst_opt = max(worst_opt, float(np.max(regularised_value(P, r, other, ref, beta, gamma) - sol.V)))
    holds = max(worst_r, worst_q, worst_opt) <= EXACT_ATOL
    return Verdict(
        "holds" if holds else "refuted",
        f"{n_games} games: max |T*(Q(r)) - r| = {worst_r:.1e}, max |Q(T*Q) - Q| = {worst_q:.1e}",
        evidence={
            "games": n_games,
            "max_abs_reward_round_trip": worst_r,
            "max_abs_q_round_trip": worst_q,
            "max_optimality_violation_of_soft_policy": worst_opt,
            "tolerance": EXACT_ATOL,
        },
        counterexample=None if holds else {"max_errors": [worst_r, worst_q, worst_opt]},
        seeds=[ctx.seed],
    )


PROP41_QUOTE = (
    "The loss $\\mathcal{L}(q, v, w)$ is concave in $q$ and $w$ (the parameters of the mixing networks), "
    "while the extreme-V loss function $\\mathcal{J}(v)$ is convex in $v$."
)
PROP41_PRINTED = (
    "Proposition 4.1: 'The loss L(q, v, w) is concave in q and w (the parameters of the mixing networks), while the "
    "extreme-V loss function J(v) is convex in v', under single-layer (linear) mixing; the proof (App. A.1) rests on "
    "'R_w[q, v](s, a) is linear in q(s, a) and theta'."
)
PROP41_CORRECTED = (
    "With linear mixing Q_tot = sum_i w_i q_i + b, L is concave in the local values q (and in (q, v)) for fixed "
    "mixing weights (w, b), and concave in (w, b) for fixed (q, v), but not jointly concave in (q, w): R_w is "
    "bilinear in (q, w), linear in each for the other fixed, not linear in both. J is convex in v (indeed in (q, v)) "
    "for fixed (w, b), as printed, but not jointly convex in (v, w)."
)


@check(
    "omapl.prop4_1",
    PAPER,
    "Proposition 4.1: under linear mixing the preference objective L is concave (in q and w) and J is convex in v.",
    "symbolic",
    source=Source(
        PROP41_QUOTE,
        f"Proposition 4.1 (Convexity), section 4.2 Value Factorization, p. 5; proof App. A.1, p. 12; {STATEMENTS}",
        verbatim=True,
    ),
    mutations={
        "separate_reading": "reads 'concave in q and w' as two statements and probes (q, w) only along q, never jointly",
        "convex_regulariser": "the chi^2 regulariser enters with the wrong sign, phi(x) = x + x^2/2 in place of x - x^2/2",
    },
)
def prop4_1(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_inst, n_dir = (12, 6) if ctx.quick else (120, 25)
    sweep = curvature_sweep(rng, n_inst, n_dir, reg_sign=-1.0 if ctx.mutated("convex_regulariser") else 1.0)
    sym = symbolic_bilinear_hessian()
    dcp = dcp_certificates(rng)
    separate = {
        "L_concave_in_q": sweep["L_q"]["max"] <= SECOND_DIFF_TOL,
        "L_concave_in_w": sweep["L_w"]["max"] <= SECOND_DIFF_TOL,
        "L_concave_in_qv": sweep["L_qv"]["max"] <= SECOND_DIFF_TOL,
        "J_convex_in_v": sweep["J_v"]["min"] >= -SECOND_DIFF_TOL,
        "J_convex_in_qv": sweep["J_qv"]["min"] >= -SECOND_DIFF_TOL,
        "dcp_L_in_q": dcp["L_in_q_is_concave_dcp"] and dcp["cvxpy_vs_shared_L"] <= EXACT_ATOL,
        "dcp_J_in_v": dcp["J_in_v_is_convex_dcp"] and dcp["cvxpy_vs_shared_J"] <= EXACT_ATOL,
        "symbolic_concave_in_q": sym["g2_equals_minus_sigma_one_minus_sigma"] and sym["max_eigenvalue_q"] <= 0,
    }
    joint_group = "q" if ctx.mutated("separate_reading") else "qw"
    joint_L_fails = sweep[f"L_{joint_group}"]["max"] > SECOND_DIFF_TOL and sym["max_eigenvalue_qw"] > 0
    joint_J_fails = sweep["J_vw"]["min"] < -SECOND_DIFF_TOL
    witness_L = witness_json(sweep["L_qw"]["witness"])
    witness_J = witness_json(sweep["J_vw"]["witness"])
    saved = [
        n
        for n in (
            save_json(ctx, "omapl_prop4_1_joint_qw_witness.json", witness_L),
            save_json(ctx, "omapl_prop4_1_joint_vw_witness.json", witness_J),
        )
        if n
    ]

    inst, tab, g, d, t, _ = sweep["L_qw"]["witness"]
    dq = random_direction(np.random.default_rng(ctx.seed + 1), tab, GROUPS["q"])
    figures, captions = slice_figure(
        ctx,
        "omapl_prop4_1_slices.png",
        [
            ("L along q (w fixed)", lambda s: preference_objective(inst, shifted(tab, GROUPS["q"], dq, s)), t),
            ("L along (q, w) jointly", lambda s: preference_objective(inst, shifted(tab, GROUPS[g], d, s)), t),
        ],
        "O-MAPL's L on one random preference instance with linear mixing, along a random direction in q alone "
        "(w fixed: on or above its chord, as a concave function is) and in (q, w) jointly (below its chord: not jointly concave).",
    )
    evidence = {
        "instances": n_inst,
        "directions_per_instance_and_group": n_dir,
        "second_difference_tolerance": SECOND_DIFF_TOL,
        "L_max_second_difference": {k: sweep[f"L_{k}"]["max"] for k in ("q", "w", "qv", "qw")},
        "J_min_second_difference": {k: sweep[f"J_{k}"]["min"] for k in ("v", "qv", "vw")},
        "separately_curved": separate,
        "jointly_concave_L_in_qw_refuted": bool(joint_L_fails),
        "jointly_convex_J_in_vw_refuted": bool(joint_J_fails),
        "symbolic": sym,
        "dcp": dcp,
        "witness_files": saved,
        "joint_probe_group": joint_group,
    }
    if not all(separate.values()):
        return Verdict(
            "refuted",
            f"fails: {', '.join(k for k, ok in separate.items() if not ok)} (L along q: max 2nd diff {sweep['L_q']['max']:+.2e}; J along v: min {sweep['J_v']['min']:+.2e})",
            evidence=evidence,
            counterexample={"separately_curved": separate, "L_q_witness": witness_json(sweep["L_q"]["witness"])},
            figures=figures,
            captions=captions,
            seeds=[ctx.seed],
        )
    if joint_L_fails:
        return Verdict(
            "erratum",
            f"L concave in q (w fixed; max 2nd diff {sweep['L_q']['max']:.1e}) and in w (q fixed; {sweep['L_w']['max']:.1e}), "
            f"not jointly: 2nd diff up to {sweep['L_qw']['max']:.2e} in (q, w), exact Hessian eigenvalue {sym['max_eigenvalue_qw']:.3f} > 0; "
            f"J convex in v (min {sweep['J_v']['min']:.1e})",
            evidence=evidence,
            printed=PROP41_PRINTED,
            corrected=PROP41_CORRECTED,
            figures=figures,
            captions=captions,
            seeds=[ctx.seed],
        )
    return Verdict(
        "holds",
        f"no violation of joint concavity found in (q, w) along the probed group {joint_group!r} (max 2nd diff {sweep[f'L_{joint_group}']['max']:.1e})",
        evidence=evidence,
        figures=figures,
        captions=captions,
        seeds=[ctx.seed],
    )


@check(
    "omapl.prop4_2",
    PAPER,
    "Proposition 4.2: with a two-layer (nonlinear) mixing network the objectives are no longer concave/convex in the local values.",
    "counterexample",
    source=Source(
        "If the mixing networks $M_w[q]$ and $M_w[v]$ are two-layer (or multi-layer) feed-forward networks, the preference-based "
        "loss function $\\mathcal{L}(q, v, w)$ is no longer concave in $q$ or $w$, and the extreme-V loss function $\\mathcal{J}(v)$ "
        "is not convex in $v$.",
        f"Proposition 4.2 (Non-convexity under two-layer mixing networks), section 4.2, p. 5; proof App. A.2; {STATEMENTS}",
        verbatim=True,
    ),
    mutations={"linear_mixer_probed": "the probe builds its 'two-layer' mixer as the linear mixer (hidden layer dropped)"},
)
def prop4_2(ctx: CheckContext) -> Verdict:
    rng = np.random.default_rng(ctx.seed)
    n_inst, n_dir = (10, 6) if ctx.quick else (100, 25)
    mixers: list[dict] = []

    def factory(r: np.random.Generator, inst: PreferenceInstance) -> Mixer:
        mixer = two_layer_mixer_from(r, inst.n_states, inst.n_agents)
        if ctx.mutated("linear_mixer_probed"):
            mixers.append({"inst": inst, "params": "linear"})
            return linear_mixer
        mixers.append({"inst": inst, "params": mixer.params})  # type: ignore[attr-defined]
        return mixer

    sweep = curvature_sweep(rng, n_inst, n_dir, mixer_factory=factory)
    found_L = sweep["L_q"]["max"] > SECOND_DIFF_TOL
    found_J = sweep["J_v"]["min"] < -SECOND_DIFF_TOL
    evidence = {
        "instances": n_inst,
        "directions_per_instance": n_dir,
        "mixer": "|w2| . elu(x |W1| + b1) + b2, hidden width 4, random state-dependent weights",
        "L_in_q_max_second_difference": sweep["L_q"]["max"],
        "J_in_v_min_second_difference": sweep["J_v"]["min"],
        "tolerance": SECOND_DIFF_TOL,
    }
    if not (found_L or found_J):
        return Verdict(
            "refuted",
            f"no non-concavity found in {n_inst} instances x {n_dir} directions",
            evidence=evidence,
            counterexample={"searched_instances": n_inst, "directions": n_dir, "seed": ctx.seed},
            seeds=[ctx.seed],
        )
    key, sign = ("L_q", 1.0) if found_L else ("J_v", -1.0)
    inst, tab, g, d, t, val = sweep[key]["witness"]
    params = next(m["params"] for m in mixers if m["inst"] is inst)
    mixer = _mixer_from_params(params)
    f = preference_objective if key == "L_q" else extreme_v_objective
    recomputed = second_difference(lambda x: f(inst, x, mixer), tab, GROUPS[g], d, t)
    confirmed = sign * recomputed > SECOND_DIFF_TOL
    counterexample = witness_json(sweep[key]["witness"], params)
    counterexample["objective"] = "L (preference, should be concave)" if key == "L_q" else "J (Extreme-V, should be convex)"
    counterexample["recomputed_second_difference"] = recomputed
    saved = save_json(ctx, "omapl_prop4_2_counterexample.json", counterexample)
    objective = "L" if key == "L_q" else "J"
    figures, captions = slice_figure(
        ctx,
        "omapl_prop4_2_slice.png",
        [(f"{'L along q' if key == 'L_q' else 'J along v'}, two-layer mixer", lambda s: f(inst, shifted(tab, GROUPS[g], d, s), mixer), t)],
        f"O-MAPL's {objective} along the witness direction in {'q' if key == 'L_q' else 'v'} with a random two-layer mixer: "
        f"the curve {'falls below' if key == 'L_q' else 'rises above'} its chord, so {objective} is not {'concave' if key == 'L_q' else 'convex'} there.",
    )
    evidence.update(
        {
            "counterexample_file": saved,
            "recomputed_second_difference": recomputed,
            "confirmed": bool(confirmed),
            "paper_counterexample_second_derivative": paper_counterexample_curvature(),
        }
    )
    return Verdict(
        "holds" if confirmed else "refuted",
        f"two-layer mixer: {objective} second difference {recomputed:+.3e} along {'q' if key == 'L_q' else 'v'}",
        evidence=evidence,
        counterexample=counterexample if not confirmed else None,
        figures=figures,
        captions=captions,
        seeds=[ctx.seed],
    )


def paper_counterexample_curvature() -> dict:
    """App. A.2's own counterexample: ``f(t) = exp(1 - e^t) + (e^t - 1)`` "is not convex for t <= 0";
    ``f''`` by sympy, evaluated at ``t = -1`` and ``t -> -inf`` (where it tends to ``1 - e``)."""
    t = sp.symbols("t", real=True)
    f2 = sp.diff(sp.exp(1 - sp.exp(t)) + sp.exp(t) - 1, t, 2)
    return {
        "f_second_derivative": sp.sstr(sp.simplify(f2)),
        "at_t_minus_1": float(f2.subs(t, -1)),
        "limit_t_to_minus_inf_over_exp_t": float(sp.limit(f2 / sp.exp(t), t, -sp.oo)),
    }
