"""The stage cache of ``reproduce``: every stage of one task is a file, made when missing, so a
killed run resumes where it stopped; the learning stages run as cells (``deep.cells``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from marlcov.deep.config_model import config_values, load_config

from .collectors import collect_dataset, label_dataset_file, pairs_path_for
from .config import ENV_LABELS, env_kwargs, env_name, stage_configs
from .mixes import MIX_LABELS

Log = Callable[[str], None]


def _stage(path: Path, name: str, log: Log, make: Callable[[], Any]) -> bool:
    """Run ``make`` unless ``path`` exists; returns whether it ran."""
    if path.exists():
        log(f"[skip] {name}: {path} exists")
        return False
    log(f"[run ] {name}")
    make()
    return True


#: Config fields that change how a trainer reports or checkpoints, not what it computes.
CADENCE_FIELDS = ("progress", "checkpoint_every", "checkpoint_seconds")


def check_stage_config(stage_dir: Path, config: Any) -> None:
    """ValueError when the finished stage in ``stage_dir`` was made with another trainer config
    than ``config`` (a config dataclass): its ``config.json`` holds the config it ran with.
    A run directory made before a default changed is refused, not silently mixed into a run
    under the new defaults."""
    saved_path = stage_dir / "config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text()).get("config", {})
    now = config_values(config)
    changed = sorted(k for k in set(saved) | set(now) if k not in CADENCE_FIELDS and saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k, '(absent)')!r} there, {now.get(k, '(absent)')!r} now" for k in changed)
        raise ValueError(
            f"{stage_dir}: this stage was made with another config ({detail}); delete the directory to "
            "remake it under the current config, or give another --out"
        )


def check_pairs_normalisation(pairs_path: Path, normalisation: str) -> None:
    """ValueError when an existing pairs file was labelled over returns normalised otherwise."""
    import h5py

    from marlcov.deep.data.preferences import LABEL_MODELS
    from marlcov.deep.data.schema import PAIRS_GROUP

    with h5py.File(pairs_path, "r") as f:
        model = f[PAIRS_GROUP].attrs.get("model") if PAIRS_GROUP in f else None
    model = model.decode() if isinstance(model, bytes) else model
    if model is not None and model != LABEL_MODELS[normalisation]:
        raise ValueError(
            f"{pairs_path}: its labels come from {model!r}, the config asks for {LABEL_MODELS[normalisation]!r} "
            f"(label.normalisation {normalisation!r}); delete the pairs file and the stages after it, or give another --out"
        )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(obj: Any, path: Path) -> None:
    from marlcov.deep.common import atomic_write_text

    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def _fmt_beta(beta: float) -> str:
    return f"{beta:g}"


class Reproduction:
    """One ``reproduce`` run: the directories of every stage of one environment and the code
    that makes each of them when missing. ``log`` receives one line per stage."""

    def __init__(
        self, env: str, config: Mapping[str, Any], out_dir: str | os.PathLike, device: str = "cpu", log: Log | None = None
    ) -> None:
        self.env = env_name(env)
        self.config = dict(config)
        self.root = Path(out_dir)
        self.dir = self.root / self.env
        self.device = device
        self.log = log or (lambda line: None)
        #: Every section validated into its config class (the defaults live there, once).
        self.cfg = stage_configs(self.config, self.env)
        self.seed_base = int(self.config.get("seed_base", 0))
        self.env_options = env_kwargs(self.env, self.cfg["online_vdn"], self.cfg["env"])
        self.ran: list[str] = []
        self._checked: set[Path] = set()

    def _run(self, path: Path, name: str, make: Callable[[], Any]) -> None:
        if path in self._checked:
            return
        if _stage(path, name, self.log, make):
            self.ran.append(name)
        self._checked.add(path)

    # -- shared stages
    def policies(self) -> Path:
        from marlcov.deep.marlhf.online_vdn import train_behaviour_policies

        d = self.dir / "policies"
        rookies = [d / f"rookie_{int(s)}.pt" for s in self.cfg["online_vdn"].rookie_steps]
        done = d / "metrics.json"
        if not (done.exists() and all(p.exists() for p in rookies) and (d / "expert.pt").exists()):
            done.unlink(missing_ok=True)
        self._run(
            done,
            "behaviour policies",
            lambda: train_behaviour_policies(
                self.env, self.cfg["online_vdn"], d, self.device, self.seed_base, prey_policy=self.env_options.get("prey_policy")
            ),
        )
        return d

    def collect(self, mix: str, path: Path) -> dict[str, Any]:
        """Collect the ``mix`` dataset into ``path`` from the behaviour policies, with the
        config's ``collect`` section and this run's environment."""
        c = self.cfg["collect"]
        return collect_dataset(
            self.env,
            mix,
            c.trajectories,
            self.policies(),
            path,
            seed=self.seed_base,
            batch_size=c.batch_size,
            epsilon=c.epsilon,
            rookie_steps=c.rookie_steps,
            env_options=self.env_options,
        )

    def dataset(self, mix: str) -> Path:
        self.policies()
        path = self.dir / "data" / f"{mix}.h5"
        self._run(path, f"dataset {mix}", lambda: self.collect(mix, path))
        pairs = pairs_path_for(path)
        lb = self.cfg["label"]
        if pairs.exists() and pairs not in self._checked:
            check_pairs_normalisation(pairs, lb.normalisation)
        self._run(
            pairs,
            f"labels {mix}",
            lambda: label_dataset_file(
                path,
                pairs,
                pairs_per_trajectory=lb.pairs_per_trajectory,
                steepness=lb.steepness,
                seed=self.seed_base,
                normalisation=lb.normalisation,
            ),
        )
        return path

    # -- per-seed stages
    def _reward_config(self, alpha: float | None):
        cfg = self.cfg["reward_model"]
        if alpha is not None and alpha != cfg.alpha:
            cfg = load_config(type(cfg), cfg, alpha=float(alpha))
        return cfg

    def reward_model_dir(self, mix: str, seed: int, alpha: float | None = None) -> Path:
        """The directory of the reward model of ``(mix, seed, alpha)`` (None: the config's alpha)."""
        cfg = self._reward_config(alpha)
        name = "reward" if cfg.alpha == self.cfg["reward_model"].alpha else f"reward_alpha{_fmt_beta(cfg.alpha)}"
        return self.dir / "runs" / mix / f"seed{seed}" / name

    def reference_dir(self, mix: str, seed: int) -> Path:
        return self.dir / "runs" / mix / f"seed{seed}" / "reference"

    def policy_dir(self, mix: str, seed: int, beta: float | None = None, alpha: float | None = None) -> Path:
        """The directory of the offline VDN policy (and ``eval.json``) of ``(mix, seed, beta, alpha)``."""
        vbeta = self.cfg["offline_vdn"].beta if beta is None else float(beta)
        rm = self.reward_model_dir(mix, seed, alpha)
        tag = f"vdn_beta{_fmt_beta(vbeta)}" + ("" if rm.name == "reward" else "_" + rm.name.split("_", 1)[1])
        return self.dir / "runs" / mix / f"seed{seed}" / tag

    def reward_model(self, mix: str, seed: int, alpha: float | None = None) -> Path:
        from marlcov.deep.marlhf.reward_model import train_reward_model

        data = self.dataset(mix)
        cfg = self._reward_config(alpha)
        d = self.reward_model_dir(mix, seed, alpha)
        check_stage_config(d, cfg)
        self._run(
            d / "reward_model.pt",
            f"reward model {mix} seed {seed} alpha {cfg.alpha:g}",
            lambda: train_reward_model(data, cfg, d, self.device, seed, pairs_path=pairs_path_for(data)),
        )
        return d / "reward_model.pt"

    def reference(self, mix: str, seed: int) -> Path:
        from marlcov.deep.marlhf.reference import train_reference

        data = self.dataset(mix)
        d = self.reference_dir(mix, seed)
        check_stage_config(d, self.cfg["reference"])
        self._run(
            d / "reference.pt", f"reference {mix} seed {seed}", lambda: train_reference(data, self.cfg["reference"], d, self.device, seed)
        )
        return d / "reference.pt"

    def evaluated_policy(self, mix: str, seed: int, beta: float | None = None, alpha: float | None = None) -> dict[str, Any]:
        """Offline VDN and its evaluation for one (mix, seed, beta, alpha); returns the
        evaluation record (``eval.json``)."""
        from marlcov.deep.marlhf.evaluate import evaluate_policy, reward_metrics
        from marlcov.deep.marlhf.reward_model import load_reward_model
        from marlcov.deep.marlhf.vdn import train_offline_vdn

        data = self.dataset(mix)
        rm = self.reward_model(mix, seed, alpha)
        vcfg = self.cfg["offline_vdn"]
        if beta is not None and beta != vcfg.beta:
            vcfg = load_config(type(vcfg), vcfg, beta=float(beta))
        ref = self.reference(mix, seed) if vcfg.beta > 0 else None
        d = self.policy_dir(mix, seed, beta, alpha)
        tag = d.name
        check_stage_config(d, vcfg)
        self._run(
            d / "policy.pt", f"offline VDN {mix} seed {seed} {tag}", lambda: train_offline_vdn(data, rm, ref, vcfg, d, self.device, seed)
        )
        ev = self.cfg["evaluate"]

        def make_eval() -> None:
            res = evaluate_policy(
                d / "policy.pt",
                self.env,
                n_episodes=ev.episodes,
                seed=seed,
                batch_size=ev.batch_size,
                device=self.device,
                env_kwargs=self.env_options,
                progress=ev.progress,
            )
            model = load_reward_model(rm, self.device)
            metrics = reward_metrics(model, data, self.device)
            record = {
                "env": self.env,
                "mix": mix,
                "seed": seed,
                "beta": vcfg.beta,
                "alpha": model.meta["config"].alpha,
                "return_per_agent": res["return_per_agent"],
                "return_std": res["return_std"],
                "episodes": res["n_episodes"],
                "mse": metrics["mse"],
                "pred_roughness": metrics["pred_roughness"],
                "true_roughness": metrics["true_roughness"],
                "policy": str(d / "policy.pt"),
                "reward_model": str(rm),
            }
            _write_json(record, d / "eval.json")

        self._run(d / "eval.json", f"evaluate {mix} seed {seed} {tag}", make_eval)
        return _read_json(d / "eval.json")

    def plot(self, mix: str, models: Mapping[str, Path], name: str) -> Path:
        from marlcov.deep.marlhf.evaluate import plot_reward_trajectory
        from marlcov.deep.marlhf.reward_model import load_reward_model

        path = self.dir / "plots" / name
        loaded = {label: load_reward_model(p, self.device) for label, p in models.items()}
        self._run(
            path,
            f"plot {name}",
            lambda: plot_reward_trajectory(
                loaded, self.dataset(mix), 0, path, self.device, title=f"{ENV_LABELS[self.env]}, {MIX_LABELS[mix]}, trajectory 0"
            ),
        )
        return path


CELL_RESULT = "cell.json"
LEARNING_STAGES = ("reward_model", "reference", "policy")


def learning_cell(
    env: str,
    config: Mapping[str, Any],
    out_dir: str,
    device: str,
    stage: str,
    mix: str,
    seed: int,
    beta: float | None = None,
    alpha: float | None = None,
) -> dict[str, Any]:
    """One learning cell of ``reproduce``, in any process (``deep.cells``): ``stage``
    ``"reward_model"`` (of ``alpha``), ``"reference"``, or ``"policy"`` (reward model, reference,
    offline VDN of ``beta`` and its evaluation, each made when missing). The shared stages
    (behaviour policies, dataset, labels) must exist. Returns ``{"ran": stages run, "record":
    the evaluation record (policy) or the model path}``."""
    if stage not in LEARNING_STAGES:
        raise ValueError(f"stage: expected one of {list(LEARNING_STAGES)}, got {stage!r}")
    rep = Reproduction(env, config, out_dir, device)
    if stage == "reward_model":
        record: Any = str(rep.reward_model(mix, seed, alpha))
    elif stage == "reference":
        record = str(rep.reference(mix, seed))
    else:
        record = rep.evaluated_policy(mix, seed, beta=beta, alpha=alpha)
    return {"ran": rep.ran, "record": record}


def _learning_cells(rep: Reproduction, specs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Cells of ``learning_cell`` for ``specs`` (``stage``, ``mix``, ``seed``, optional ``beta``,
    ``alpha``); the result file of each lies in the directory of the stage it ends with."""
    from marlcov.deep.cells import Cell

    cells = []
    for sp in specs:
        stage, mix, seed = sp["stage"], sp["mix"], int(sp["seed"])
        beta, alpha = sp.get("beta"), sp.get("alpha")
        d = {
            "reward_model": lambda: rep.reward_model_dir(mix, seed, alpha),
            "reference": lambda: rep.reference_dir(mix, seed),
            "policy": lambda: rep.policy_dir(mix, seed, beta, alpha),
        }[stage]()
        key = (
            f"{stage} {mix} seed {seed}"
            + ("" if beta is None else f" beta {_fmt_beta(beta)}")
            + ("" if alpha is None else f" alpha {_fmt_beta(alpha)}")
        )
        cells.append(
            Cell(
                key,
                "marlcov.deep.pipeline.stages:learning_cell",
                {
                    "env": rep.env,
                    "config": rep.config,
                    "out_dir": str(rep.root.resolve()),
                    "device": rep.device,
                    "stage": stage,
                    "mix": mix,
                    "seed": seed,
                    "beta": beta,
                    "alpha": alpha,
                },
                str(d.resolve() / CELL_RESULT),
            )
        )
    return cells


def run_learning_cells(rep: Reproduction, specs: Sequence[Mapping[str, Any]], parallel: Mapping[str, Any] | None = None) -> list[Any]:
    """Run the learning cells ``specs`` (``_learning_cells``) through ``deep.cells.run_cells``
    with the options ``parallel`` (``workers``, ``ray_address``, ``threads``; default: local
    processes, one per CPU); the stages run in the cells computed now are added to ``rep.ran``.
    Returns the records in the order of ``specs``."""
    from marlcov.deep.cells import default_workers, run_cells

    opts = dict(parallel or {})
    cells = _learning_cells(rep, specs)
    fresh = {c.key for c in cells if not Path(c.result_path).exists()}
    workers = opts.get("workers") or default_workers(len(fresh) or 1)
    results = run_cells(cells, workers, opts.get("ray_address"), opts.get("threads"), rep.log)
    for cell, res in zip(cells, results):
        if cell.key in fresh:
            rep.ran.extend(res["ran"])
    return [res["record"] for res in results]
