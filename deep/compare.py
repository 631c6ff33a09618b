"""``marlcov deep compare``: several offline algorithms trained on one dataset with the same
seeds, evaluated in the dataset's environment, gathered into one table and learning curves.

Algorithms (``ALGOS``) and what each trains on:

* ``marlhf``: reward model r_phi (loss (1)) on the preference pairs, imitation reference
  pi_ref on all trajectories, offline VDN on r_std + KL reward (``deep.marlhf``);
* ``omapl``: O-MAPL on the preference pairs (``deep.algos.omapl``);
* ``omiga``: OMIGA on the dataset's true rewards, and/or on the standardised predictions of
  the MARLHF reward model of the same seed (``omiga_reward``: true, predicted, both);
* ``mamql``: offline MAMQL on the demonstrations (the trajectories whose every agent is
  tagged ``expert``) (``deep.algos.mamql``);
* ``score-decomposition``: TD3 with the diffusion score regulariser on a continuous-action
  dataset (``deep.envs.mpe_continuous``) with its true rewards (``deep.algos.score_decomposition``).

The first four need a discrete-action dataset (``deep.data``), the last a continuous one.
Preference pairs are read from ``DATA.pairs.h5`` beside the dataset when it exists, else
from the dataset file.

A cell is (variant, seed): ``OUT/cells/<variant>/seed<k>/`` holds the trainer's files and
``result.json``. The reward model of seed k is a cell of its own
(``OUT/cells/reward-model/seed<k>``), run in a first wave with every cell that does not
need it; MARLHF's VDN and OMIGA on predicted rewards run in a second wave. Cells run through
``deep.cells.run_cells`` (local processes or Ray) and resume (``deep.cells``).

Evaluation: every policy of seed k plays the same ``evaluate.episodes`` episodes, episode j
reset with seed ``deep.common.eval_seed_start(k, episodes) + j`` (greedy policies; MAMQL's greedy
Boltzmann policy); the return per agent is the mean over agents and episodes of the
undiscounted return; on SMAX also the win rate.

Outputs in ``OUT``: ``compare.json`` (config, per-seed numbers, curves), ``compare.md`` (mean
+- sample std over seeds), ``curves.png`` (each trainer's recorded loss vs update, mean over
seeds).

Config (``deep/configs/compare_<scale>.json``): sections ``omapl``, ``omiga``, ``mamql``,
``score_decomposition`` (fields of the trainers' config dataclasses), ``evaluate``
(``episodes``, ``batch_size``), ``reward_model``, ``reference``, ``offline_vdn`` (overrides of
the MARLHF sections of the pipeline config ``deep/configs/<scale>.json``, whose values are the
defaults), ``envs`` (per-environment overrides of those sections), ``seed_base``, ``notes``.

Length: about 600 lines, over the package's ~400, because it is one command end to end (its
config, the dataset checks, one cell per algorithm and seed, the comparison table and the
learning-curve figure); the pieces it shares live elsewhere (cells in ``deep.cells``, table
cells in ``deep.pipeline.tables``, evaluation in ``deep.marlhf.evaluate``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marlcov.deep.cells import Cell, default_workers, run_cells
from marlcov.deep.config_model import POSITIVE, ConfigModel, config_values, from_mapping, optional, read_config_file, setting
from marlcov.deep.pipeline.tables import cell_text, summary

ALGOS = ("marlhf", "omapl", "omiga", "mamql", "score-decomposition")
DISCRETE_ALGOS = ("marlhf", "omapl", "omiga", "mamql")
CONTINUOUS_ALGOS = ("score-decomposition",)
OMIGA_REWARDS = ("true", "predicted", "both")
#: Table rows: variant -> (label, what it trains on).
VARIANTS = {
    "marlhf": ("MARLHF (r_phi + VDN + KL)", "preference pairs; all trajectories for pi_ref"),
    "omapl": ("O-MAPL", "preference pairs"),
    "omiga": ("OMIGA (true rewards)", "true rewards"),
    "omiga-predicted": ("OMIGA (r_phi rewards)", "MARLHF r_phi of the same seed, standardised"),
    "mamql": ("MAMQL", "expert demonstrations"),
    "score-decomposition": ("Score decomposition", "true rewards, continuous actions"),
}
#: The recorded quantity plotted as each variant's learning curve.
CURVE_METRICS = {
    "marlhf": "td_loss",
    "omapl": "loss",
    "omiga": "loss",
    "omiga-predicted": "loss",
    "mamql": "loss",
    "score-decomposition": "critic_loss",
}
MARLHF_SECTIONS = ("reward_model", "reference", "offline_vdn")
ALGO_SECTIONS = ("omapl", "omiga", "mamql", "score_decomposition")
TOP_LEVEL = (*ALGO_SECTIONS, *MARLHF_SECTIONS, "evaluate", "envs", "seed_base", "notes", "description")
#: Points kept per learning curve in ``compare.json`` (means over equal bins of updates).
CURVE_POINTS = 200
REWARD_VARIANT = "reward-model"

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- inputs
def parse_algos(text: str | Sequence[str]) -> list[str]:
    """The algorithm names of ``--algos`` (comma-separated), in the order given, no repeats."""
    names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    unknown = [a for a in names if a not in ALGOS]
    if unknown or not names:
        raise ValueError(f"--algos: unknown algorithm(s) {unknown or names}; expected a comma-separated list from {list(ALGOS)}")
    return list(dict.fromkeys(names))


def dataset_description(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "env", "action_space", "n_trajectories", "horizon", "n_agents", "pairs"}`` of a
    dataset (any layout of ``deep.data.external.open_dataset``): ``action_space`` is
    ``"discrete"`` (with ``n_actions``) or ``"continuous"`` (with ``action_dim``); ``pairs`` the
    file holding its preference pairs, or None."""
    from marlcov.deep.data.external import open_dataset
    from marlcov.deep.data.hdf5 import DatasetReader
    from marlcov.deep.data.schema import DEEP_DATASET_FORMAT
    from marlcov.deep.pipeline import pairs_path_for

    p = Path(path)
    if not p.exists():
        raise ValueError(f"--dataset: {p} not found")
    with open_dataset(p) as reader:
        spec, n, has_pairs = reader.spec, len(reader), reader.has_pairs()
        if not spec.continuous and not isinstance(reader, DatasetReader):
            raise ValueError(
                f"--dataset: {p} is a {reader.kind} dataset read in place, with no simulator to evaluate policies in; "
                f"compare evaluates every algorithm, so it takes marlcov dataset files (attribute 'format' {DEEP_DATASET_FORMAT!r}); "
                "'marlcov deep train-reward / train-reference / train-policy' train on it in place"
            )
    side = pairs_path_for(p)
    pairs = str(side) if side.exists() else (str(p) if has_pairs else None)
    size = {"action_dim": spec.action_dim} if spec.continuous else {"n_actions": spec.n_actions}
    return {
        "path": str(p),
        "env": spec.env_name,
        "action_space": "continuous" if spec.continuous else "discrete",
        **size,
        "n_trajectories": n,
        "horizon": spec.horizon,
        "n_agents": spec.n_agents,
        "pairs": pairs,
    }


