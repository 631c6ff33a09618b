"""How the coverage measures rank the Table 1 mixes and predict the MARLHF test return.

``marlcov deep study --runs DIR [DIR ...] --out DIR`` reads run directories written
by ``marlcov deep reproduce table2`` (``DIR/<env>/data/<mix>.h5``, ``.pairs.h5``,
``policies/expert.pt``, ``table2.json``) and, for every environment found:

1. computes on each mix's dataset the diagnostic of ``deep.diagnostics`` with the expert
   checkpoint as the reference policy pi* and, for MPE, the simulator: single coverage
   ``U_D(pi*)``, unilateral coverage (simulated deviations: uniform, rookie, bonus-greedy and its
   half mixture, the worst kept; and the plug-in one-step estimate with a bootstrap interval),
   uniform coverage, and the count-based ratios of OG-MARL's dataset analysis. All mixes of an
   environment share one random-feature map (same draw, the state standardised on the
   Diversified dataset, which holds all four behaviour sources), so their numbers are
   comparable. Each result is cached as ``OUT/<run>/<env>/coverage_<mix>.json`` with its
   settings and reused when present with the same settings;
2. joins them with the per-seed test return and reward MSE of ``table2.json``;
   Beside them, ``U_D(pi*)`` split into its two terms, the reward term ``||psibar_h||_{Sigma_r^-1}``
   and the transition term ``||psi||_{Sigma_p[h]^-1}``, on the same pi* rollouts for every mix
   (``OUT/<run>/<env>/bonus_split.json``), to show which covariance drives the ranking; and the
   identifiable measures (``theory.identifiable``: the reward term of ``psi_h - c_h``, invariant to
   the reward offsets preferences cannot see), plug-in estimates on the same anchors;
3. reports Spearman and Kendall rank correlations (``scipy.stats``) between each measure and
   the return and the MSE, over the points (mix, learning seed) and over the per-mix means,
   with p-values and the number of points;
4. writes ``OUT/coverage_study.json`` and ``OUT/coverage_study.md`` (atomically).

Sign convention (``theory.coverage``): ``U_D`` is an expected sum of uncertainty bonuses, so a
smaller value means better coverage; the count ratios are the other way (larger = more
distinct pairs). A measure that predicts the return well has a negative correlation with it
for ``U_D`` and a positive one for the counts.

Length: a little under 500 lines: one command end to end (the per-mix cache and its settings
check, the shared feature map and pi* rollouts, the joins with table2.json, the rank statistics
and the report); the measures themselves live in ``deep.diagnostics``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA

from .pipeline import ENV_LABELS, MIX_LABELS, MIXES, pairs_path_for

STUDY_FORMAT = "marlcov.coverage-study/1"
COVERAGE_FORMAT = "marlcov.mix-coverage/1"
DEFAULT_BOOTSTRAP = 30
DEFAULT_BOOTSTRAP_ANCHORS = 128
DEFAULT_EPISODES = 256
DEFAULT_FEATURE_DIM = 64
#: Measures reported and correlated: key -> (label, direction); "lower" means a smaller value is better coverage.
MEASURES: dict[str, tuple[str, str]] = {
    "single": ("single U_D(pi*)", "lower"),
    "unilateral": ("unilateral U_D (simulated deviations)", "lower"),
    "unilateral_plugin": ("unilateral U_D (plug-in, one-step)", "lower"),
    "uniform": ("uniform U_D (plug-in)", "lower"),
    "identifiable_single": ("identifiable single (plug-in)", "lower"),
    "identifiable_unilateral": ("identifiable unilateral (plug-in, one-step)", "lower"),
    "identifiable_uniform": ("identifiable uniform (plug-in)", "lower"),
    "joint_saco": ("distinct (state, joint action) / transitions", "higher"),
    "state_ratio": ("distinct states / transitions", "higher"),
    "individual_saco": ("distinct (obs, action) / transitions, mean over agents", "higher"),
}
TARGETS = {"return": "test return per agent", "mse": "reward MSE (standardised)"}


# ----------------------------------------------------------------------------- coverage per mix
def shared_feature_map(datasets: Sequence[Path], dim: int, seed: int):
    """One random-feature map of the global state for the datasets of an environment, its
    standardisation fitted on the union of the states of ``datasets`` (every stored step)."""
    from marlcov.deep.data import DatasetReader
    from marlcov.deep.features import RandomFourierFeatures

    with DatasetReader(datasets[0]) as reader:
        fmap = RandomFourierFeatures.for_spec(reader.spec, dim, "state", seed=seed)
    readers = [DatasetReader(p) for p in datasets]
    try:
        fmap.fit(itertools.chain.from_iterable(r.iter_batches(2048, fields=["state"]) for r in readers))
    finally:
        for r in readers:
            r.close()
    return fmap


def _interval(b: Mapping[str, Any] | None) -> list | None:
    return None if not b or b.get("low") is None else [float(b["low"]), float(b["high"])]


def summarise_diagnostic(diag: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the study keeps from a diagnostic's JSON dict (``deep.diagnostics``)."""
    boot = diag.get("bootstrap", {})
    sim = diag.get("simulator")
    counts = diag["counts"]
    out = {
        "single": {
            "value": diag["single"],
            "interval": _interval(boot.get("single")),
            "stderr": None if sim is None else sim["single_stderr"],
        },
        "unilateral_plugin": {
            "value": boot.get("unilateral", {}).get(
                "point", max((a["plug_in"] for a in diag["per_agent"] if a["plug_in"] is not None), default=None)
            ),
            "interval": _interval(boot.get("unilateral")),
            "per_agent": [a["plug_in"] for a in diag["per_agent"]],
        },
        "uniform": {"value": diag["uniform"], "interval": _interval(boot.get("uniform"))},
        "joint_saco": {"value": counts["joint_saco"]},
        "state_ratio": {"value": counts["state_ratio"]},
        "individual_saco": {"value": float(np.mean(counts["individual_saco"])), "per_agent": counts["individual_saco"]},
        "unilateral_seen": counts.get("unilateral_seen"),
    }
    ident = diag.get("identifiable") or {}
    for key in ("single", "unilateral", "uniform"):
        out[f"identifiable_{key}"] = {"value": ident.get(key)}
    out["identifiable_unilateral"]["per_agent"] = ident.get("per_agent")
    if sim is not None:
        worst = [a["worst"] for a in sim["per_agent"]]
        i = int(np.argmax([w["value"] for w in worst]))
        out["unilateral"] = {
            "value": sim["unilateral"],
            "stderr": worst[i]["stderr"],
            "worst_agent": i,
            "worst_deviation": worst[i]["name"],
            "per_agent": [w["value"] for w in worst],
        }
    else:
        out["unilateral"] = dict(out["unilateral_plugin"], note="no simulator: the plug-in estimate")
    return out


