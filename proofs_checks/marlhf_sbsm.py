"""Checks of the MARLHF paper's coverage theorems through pessimistic SBSM (appendix A.2):
Theorem 3 run through the algorithm, and the printed clipping of Algorithms 2-3. Theorem 4 is in
``marlhf_bounds``, the lemmas in ``marlhf_lemmas``."""

from __future__ import annotations

import numpy as np

from marlcov.linear_games.constructions import table4_equilibria, table4_games, theorem3_dataset
from marlcov.linear_games.coverage_datasets import unilateral_dataset
from marlcov.linear_games.estimation import DEFAULT_DELTA
from marlcov.linear_games.sbsm import sbsm
from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.policies import deterministic_policy, uniform_policy
from marlcov.theory.values import nash_gap

from .registry import CheckContext, Source, Verdict, check
from .tolerances import EXACT_ATOL, NASH_GAP_ZERO

PAPER = "MARLHF (Zhang et al.)"


@check(
    "marlhf.theorem3_sbsm",
    PAPER,
    "Theorem 3 through SBSM: on data covering only the equilibria of Table 4, SBSM's output is at best a "
    "0.5-Nash equilibrium in one of M1, M2; adding the unilateral deviations drives its gap to 0.",
    "statistical",
    source=Source(
        "If the dataset only has coverage on the Nash equilibrium policy (i.e. small  $U_{\\mathcal{D}}(\\pi^*)$ ), it is "
        "not sufficient for learning an approximate Nash equilibrium policy.",
        "Theorem 1 (informal), section 4.2, with Theorem 2, section 4.3; Algorithms 2-4, Appendix A.2",
        verbatim=True,
    ),
    mutations={
        "single_data_for_unilateral": "the unilateral runs given the single-policy data only (deviations not added)",
        "equilibrium_evaluated_not_output": "the Nash gap evaluated at the stated equilibrium instead of SBSM's output",
    },
)
def theorem3_sbsm(ctx: CheckContext) -> Verdict:
    ns = (100, 1000) if ctx.quick else (100, 1000, 10000)
    n_single = 500 if ctx.quick else 2000
    games, equilibria = table4_games(), table4_equilibria()
    outputs = [sbsm(g, theorem3_dataset(g, n_single, ctx.seed), clip=False, policy_class="mixed").policy for g in games]
    same_output = all(np.array_equal(a, b) for a, b in zip(*outputs))
    evaluated = equilibria if ctx.mutated("equilibrium_evaluated_not_output") else outputs
    single_gaps = [nash_gap(g, pi).total for g, pi in zip(games, evaluated)]
    unilateral = []
    for g, eq in zip(games, equilibria):
        row = []
        for j, n in enumerate(ns):
            data = theorem3_dataset(g, n, ctx.seed + j)
            if not ctx.mutated("single_data_for_unilateral"):
                data = data + unilateral_dataset(g, eq, n, ctx.seed + 1000 + j).dataset
            row.append(nash_gap(g, sbsm(g, data, clip=False, policy_class="mixed").policy).total)
        unilateral.append(row)
    final = [row[-1] for row in unilateral]
    holds = same_output and max(single_gaps) >= 0.5 - EXACT_ATOL and max(final) <= NASH_GAP_ZERO
    return Verdict(
        "holds" if holds else "refuted",
        f"single-policy data: gaps {single_gaps[0]:.3g} (M1), {single_gaps[1]:.3g} (M2); "
        f"with unilateral data at n={ns[-1]}: {final[0]:.2g}, {final[1]:.2g}",
        evidence={
            "same_output_in_both_games": same_output,
            "single_policy_gaps": single_gaps,
            "unilateral_n": list(ns),
            "unilateral_gaps_M1_M2": unilateral,
            "clip": False,
        },
        counterexample=None if holds else {"single_gaps": single_gaps, "unilateral_gaps": unilateral},
        seeds=[ctx.seed],
    )