def env_of(name: str) -> str:
    """The dataset ``env_name`` of ``--env``: an MPE task or alias (``spread``), or a SMAX map
    as ``smax_3m`` or ``3m``."""
    from marlcov.deep.pipeline import ENV_ALIASES

    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    if name in ENV_ALIASES.values() or name.startswith("smax_"):
        return name
    from marlcov.deep.envs.smax import ENV_PREFIX, MAP_NAMES

    if name in MAP_NAMES:
        return ENV_PREFIX + name
    raise ValueError(
        f"--env: expected an MPE task ({sorted(ENV_ALIASES)} or full names) or a SMAX map "
        f"({list(MAP_NAMES)}, optionally prefixed 'smax_'), got {name!r}"
    )


def check_algos_fit_dataset(algos: Sequence[str], data: Mapping[str, Any], omiga_reward: str) -> None:
    """ValueError naming ``--algos`` and the dataset's action space when an algorithm cannot
    train on the dataset (or the pairs it needs are missing)."""
    space = data["action_space"]
    wrong = [a for a in algos if a not in (DISCRETE_ALGOS if space == "discrete" else CONTINUOUS_ALGOS)]
    if wrong:
        need = "a continuous-action dataset (deep.envs.mpe_continuous)" if space == "discrete" else "a discrete-action dataset (deep.data)"
        shape = f"n_actions = {data.get('n_actions')}" if space == "discrete" else f"action_dim = {data.get('action_dim')}"
        raise ValueError(
            f"--algos: {', '.join(wrong)} need(s) {need}, but {data['path']} has {space} actions ({shape}); "
            f"algorithms for {space} datasets: {', '.join(DISCRETE_ALGOS if space == 'discrete' else CONTINUOUS_ALGOS)}"
        )
    if omiga_reward not in OMIGA_REWARDS:
        raise ValueError(f"--omiga-reward: expected one of {list(OMIGA_REWARDS)}, got {omiga_reward!r}")
    needs_pairs = [a for a in algos if a in ("marlhf", "omapl")] + (
        ["omiga --omiga-reward " + omiga_reward] if "omiga" in algos and omiga_reward != "true" else []
    )
    if needs_pairs and data["pairs"] is None:
        raise ValueError(
            f"--dataset: {data['path']} has no preference pairs (none in the file, no {Path(data['path']).stem}.pairs.h5 "
            f"beside it), which {', '.join(needs_pairs)} need(s); label it with 'marlcov deep label'"
        )