def mix_coverage(run_env: Path, mix: str, fmap, out_path: Path, settings: Mapping[str, Any], log) -> dict[str, Any]:
    """The coverage record of one mix's dataset, computed once and cached at ``out_path``.
    ``settings``: ``bootstrap``, ``bootstrap_anchors``, ``episodes``, ``feature_dim``, ``seed``,
    ``simulate`` (a cache made with other settings is refused)."""
    from marlcov.deep.common import atomic_write_text
    from marlcov.deep.diagnostics import diagnose_hdf5

    settings = dict(settings)
    if out_path.exists():
        record = json.loads(out_path.read_text())
        if record.get("format") != COVERAGE_FORMAT:
            raise ValueError(
                f"{out_path}: field 'format' is {record.get('format')!r}; expected {COVERAGE_FORMAT!r} (delete the file to recompute)"
            )
        if record.get("settings") != settings:
            raise ValueError(
                f"{out_path}: field 'settings' is {record.get('settings')}; this study uses {settings} (delete the file to recompute)"
            )
        log(f"[skip] coverage {run_env.name} {mix}")
        return record
    data = run_env / "data" / f"{mix}.h5"
    policies = run_env / "policies"
    expert = policies / "expert.pt"
    rookies = {p.stem: str(p) for p in sorted(policies.glob("rookie_*.pt"))}
    log(f"[run ] coverage {run_env.name} {mix}")
    diag = diagnose_hdf5(
        data,
        str(expert) if expert.exists() else None,
        fmap,
        bootstrap=settings["bootstrap"],
        seed=settings["seed"],
        pairs_path=pairs_path_for(data),
        bootstrap_anchors=settings["bootstrap_anchors"],
        simulate=settings["simulate"] and expert.exists(),
        rookies=rookies,
        episodes=settings["episodes"],
        fit_features=False,
    ).to_json()
    record = {
        "format": COVERAGE_FORMAT,
        "settings": settings,
        "env": run_env.name,
        "mix": mix,
        "dataset": str(data),
        "reference": diag["reference"],
        "features": diag["features"],
        "notes": diag["notes"],
        "measures": summarise_diagnostic(diag),
        "diagnostic": diag,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(record, indent=2) + "\n", out_path)
    return record