@check(
    "marlhf.sbsm_clipping",
    PAPER,
    "Algorithms 2-4 as printed (C_r and C_P by their formulas, Q clipped at 0 and H) output an approximate "
    "Nash equilibrium under unilateral coverage.",
    "exact",
    source=Source(
        "\\underline{Q}_{h,i}^\\pi(\\cdot, \\cdot) = \\max\\{\\langle \\psi(\\cdot, \\cdot), w_{h,i} \\rangle - C_{\\mathbb{P}}[\\psi(\\cdot, \\cdot)^\\top [\\Sigma_{\\mathcal{D},h}^\\mathbb{P}]^{-1} \\psi(\\cdot, \\cdot)]^{1/2}, 0\\}",
        "Algorithm 2, line 5 (and Algorithm 3, line 5), Appendix A.2",
        verbatim=True,
    ),
    mutations={"radius_without_d": "C_r read as C sqrt((dH + log(1/delta))/(lambda^2 n)), without the '+ d' under the root"},
)
def sbsm_clipping(ctx: CheckContext) -> Verdict:
    m1, _ = table4_games()
    eq1, _ = table4_equilibria()
    n = 2000 if ctx.quick else 20000
    data = theorem3_dataset(m1, n, ctx.seed) + unilateral_dataset(m1, eq1, n, ctx.seed + 1).dataset
    candidates = [deterministic_policy(m1, [np.full((1, 1), a), np.full((1, 1), b)]) for a in (0, 1) for b in (0, 1)]
    candidates.append(uniform_policy(m1))
    d, H = m1.features.shape[-1], m1.horizon
    c_r = None
    if ctx.mutated("radius_without_d"):
        c_r = float(np.sqrt((d * H + np.log(1.0 / DEFAULT_DELTA)) / (DEFAULT_LAMBDA**2 * data.n_pairs)))
    printed = [sbsm(m1, data, clip=True, c_r=c_r, policy_class=[pi]).surrogate for pi in candidates]
    unclipped = [sbsm(m1, data, clip=False, policy_class=[pi]).surrogate for pi in candidates]
    m, H = m1.n_players, m1.horizon
    constant_surrogate = float(np.ptp(printed)) <= EXACT_ATOL
    out_unclipped = sbsm(m1, data, clip=False, policy_class="mixed")
    gap_unclipped = nash_gap(m1, out_unclipped.policy).total
    erratum = constant_surrogate and abs(printed[0] - m * H) <= EXACT_ATOL and gap_unclipped <= NASH_GAP_ZERO
    return Verdict(
        "erratum" if erratum else "holds",
        f"as printed: surrogate in [{min(printed):.3g}, {max(printed):.3g}] over {len(printed)} policies (mH = {m * H}); "
        f"unclipped: output gap {gap_unclipped:.2g}",
        evidence={
            "n_pairs": 2 * n,
            "candidate_policies": ["(a1,b1)", "(a1,b2)", "(a2,b1)", "(a2,b2)", "uniform"],
            "surrogate_as_printed": printed,
            "surrogate_without_clipping": unclipped,
            "nash_gap_of_unclipped_output": gap_unclipped,
            "m_times_H": m * H,
        },
        printed="Q_under = max{<psi, w> - C_P ||psi||, 0}, Q_bar = min{<psi, w> + beta ||psi||, H}, with "
        "r_under/r_bar from the radius C_r = C sqrt((dH + log(1/delta))/(lambda^2 n) + d)",
        corrected="preferences never identify the reward's constant offset, so ||psibar||_{Sigma_r^-1} stays >= "
        "1/sqrt(d lambda) along it while C_r >= sqrt(d): every pessimistic Q clips to 0 and every optimistic Q to H, "
        "the surrogate is the constant mH and the output is arbitrary. Without the clipping (marlcov sbsm --no-clip) "
        "the surrogate separates policies and SBSM's output is an equilibrium",
        seeds=[ctx.seed, ctx.seed + 1],
    )
