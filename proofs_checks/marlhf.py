"""Checks of the MARLHF paper (Zhang et al., "Multi-Agent Reinforcement Learning from Human
Feedback: Data Coverage and Algorithmic Techniques"), ``papers/marlhf-coverage.md``."""

from __future__ import annotations

import numpy as np
import sympy as sp

from linear_games.constructions import table4_equilibria, table4_games, theorem3_dataset
from theory.coverage import coverage_measures
from theory.preferences import bradley_terry_probability, trajectory_returns
from theory.tolerances import VALUE_ATOL
from theory.values import nash_gap

from .registry import CheckContext, Verdict, check

PAPER = "MARLHF (Zhang et al.)"


def table4_policy(p: float, q: float):
    """The product policy where player a plays a_1 w.p. ``p`` and player b plays b_1 w.p. ``q``."""
    return (np.array([[[p, 1 - p]]]), np.array([[[q, 1 - q]]]))


def table4_gap_sum_symbolic() -> sp.Expr:
    """``Nash-Gap_{M1}(p, q) + Nash-Gap_{M2}(p, q)`` as a sympy expression, simplified.

    With ``u(b, a)`` the row player's payoff, each game is constant-sum, so its Nash gap is
    ``max_b E_a u - min_a E_b u`` at the policy ``(p, q)``.
    """
    p, q = sp.symbols("p q", real=True)
    total = sp.Integer(0)
    for table in table4_games():
        u = sp.Matrix(table.rewards[0, 1, 0].T.tolist()).applyfunc(sp.nsimplify)  # [b, a]
        x_a = sp.Matrix([p, 1 - p])
        y_b = sp.Matrix([q, 1 - q])
        row_payoffs = u * x_a  # each b against the mix of a
        col_payoffs = u.T * y_b  # each a against the mix of b
        total += sp.Max(*row_payoffs) - sp.Min(*col_payoffs)
    return sp.simplify(total)


@check(
    "marlhf.theorem3",
    PAPER,
    "Theorem 3 (Table 4): every product policy is at best a 0.5-Nash equilibrium in one of M1, M2, "
    "which a dataset covering only the equilibria cannot tell apart.",
    "exact",
)
def theorem3(ctx: CheckContext) -> Verdict:
    m1, m2 = table4_games()
    eq1, eq2 = table4_equilibria()
    stated_gaps = [nash_gap(m1, eq1).total, nash_gap(m2, eq2).total]
    symbolic = table4_gap_sum_symbolic()
    n_grid = 41 if ctx.quick else 201
    grid = np.linspace(0.0, 1.0, n_grid)
    rng = np.random.default_rng(ctx.seed)
    points = np.concatenate([np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2), rng.random((200, 2))])
    sums = np.array([nash_gap(m1, table4_policy(p, q)).total + nash_gap(m2, table4_policy(p, q)).total for p, q in points])
    ds = theorem3_dataset(m1, 1, ctx.seed)
    covered = np.array([[0, 0], [1, 1]])
    probs = []
    for g in (m1, m2):
        returns = trajectory_returns(g.rewards, np.zeros((2, 2), dtype=np.int64), covered[:, None, :])
        probs.append(bradley_terry_probability(returns[:, None], returns[None, :]))
    same_data = bool(np.allclose(probs[0], probs[1], atol=0, rtol=0))
    identity = symbolic == 1
    max_dev = float(np.max(np.abs(sums - 1.0)))
    holds = identity and same_data and max(stated_gaps) <= VALUE_ATOL and max_dev <= 1e-12
    return Verdict(
        "holds" if holds else "refuted",
        f"gap_M1 + gap_M2 = {sp.sstr(symbolic)} symbolically; max |sum - 1| = {max_dev:.1e} on {len(points)} policies",
        evidence={
            "symbolic_gap_sum": sp.sstr(symbolic),
            "numeric_policies": int(len(points)),
            "max_abs_deviation_from_1": max_dev,
            "min_max_gap": float(np.min(sums) / 2),
            "stated_equilibria_nash_gaps": stated_gaps,
            "label_distribution_identical_on_covered_pairs": same_data,
            "bt_probabilities_on_covered_pairs": probs[0].tolist(),
            "dataset_pairs_example": int(ds.n_pairs),
        },
        counterexample=None if holds else {"points": points.tolist(), "sums": sums.tolist()},
        seeds=[ctx.seed],
    )