def bonus_split(run_env: Path, mixes: Sequence[str], fmap, out_path: Path, settings: Mapping[str, Any], log) -> dict[str, Any] | None:
    """``U_D(pi*)`` of each mix split into its reward and transition terms, on one set of
    ``settings["episodes"]`` rollouts of the expert (seed ``settings["seed"]``); None without an
    expert checkpoint or a simulator. Cached at ``out_path`` like ``mix_coverage``."""
    import torch

    from marlcov.deep.common import atomic_write_text
    from marlcov.deep.data import DatasetReader
    from marlcov.deep.data.hdf5 import read_pairs
    from marlcov.deep.diagnostics import _make_simulator, _rollout, accumulate_pairs, load_policy

    key = {"mixes": list(mixes), "episodes": settings["episodes"], "feature_dim": settings["feature_dim"], "seed": settings["seed"]}
    if out_path.exists():
        record = json.loads(out_path.read_text())
        if record.get("settings") != key:
            raise ValueError(
                f"{out_path}: field 'settings' is {record.get('settings')}; this study uses {key} (delete the file to recompute)"
            )
        return record
    expert = run_env / "policies" / "expert.pt"
    if not expert.exists():
        return None
    pol = load_policy(expert)
    log(f"[run ] bonus split {run_env.name}")
    terms, rollouts = {}, None
    for mix in mixes:
        data = run_env / "data" / f"{mix}.h5"
        with DatasetReader(data) as reader:
            spec = reader.spec
            acc, _ = accumulate_pairs(reader, read_pairs(pairs_path_for(data), reader), fmap, DEFAULT_LAMBDA, 0)
        if rollouts is None:
            env, _ = _make_simulator(spec, settings["episodes"])
            if env is None:
                return None
            rollouts = _rollout(env, lambda cur, t: torch.as_tensor(pol(cur.obs, cur.avail, t)).long(), settings["seed"])
        r, p = acc.bonus_model().terms(fmap(rollouts, rollouts["actions"][:, : spec.horizon]))
        terms[mix] = {"reward_term": float(r.sum(axis=1).mean()), "transition_term": float(p.sum(axis=1).mean())}
    record = {"settings": key, "terms": terms}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(record, indent=2) + "\n", out_path)
    return record


