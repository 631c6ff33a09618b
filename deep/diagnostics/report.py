"""The diagnostic's result, its JSON and terminal table, and the assembly of pass 2's accumulators into it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from marlcov.theory.dataset_coverage import (
    CovarianceAccumulator,
    PlugInMeasures,
    bootstrap_summary,
)
from marlcov.theory.tolerances import RANK_RTOL


# ----------------------------------------------------------------------------- results
@dataclass
class DiagnosticResult:
    """Everything ``diagnose`` reports; ``to_json`` gives the CLI's JSON dict."""

    lam: float
    single: float
    unilateral: float
    uniform: float | None
    worst_player: int
    per_agent: list
    bootstrap: dict
    counts: dict
    sizes: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    simulator: dict | None = None
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    histograms: dict = field(default_factory=dict, repr=False)
    identifiable: dict | None = None

    def to_json(self) -> dict:
        out = {
            "lambda": self.lam,
            "single": self.single,
            "unilateral": self.unilateral,
            "uniform": self.uniform,
            "worst_deviator": {"player": self.worst_player, "value": self.unilateral},
            "identifiable": self.identifiable,
            "per_agent": self.per_agent,
            "bootstrap": self.bootstrap,
            "counts": self.counts,
            "sizes": self.sizes,
            "reference": self.reference,
            "features": self.features,
            "dataset": self.dataset,
            "simulator": self.simulator,
            "figures": self.figures,
            "notes": self.notes,
        }
        return json.loads(json.dumps(out, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite_or_none(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _summaries(point: PlugInMeasures, point_sub: PlugInMeasures, reps: Sequence[PlugInMeasures]) -> dict:
    """Bootstrap summaries centred at the full-anchor point estimate (module docstring)."""

    def shifted(get):
        base, sub = get(point), get(point_sub)
        return bootstrap_summary(base, [get(r) - sub + base for r in reps])

    out = {
        "single": shifted(lambda x: x.single),
        "unilateral": shifted(lambda x: float(np.nanmax(x.unilateral)) if np.any(np.isfinite(x.unilateral)) else np.nan),
        "uniform": shifted(lambda x: x.uniform),
        "per_agent": [shifted(lambda x, i=i: x.unilateral[i]) for i in range(len(point.unilateral))],
    }
    return out


def _assemble(
    evaluation,
    models,
    prefix_groups,
    G,
    P,
    acc,
    counts,
    reference,
    fmap,
    spec,
    reader_info,
    simulator,
    notes,
    n_rep,
    bootstrap_anchors,
    can,
) -> DiagnosticResult:
    point = evaluation.point.result()
    m = evaluation.m
    per_agent_values = np.array(point.unilateral, dtype=np.float64)
    estimator = "plug-in"
    if simulator is not None:
        per_agent_values = np.array([simulator["per_agent"][i]["worst"]["value"] for i in range(m)])
        estimator = "simulator"
    has_uni = can["unilateral"] or simulator is not None
    worst = int(np.argmax(per_agent_values)) if has_uni else -1
    single = point.single if simulator is None else simulator["single"]
    boot = {"unit": "pair-group", "groups": G, "replicates": n_rep, "anchors": bootstrap_anchors}
    if n_rep:
        reps = [r.result() for r in evaluation.reps]
        boot.update(_summaries(point, evaluation.point_sub.result(), reps))
    counts = dict(counts)
    if evaluation.seen_total.sum() > 0:
        counts["unilateral_seen"] = (evaluation.seen / np.maximum(evaluation.seen_total, 1)).tolist()
    per_agent = []
    for i in range(m):
        entry = {
            "player": i,
            "name": spec.agent_names[i],
            "unilateral": _finite_or_none(per_agent_values[i]) if has_uni else None,
            "plug_in": _finite_or_none(point.unilateral[i]),
            "uniform_deviation": _finite_or_none(point.uniform_deviation[i]),
            "estimator": estimator,
        }
        if n_rep and "per_agent" in boot:
            entry["bootstrap"] = boot["per_agent"][i]
        if simulator is not None:
            entry["simulated"] = simulator["per_agent"][i]
        per_agent.append(entry)
    sizes = []
    for k, acc_k in zip(prefix_groups, evaluation.sizes):
        r = acc_k.result()
        sizes.append(
            {
                "fraction": k / G,
                "pairs": int(np.sum((np.arange(P) * G) // P < k)),
                "single": _finite_or_none(r.single),
                "unilateral": _finite_or_none(np.nanmax(r.unilateral)) if np.any(np.isfinite(r.unilateral)) else None,
                "uniform": _finite_or_none(r.uniform),
                "per_agent": [_finite_or_none(x) for x in r.unilateral],
            }
        )
    if evaluation.sizes:
        sub = evaluation.point_sub.result()
        sizes.append(
            {
                "fraction": 1.0,
                "pairs": int(P),
                "single": _finite_or_none(sub.single),
                "unilateral": _finite_or_none(np.nanmax(sub.unilateral)) if np.any(np.isfinite(sub.unilateral)) else None,
                "uniform": _finite_or_none(sub.uniform),
                "per_agent": [_finite_or_none(x) for x in sub.unilateral],
            }
        )
    hist = {k: np.concatenate(v) if v else np.zeros(0) for k, v in evaluation.hist.items()}
    identifiable = None if evaluation.ident is None else _identifiable_json(evaluation.ident.result(), acc, can)
    return DiagnosticResult(
        lam=acc.lam,
        single=float(single),
        unilateral=float(per_agent_values[worst]) if has_uni else float("nan"),
        uniform=_finite_or_none(point.uniform),
        worst_player=worst,
        per_agent=per_agent,
        bootstrap=boot,
        counts=counts,
        sizes=sizes,
        reference=reference,
        features=fmap.describe(),
        dataset=reader_info,
        simulator=simulator,
        notes=notes,
        histograms=hist,
        identifiable=identifiable,
    )


def _identifiable_json(point: PlugInMeasures, acc: CovarianceAccumulator, can) -> dict:
    """The identifiable plug-in measures (reward term of ``psi_h - c_h``) with the reference and rank rule."""
    has_uni = can["unilateral"] and np.any(np.isfinite(point.unilateral))
    worst = int(np.nanargmax(point.unilateral)) if has_uni else -1
    return {
        "single": _finite_or_none(point.single),
        "unilateral": _finite_or_none(point.unilateral[worst]) if has_uni else None,
        "uniform": _finite_or_none(point.uniform),
        "worst_deviator": {"player": worst, "value": _finite_or_none(point.unilateral[worst]) if has_uni else None},
        "per_agent": [_finite_or_none(x) for x in point.unilateral],
        "estimator": "plug-in",
        "reference": "c_h = mean of psi_h over the data's trajectories running at step h",
        "constant_directions": acc.constant_directions().tolist(),
        "rank_rule": (
            f"a direction of step h is one of constant projection when the centred second moment of the "
            f"data's psi_h has an eigenvalue <= {RANK_RTOL:g} times its largest along it; psi_h - c_h "
            "cancels every such direction, so they add nothing to the identifiable reward term"
        ),
    }


def table_rows(out: Mapping) -> list[tuple[str, str]]:
    """``(measure, value)`` rows of the human-readable table of a diagnostic's JSON dict."""

    def fmt(x, b=None):
        if x is None:
            return "n/a"
        s = f"{x:.4g}"
        if b and b.get("low") is not None:
            s += f"  [{b['low']:.4g}, {b['high']:.4g}]"
        return s

    boot = out.get("bootstrap", {})
    rows = [("single U_D(pi*)", fmt(out["single"], boot.get("single")))]
    for a in out["per_agent"]:
        rows.append((f"unilateral, {a['name']}", fmt(a["unilateral"], a.get("bootstrap"))))
    rows.append(("unilateral (max)", fmt(out["unilateral"], boot.get("unilateral"))))
    rows.append(("uniform", fmt(out["uniform"], boot.get("uniform"))))
    rows.append(("worst deviator", str(out["worst_deviator"]["player"])))
    ident = out.get("identifiable")
    if ident:
        rows.append(("identifiable single", fmt(ident["single"])))
        rows.append(("identifiable unilateral (max)", fmt(ident["unilateral"])))
        rows.append(("identifiable uniform", fmt(ident["uniform"])))
    c = out.get("counts", {})
    if "joint_saco" in c:
        rows.append(("distinct (state, joint action) / transitions", fmt(c["joint_saco"])))
    if "unilateral_seen" in c:
        rows.append(("unilateral alternatives seen in data", ", ".join(f"{v:.3g}" for v in c["unilateral_seen"])))
    return rows


def format_table(out: Mapping) -> str:
    """A plain-text table of ``table_rows``."""
    rows = table_rows(out)
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)