@check(
    "marlhf.bt_bernoulli_exp",
    PAPER,
    "The proof of Theorem 3 draws labels y ~ Ber(exp(r(tau) - r(tau'))).",
    "symbolic",
)
def bt_bernoulli_exp(ctx: CheckContext) -> Verdict:
    x = sp.symbols("x", real=True)
    r, rp = sp.symbols("r r'", real=True)
    main_text = sp.exp(r) / (sp.exp(r) + sp.exp(rp))
    sigmoid_form = 1 / (1 + sp.exp(-(r - rp)))
    agrees = sp.simplify(main_text - sigmoid_form) == 0
    sums_to_one = sp.simplify(sigmoid_form + sigmoid_form.subs({r: rp, rp: r}, simultaneous=True)) == 1
    # Table 4, M1: player b compares (a_1, b_2) with reward 0 against (a_1, b_1) with reward 0.5.
    m1, _ = table4_games()
    gap = float(m1.rewards[0, 1, 0, 0, 0] - m1.rewards[0, 1, 0, 0, 1])
    printed_p = float(np.exp(gap))
    printed_total = sp.simplify(sp.exp(x) + sp.exp(-x))
    is_erratum = printed_p > 1 and agrees and sums_to_one
    return Verdict(
        "erratum" if is_erratum else "holds",
        f"exp({gap:g}) = {printed_p:.4f} > 1 is not a probability; the sigmoid is",
        evidence={
            "reward_difference_in_M1": gap,
            "printed_parameter_exp": printed_p,
            "printed_P(y=1)+P(y=-1)": sp.sstr(printed_total),
            "main_text_equals_sigmoid": bool(agrees),
            "sigmoid_probabilities_sum_to_one": bool(sums_to_one),
        },
        printed="y ~ Ber(exp(r_1(tau) - r_1(tau')))",
        corrected="y ~ Ber(sigma(r_1(tau) - r_1(tau'))) with sigma(x) = 1/(1+exp(-x)), "
        "i.e. exp(r(tau))/(exp(r(tau)) + exp(r(tau'))) as in section 3",
        seeds=[],
    )


def theorem3_single_coverage_limit() -> sp.Expr:
    """``lim_{n -> oo} U_D(pi*)`` for the Theorem 3 dataset, in closed form.

    With one-hot features, ``Sigma_r = I + k (e_1 - e_4)(e_1 - e_4)^T`` (k pairs with different
    joint actions) and ``Sigma_p = I + c_1 e_1 e_1^T + c_4 e_4 e_4^T``; at ``pi* = (a_1, b_1)``
    the transition term ``(1 + c_1)^{-1/2}`` vanishes and the reward term tends to
    ``lim_k sqrt(e_1^T Sigma_r^{-1} e_1)``.
    """
    k = sp.symbols("k", positive=True)
    v = sp.Matrix([1, 0, 0, -1])
    sigma = sp.eye(4) + k * v * v.T
    e1 = sp.Matrix([1, 0, 0, 0])
    quad = sp.simplify((e1.T * sigma.inv() * e1)[0])
    return sp.limit(sp.sqrt(quad), k, sp.oo)


@check(
    "marlhf.theorem3_coverage",
    PAPER,
    "In the proof of Theorem 3, with enough samples the compliant dataset has U_D(pi*) <= C for any constant C > 0.",
    "exact",
)
def theorem3_coverage(ctx: CheckContext) -> Verdict:
    m1, _ = table4_games()
    eq1, _ = table4_equilibria()
    sizes = [10, 100, 1000, 10000] if ctx.quick else [10, 100, 1000, 10000, 100000]
    values = []
    for n in sizes:
        ds = theorem3_dataset(m1, n, ctx.seed)
        values.append(coverage_measures(m1, ds, eq1).single)
    limit = theorem3_single_coverage_limit()
    limit_f = float(limit)
    bounded_away = min(values) > limit_f - 1e-9
    return Verdict(
        "erratum" if bounded_away else "holds",
        f"U_D(pi*) -> {sp.sstr(limit)} = {limit_f:.4f}, not 0: preferences identify rewards only up to a shift",
        evidence={
            "n_pairs": sizes,
            "single_coverage": values,
            "limit_closed_form": sp.sstr(limit),
            "limit": limit_f,
        },
        printed="with enough samples, U_D(pi*) <= C for any constant C > 0",
        corrected=(
            "U_D(pi*) decreases to 1/sqrt(2) (the reward term of the bonus along the direction e_1 + e_4 that "
            "pairwise differences never see); the construction shows single-policy coverage is insufficient "
            "for every C >= 1/sqrt(2), and the conclusion (a 0.5 Nash gap in one of the two games) is unchanged"
        ),
        seeds=[ctx.seed],
    )
