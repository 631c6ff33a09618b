"""Tables 2 and 3: the learning cells of each table, their mean and sample std over seeds, and
the markdown tables in the paper's layout."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import ENV_LABELS, TABLES, load_pipeline_config
from .mixes import MIX_LABELS, MIXES
from .stages import Log, Reproduction, _fmt_beta, _read_json, _write_json, run_learning_cells


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std" (sample, ddof 1; 0 for one value), "n", "values"}``: a table cell over seeds."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size), "values": v.tolist()}


def cell_text(s: Mapping[str, Any] | None, digits: int = 2) -> str:
    """A ``summary`` as a table shows it: the mean, and ± the std when there are several values."""
    if s is None:
        return "—"
    if s["n"] < 2:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def run_table2(
    env: str,
    config: Mapping[str, Any],
    out_dir: str | os.PathLike,
    seeds: int = 1,
    device: str = "cpu",
    log: Log | None = None,
    mixes: Sequence[str] | None = None,
    parallel: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Table 2 for one environment: for each mix, K seeds of the chain; writes
    ``OUT/<env>/table2.json``, the reward plots, and ``OUT/table2.md`` over every environment
    present in ``OUT``. The (mix, seed) chains after the shared stages are cells run in
    parallel (``run_learning_cells``, options ``parallel``). Returns the environment's results."""
    rep = Reproduction(env, config, out_dir, device, log)
    mixes = list(mixes or MIXES)
    for mix in mixes:
        rep.dataset(mix)
    specs = [{"stage": "policy", "mix": mix, "seed": rep.seed_base + k} for mix in mixes for k in range(seeds)]
    all_records = run_learning_cells(rep, specs, parallel)
    rows = {}
    for j, mix in enumerate(mixes):
        records = all_records[j * seeds : (j + 1) * seeds]
        rows[mix] = {
            "return": summary([r["return_per_agent"] for r in records]),
            "mse": summary([r["mse"] for r in records]),
            "pred_roughness": summary([r["pred_roughness"] for r in records]),
            "records": records,
        }
        rep.plot(mix, {f"r_phi ({MIX_LABELS[mix]})": rep.reward_model(mix, rep.seed_base)}, f"table2_{mix}.png")
    result = {"table": "table2", "env": rep.env, "seeds": seeds, "rows": rows, "ran": rep.ran}
    _write_json(result, rep.dir / "table2.json")
    write_table_markdown(out_dir, "table2")
    return result