@dataclass(frozen=True)
class CompareEvaluateConfig(ConfigModel):
    """Section ``evaluate``: test episodes per policy, played ``batch_size`` at a time (None:
    all at once)."""

    episodes: int = setting(100, POSITIVE)
    batch_size: int | None = setting(None, optional(POSITIVE))


def load_compare_config(scale: str | None = "small", source: str | os.PathLike | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The compare config of ``scale``: the MARLHF sections of the pipeline config
    ``deep/configs/<scale>.json`` (with its per-environment overrides), updated by
    ``deep/configs/compare_<scale>.json``, updated by ``source`` (a file or a mapping).
    Unknown sections raise ValueError; the fields are checked by ``trainer_configs``."""
    from marlcov.deep.pipeline import CONFIG_DIR, SCALES, load_pipeline_config, merge
    from marlcov.deep.pipeline.config import check_layout

    if scale is not None and scale not in SCALES:
        raise ValueError(f"--scale: expected one of {list(SCALES)}, got {scale!r}")
    config: dict[str, Any] = {}
    if scale is not None:
        pipeline = load_pipeline_config(scale)
        config = {name: pipeline.get(name, {}) for name in MARLHF_SECTIONS}
        config["envs"] = {env: {k: v for k, v in over.items() if k in MARLHF_SECTIONS} for env, over in pipeline.get("envs", {}).items()}
        config = merge(config, read_config_file(CONFIG_DIR / f"compare_{scale}.json"))
    if source is not None:
        config = merge(config, source if isinstance(source, Mapping) else read_config_file(source))
    check_layout(config, (*ALGO_SECTIONS, *MARLHF_SECTIONS, "evaluate"), TOP_LEVEL, None)
    return config


def trainer_configs(config: Mapping[str, Any], env: str) -> dict[str, Any]:
    """The validated config dataclasses of every trainer for ``env`` and the ``evaluate``
    section as ``{"episodes", "batch_size"}`` (ValueError naming the section and the field)."""
    from marlcov.deep.algos.mamql import MAMQLConfig
    from marlcov.deep.algos.omapl import OMAPLConfig
    from marlcov.deep.algos.omiga import OMIGAConfig
    from marlcov.deep.algos.score_decomposition import ScoreDecompositionConfig
    from marlcov.deep.marlhf.reference import ReferenceConfig
    from marlcov.deep.marlhf.reward_model import RewardModelConfig
    from marlcov.deep.marlhf.vdn import OfflineVDNConfig
    from marlcov.deep.pipeline.config import section_configs

    classes = {
        "omapl": OMAPLConfig,
        "omiga": OMIGAConfig,
        "mamql": MAMQLConfig,
        "score_decomposition": ScoreDecompositionConfig,
        "reward_model": RewardModelConfig,
        "reference": ReferenceConfig,
        "offline_vdn": OfflineVDNConfig,
        "evaluate": CompareEvaluateConfig,
    }
    out = section_configs(config, env, classes)
    ev = out["evaluate"]
    out["evaluate"] = {"episodes": ev.episodes, "batch_size": ev.episodes if ev.batch_size is None else ev.batch_size}
    return out


# ----------------------------------------------------------------------------- evaluation
def evaluate_discrete(policy, spec, n_episodes: int, seed: int, batch_size: int, device: str = "cpu") -> dict[str, Any]:
    """``deep.marlhf.evaluate.evaluate_policy`` of ``policy(obs, avail, t) -> actions`` in the
    dataset's environment (``spec``: its ``DatasetSpec``): ``return_per_agent`` (mean over
    episodes and agents), ``return_std`` (over episodes), ``episodes`` and, on SMAX, ``win_rate``."""
    from marlcov.deep.envs import spec_env_kwargs
    from marlcov.deep.marlhf.evaluate import evaluate_policy

    res = evaluate_policy(
        policy, spec.env_name, n_episodes, seed, batch_size, device, spec_env_kwargs(spec), progress=False, env_device=device
    )
    out = {"return_per_agent": res["return_per_agent"], "return_std": res["return_std"], "episodes": res["n_episodes"]}
    if "win_rate" in res:
        out["win_rate"] = res["win_rate"]
    return out


def _curve(history: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """``{"metric", "update", "value"}`` of ``history`` rows holding ``metric`` (update: the
    row's ``update`` field, else its 1-based position), averaged in at most ``CURVE_POINTS`` bins."""
    rows = [(float(r.get("update", i + 1)), float(r[metric])) for i, r in enumerate(history) if metric in r and r[metric] is not None]
    if not rows:
        return {"metric": metric, "update": [], "value": []}
    x, y = np.array(rows).T
    bins = np.array_split(np.arange(x.size), min(CURVE_POINTS, x.size))
    return {"metric": metric, "update": [float(x[b[-1]]) for b in bins], "value": [float(y[b].mean()) for b in bins]}


class PredictedReward:
    """OMIGA's ``reward_fn``: the standardised predictions of a MARLHF reward model."""

    def __init__(self, path: str | os.PathLike, device) -> None:
        from marlcov.deep.marlhf.reward_model import load_reward_model

        self.model = load_reward_model(path, device)
        self.name = f"reward-model:{Path(path).resolve()}"

    def __call__(self, obs, actions):
        return self.model.standardised(obs, actions)


# ----------------------------------------------------------------------------- cells
def reward_model_cell(dataset: str, pairs: str, config: Mapping[str, Any], out_dir: str, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Train (or resume) the MARLHF reward model of one seed in ``out_dir``; returns its summary."""
    from marlcov.deep.marlhf.reward_model import train_reward_model

    out = Path(out_dir)
    if not (out / "reward_model.pt").exists():
        train_reward_model(dataset, config, out, device, seed, pairs_path=None if pairs == dataset else pairs)
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "variant": REWARD_VARIANT,
        "seed": int(seed),
        "reward_model": str(out / "reward_model.pt"),
        "summary": metrics["summary"],
        "curve": _curve(metrics["history"], "loss") if metrics["history"] and "loss" in metrics["history"][0] else None,
    }


def algorithm_cell(
    variant: str,
    dataset: str,
    pairs: str | None,
    configs: Mapping[str, Mapping[str, Any]],
    out_dir: str,
    seed: int,
    evaluate: Mapping[str, int],
    device: str = "cpu",
    reward_model: str | None = None,
) -> dict[str, Any]:
    """Train one variant (a key of ``VARIANTS``) with ``seed`` in ``out_dir`` (resuming from
    its checkpoints) and evaluate it. ``configs``: the trainers' config sections (plain dicts);
    ``evaluate``: ``{"episodes", "batch_size"}``; ``reward_model``: the MARLHF reward model
    (``marlhf`` and ``omiga-predicted``). Returns ``{"variant", "seed", evaluation numbers,
    "curve", "train"}``."""
    import torch

    from marlcov.deep.common import resolve_device

    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, batch = int(evaluate["episodes"]), int(evaluate["batch_size"])
    side_pairs = None if pairs in (None, dataset) else pairs
    if variant == "score-decomposition":
        from marlcov.deep.algos.score_decomposition import evaluate_continuous_policy, train_score_decomposition
        from marlcov.deep.data.external import open_dataset

        res = train_score_decomposition(dataset, configs["score_decomposition"], out, dev, seed, progress=False)
        with open_dataset(dataset) as reader:
            spec = reader.spec
        kwargs = {k: spec.env_config[k] for k in ("horizon", "local_ratio", "num_agents") if k in spec.env_config}
        ev = evaluate_continuous_policy(res["policy"], spec.env_name, n, seed, kwargs, batch)
        ev = {"return_per_agent": ev["return_per_agent"], "return_std": ev["return_std"], "episodes": n}
        history = json.loads((out / "metrics.json").read_text())["history"]
        train = {k: v for k, v in res.items() if k.startswith("final_") or k == "dataset_return_per_agent"}
        return {"variant": variant, "seed": int(seed), **ev, "curve": _curve(history, CURVE_METRICS[variant]), "train": train}

    from marlcov.deep.data.hdf5 import DatasetReader

    with DatasetReader(dataset) as reader:
        spec = reader.spec
    if variant == "marlhf":
        from marlcov.deep.marlhf.reference import train_reference
        from marlcov.deep.marlhf.vdn import OfflineVDNConfig, load_policy, train_offline_vdn

        vcfg = from_mapping(OfflineVDNConfig, configs["offline_vdn"], "config section 'offline_vdn'")
        ref = None
        if vcfg.beta > 0:
            ref = out / "reference" / "reference.pt"
            if not ref.exists():
                train_reference(dataset, configs["reference"], ref.parent, dev, seed)
        if not (out / "vdn" / "policy.pt").exists():
            train_offline_vdn(dataset, reward_model, ref, vcfg, out / "vdn", dev, seed)
        metrics = json.loads((out / "vdn" / "metrics.json").read_text())
        policy, history, train = load_policy(out / "vdn" / "policy.pt", dev), metrics["history"], metrics["summary"]
    elif variant == "omapl":
        from marlcov.deep.algos import greedy_policy, load_policy
        from marlcov.deep.algos.omapl import train_omapl

        res = train_omapl(dataset, configs["omapl"], out, dev, seed, progress=False, pairs_path=side_pairs)
        policy, history, train = greedy_policy(load_policy(out / "model.pt", dev)[0]), res["history"], res["final"]
    elif variant in ("omiga", "omiga-predicted"):
        from marlcov.deep.algos import greedy_policy, load_policy
        from marlcov.deep.algos.omiga import train_omiga

        reward_fn = PredictedReward(reward_model, dev) if variant == "omiga-predicted" else None
        res = train_omiga(dataset, configs["omiga"], out, dev, seed, progress=False, reward_fn=reward_fn)
        policy, history, train = greedy_policy(load_policy(out / "model.pt", dev)[0]), res["history"], res["final"]
    elif variant == "mamql":
        from marlcov.deep.algos.mamql import load_mamql, train_mamql

        res = train_mamql(dataset, configs["mamql"], out, dev, seed, progress=False)
        policy = load_mamql(res["policy"], dev, greedy=True)[0]
        history = json.loads((out / "metrics.json").read_text())["history"]
        train = {k: v for k, v in res.items() if k not in ("policy", "out_dir")}
    else:
        raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {variant!r}")
    with torch.no_grad():
        ev = evaluate_discrete(policy, spec, n, seed, batch, str(dev))
    return {"variant": variant, "seed": int(seed), **ev, "curve": _curve(history, CURVE_METRICS[variant]), "train": train}


def variants_of(algos: Sequence[str], omiga_reward: str) -> list[str]:
    """The table rows (``VARIANTS`` keys) of ``algos``: OMIGA gives one or two rows."""
    out = []
    for a in algos:
        if a == "omiga":
            out += {"true": ["omiga"], "predicted": ["omiga-predicted"], "both": ["omiga", "omiga-predicted"]}[omiga_reward]
        else:
            out.append(a)
    return out


def compare_cells(
    data: Mapping[str, Any],
    variants: Sequence[str],
    seeds: Sequence[int],
    configs: Mapping[str, Any],
    out_dir: str | os.PathLike,
    device: str = "cpu",
) -> tuple[list[Cell], list[Cell]]:
    """The two waves of cells (module docstring): reward models and the variants that need
    none, then ``marlhf`` and ``omiga-predicted``."""
    root = Path(out_dir).resolve() / "cells"
    plain = {k: (config_values(v) if isinstance(v, ConfigModel) else dict(v)) for k, v in configs.items()}
    dataset = str(Path(data["path"]).resolve())
    pairs = None if data["pairs"] is None else str(Path(data["pairs"]).resolve())
    needs_rm = [v for v in variants if v in ("marlhf", "omiga-predicted")]
    first: list[Cell] = []
    second: list[Cell] = []
    for seed in seeds:
        rm_dir = root / REWARD_VARIANT / f"seed{seed}"
        if needs_rm:
            first.append(
                Cell(
                    f"{REWARD_VARIANT}/seed{seed}",
                    "marlcov.deep.compare:reward_model_cell",
                    {
                        "dataset": dataset,
                        "pairs": pairs,
                        "config": plain["reward_model"],
                        "out_dir": str(rm_dir),
                        "seed": int(seed),
                        "device": device,
                    },
                    str(rm_dir / "result.json"),
                )
            )
        for v in variants:
            d = root / v / f"seed{seed}"
            kwargs = {
                "variant": v,
                "dataset": dataset,
                "pairs": pairs,
                "configs": plain,
                "out_dir": str(d),
                "seed": int(seed),
                "evaluate": plain["evaluate"],
                "device": device,
            }
            if v in needs_rm:
                kwargs["reward_model"] = str(rm_dir / "reward_model.pt")
            (second if v in needs_rm else first).append(
                Cell(f"{v}/seed{seed}", "marlcov.deep.compare:algorithm_cell", kwargs, str(d / "result.json"))
            )
    return first, second


# ----------------------------------------------------------------------------- outputs
def env_label(env: str) -> str:
    """``env`` as tables show it: SMAX maps say SMAX (never SMAC)."""
    return f"{env} (SMAX, not SMAC)" if env.startswith("smax_") else env


def comparison_rows(results: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """Per variant: summaries over seeds of the return per agent, the win rate (SMAX) and the
    wall time of a cell, and the per-seed records."""
    rows = {}
    for v in variants:
        recs = sorted((r for r in results if r["variant"] == v), key=lambda r: r["seed"])
        row = {
            "label": VARIANTS[v][0],
            "trains_on": VARIANTS[v][1],
            "seeds": [r["seed"] for r in recs],
            "return_per_agent": summary([r["return_per_agent"] for r in recs]),
            "seconds": summary([r["seconds"] for r in recs]),
            "per_seed": [
                {k: r[k] for k in ("seed", "return_per_agent", "return_std", "win_rate", "episodes", "seconds", "train") if k in r}
                for r in recs
            ],
        }
        if all("win_rate" in r for r in recs):
            row["win_rate"] = summary([r["win_rate"] for r in recs])
        rows[v] = row
    return rows


def comparison_markdown(result: Mapping[str, Any]) -> str:
    """The table of a comparison (``run_compare``'s result) in Markdown."""
    rows = result["rows"]
    smax = any("win_rate" in r for r in rows.values())
    data = result["dataset"]
    lines = [
        f"Comparison on {env_label(result['env'])}: dataset `{Path(data['path']).name}` ({data['n_trajectories']} trajectories, "
        f"{data['action_space']} actions), scale {result['scale']}, seeds {', '.join(map(str, result['seeds']))}; "
        f"{result['evaluate']['episodes']} evaluation episodes per seed. Mean ± sample std over seeds; per-seed numbers in compare.json.",
        "",
    ]
    header = ["Algorithm", "Trains on"] + (["Win rate"] if smax else []) + ["Return per agent", "Wall time per seed (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows.values():
        cells = [row["label"], row["trains_on"]] + ([cell_text(row.get("win_rate"), 3)] if smax else [])
        cells += [cell_text(row["return_per_agent"], 3), cell_text(row["seconds"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if result["env"].startswith("smax_"):
        lines += ["", "SMAX numbers: JaxMARL's SMAC re-implementation (docs/smax.md); not comparable to published SMAC tables."]
    return "\n".join(lines) + "\n"


def learning_curves_figure(results: Sequence[Mapping[str, Any]], variants: Sequence[str], path: str | os.PathLike, title: str) -> Path:
    """One panel per variant: its recorded loss against the update, mean over seeds (and the
    range over seeds shaded); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [v for v in variants if any(r["variant"] == v and r.get("curve") and r["curve"]["value"] for r in results)]
    cols = min(3, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, v in zip(axes.ravel(), shown):
        curves = [r["curve"] for r in results if r["variant"] == v and r.get("curve") and r["curve"]["value"]]
        k = min(len(c["value"]) for c in curves)
        x = np.asarray(curves[0]["update"][:k])
        y = np.asarray([c["value"][:k] for c in curves])
        ax.plot(x, y.mean(axis=0), lw=1.5)
        if len(curves) > 1:
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), alpha=0.25)
        ax.set_title(f"{VARIANTS[v][0]} ({len(curves)} seeds)", fontsize=9)
        ax.set_xlabel("update")
        ax.set_ylabel(curves[0]["metric"])
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from marlcov.theory.atomic import save_figure

    path = save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the command
def run_compare(
    dataset: str | os.PathLike,
    algos: str | Sequence[str],
    seeds: int = 3,
    env: str | None = None,
    scale: str | None = "small",
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike = "marlcov-compare",
    workers: int | None = None,
    ray_address: str | None = None,
    threads: int | None = 1,
    device: str = "cpu",
    omiga_reward: str = "true",
    log: Log | None = None,
) -> dict[str, Any]:
    """``marlcov deep compare``: train and evaluate ``algos`` on ``dataset`` with ``seeds``
    seeds (``seed_base`` + 0..K-1), cells in parallel (``workers`` local processes, default
    ``min(cells, cpu_count)``, or Ray at ``ray_address``; ``threads`` torch threads per cell).
    Writes ``compare.json``, ``compare.md`` and ``curves.png`` into ``out_dir``; returns the
    content of ``compare.json`` with the paths added."""
    from marlcov.deep.common import atomic_write_text

    names = parse_algos(algos)
    if not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"--seeds: expected a positive integer, got {seeds!r}")
    data = dataset_description(dataset)
    if env is not None and env_of(env) != data["env"]:
        raise ValueError(f"--env: {data['path']} holds {data['env']} trajectories, not {env_of(env)}")
    check_algos_fit_dataset(names, data, omiga_reward)
    cfg = load_compare_config(scale, config)
    configs = trainer_configs(cfg, data["env"])
    seed_list = [int(cfg.get("seed_base", 0)) + k for k in range(int(seeds))]
    variants = variants_of(names, omiga_reward)
    first, second = compare_cells(data, variants, seed_list, configs, out_dir, device)
    n_workers = workers if workers is not None else default_workers(len(first))
    results = run_cells(first, n_workers, ray_address, threads, log)
    if second:
        results += run_cells(second, workers if workers is not None else default_workers(len(second)), ray_address, threads, log)
    learned = [r for r in results if r["variant"] != REWARD_VARIANT]
    out = Path(out_dir)
    result = {
        "env": data["env"],
        "dataset": data,
        "algos": names,
        "omiga_reward": omiga_reward,
        "scale": scale,
        "seeds": seed_list,
        "evaluate": configs["evaluate"],
        "config": cfg,
        "rows": comparison_rows(learned, variants),
        "reward_models": [{k: r[k] for k in ("seed", "summary", "seconds")} for r in results if r["variant"] == REWARD_VARIANT],
        "curves": {v: [{"seed": r["seed"], **r["curve"]} for r in learned if r["variant"] == v and r.get("curve")] for v in variants},
    }
    atomic_write_text(json.dumps(result, indent=1) + "\n", out / "compare.json")
    atomic_write_text(comparison_markdown(result), out / "compare.md")
    learning_curves_figure(learned, variants, out / "curves.png", f"Learning curves on {env_label(data['env'])} (mean over seeds)")
    result.update(json=str(out / "compare.json"), markdown=str(out / "compare.md"), curves_png=str(out / "curves.png"))
    return result