# ----------------------------------------------------------------------------- join, correlate
def join_points(table2: Mapping[str, Any], coverage: Mapping[str, Mapping[str, Any]], run: str) -> list[dict[str, Any]]:
    """One point per (mix, learning seed) of ``table2.json`` with a coverage record: the seed's
    return and MSE beside the mix's measures."""
    rows = table2.get("rows")
    if not isinstance(rows, Mapping):
        raise ValueError("table2.json: field 'rows' is missing")
    points = []
    for mix, row in rows.items():
        if mix not in coverage:
            continue
        measures = {k: coverage[mix]["measures"].get(k, {}).get("value") for k in MEASURES}
        for rec in row.get("records", []):
            points.append(
                {
                    "run": run,
                    "env": table2["env"],
                    "mix": mix,
                    "seed": int(rec["seed"]),
                    "return": float(rec["return_per_agent"]),
                    "mse": float(rec["mse"]),
                    **measures,
                }
            )
    return points


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Spearman and Kendall (tau-b) rank correlations of ``x`` and ``y`` with their p-values."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x, y: expected the same length, got {x.size} and {y.size}")
    out: dict[str, Any] = {"n": int(x.size), "distinct_x": int(np.unique(x).size)}
    if x.size < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return {**out, "spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None}
    s = stats.spearmanr(x, y)
    k = stats.kendalltau(x, y)
    return {
        **out,
        "spearman": float(s.statistic),
        "spearman_p": float(s.pvalue),
        "kendall": float(k.statistic),
        "kendall_p": float(k.pvalue),
    }


def correlate(points: Sequence[Mapping[str, Any]], measures: Iterable[str] = MEASURES, targets: Iterable[str] = TARGETS) -> dict[str, Any]:
    """Rank correlations of each measure with each target over ``points`` (``by_point``) and over
    the means per (run, mix) (``by_mix``: one point per dataset)."""
    groups: dict[tuple, list] = {}
    for p in points:
        groups.setdefault((p["run"], p["mix"]), []).append(p)
    means = [{**g[0], **{t: float(np.mean([p[t] for p in g])) for t in targets}} for g in groups.values()]
    out: dict[str, Any] = {}
    for m in measures:
        out[m] = {}
        # A measure missing from a record (a cache written before it existed) leaves those points out.
        have = [p for p in points if p.get(m) is not None]
        have_means = [p for p in means if p.get(m) is not None]
        for t in targets:
            out[m][t] = {
                "by_point": rank_correlations([p[m] for p in have], [p[t] for p in have]),
                "by_mix": rank_correlations([p[m] for p in have_means], [p[t] for p in have_means]),
            }
    return out


def ranking(coverage: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per measure: the mixes from best to worst covered, the worst, and how many pairs of mixes
    have disjoint bootstrap intervals (the measure separates them) where intervals exist."""
    out = {}
    for m, (_, direction) in MEASURES.items():
        vals = {mix: c["measures"][m]["value"] for mix, c in coverage.items() if c["measures"].get(m, {}).get("value") is not None}
        order = sorted(vals, key=lambda k: vals[k], reverse=direction == "higher")
        entry: dict[str, Any] = {"best_to_worst": order, "worst": order[-1] if order else None, "values": vals}
        ivs = {mix: coverage[mix]["measures"][m].get("interval") for mix in vals}
        if vals and all(iv is not None for iv in ivs.values()):
            pairs = list(itertools.combinations(sorted(ivs), 2))
            disjoint = [[a, b] for a, b in pairs if ivs[a][1] < ivs[b][0] or ivs[b][1] < ivs[a][0]]
            entry.update({"intervals": ivs, "pairs": len(pairs), "disjoint_pairs": disjoint})
        out[m] = entry
    return out


# ----------------------------------------------------------------------------- study
def env_feature_map(env_dir: Path, mixes: Sequence[str], dim: int, seed: int):
    """The feature map shared by the mixes of one environment run: standardised on the
    Diversified dataset when it is among ``mixes``, else on the union of the mixes."""
    fit_on = ["diversified"] if "diversified" in mixes else list(mixes)
    return shared_feature_map([env_dir / "data" / f"{m}.h5" for m in fit_on], dim, seed)


def find_envs(run_dir: Path) -> list[Path]:
    """The environment directories of a reproduce run directory that have a ``table2.json``."""
    return [run_dir / e for e in ENV_LABELS if (run_dir / e / "table2.json").exists()]


def run_study(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    bootstrap_anchors: int = DEFAULT_BOOTSTRAP_ANCHORS,
    episodes: int = DEFAULT_EPISODES,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    seed: int = 0,
    simulate: bool = True,
    envs: Sequence[str] | None = None,
    log=None,
) -> dict[str, Any]:
    """The study over the run directories ``runs`` (module docstring); returns the JSON dict."""
    from marlcov.deep.common import atomic_write_text
    from marlcov.deep.pipeline import env_name

    say = log or (lambda line: None)
    out = Path(out)
    wanted = None if envs is None else {env_name(e) for e in envs}
    run_dirs = [Path(r) for r in runs]
    if not run_dirs:
        raise ValueError("--runs: expected at least one run directory")
    for r in run_dirs:
        if not r.is_dir():
            raise ValueError(f"--runs: {r} is not a directory")
    settings = {
        "bootstrap": int(bootstrap),
        "bootstrap_anchors": int(bootstrap_anchors),
        "episodes": int(episodes),
        "feature_dim": int(feature_dim),
        "seed": int(seed),
        "simulate": bool(simulate),
    }
    names = [r.name for r in run_dirs]
    if len(set(names)) != len(names):
        names = [str(i) + "-" + r.name for i, r in enumerate(run_dirs)]
    by_env: dict[str, dict[str, Any]] = {}
    for run_dir, name in zip(run_dirs, names):
        for env_dir in find_envs(run_dir):
            if wanted is not None and env_dir.name not in wanted:
                continue
            table2 = json.loads((env_dir / "table2.json").read_text())
            mixes = [m for m in MIXES if m in table2.get("rows", {}) and (env_dir / "data" / f"{m}.h5").exists()]
            if not mixes:
                continue
            fmap = env_feature_map(env_dir, mixes, feature_dim, seed)
            coverage = {m: mix_coverage(env_dir, m, fmap, out / name / env_dir.name / f"coverage_{m}.json", settings, say) for m in mixes}
            split = bonus_split(env_dir, mixes, fmap, out / name / env_dir.name / "bonus_split.json", settings, say) if simulate else None
            e = by_env.setdefault(env_dir.name, {"runs": {}, "points": []})
            e["runs"][name] = {
                "path": str(run_dir),
                "seeds": table2.get("seeds"),
                "mixes": mixes,
                "bonus_split": None if split is None else split["terms"],
                "coverage": {m: c["measures"] for m, c in coverage.items()},
                "reference": {m: c["reference"] for m, c in coverage.items()},
                "ranking": ranking(coverage),
            }
            e["points"] += join_points(table2, coverage, name)
    if not by_env:
        raise ValueError(f"--runs: no <env>/table2.json with datasets under {[str(r) for r in run_dirs]}")
    for e in by_env.values():
        e["correlations"] = correlate(e["points"])
    result = {
        "format": STUDY_FORMAT,
        "measures": {k: {"label": v[0], "better": v[1]} for k, v in MEASURES.items()},
        "targets": TARGETS,
        "settings": settings,
        "envs": by_env,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=2) + "\n", out / "coverage_study.json")
    atomic_write_text(markdown(result), out / "coverage_study.md")
    return result


# ----------------------------------------------------------------------------- report
def _num(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _value_cell(m: Mapping[str, Any]) -> str:
    s = _num(m["value"], 4)
    if m.get("interval"):
        s += f" [{_num(m['interval'][0], 4)}, {_num(m['interval'][1], 4)}]"
    elif m.get("stderr") is not None:
        s += f" ± {_num(m['stderr'], 2)}"
    return s


def markdown(result: Mapping[str, Any]) -> str:
    """The study as Markdown: per environment, the measures per mix, the rankings and the correlations."""
    lines = [
        "# Coverage measures of the Table 1 mixes against the MARLHF test return",
        "",
        "U_D measures: smaller = better covered (bracketed: 95% bootstrap interval over pair groups; ± : Monte Carlo "
        "standard error of the simulated rollouts). Count ratios: larger = more distinct pairs.",
        "",
    ]
    for env, e in result["envs"].items():
        lines += [f"## {ENV_LABELS.get(env, env)}", ""]
        for run, r in e["runs"].items():
            lines += [f"Run `{run}` ({r['path']}), learning seeds: {r['seeds']}, one dataset per mix.", ""]
            header = ["Mix"] + [MEASURES[k][0] for k in MEASURES]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for mix in r["mixes"]:
                c = r["coverage"][mix]
                lines.append("| " + " | ".join([MIX_LABELS[mix]] + [_value_cell(c.get(k, {"value": None})) for k in MEASURES]) + " |")
            if r.get("bonus_split"):
                lines += [
                    "",
                    "U_D(pi*) split into its terms on the same pi* rollouts:",
                    "",
                    "| Mix | reward term (Sigma_r) | transition term (Sigma_p) |",
                    "|---|---|---|",
                ]
                lines += [
                    f"| {MIX_LABELS[m]} | {_num(t['reward_term'], 4)} | {_num(t['transition_term'], 4)} |"
                    for m, t in r["bonus_split"].items()
                ]
            lines += ["", "| Measure | best → worst covered | pairs of mixes with disjoint intervals |", "|---|---|---|"]
            for k, rk in r["ranking"].items():
                sep = f"{len(rk['disjoint_pairs'])} of {rk['pairs']}" if "pairs" in rk else "—"
                lines.append(f"| {MEASURES[k][0]} | {' → '.join(MIX_LABELS[m] for m in rk['best_to_worst'])} | {sep} |")
            lines.append("")
        n_pts = len(e["points"])
        lines += [
            f"Rank correlations with the test return and the reward MSE: over {n_pts} points (mix × learning seed; "
            "the measure is shared by the seeds of a mix) and over the per-mix means.",
            "",
            "| Measure | target | Spearman (p) points | Kendall (p) points | n | Spearman (p) means | Kendall (p) means | n |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for k, per_target in e["correlations"].items():
            for t, c in per_target.items():
                a, b = c["by_point"], c["by_mix"]
                lines.append(
                    f"| {MEASURES[k][0]} | {t} | {_num(a['spearman'], 2)} ({_num(a['spearman_p'], 2)}) | "
                    f"{_num(a['kendall'], 2)} ({_num(a['kendall_p'], 2)}) | {a['n']} | {_num(b['spearman'], 2)} "
                    f"({_num(b['spearman_p'], 2)}) | {_num(b['kendall'], 2)} ({_num(b['kendall_p'], 2)}) | {b['n']} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit("the coverage study is now a command of the one console script: marlcov deep study --runs DIR ... --out DIR")
