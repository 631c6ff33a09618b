"""The identifiable certificate against n: soundness over random games, non-vacuity under
unilateral data, and the separation from single-policy data that the paper's measure cannot show.

One run (``certificate_run``): a game and an exact equilibrium ``pi*`` (``sbsm_experiments.theorem4_instance``),
unilateral or single-policy data of ``n`` pairs around it (``sbsm_experiments.coverage_data``), SBSM on the
identifiable reward set (one-step two-player games: the exact mixed minimiser), and

- ``nash_gap``: the true gap of the output; ``certificate``: ``cert`` of the output (``certificate``);
- ``paper_bound``: Theorem 4 as printed, ``4 max_i max_{pi_i} E[sum_h C_P ||psi||_{Sigma_p^-1} + C_r ||psibar||_{Sigma_r^-1}]``
  at ``pi*``, with the paper's ``C_r`` and ``C_P`` (constant 1) on the same data;
- reward-term unilateral coverage around ``pi*``: the paper's (``||psibar||_{Sigma_r^-1}``) and the
  identifiable one (``||psibar - cbar||_{Sigma_r^-1}``, ``c`` = ``pi*``'s mean feature);
- two floors that no data of this kind can go below, both exact: the paper's, from the offset
  directions (``||P_perp psi||^2 / lambda``, ``V^perp`` the complement of the identifiable subspace), and
  the identifiable one of this dataset, from the directions its pairs never compare
  (``||P z||^2 / lambda``, ``P`` the projection off the row space of ``D``): ``Sigma_r = lambda I`` on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from marlcov.theory.atomic import save_figure
from marlcov.theory.coverage import (
    game_features,
    measures_from_bonus,
    pair_differences,
    reward_widths,
    step_table,
    transition_grams,
    transition_widths,
)
from marlcov.theory.identifiable import identifiable_basis, policy_reference
from marlcov.theory.tolerances import RANK_RTOL
from marlcov.theory.values import best_response, nash_gap

from .certificate import nash_gap_certificate
from .estimation import DEFAULT_DELTA, confidence_radius
from .sbsm import sbsm
from .sbsm_experiments import coverage_data, theorem4_instance
from .sbsm_regression import transition_bonus_scale


@dataclass(frozen=True)
class CertificateRow:
    """One run (module docstring)."""

    family: str
    coverage: str
    n: int
    seed: int
    nash_gap: float
    certificate: float
    paper_bound: float
    paper_unilateral: float
    identifiable_unilateral: float
    paper_floor: float
    identifiable_floor: float
    horizon_bound: float

    @property
    def sound(self) -> bool:
        return self.nash_gap <= self.certificate


def _projected_widths(features: np.ndarray, complement: np.ndarray, lam: float, reference=None) -> np.ndarray:
    """``||P (psi_h(s, a) - c_h)|| / sqrt(lambda)`` with ``P`` the projection on the span of ``complement[Hd, k]``."""
    H, d = features.shape[0], features.shape[-1]
    out = np.empty(features.shape[:-1])
    for h in range(H):
        block = complement[h * d : (h + 1) * d]
        z = step_table(features, h) - (0.0 if reference is None else reference[h])
        out[h] = np.linalg.norm(z @ block, axis=1).reshape(features.shape[1:-1]) / np.sqrt(lam)
    return out


def _orthogonal_complement(basis: np.ndarray, dim: int) -> np.ndarray:
    if basis.shape[1] == 0:
        return np.eye(dim)
    q, _ = np.linalg.qr(basis, mode="complete")
    return q[:, basis.shape[1] :]


def _row_space(rows: np.ndarray) -> np.ndarray:
    if rows.size == 0:
        return np.zeros((rows.shape[1], 0))
    _, sing, vt = np.linalg.svd(rows, full_matrices=False)
    return vt[: int(np.sum(sing > RANK_RTOL * sing[0]))].T if sing[0] > 0 else np.zeros((rows.shape[1], 0))


def certificate_run(
    family: str,
    coverage: str,
    n: int,
    seed: int,
    delta: float = DEFAULT_DELTA,
    lam: float = 1.0,
    point_estimate: bool = False,
    paper_reference: bool = False,
) -> CertificateRow:
    """One run (module docstring). ``point_estimate`` (radius 0) and ``paper_reference`` (reference
    point 0, i.e. the paper's widths inside the certificate) are the check's planted mutations."""
    game, eq = theorem4_instance(family, seed)
    data = coverage_data(family, coverage, game, eq, n, 7919 * seed + 31 * n + (coverage == "single"))
    result = sbsm(game, data, delta=delta, lam=lam, policy_class="mixed", clip=False, reward_set="identifiable")
    conf = result.confidence
    features = game_features(game)
    H, d = features.shape[0], features.shape[-1]
    s1 = game.initial_state
    if point_estimate or paper_reference:
        terms = conf.terms
        if point_estimate:
            terms = type(terms)(
                **{
                    **{f: getattr(terms, f) for f in terms.__dataclass_fields__},
                    "noise": 0.0,
                    "bias": 0.0,
                    "residual": np.zeros_like(terms.residual),
                }
            )
        width = reward_widths(features, conf.gram) if paper_reference else conf.width
        conf = type(conf)(conf.theta_hat, conf.reference, terms, width, conf.r_hat, conf.gram)
    cert = nash_gap_certificate(game, conf, result.policy).value
    paper_w = reward_widths(features, conf.gram)
    trans_w = transition_widths(features, transition_grams(features, data, lam))
    bonus = transition_bonus_scale(d, H, data.n_pairs, delta) * trans_w + confidence_radius(d, H, data.n_pairs, delta, lam) * paper_w
    printed = 4.0 * max(best_response(game.transitions, bonus, eq, i).values[0, s1] for i in range(game.n_players))
    c = policy_reference(game, eq)
    ident_w = reward_widths(features, conf.gram, c)
    offsets = _orthogonal_complement(identifiable_basis(features), H * d)
    unseen = _orthogonal_complement(_row_space(pair_differences(features, data)), H * d)
    return CertificateRow(
        family,
        coverage,
        int(n),
        int(seed),
        nash_gap(game, result.policy).total,
        cert,
        float(printed),
        measures_from_bonus(game, paper_w, eq).unilateral,
        measures_from_bonus(game, ident_w, eq).unilateral,
        measures_from_bonus(game, _projected_widths(features, offsets, lam), eq).unilateral,
        measures_from_bonus(game, _projected_widths(features, unseen, lam, c), eq).unilateral,
        float(game.n_players * game.horizon),
    )


def certificate_experiment(
    ns: Sequence[int],
    seeds: Sequence[int],
    families: Sequence[str] = ("random", "table4"),
    coverages: Sequence[str] = ("unilateral", "single"),
    **kwargs,
) -> list[CertificateRow]:
    """``certificate_run`` over every family, coverage, ``n`` and seed."""
    return [certificate_run(f, c, n, s, **kwargs) for f in families for c in coverages for n in ns for s in seeds]


def log_log_slope(ns: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of ``log values`` against ``log n``."""
    return float(np.polyfit(np.log(np.asarray(ns, float)), np.log(np.asarray(values, float)), 1)[0])


def medians(rows: Sequence[CertificateRow], family: str, coverage: str, field: str, ns: Sequence[int]) -> list[float]:
    return [float(np.median(_values(rows, family, coverage, field, n))) for n in ns]


def means(rows: Sequence[CertificateRow], family: str, coverage: str, field: str, ns: Sequence[int]) -> list[float]:
    return [float(np.mean(_values(rows, family, coverage, field, n))) for n in ns]


def _values(rows, family, coverage, field, n) -> list[float]:
    return [getattr(r, field) for r in rows if (r.family, r.coverage, r.n) == (family, coverage, n)]


#: Where a mean of 0 is drawn on the log axis of ``certificate_figure``.
FIGURE_FLOOR = 1e-4


def certificate_figure(path: str | Path, rows: Sequence[CertificateRow], ns: Sequence[int]) -> Path:
    """Against ``n`` (log-log), one panel per family: the printed Theorem 4 bound, the certificate and the
    true gap (means over seeds) for unilateral and single-policy data, with ``mH``. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({r.family for r in rows})
    colours = {"unilateral": "tab:blue", "single": "tab:red"}
    styles = (
        ("paper_bound", "--", "Theorem 4 bound (printed)"),
        ("certificate", "-", "certificate"),
        ("nash_gap", ":", "true Nash gap of the output"),
    )
    fig, axes = plt.subplots(1, len(families), figsize=(5.6 * len(families), 4.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        for coverage, colour in colours.items():
            for field, style, label in styles:
                ys = np.maximum(means(rows, family, coverage, field, ns), FIGURE_FLOOR)
                ax.plot(ns, ys, linestyle=style, color=colour, marker="o", markersize=3, label=f"{coverage} data: {label}")
        mh = next(r.horizon_bound for r in rows if r.family == family)
        ax.axhline(mh, color="grey", linewidth=0.8)
        ax.annotate("mH", (ns[0], mh), textcoords="offset points", xytext=(2, 3), fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(FIGURE_FLOOR / 2, None)
        ax.set_xlabel("preference pairs n")
        ax.set_ylabel(f"mean over seeds (0 drawn at {FIGURE_FLOOR:g})")
        ax.set_title("random linear games" if family == "random" else "Table 4 (M1, M2)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    path = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def rows_json(rows: Sequence[CertificateRow]) -> list[dict]:
    return [asdict(r) for r in rows]
