"""``marlcov deep``: the MARLHF pipeline stage by stage, ``reproduce`` for whole tables,
``compare`` across algorithms and ``study`` (coverage measures against test returns).

``add_deep_parser(subparsers)`` registers the ``deep`` command and its sub-commands on the
top-level parser of ``marlcov.cli``; each sub-command sets ``func``, which returns the exit
status. Bad input raises ``marlcov.theory.games.GameError`` naming the option or file. Every
sub-command takes ``--json`` (one JSON document on stdout; stage logs go to stderr),
``--config FILE`` (a pipeline config with sections, or a flat config of that stage's trainer,
overriding the ``--scale`` defaults of ``deep/configs``), ``--device`` and ``--threads``.

Length: over 600 lines, most of them the argparse definitions and help texts of the eleven
sub-commands; the work of each is one call into ``marlcov.deep``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marlcov.cli._common import print_json
from marlcov.theory.games import GameError

DEFAULT_OUT = "marlcov-deep"
#: Modules of the ``deep`` extra; a command that misses one says how to install it.
DEEP_EXTRA_MODULES = ("torch", "jax", "jaxmarl", "tqdm", "yaml", "mpe2")


# ----------------------------------------------------------------------------- helpers
def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _set_threads(threads: int | None) -> None:
    """torch threads of this process: ``--threads``, at most the CPUs it may use (more threads
    than cores spin against each other; ``deep.cells`` shares the cores among its workers)."""
    if threads is None:
        return
    if threads < 1:
        raise GameError(f"--threads: expected a positive integer, got {threads}")
    import torch

    from marlcov.deep.cells import available_cpus

    cpus = available_cpus()
    if threads > cpus:
        _log(f"[note] --threads {threads} lowered to {cpus}: this process may use {cpus} CPU(s)")
    torch.set_num_threads(min(int(threads), cpus))


def _pipeline_config(args) -> dict[str, Any]:
    """The ``--scale`` pipeline config updated by ``--config`` (a pipeline config, or a flat
    config of the command's stage section)."""
    from marlcov.deep.pipeline import TOP_LEVEL, load_pipeline_config, read_mapping

    override = None
    if getattr(args, "config", None):
        override = read_mapping(args.config)
        stage = getattr(args, "stage_section", None)
        if stage is not None and not set(override) <= set(TOP_LEVEL):
            override = {stage: override}
    return load_pipeline_config(args.scale, override)


def _stage_config(args, env: str, overrides: dict[str, Any]) -> Any:
    """The validated dataclass of the command's stage for ``env``, with command-line overrides."""
    from marlcov.deep.config_model import from_mapping
    from marlcov.deep.pipeline import section, stage_configs

    config = _pipeline_config(args)
    cls = type(stage_configs(config, env)[args.stage_section])
    values = section(config, args.stage_section, env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(cls, values, f"config section {args.stage_section!r}")


def _dataset_env(path: str) -> str:
    from marlcov.deep.data.external import open_dataset

    if not Path(path).exists():
        raise GameError(f"{path}: dataset file not found")
    with open_dataset(path) as reader:
        return reader.spec.env_name


def _report(args, out: dict[str, Any], title: str) -> int:
    if args.json:
        print_json(out)
        return 0
    print(title)
    for key, value in out.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        print(f"  {key}: {value}")
    return 0


def _guarded(func: Callable[[Any], int]) -> Callable[[Any], int]:
    """Run ``func`` with the thread count set; library errors about input become GameError
    (exit status 2 in ``marlcov.cli.main``); a missing module of the ``deep`` extra is reported
    with the install command."""

    def run(args) -> int:
        try:
            _set_threads(getattr(args, "threads", None))
            return func(args)
        except GameError:
            raise
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in DEEP_EXTRA_MODULES:
                raise GameError(f"'marlcov deep' needs the deep extra (missing module {exc.name!r}): pip install 'marlcov[deep]'") from exc
            raise
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            raise GameError(str(exc)) from exc

    run.__name__ = func.__name__
    return run


# ----------------------------------------------------------------------------- commands
def cmd_train_experts(args) -> int:
    from marlcov.deep.marlhf.online_vdn import train_behaviour_policies
    from marlcov.deep.pipeline import env_name

    env = env_name(args.env)
    cfg = _stage_config(args, env, {"total_env_steps": args.env_steps})
    out_dir = Path(args.out or Path(DEFAULT_OUT) / env / "policies")
    res = train_behaviour_policies(env, cfg, out_dir, args.device, args.seed)
    out = {
        "out_dir": str(out_dir),
        "expert": res["expert"],
        "rookies": res["rookies"],
        "levels": [{k: lv[k] for k in ("name", "env_steps", "test_return_per_agent")} for lv in res["levels"]],
    }
    return _report(args, out, f"behaviour policies of {env} in {out_dir}")


def cmd_collect(args) -> int:
    """Three kinds of dataset: a Table 1 mix on an MPE task from trained policies
    (``--policies``), a Table 1 mix on a SMAX map from scripted behaviours, or with
    ``--continuous`` a continuous-action spread dataset (``--expert-fraction``, ``--noise``)."""
    from marlcov.deep.common import resolve_device
    from marlcov.deep.pipeline import (
        MIXES,
        collect_continuous,
        collect_dataset,
        collect_smax_dataset,
        env_kwargs,
        env_name,
        section,
        smax_map,
        stage_configs,
    )

    config = _pipeline_config(args)

    def not_with(kind: str, options: dict[str, Any]) -> None:
        for option, value in options.items():
            if value is not None:
                raise GameError(f"{option}: not an option of {kind}")

    def size_and_batch(env: str) -> tuple[int, int]:
        collect = section(config, "collect", env)
        n = args.trajectories if args.trajectories is not None else int(collect.get("trajectories", 1024))
        return n, args.batch_size or int(collect.get("batch_size", 128))

    if args.continuous:
        not_with(
            "--continuous collection (it takes --expert-fraction and --noise)",
            {"--mix": args.mix, "--policies": args.policies, "--epsilon": args.epsilon},
        )
        n, batch = size_and_batch(env_name(args.env))
        res = collect_continuous(
            args.env,
            n,
            args.out,
            expert_fraction=0.5 if args.expert_fraction is None else args.expert_fraction,
            noise=0.1 if args.noise is None else args.noise,
            seed=args.seed,
            batch_size=batch,
            overwrite=args.overwrite,
        )
        return _report(args, res, f"wrote {res['n_trajectories']} continuous-action trajectories to {args.out}")
    not_with(
        "a Table 1 mix (--expert-fraction and --noise need --continuous)",
        {"--expert-fraction": args.expert_fraction, "--noise": args.noise},
    )
    if args.mix is None:
        raise GameError(f"--mix: required (one of {list(MIXES)}) unless --continuous is given")
    smax = smax_map(args.env)
    if smax is not None:
        not_with(
            "SMAX maps (their behaviours are the scripted ones of deep.envs.smax_behaviours)",
            {"--policies": args.policies, "--epsilon": args.epsilon},
        )
        n, batch = size_and_batch("smax_" + smax)
        res = collect_smax_dataset(smax, args.mix, n, args.out, seed=args.seed, batch_size=batch, overwrite=args.overwrite)
        return _report(args, res, f"wrote {res['n_trajectories']} trajectories ({args.mix}) of smax_{smax} to {args.out}")
    env = env_name(args.env)
    if args.policies is None:
        raise GameError("--policies: required for MPE tasks (the directory of expert.pt and rookie_<steps>.pt from train-experts)")
    n, batch = size_and_batch(env)
    collect = section(config, "collect", env)
    res = collect_dataset(
        env,
        args.mix,
        n,
        args.policies,
        args.out,
        seed=args.seed,
        batch_size=batch,
        epsilon=float(collect.get("epsilon", 0.0)) if args.epsilon is None else args.epsilon,
        rookie_steps=collect.get("rookie_steps"),
        env_options=env_kwargs(env, stage_configs(config, env)["online_vdn"]),
        device=str(resolve_device(args.device)),
        overwrite=args.overwrite,
    )
    return _report(args, res, f"wrote {res['n_trajectories']} trajectories ({args.mix}) to {args.out}")


def cmd_label(args) -> int:
    from marlcov.deep.pipeline import label_dataset_file, section

    if not Path(args.data).exists():
        raise GameError(f"{args.data}: dataset file not found")
    label = section(_pipeline_config(args), "label", _dataset_env(args.data))
    k = args.pairs_per_trajectory if args.pairs_per_trajectory is not None else int(label.get("pairs_per_trajectory", 10))
    steep = args.steepness if args.steepness is not None else float(label.get("steepness", 5.0))
    normalisation = args.normalisation or str(label.get("normalisation", "min-max"))
    res = label_dataset_file(
        args.data, args.out, pairs_per_trajectory=k, steepness=steep, seed=args.seed, overwrite=args.overwrite, normalisation=normalisation
    )
    return _report(args, res, f"wrote {res['pairs']} labelled pairs to {res['path']}")


def cmd_train_reward(args) -> int:
    from marlcov.deep.marlhf.reward_model import train_reward_model
    from marlcov.deep.pipeline import pairs_path_for

    env = _dataset_env(args.data)
    cfg = _stage_config(
        args, env, {"alpha": args.alpha, "model": args.model, "epochs": args.epochs, "variance": args.variance, "labels": args.labels}
    )
    pairs = args.pairs
    if pairs is None and pairs_path_for(args.data).exists():
        pairs = str(pairs_path_for(args.data))
    out_dir = Path(args.out)
    res = train_reward_model(args.data, cfg, out_dir, args.device, args.seed, pairs_path=pairs)
    return _report(args, res, f"reward model in {out_dir}")


def cmd_train_reference(args) -> int:
    from marlcov.deep.marlhf.reference import train_reference

    env = _dataset_env(args.data)
    cfg = _stage_config(args, env, {"epochs": args.epochs, "model": args.model})
    res = train_reference(args.data, cfg, args.out, args.device, args.seed)
    return _report(args, res, f"reference policy in {args.out}")


def cmd_train_policy(args) -> int:
    from marlcov.deep.marlhf.vdn import train_offline_vdn

    env = _dataset_env(args.data)
    cfg = _stage_config(args, env, {"beta": args.beta, "updates": args.updates})
    if cfg.beta > 0 and args.reference is None:
        raise GameError(f"--reference: required when beta > 0 (beta = {cfg.beta:g}); train one with 'marlcov deep train-reference'")
    res = train_offline_vdn(args.data, args.reward_model, args.reference, cfg, args.out, args.device, args.seed)
    return _report(args, res, f"offline VDN policy in {args.out}")


def cmd_evaluate(args) -> int:
    from marlcov.deep.marlhf.evaluate import evaluate_policy, plot_reward_trajectory, reward_metrics
    from marlcov.deep.marlhf.reward_model import load_reward_model
    from marlcov.deep.marlhf.vdn import load_policy
    from marlcov.deep.pipeline import env_kwargs, env_name, section, stage_configs

    policy = load_policy(args.policy, args.device)
    env = env_name(args.env) if args.env else policy.env_name
    if policy.env_name != env:
        raise GameError(f"--env: {args.policy} was trained on {policy.env_name!r}, not {env!r}")
    config = _pipeline_config(args)
    ev = section(config, "evaluate", env)
    n = args.episodes if args.episodes is not None else int(ev.get("episodes", 500))
    res = evaluate_policy(
        policy,
        env,
        n_episodes=n,
        seed=args.seed,
        batch_size=int(ev.get("batch_size", 250)),
        device=args.device,
        env_kwargs=env_kwargs(env, stage_configs(config, env)["online_vdn"]),
        progress=not args.json,
    )
    out: dict[str, Any] = {
        k: res[k] for k in ("env_name", "n_episodes", "seed", "return_per_agent", "return_std", "return_sem", "per_agent")
    }
    if (args.reward_model is None) != (args.data is None):
        raise GameError("--reward-model and --data: give both to measure the reward MSE (or neither)")
    if args.reward_model is not None:
        model = load_reward_model(args.reward_model, args.device)
        out.update(reward_metrics(model, args.data, args.device))
        if args.plot:
            out["plot"] = str(plot_reward_trajectory({"r_phi": model}, args.data, args.index, args.plot, args.device))
    elif args.plot:
        raise GameError("--plot: needs --reward-model and --data")
    return _report(args, out, f"evaluation of {args.policy} on {env}")


def cmd_reproduce(args) -> int:
    from marlcov.deep.common import resolve_device
    from marlcov.deep.pipeline import reproduce

    if args.seeds < 1:
        raise GameError(f"--seeds: expected a positive integer, got {args.seeds}")
    device = str(resolve_device(args.device))
    config = _pipeline_config(args)
    if args.workers is not None and args.workers < 1:
        raise GameError(f"--workers: expected a positive integer, got {args.workers}")
    res = reproduce(
        args.table,
        args.env,
        None,
        args.seeds,
        device,
        args.out,
        config,
        log=_log if not args.quiet else None,
        workers=args.workers,
        ray_address=args.ray,
        threads=args.threads,
    )
    markdown = Path(res["markdown"])
    out = {
        "table": args.table,
        "env": res["env"],
        "seeds": args.seeds,
        "device": device,
        "markdown": str(markdown),
        "json": str(Path(args.out) / res["env"] / f"{args.table}.json"),
        "ran": res["ran"],
        "results": res["rows"] if args.table == "table2" else res["columns"],
    }
    if args.json:
        print_json(out)
        return 0
    print(markdown.read_text())
    print(f"results: {out['json']}; table: {markdown}; plots: {Path(args.out) / res['env'] / 'plots'}")
    return 0


def cmd_compare(args) -> int:
    from marlcov.deep.common import resolve_device
    from marlcov.deep.compare import run_compare

    if args.seeds < 1:
        raise GameError(f"--seeds: expected a positive integer, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise GameError(f"--workers: expected a positive integer, got {args.workers}")
    device = str(resolve_device(args.device))
    try:
        res = run_compare(
            args.dataset,
            args.algos,
            args.seeds,
            args.env,
            args.scale,
            args.config,
            args.out,
            args.workers,
            args.ray,
            args.threads,
            device,
            args.omiga_reward,
            log=_log if not args.quiet else None,
        )
    except RuntimeError as exc:
        print(f"marlcov deep compare: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(
            {
                k: res[k]
                for k in (
                    "env",
                    "dataset",
                    "algos",
                    "omiga_reward",
                    "scale",
                    "seeds",
                    "evaluate",
                    "rows",
                    "reward_models",
                    "json",
                    "markdown",
                    "curves_png",
                )
            }
        )
        return 0
    print(Path(res["markdown"]).read_text())
    print(f"results: {res['json']}; table: {res['markdown']}; learning curves: {res['curves_png']}")
    return 0


def cmd_ablate(args) -> int:
    """The paper's public-code choices reverted one at a time (docs/deep_pipeline.md)."""
    from marlcov.deep.ablation import VARIANTS, run_ablation_seeds
    from marlcov.deep.common import resolve_device

    unknown = sorted(set(args.variants or []) - set(VARIANTS))
    if unknown:
        raise GameError(f"--variants: unknown {unknown}; expected names from {sorted(VARIANTS)}")
    if args.seeds < 1:
        raise GameError(f"--seeds: expected a positive integer, got {args.seeds}")
    res = run_ablation_seeds(
        args.env,
        args.out,
        args.seeds,
        scale=args.scale,
        config=args.config,
        mix=args.mix,
        device=str(resolve_device(args.device)),
        variants=args.variants,
        log=None if args.quiet else _log,
    )
    if args.json:
        print_json(res)
        return 0
    print(res["markdown"], end="")
    return 0


def cmd_study(args) -> int:
    """The coverage measures of the Table 1 mixes against the MARLHF test return (docs/dataset_coverage.md)."""
    from marlcov.deep.coverage_study import markdown, run_study

    for name in ("bootstrap", "bootstrap_anchors", "episodes", "feature_dim"):
        value = getattr(args, name)
        if value < (0 if name == "bootstrap" else 1):
            kind = "non-negative" if name == "bootstrap" else "positive"
            raise GameError(f"--{name.replace('_', '-')}: expected a {kind} integer, got {value}")
    result = run_study(
        args.runs,
        args.out,
        bootstrap=args.bootstrap,
        bootstrap_anchors=args.bootstrap_anchors,
        episodes=args.episodes,
        feature_dim=args.feature_dim,
        seed=args.seed,
        simulate=not args.no_simulate,
        envs=args.env,
        log=None if args.quiet else _log,
    )
    if args.json:
        print_json(result)
        return 0
    print(markdown(result))
    return 0


# ----------------------------------------------------------------------------- parser
def add_deep_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``deep`` and its sub-commands on ``subparsers`` (of the top-level parser)."""
    from marlcov.deep.compare import ALGOS as COMPARE_ALGOS
    from marlcov.deep.compare import OMIGA_REWARDS
    from marlcov.deep.pipeline import MIXES, SCALES, TABLES

    deep = subparsers.add_parser(
        "deep",
        help="the MARLHF pipeline on MPE: collect, label, train, evaluate, reproduce",
        description="The MARLHF pipeline on MPE (see docs/deep_pipeline.md).",
    )
    sub = deep.add_subparsers(dest="deep_command", required=True, metavar="STAGE")

    def add(name: str, func, help: str, stage_section: str | None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        p.add_argument("--config", help="config file (.json/.yaml): a pipeline config, or the flat config of this stage")
        p.add_argument("--scale", choices=SCALES, default="small", help="defaults from deep/configs/<scale>.json (default %(default)s)")
        p.add_argument("--device", default="auto", help="cpu, cuda[:k] or auto (default %(default)s)")
        p.add_argument(
            "--threads",
            type=int,
            help="torch CPU threads per process (default: the CPUs shared among the workers; "
            "never more than the cores); results do not depend on it",
        )
        p.set_defaults(func=_guarded(func), stage_section=stage_section)
        return p

    def seed(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")

    def parallel(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workers", type=int, help="local processes running cells in parallel (default: min(cells, CPU count))")
        p.add_argument(
            "--ray", metavar="ADDRESS", help="run the cells as Ray tasks: ray.init(address=ADDRESS); 'local' starts a local instance"
        )

    p = add("train-experts", cmd_train_experts, "online VDN behaviour policies: expert.pt and rookie_<steps>.pt", "online_vdn")
    p.add_argument("--env", required=True, help="spread, tag or reference")
    p.add_argument("--out", help=f"output directory (default {DEFAULT_OUT}/<env>/policies)")
    p.add_argument("--env-steps", dest="env_steps", type=int, help="total environment steps (overrides the config)")
    seed(p)

    p = add(
        "collect",
        cmd_collect,
        "collect a Table 1 mix of expert/unilateral/rookie/trivial trajectories into HDF5 "
        "(MPE from trained policies, SMAX from scripted ones), or a continuous-action spread dataset",
        None,
    )
    p.add_argument("--env", required=True, help="spread, tag or reference (MPE), or a SMAX map (3m, 2s3z, 5m_vs_6m, ...; smax_3m)")
    p.add_argument("--mix", choices=list(MIXES), help="Table 1 mix (required unless --continuous)")
    p.add_argument("--trajectories", type=int, help="dataset size (default: the config's collect.trajectories)")
    p.add_argument("--policies", help="MPE only: directory of expert.pt and rookie_<steps>.pt (train-experts)")
    p.add_argument("--out", required=True, help="output DATA.h5")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="episodes played and written per chunk")
    p.add_argument("--epsilon", type=float, help="MPE only: exploration of the expert and rookie policies (default 0)")
    p.add_argument(
        "--continuous",
        action="store_true",
        help="spread with continuous actions: scripted landmark-assignment expert and uniform trajectories",
    )
    p.add_argument(
        "--expert-fraction", dest="expert_fraction", type=float, help="with --continuous: share of expert trajectories (default 0.5)"
    )
    p.add_argument("--noise", type=float, help="with --continuous: std of the expert's Gaussian action noise (default 0.1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    seed(p)

    p = add("label", cmd_label, "Bradley-Terry preference labels (one per agent) into DATA.pairs.h5", None)
    p.add_argument("data", help="DATA.h5 from collect")
    p.add_argument("--pairs-per-trajectory", dest="pairs_per_trajectory", type=int, help="pairs per trajectory (paper: 10)")
    p.add_argument("--steepness", type=float, help="factor on normalised return differences (paper: 5)")
    p.add_argument(
        "--normalisation",
        choices=("min-max", "standardised"),
        help="returns behind the labels: min-max range (the paper's code, default) or z-scores (the paper's text)",
    )
    p.add_argument("--out", help="pairs file (default DATA.pairs.h5 beside DATA.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing pairs file")
    seed(p)

    p = add("train-reward", cmd_train_reward, "reward model r_phi with loss (1)", "reward_model")
    p.add_argument("data", help="DATA.h5")
    p.add_argument("--pairs", help="pairs file (default DATA.pairs.h5 when present, else the pairs in DATA.h5)")
    p.add_argument("--out", required=True, help="output directory (reward_model.pt)")
    p.add_argument("--alpha", type=float, help="coefficient of the temporal MSE term (2)")
    p.add_argument("--variance", choices=("dataset", "batch", "none"), help="normalisation of the MSE term")
    p.add_argument("--model", choices=("mlp", "gru", "linear"), help="reward network r_phi (default: the config's)")
    p.add_argument("--epochs", type=int, help="passes over the pairs (default: the config's)")
    p.add_argument("--labels", choices=("redrawn", "fixed"), help="labels redrawn every minibatch (default) or the stored draw")
    seed(p)

    p = add("train-reference", cmd_train_reference, "imitation reference pi_ref by behaviour cloning", "reference")
    p.add_argument("data", help="DATA.h5")
    p.add_argument("--out", required=True, help="output directory (reference.pt)")
    p.add_argument("--epochs", type=int, help="passes over the trajectories (default: the config's)")
    p.add_argument("--model", choices=("gru", "mlp"), help="recurrent (default, as the paper's code) or per-step reference")
    seed(p)

    p = add("train-policy", cmd_train_policy, "offline VDN on the standardised reward (4) plus the KL reward of (3)", "offline_vdn")
    p.add_argument("data", help="DATA.h5")
    p.add_argument("--reward-model", dest="reward_model", required=True, help="reward_model.pt")
    p.add_argument("--reference", help="reference.pt (needed when beta > 0)")
    p.add_argument("--out", required=True, help="output directory (policy.pt)")
    p.add_argument("--beta", type=float, help="KL reward coefficient")
    p.add_argument("--updates", type=int, help="gradient updates of the Q-network (default: the config's)")
    seed(p)

    p = add("evaluate", cmd_evaluate, "test return per agent of a policy; reward MSE and plot with --reward-model and --data", None)
    p.add_argument("policy", help="policy.pt (offline VDN) or a behaviour checkpoint")
    p.add_argument("--env", help="spread, tag or reference (default: the policy's)")
    p.add_argument("--episodes", type=int, help="test episodes (default: the config's evaluate.episodes)")
    p.add_argument("--reward-model", dest="reward_model", help="reward_model.pt, for the MSE of the standardised reward")
    p.add_argument("--data", help="DATA.h5 the MSE is measured on")
    p.add_argument("--plot", help="PNG of predicted vs true rewards along one trajectory (Figure 2)")
    p.add_argument("--index", type=int, default=0, help="trajectory of the plot (default %(default)s)")
    seed(p)

    p = add("reproduce", cmd_reproduce, "the whole chain for Table 2 (mixes) or Table 3 (beta, alpha = 0), resumable", None)
    p.add_argument("table", choices=TABLES, help="table2: the Table 1 mixes; table3: beta with alpha = 0")
    p.add_argument("--env", required=True, help="spread, tag or reference")
    p.add_argument("--seeds", type=int, default=1, help="seeds of the learning stages (default %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT, help="run directory (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no stage log on stderr")
    parallel(p)

    p = add(
        "compare", cmd_compare, "train several offline algorithms on one dataset with the same seeds; one table and learning curves", None
    )
    p.add_argument("--env", required=True, help="the dataset's task: spread, tag, reference (MPE) or a SMAX map (3m, smax_3m, ...)")
    p.add_argument("--dataset", required=True, help="DATA.h5 (discrete: deep.data schema; continuous: deep.envs.mpe_continuous)")
    p.add_argument("--algos", required=True, help="comma-separated: " + ",".join(COMPARE_ALGOS))
    p.add_argument("--seeds", type=int, default=3, help="seeds per algorithm (default %(default)s)")
    p.add_argument(
        "--omiga-reward",
        dest="omiga_reward",
        choices=OMIGA_REWARDS,
        default="true",
        help="OMIGA's rewards: the dataset's true rewards, the MARLHF reward model's predictions, or both (default %(default)s)",
    )
    p.add_argument("--out", default="marlcov-compare", help="run directory (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no cell log on stderr")
    parallel(p)

    from marlcov.deep.coverage_study import DEFAULT_BOOTSTRAP, DEFAULT_BOOTSTRAP_ANCHORS, DEFAULT_EPISODES, DEFAULT_FEATURE_DIM

    p = add("ablate", cmd_ablate, "the paper's public-code choices reverted one at a time: test return of each chain", None)
    p.add_argument("--env", required=True, help="spread, tag or reference")
    p.add_argument("--mix", choices=list(MIXES), default="diversified", help="dataset mix (default %(default)s)")
    p.add_argument("--variants", nargs="+", help="variants to run (default: all of deep.ablation.VARIANTS)")
    p.add_argument("--seeds", type=int, default=1, help="learning seeds 0 .. K-1 on one dataset (default %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT, help="run directory (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no stage log on stderr")

    p = add("study", cmd_study, "coverage measures of the Table 1 mixes against the MARLHF test return and reward MSE", None)
    p.add_argument("--runs", nargs="+", required=True, help="run directories of 'marlcov deep reproduce table2'")
    p.add_argument("--out", required=True, help="directory for coverage_study.json/.md and the per-mix caches")
    p.add_argument("--env", action="append", help="only these environments (spread, tag, reference); repeatable")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap replicates (default %(default)s)")
    p.add_argument(
        "--bootstrap-anchors",
        dest="bootstrap_anchors",
        type=int,
        default=DEFAULT_BOOTSTRAP_ANCHORS,
        help="anchors the replicates are evaluated on (default %(default)s)",
    )
    p.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help="simulated rollouts per policy (default %(default)s)")
    p.add_argument(
        "--feature-dim", dest="feature_dim", type=int, default=DEFAULT_FEATURE_DIM, help="random-feature dimension d (default %(default)s)"
    )
    p.add_argument("--no-simulate", dest="no_simulate", action="store_true", help="plug-in deviations only (no rollouts)")
    p.add_argument("--quiet", action="store_true", help="no log on stderr")
    seed(p)
    return deep