def run_table3(
    env: str,
    config: Mapping[str, Any],
    out_dir: str | os.PathLike,
    seeds: int = 1,
    device: str = "cpu",
    log: Log | None = None,
    parallel: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Table 3 for one environment: on the ``table3.mix`` dataset (Diversified), the test
    return for each beta of ``table3.betas`` and for alpha = 0 at the standard beta; writes
    ``OUT/<env>/table3.json``, the alpha comparison plot and ``OUT/table3.md``. Cells run in
    parallel (options ``parallel``): first the reward models (standard alpha and alpha = 0)
    and references of every seed, which the (beta, seed) policies share, then the policies."""
    rep = Reproduction(env, config, out_dir, device, log)
    mix = rep.cfg["table3"].mix
    betas = list(rep.cfg["table3"].betas)
    rep.dataset(mix)
    seed_list = [rep.seed_base + k for k in range(seeds)]
    shared = [{"stage": "reward_model", "mix": mix, "seed": s, "alpha": a} for s in seed_list for a in (None, 0.0)]
    if any(b > 0 for b in betas + [rep.cfg["offline_vdn"].beta]):
        shared += [{"stage": "reference", "mix": mix, "seed": s} for s in seed_list]
    run_learning_cells(rep, shared, parallel)
    specs = [{"stage": "policy", "mix": mix, "seed": s, "beta": b} for b in betas for s in seed_list]
    specs += [{"stage": "policy", "mix": mix, "seed": s, "alpha": 0.0} for s in seed_list]
    if rep.cfg["offline_vdn"].beta not in betas:
        specs += [{"stage": "policy", "mix": mix, "seed": s} for s in seed_list]
    all_records = run_learning_cells(rep, specs, parallel)
    by_spec = {(sp.get("beta", rep.cfg["offline_vdn"].beta), sp.get("alpha"), sp["seed"]): r for sp, r in zip(specs, all_records)}
    cols: dict[str, Any] = {}
    for beta in betas:
        records = [by_spec[(beta, None, s)] for s in seed_list]
        cols[f"beta={_fmt_beta(beta)}"] = {"return": summary([r["return_per_agent"] for r in records]), "records": records}
    records = [by_spec[(rep.cfg["offline_vdn"].beta, 0.0, s)] for s in seed_list]
    cols["alpha=0"] = {"return": summary([r["return_per_agent"] for r in records]), "records": records}
    alpha = rep.cfg["reward_model"].alpha
    smooth = {
        f"alpha={alpha:g}": summary([by_spec[(rep.cfg["offline_vdn"].beta, None, s)]["pred_roughness"] for s in seed_list]),
        "alpha=0": summary([r["pred_roughness"] for r in records]),
        "true": summary([r["true_roughness"] for r in records]),
    }
    rep.plot(
        mix,
        {f"alpha = {alpha:g}": rep.reward_model(mix, rep.seed_base), "alpha = 0": rep.reward_model(mix, rep.seed_base, 0.0)},
        "table3_alpha.png",
    )
    result = {
        "table": "table3",
        "env": rep.env,
        "seeds": seeds,
        "mix": mix,
        "standard_beta": rep.cfg["offline_vdn"].beta,
        "columns": cols,
        "roughness": smooth,
        "ran": rep.ran,
    }
    _write_json(result, rep.dir / "table3.json")
    write_table_markdown(out_dir, "table3")
    return result


def write_table_markdown(out_dir: str | os.PathLike, table: str) -> Path:
    """``OUT/<table>.md`` in the paper's layout from every ``OUT/<env>/<table>.json``
    (written atomically)."""
    from marlcov.deep.common import atomic_write_text

    root = Path(out_dir)
    results = {env: _read_json(root / env / f"{table}.json") for env in ENV_LABELS if (root / env / f"{table}.json").exists()}
    lines: list[str] = []
    if table == "table2":
        lines.append("Table 2: test return per agent (mean ± std over seeds) and MSE between standardised predicted and true rewards.")
        lines.append("")
        envs = list(results)
        header = ["Dataset"] + [f"{ENV_LABELS[e]} Return" for e in envs] + [f"{ENV_LABELS[e]} MSE" for e in envs]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for mix in MIXES:
            cells = [MIX_LABELS[mix]]
            cells += [cell_text(results[e]["rows"].get(mix, {}).get("return")) for e in envs]
            cells += [cell_text(results[e]["rows"].get(mix, {}).get("mse")) for e in envs]
            lines.append("| " + " | ".join(cells) + " |")
        seeds = {e: r["seeds"] for e, r in results.items()}
    else:
        lines.append("Table 3: test return per agent (mean ± std over seeds) for KL coefficients beta, and alpha = 0 at the standard beta.")
        lines.append("")
        cols: list[str] = []
        for r in results.values():
            cols += [c for c in r["columns"] if c not in cols]
        betas = sorted((c for c in cols if c.startswith("beta=")), key=lambda c: float(c.split("=")[1]))
        cols = betas + [c for c in cols if not c.startswith("beta=")]
        header = ["Environment"] + [c.replace("beta=", "β = ").replace("alpha=", "α = ") for c in cols]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for env, r in results.items():
            lines.append("| " + " | ".join([ENV_LABELS[env]] + [cell_text(r["columns"].get(c, {}).get("return")) for c in cols]) + " |")
        lines.append("")
        lines.append(
            "Roughness of the standardised rewards on the same dataset (mean squared change between adjacent steps; lower is smoother):"
        )
        lines.append("")
        kinds: list[str] = []
        for r in results.values():
            kinds += [k for k in r["roughness"] if k not in kinds]
        lines += ["| Environment | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for env, r in results.items():
            lines.append("| " + " | ".join([ENV_LABELS[env]] + [cell_text(r["roughness"].get(k), 3) for k in kinds]) + " |")
        seeds = {e: r["seeds"] for e, r in results.items()}
    lines.append("")
    lines.append("Seeds: " + ", ".join(f"{ENV_LABELS[e]} {k}" for e, k in seeds.items()) + ".")
    path = root / f"{table}.md"
    atomic_write_text("\n".join(lines) + "\n", path)
    return path


def reproduce(
    table: str,
    env: str,
    scale: str = "small",
    seeds: int = 1,
    device: str = "cpu",
    out_dir: str | os.PathLike = "marlcov-deep",
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    log: Log | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """``marlcov deep reproduce``: the whole chain of ``table`` for ``env`` at ``scale``; the
    learning cells run in ``workers`` local processes (default: one per CPU, at most one per
    cell) or as Ray tasks at ``ray_address``, with ``threads`` torch threads each."""
    if table not in TABLES:
        raise ValueError(f"table: expected one of {list(TABLES)}, got {table!r}")
    if not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"--seeds: expected a positive integer, got {seeds!r}")
    cfg = load_pipeline_config(scale, config)
    runner = run_table2 if table == "table2" else run_table3
    result = runner(
        env, cfg, out_dir, int(seeds), device, log, parallel={"workers": workers, "ray_address": ray_address, "threads": threads}
    )
    result["markdown"] = str(Path(out_dir) / f"{table}.md")
    return result
