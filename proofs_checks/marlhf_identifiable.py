"""Identifiable coverage and the certified Nash-gap bound of SBSM's output, as one check.

The paper's coverage (Definition 1) and Theorem 4's bound keep a floor that no data removes: the
reward offset of every step is never seen by preferences. The check runs the certificate of
``linear_games.certificate`` (identifiable confidence set, radius proved with every constant stated)
through ``linear_games.certificate_experiments`` and reports soundness, non-vacuity and the
separation of unilateral from single-policy data, with a figure against n.
"""

from __future__ import annotations

import numpy as np

from marlcov.linear_games.certificate_experiments import (
    certificate_experiment,
    certificate_figure,
    log_log_slope,
    medians,
    rows_json,
)
from marlcov.theory.tolerances import VALUE_ATOL

from .registry import CheckContext, Source, Verdict, check
from .tolerances import COVERAGE_SLOPE_SLACK, PAPER_FLOOR_FACTOR

PAPER = "MARLHF (Zhang et al.)"

#: The failure probability of the certificate's confidence set in this check.
DELTA = 0.1


@check(
    "marlhf.identifiable_certificate",
    PAPER,
    "Built on identifiable coverage, a certified bound on the Nash gap of SBSM's output holds with probability "
    ">= 1 - delta, falls below mH under unilateral data while the paper's measure stays at its floor, and stays "
    "bounded away from 0 on Theorem 3's single-policy data.",
    "statistical",
    source=Source(
        "If the dataset has unilateral coverage on the Nash equilibrium policy, there exists an algorithm that can output an approximate Nash equilibrium policy.",
        "Theorem 2 (informal), section 4.3; Definition 1, section 4.1; Theorem 4, Appendix A.2",
        verbatim=True,
    ),
    mutations={
        "point_estimate": "certify with radius 0: the point estimate's own gap, no confidence set",
        "paper_reference": "certify with the paper's widths ||psibar||_{Sigma_r^-1} instead of the identifiable ones",
    },
)
def identifiable_certificate(ctx: CheckContext) -> Verdict:
    ns = (100, 1000, 10_000) if ctx.quick else (100, 1000, 10_000, 100_000)
    seeds = [ctx.seed + k for k in range(6 if ctx.quick else 20)]
    rows = certificate_experiment(
        ns, seeds, delta=DELTA, point_estimate=ctx.mutated("point_estimate"), paper_reference=ctx.mutated("paper_reference")
    )
    sound = float(np.mean([r.sound for r in rows]))
    failures = []
    if sound < 1 - DELTA:
        failures.append(f"certificate below the true gap in {1 - sound:.0%} of runs")
    evidence = {"delta": DELTA, "n": list(ns), "seeds": seeds, "sound_fraction": sound}
    for family in ("random", "table4"):
        cert = medians(rows, family, "unilateral", "certificate", ns)
        ident = medians(rows, family, "unilateral", "identifiable_unilateral", ns)
        paper = [r for r in rows if (r.family, r.coverage) == (family, "unilateral")]
        mh = paper[0].horizon_bound
        slope = log_log_slope(ns, ident)
        at_floor = all(r.paper_unilateral >= r.paper_floor - VALUE_ATOL for r in paper) and all(
            r.paper_unilateral <= PAPER_FLOOR_FACTOR * r.paper_floor for r in paper if r.n == ns[-1]
        )
        evidence[family] = {
            "unilateral_certificate_median": cert,
            "unilateral_identifiable_coverage_median": ident,
            "identifiable_slope": slope,
            "unilateral_paper_coverage_median": medians(rows, family, "unilateral", "paper_unilateral", ns),
            "paper_floor": medians(rows, family, "unilateral", "paper_floor", ns),
            "printed_bound_median": medians(rows, family, "unilateral", "paper_bound", ns),
            "mH": mh,
        }
        if not cert[-1] < mh:
            failures.append(f"{family}: median certificate {cert[-1]:.3g} at n={ns[-1]} is not below mH = {mh:g}")
        if abs(slope + 0.5) > COVERAGE_SLOPE_SLACK:
            failures.append(f"{family}: identifiable unilateral coverage falls with slope {slope:.2f}, not -1/2")
        if not at_floor:
            failures.append(f"{family}: the paper's unilateral coverage leaves its floor")
    single = [r for r in rows if (r.family, r.coverage) == ("table4", "single")]
    floor = min(r.identifiable_floor for r in single)
    evidence["table4_single"] = {
        "identifiable_unilateral_min": min(r.identifiable_unilateral for r in single),
        "identifiable_floor": floor,
        "certificate_median": medians(rows, "table4", "single", "certificate", ns),
        "nash_gap_median": medians(rows, "table4", "single", "nash_gap", ns),
    }
    if not (floor > 0 and all(r.identifiable_unilateral >= r.identifiable_floor - VALUE_ATOL for r in single)):
        failures.append("table4 single-policy data: identifiable unilateral coverage is not bounded away from 0")
    figures, captions = [], {}
    path = ctx.path("marlhf_identifiable_certificate.png")
    if path is not None:
        certificate_figure(path, rows, ns)
        figures.append(path.name)
        captions[path.name] = (
            "Against n (log-log, medians over seeds): Theorem 4's printed bound (dashed), the identifiable "
            f"certificate (solid, valid with probability {1 - DELTA:g}) and the true Nash gap of SBSM's output "
            "(dotted), for unilateral (blue) and single-policy (red) data; grey: mH."
        )
    t4 = evidence["table4"]
    summary = (
        f"sound in {sound:.0%} of {len(rows)} runs; unilateral n={ns[-1]}: certificate "
        f"{t4['unilateral_certificate_median'][-1]:.2g} < mH={t4['mH']:g}, identifiable slope "
        f"{t4['identifiable_slope']:.2f}, paper's measure at floor {t4['paper_floor'][-1]:.2g}"
    )
    return Verdict(
        "refuted" if failures else "holds",
        "; ".join(failures) if failures else summary,
        evidence=evidence,
        counterexample={"failures": failures, "rows": rows_json(rows)} if failures else None,
        figures=figures,
        captions=captions,
        seeds=seeds,
    )
