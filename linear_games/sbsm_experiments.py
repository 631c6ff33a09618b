"""Experiments that make the coverage theorems of the MARLHF paper visible (appendix A).

Plain functions returning numbers and dataclasses, for ``proofs_checks`` to call:

- ``table4_experiment``: Theorem 3 / Table 4. On the single-policy data of the proof SBSM sees the
  same data in both games, so its output is the same policy, whose Nash gaps sum to 1: it is at
  best 0.5-Nash in one of them. Adding unilateral deviations lets SBSM find the equilibrium.
- ``theorem4_experiment`` / ``theorem4_figure``: random two-player linear Markov games; the true
  Nash gap of SBSM's output against Theorem 4's bound, under unilateral and single-policy data.
- ``lemma_checks``: how often Lemma 1 (``r_under <= r <= r_bar``), Lemma 2 (pessimism, optimism)
  and Lemma 3 (the value-error bounds) hold across seeds.

Printed constants (``C = 1``, clipping) make the surrogate constant in one-step games: with
features whose span holds the constant function (one-hot, simplex), ``||psibar_h||_{Sigma_r^-1}``
stays >= ``1 / sqrt(d lambda)`` along the unidentified reward offset, so ``C_r ||psibar||`` >= 1,
Algorithm 2's ``Q_under`` clips to 0 and Algorithm 3's ``Q_bar`` to ``H``. The experiments
therefore take ``clip`` and ``constant`` as arguments and report which was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marlcov.theory.coverage import coverage_measures
from marlcov.theory.games import GameError, MarkovGame, random_linear_markov_game
from marlcov.theory.policies import Policy, random_policy, replace_player, uniform_policy
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import best_response, evaluate_policy, nash_gap

from .constructions import table4_equilibria, table4_games, theorem3_dataset
from .coverage_datasets import single_policy_dataset, uniform_dataset, unilateral_dataset
from .estimation import DEFAULT_DELTA
from .sbsm import (
    SBSMResult,
    Theorem4Bound,
    bimatrix_equilibrium,
    optimistic_best_responses,
    pessimistic_values,
    sbsm,
    theorem4_bound,
)

#: Slack on "value <= bound" comparisons of the experiments (float rounding of the DP).
BOUND_ATOL = VALUE_ATOL


def two_player_markov_equilibrium(game: MarkovGame) -> Policy:
    """A Markov perfect equilibrium of a two-player game by backward induction.

    At each ``(h, s)`` the stage game ``Q_i = R_{h,i}(s) + P_h(s) V_{h+1,i}`` is solved exactly
    (``bimatrix_equilibrium``); a Markov policy that is an equilibrium of every stage game is a
    Nash equilibrium of the Markov game.
    """
    if game.n_players != 2:
        raise GameError(f"game: expected two players, got {game.n_players}")
    H, S = game.horizon, game.n_states
    A0, A1 = game.action_sizes
    x = np.empty((H, S, A0))
    y = np.empty((H, S, A1))
    V = np.zeros((H + 1, 2, S))
    for h in range(H - 1, -1, -1):
        Q = game.rewards[h] + np.einsum("sabt,it->isab", game.transitions[h], V[h + 1])
        for s in range(S):
            x[h, s], y[h, s] = bimatrix_equilibrium(Q[0, s], Q[1, s])
            V[h, :, s] = np.einsum("a,iab,b->i", x[h, s], Q[:, s], y[h, s])
    return (x, y)


# --- Theorem 3 / Table 4 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Table4Outcome:
    """Theorem 3 on Table 4.

    Attributes:
        same_output: SBSM's output on the single-policy data is the same policy in M1 and M2.
        single_gaps: its true Nash gaps ``[gap in M1, gap in M2]``.
        single_max_gap: ``max`` of those (Theorem 3: >= 0.5).
        unilateral_ns: dataset sizes of the unilateral runs.
        unilateral_gaps: ``[game, n]`` true Nash gap of SBSM's output in M_k on M_k's data
            (Theorem 3's pairs plus pairs over ``pi*_k`` and its unilateral deviations).
        clip, constant: the SBSM settings.
    """

    same_output: bool
    single_gaps: list[float]
    single_max_gap: float
    unilateral_ns: list[int]
    unilateral_gaps: list[list[float]]
    clip: bool
    constant: float


def table4_experiment(n_pairs: int = 2000, unilateral_ns: Sequence[int] = (100, 1000, 10000), seed: int = 0,
                      clip: bool = False, constant: float = 1.0, policy_class: str = "mixed", **sbsm_kwargs) -> Table4Outcome:
    """SBSM on Table 4 with single-policy data, then with the unilateral deviations added."""
    games = table4_games()
    equilibria = table4_equilibria()
    kw = dict(clip=clip, constant=constant, policy_class=policy_class, **sbsm_kwargs)
    outputs = [sbsm(g, theorem3_dataset(g, n_pairs, seed), **kw).policy for g in games]
    same = all(np.array_equal(a, b) for a, b in zip(outputs[0], outputs[1]))
    single_gaps = [nash_gap(g, outputs[k]).total for k, g in enumerate(games)]
    uni = []
    for k, (g, eq) in enumerate(zip(games, equilibria)):
        row = []
        for j, n in enumerate(unilateral_ns):
            data = theorem3_dataset(g, n, seed + j) + unilateral_dataset(g, eq, n, seed + 1000 + j).dataset
            row.append(nash_gap(g, sbsm(g, data, **kw).policy).total)
        uni.append(row)
    return Table4Outcome(same, single_gaps, float(max(single_gaps)), list(unilateral_ns), uni, clip, constant)


# --- Theorem 4 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Theorem4Row:
    """One SBSM run on a random game.

    Attributes:
        coverage: ``"unilateral"`` or ``"single"``.
        n: pairs in the dataset.
        seed: the game and data seed.
        nash_gap: the true Nash gap of SBSM's output.
        bound: Theorem 4's bound as printed; ``bound_summed``: the proof's sum over players.
        theta_in_set: the true ``theta_i`` lies in ``Theta`` for every player.
        lemma2_at_output: pessimism at ``pi_out`` and optimism at ``pi_out,-i`` (what Lemma 4 uses).
        surrogate, surrogate_at_equilibrium: the surrogate at the output and at ``pi*``.
        exact: SBSM's minimum is certified.
        coverage_unilateral, coverage_single: Definition 1's measures of the data around ``pi*``.
    """

    coverage: str
    n: int
    seed: int
    nash_gap: float
    bound: float
    bound_summed: float
    theta_in_set: bool
    lemma2_at_output: bool
    surrogate: float
    surrogate_at_equilibrium: float
    exact: bool
    coverage_unilateral: float
    coverage_single: float

    @property
    def within_bound(self) -> bool:
        return self.nash_gap <= self.bound + BOUND_ATOL


@dataclass(frozen=True)
class Theorem4Summary:
    """Aggregates of ``theorem4_experiment``.

    Attributes:
        in_set_fraction: fraction of runs with the true ``theta`` in the confidence set.
        within_bound_given_in_set: fraction of those runs with ``gap <= printed bound``.
        median_gap: ``{coverage: [median gap at each n]}``.
        mean_gap: ``{coverage: [mean gap at each n]}``.
        ns: the dataset sizes.
    """

    in_set_fraction: float
    within_bound_given_in_set: float
    median_gap: dict[str, list[float]]
    mean_gap: dict[str, list[float]]
    ns: list[int]
    rows: list[Theorem4Row] = field(repr=False)


@dataclass(frozen=True)
class SBSMRun:
    """SBSM's output on a known game with what Theorem 4's proof needs checked.

    Attributes:
        result: the SBSM result.
        nash_gap: its true Nash gap.
        bound: Theorem 4's bound at ``equilibrium``.
        theta_in_set: every player's true ``theta`` lies in the confidence set.
        lemma2_at_output: ``V_under^{pi_out} <= V^{pi_out}`` and ``V_bar^{dagger, pi_out,-i} >=
            V^{dagger, pi_out,-i}`` at every (h, i, s): the event under which Lemma 4 applies.
        surrogate_at_equilibrium: the surrogate at ``pi*`` (the minimum is at most this).
    """

    result: SBSMResult
    nash_gap: float
    bound: Theorem4Bound
    theta_in_set: bool
    lemma2_at_output: bool
    surrogate_at_equilibrium: float


def lemma2_holds(game: MarkovGame, result: SBSMResult, policy: Policy, tol: float = BOUND_ATOL) -> tuple[bool, bool]:
    """(pessimism, optimism) of Lemma 2 at ``policy``: ``V_under <= V^pi`` and ``V_bar^dagger >= V^dagger``
    at every (h, i, s), with the true values computed exactly on ``game``."""
    obj = result.objective
    low = pessimistic_values(obj.model, obj.weights_under, policy, obj.c_p, obj.clip).V
    high = optimistic_best_responses(obj.model, obj.weights_bar, policy, obj.c_p, obj.clip).V
    true_v = evaluate_policy(game.transitions, game.rewards, policy).V
    true_br = np.stack([best_response(game.transitions, game.rewards[:, i], policy, i).values
                        for i in range(game.n_players)], axis=1)
    return bool(np.all(low <= true_v + tol)), bool(np.all(high >= true_br - tol))


def sbsm_run(game: MarkovGame, dataset, equilibrium: Policy, **sbsm_kwargs) -> SBSMRun:
    """Run SBSM on ``dataset`` and evaluate its output on ``game`` against the equilibrium ``pi*``."""
    result = sbsm(game, dataset, **sbsm_kwargs)
    if game.theta is None:
        raise GameError("game: expected a linear game with theta (to test the confidence set)")
    in_set = bool(np.all(result.confidence.contains(game.theta)))
    pess, opt = lemma2_holds(game, result, result.policy)
    return SBSMRun(result, nash_gap(game, result.policy).total, theorem4_bound(game, result, equilibrium),
                   in_set, pess and opt, result.objective(equilibrium))


def theorem4_instance(family: str, seed: int, n_states: int = 1, action_sizes: Sequence[int] = (3, 3),
                      horizon: int = 1, dim: int = 4) -> tuple[MarkovGame, Policy]:
    """A game and an exact equilibrium of it.

    ``family="random"``: a random two-player linear Markov game (``theory.games``) and its Markov
    perfect equilibrium. ``family="table4"``: M1 or M2 of Table 4 (by the parity of ``seed``) and
    its stated equilibrium: the pair that single-policy data cannot tell apart (Theorem 3).
    """
    if family == "random":
        game = random_linear_markov_game(n_states, action_sizes, horizon, dim, seed=seed)
        return game, two_player_markov_equilibrium(game)
    if family == "table4":
        return table4_games()[seed % 2], table4_equilibria()[seed % 2]
    raise ValueError(f"family: expected 'random' or 'table4', got {family!r}")


def coverage_data(family: str, coverage: str, game: MarkovGame, equilibrium: Policy, n: int, seed: int):
    """Single-policy or unilateral data around ``equilibrium``.

    For ``family="table4"`` single-policy data is the compliant dataset of Theorem 3's proof, and
    unilateral data adds pairs over ``pi*`` and its unilateral deviations to it.
    """
    if coverage not in ("unilateral", "single"):
        raise ValueError(f"coverage: expected 'unilateral' or 'single', got {coverage!r}")
    if family == "table4":
        data = theorem3_dataset(game, n, seed)
        return data + unilateral_dataset(game, equilibrium, n, seed + 1).dataset if coverage == "unilateral" else data
    if coverage == "unilateral":
        return unilateral_dataset(game, equilibrium, n, seed).dataset
    return single_policy_dataset(game, equilibrium, n, seed).dataset


def theorem4_experiment(
    ns: Sequence[int] = (100, 1000, 10_000, 100_000),
    seeds: Sequence[int] = tuple(range(6)),
    coverages: Sequence[str] = ("unilateral", "single"),
    family: str = "random",
    n_states: int = 1,
    action_sizes: Sequence[int] = (3, 3),
    horizon: int = 1,
    dim: int = 4,
    clip: bool = False,
    constant: float = 1.0,
    policy_class: str = "mixed",
    delta: float = DEFAULT_DELTA,
    **sbsm_kwargs,
) -> Theorem4Summary:
    """Theorem 4: the true Nash gap of SBSM's output against the bound, per coverage and ``n``.

    One game per seed (``theorem4_instance``); for each coverage and ``n`` a fresh dataset
    (``coverage_data``), SBSM with the given settings, and the checks of ``sbsm_run``.
    """
    rows = []
    for seed in seeds:
        game, eq = theorem4_instance(family, seed, n_states, action_sizes, horizon, dim)
        for coverage in coverages:
            for j, n in enumerate(ns):
                data_seed = 7919 * seed + 104729 * j + (1 if coverage == "single" else 0)
                data = coverage_data(family, coverage, game, eq, n, data_seed)
                run = sbsm_run(game, data, eq, delta=delta, clip=clip, constant=constant,
                               policy_class=policy_class, seed=seed, **sbsm_kwargs)
                cov = coverage_measures(game, data, eq, run.result.lam)
                rows.append(Theorem4Row(
                    coverage, int(n), int(seed), run.nash_gap, run.bound.printed, run.bound.summed,
                    run.theta_in_set, run.lemma2_at_output, run.result.surrogate, run.surrogate_at_equilibrium,
                    run.result.exact, cov.unilateral, cov.single,
                ))
    return summarise_theorem4(rows, list(ns))


def summarise_theorem4(rows: Sequence[Theorem4Row], ns: Sequence[int]) -> Theorem4Summary:
    """Fractions and per-``n`` medians / means of a list of runs."""
    in_set = [r for r in rows if r.theta_in_set]
    within = float(np.mean([r.within_bound for r in in_set])) if in_set else float("nan")
    medians, means = {}, {}
    for coverage in sorted({r.coverage for r in rows}):
        gaps = [[r.nash_gap for r in rows if r.coverage == coverage and r.n == n] for n in ns]
        medians[coverage] = [float(np.median(g)) if g else float("nan") for g in gaps]
        means[coverage] = [float(np.mean(g)) if g else float("nan") for g in gaps]
    frac = float(np.mean([r.theta_in_set for r in rows])) if rows else float("nan")
    return Theorem4Summary(frac, within, medians, means, list(ns), list(rows))


def theorem4_figure(path: str | Path, families: Sequence[str] = ("random", "table4"),
                    summaries: dict[str, Theorem4Summary] | None = None, **experiment_kwargs) -> Path:
    """Nash gap of SBSM's output vs ``n`` under unilateral and single-policy coverage, one panel per
    game family: one faint line per seed, medians bold, the median printed bound dashed. Runs
    ``theorem4_experiment(family=..., **experiment_kwargs)`` for each family unless ``summaries``
    gives them. Written as PNG (matplotlib Agg); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = dict(summaries or {})
    for family in families:
        if family not in summaries:
            summaries[family] = theorem4_experiment(family=family, **experiment_kwargs)
    colours = {"unilateral": "tab:blue", "single": "tab:red"}
    fig, axes = plt.subplots(1, len(families), figsize=(5.6 * len(families), 4.2), squeeze=False)
    for ax, family in zip(axes[0], families):
        summary = summaries[family]
        ns = summary.ns
        for coverage, medians in summary.median_gap.items():
            colour = colours.get(coverage, "tab:gray")
            for seed in sorted({r.seed for r in summary.rows}):
                gaps = [next((r.nash_gap for r in summary.rows
                              if r.coverage == coverage and r.n == n and r.seed == seed), np.nan) for n in ns]
                ax.plot(ns, gaps, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(ns, summary.mean_gap[coverage], color=colour, linewidth=2.2, marker="o",
                    label=f"{coverage}: mean gap")
            bounds = [float(np.median([r.bound for r in summary.rows if r.coverage == coverage and r.n == n]))
                      for n in ns]
            ax.plot(ns, bounds, color=colour, linestyle="--", linewidth=1.2, label=f"{coverage}: Theorem 4 bound")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0.0)
        ax.set_xlabel("preference pairs n")
        ax.set_ylabel("true Nash gap of the SBSM output")
        ax.set_title(f"{family} games")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- Lemmas 1-3 -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LemmaFrequencies:
    """How often Lemmas 1-3 hold across seeds (one random game and dataset per seed).

    Attributes:
        n_seeds, n_pairs, delta, clip, constant: the settings.
        theta_in_set: fraction of seeds with every player's true ``theta`` in ``Theta`` (Lemma 5).
        lemma1: fraction with ``r_under <= r <= r_bar`` at every (h, i, s, a).
        lemma1_width: fraction with ``r - 2 C_r w <= r_under`` and ``r_bar <= r + 2 C_r w`` everywhere.
        lemma2_pessimism: fraction of (seed, policy) with ``V_under^pi <= V^pi`` at every (h, i, s).
        lemma2_optimism: fraction of (seed, policy) with ``V_bar^{dagger} >= V^{dagger}`` everywhere.
        lemma3: fraction of (seed, policy, player) with both value-error bounds of Lemma 3 at ``s_1``.
        target: ``1 - delta``.
    """

    n_seeds: int
    n_pairs: int
    delta: float
    clip: bool
    constant: float
    theta_in_set: float
    lemma1: float
    lemma1_width: float
    lemma2_pessimism: float
    lemma2_optimism: float
    lemma3: float

    @property
    def target(self) -> float:
        return 1.0 - self.delta


def lemma_checks(n_seeds: int = 20, n_pairs: int = 500, delta: float = DEFAULT_DELTA, n_policies: int = 5,
                 n_states: int = 2, action_sizes: Sequence[int] = (2, 2), horizon: int = 2, dim: int = 4,
                 clip: bool = True, constant: float = 1.0, mle: str = "constrained", seed: int = 0) -> LemmaFrequencies:
    """Lemmas 1-3 across seeds on random linear Markov games with uniform-policy data.

    The policies tested are the uniform one and ``n_policies`` random ones per seed; the true
    values come from exact dynamic programming on the game.
    """
    tol = BOUND_ATOL
    counts = dict(in_set=0, l1=0, l1w=0, pess=0, opt=0, l3=0)
    n_pol_total = n_l3_total = 0
    for k in range(n_seeds):
        rng = np.random.default_rng([seed, k])
        game = random_linear_markov_game(n_states, action_sizes, horizon, dim, seed=rng)
        data = uniform_dataset(game, uniform_policy(game), n_pairs, rng).dataset
        # A fixed uniform policy class: SBSM's search is irrelevant here, only its estimates are used.
        result = sbsm(game, data, delta=delta, clip=clip, constant=constant, mle=mle,
                      policy_class=[uniform_policy(game)])
        conf = result.confidence
        r = game.rewards
        counts["in_set"] += bool(np.all(conf.contains(game.theta)))
        counts["l1"] += bool(np.all(conf.r_under <= r + tol) and np.all(r <= conf.r_bar + tol))
        two_w = 2.0 * conf.radius * conf.width[:, None]
        counts["l1w"] += bool(np.all(r - two_w <= conf.r_under + tol) and np.all(conf.r_bar <= r + two_w + tol))
        bonus2 = 2.0 * result.bonus()
        s1 = game.initial_state
        for policy in [uniform_policy(game)] + [random_policy(game, rng) for _ in range(n_policies)]:
            pess, opt = lemma2_holds(game, result, policy)
            counts["pess"] += pess
            counts["opt"] += opt
            n_pol_total += 1
            obj = result.objective
            low = pessimistic_values(obj.model, obj.weights_under, policy, obj.c_p, obj.clip).V[0, :, s1]
            high = optimistic_best_responses(obj.model, obj.weights_bar, policy, obj.c_p, obj.clip).V[0, :, s1]
            true_v = evaluate_policy(game.transitions, game.rewards, policy).V[0, :, s1]
            rhs_pi = evaluate_policy(game.transitions, bonus2[:, None], policy).V[0, 0, s1]
            for i in range(game.n_players):
                br = best_response(game.transitions, game.rewards[:, i], policy, i)
                rhs_br = evaluate_policy(game.transitions, bonus2[:, None],
                                         replace_player(policy, i, br.policy)).V[0, 0, s1]
                counts["l3"] += bool(true_v[i] - low[i] <= rhs_pi + tol and high[i] - br.values[0, s1] <= rhs_br + tol)
                n_l3_total += 1
    f = lambda key, total: counts[key] / total
    return LemmaFrequencies(n_seeds, n_pairs, delta, clip, constant, f("in_set", n_seeds), f("l1", n_seeds),
                            f("l1w", n_seeds), f("pess", n_pol_total), f("opt", n_pol_total), f("l3", n_l3_total))
