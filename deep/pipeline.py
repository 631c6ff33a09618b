"""The MARLHF pipeline end to end (MARLHF paper, section 6, Tables 1-3 and Figure 2).

Stages, each written to its own file and skipped when that file exists (so a killed run
resumes where it stopped; inside a stage the trainers resume from their own checkpoints):

1. behaviour policies: online VDN, ``expert.pt`` and ``rookie_<steps>.pt``;
2. datasets: one HDF5 file per mix of Table 1, collected from the expert, unilateral (n-1
   experts and one rookie), rookie and trivial (uniform) joint policies in the mix's ratio;
3. labels: Bradley-Terry preference pairs in a pairs file beside the dataset;
4. reward model r_phi (loss (1)), 5. imitation reference pi_ref, 6. offline VDN on (3)-(4);
7. evaluation: greedy test return per agent, MSE of the standardised reward, plots.

Behaviour policies and datasets are made once per environment (from ``seed_base``); the
learning stages 4-7 are repeated for each of the K seeds, and tables report mean +- std over
those seeds. A run directory ``OUT`` holds ``OUT/<env>/...`` per environment and the tables
``OUT/table2.md`` / ``OUT/table3.md`` built from every environment run into ``OUT``.

A pipeline config (``deep/configs/small.json``, ``paper.json``) is a JSON or YAML mapping with
one section per stage (``online_vdn``, ``collect``, ``label``, ``reward_model``, ``reference``,
``offline_vdn``, ``evaluate``, ``table3``), an ``envs`` section of per-environment overrides of
those sections, ``seed_base``, and free-text ``notes``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCALES = ("small", "paper")
ENV_ALIASES = {"spread": "simple_spread_v3", "tag": "simple_tag_v3", "reference": "simple_reference_v3"}
ENV_LABELS = {"simple_spread_v3": "Spread-v3", "simple_tag_v3": "Tag-v3", "simple_reference_v3": "Reference-v3"}
#: Behaviour sources of Table 1, in the order of the mix ratios.
SOURCES = ("expert", "unilateral", "rookie", "trivial")
#: Table 1: trajectories of each source (Expert : Unilateral : Rookie : Trivial).
MIXES: dict[str, tuple[int, int, int, int]] = {
    "diversified": (1, 1, 1, 1),
    "mix-unilateral": (2, 1, 0, 1),
    "mix-expert": (3, 0, 0, 1),
    "pure-expert": (4, 0, 0, 0),
}
MIX_LABELS = {"diversified": "Diversified", "mix-unilateral": "Mix-Unilateral", "mix-expert": "Mix-Expert", "pure-expert": "Pure-Expert"}
TABLES = ("table2", "table3")
SECTIONS = ("online_vdn", "collect", "label", "reward_model", "reference", "offline_vdn", "evaluate", "table3")
TOP_LEVEL = (*SECTIONS, "envs", "seed_base", "notes", "description")
#: Collection seeds stay below the evaluation range of ``deep.marlhf.evaluate``.
COLLECT_SEED_SPAN = 2**31
PAIRS_SUFFIX = ".pairs.h5"

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- names, configs
def env_name(name: str) -> str:
    """The MPE task of ``name``: ``spread``, ``tag``, ``reference`` or a full name."""
    if name in ENV_ALIASES.values():
        return name
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    raise ValueError(f"--env: expected one of {sorted(ENV_ALIASES)} (or {sorted(ENV_ALIASES.values())}), got {name!r}")


def _read_mapping(source: str | os.PathLike) -> dict[str, Any]:
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    elif path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    else:
        raise ValueError(f"{path}: expected a .json, .yaml or .yml config file")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return values


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursively for nested mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_pipeline_config(scale: str | None = "small", source: str | os.PathLike | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline config of ``scale`` (``deep/configs/<scale>.json``; None: empty) updated
    by ``source`` (a file or a mapping). Unknown top-level keys raise ValueError."""
    if scale is not None and scale not in SCALES:
        raise ValueError(f"--scale: expected one of {list(SCALES)}, got {scale!r}")
    config = _read_mapping(CONFIG_DIR / f"{scale}.json") if scale is not None else {}
    if source is not None:
        config = merge(config, source if isinstance(source, Mapping) else _read_mapping(source))
    unknown = sorted(set(config) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected names from {sorted(TOP_LEVEL)}")
    unknown_envs = sorted(set(config.get("envs", {})) - set(ENV_LABELS))
    if unknown_envs:
        raise ValueError(f"config: envs has unknown environment(s) {unknown_envs}; expected names from {sorted(ENV_LABELS)}")
    return config


def section(config: Mapping[str, Any], name: str, env: str | None = None) -> dict[str, Any]:
    """Section ``name`` of a pipeline config with the overrides of ``env`` applied."""
    out = dict(config.get(name, {}))
    if env is not None:
        out = merge(out, config.get("envs", {}).get(env, {}).get(name, {}))
    return out


def stage_configs(config: Mapping[str, Any], env: str) -> dict[str, Any]:
    """The trainers' config dataclasses of ``env``, validated (ValueError naming the field)."""
    from marlcov.deep.common import load_config
    from marlcov.deep.marlhf.online_vdn import OnlineVDNConfig
    from marlcov.deep.marlhf.reference import ReferenceConfig
    from marlcov.deep.marlhf.reward_model import RewardModelConfig
    from marlcov.deep.marlhf.vdn import OfflineVDNConfig

    out = {}
    for name, cls in (("online_vdn", OnlineVDNConfig), ("reward_model", RewardModelConfig),
                      ("reference", ReferenceConfig), ("offline_vdn", OfflineVDNConfig)):
        try:
            out[name] = load_config(cls, section(config, name, env))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config section {name!r}: {exc}") from None
    return out


def env_kwargs(env: str, online_config) -> dict[str, Any]:
    """``MPEBatch`` keyword arguments matching the behaviour policies' environment."""
    kwargs: dict[str, Any] = {"horizon": int(online_config.horizon)}
    if env != "simple_tag_v3":
        kwargs["local_ratio"] = float(online_config.local_ratio)
    return kwargs


# ----------------------------------------------------------------------------- Table 1 mixes
def proportional_counts(total: int, weights: Sequence[float]) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights`` (largest remainder,
    ties to the earlier entry): exact whenever ``total * w / sum(w)`` are integers."""
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.ndim != 1 or w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights: expected non-negative weights with a positive sum and total >= 0, got {list(w)}, {total}")
    share = total * w / w.sum()
    counts = np.floor(share + 1e-9).astype(np.int64)
    remainder = share - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def mix_counts(mix: str, n_trajectories: int) -> dict[str, int]:
    """Trajectories of each source of Table 1 in a dataset of ``n_trajectories``."""
    if mix not in MIXES:
        raise ValueError(f"--mix: expected one of {list(MIXES)}, got {mix!r}")
    if n_trajectories < 2:
        raise ValueError(f"--trajectories: expected at least 2, got {n_trajectories}")
    return dict(zip(SOURCES, (int(c) for c in proportional_counts(n_trajectories, MIXES[mix]))))


def behaviour_checkpoints(policies_dir: str | os.PathLike, rookie_steps: int | None = None) -> tuple[Path, Path]:
    """``(expert.pt, rookie_<steps>.pt)`` of a behaviour-policy directory (default rookie: the
    earliest stop)."""
    d = Path(policies_dir)
    expert = d / "expert.pt"
    if not expert.exists():
        raise ValueError(f"--policies: {expert} not found; run train-experts first")
    rookies = {int(p.stem.split("_", 1)[1]): p for p in d.glob("rookie_*.pt") if p.stem.split("_", 1)[1].isdigit()}
    if not rookies:
        raise ValueError(f"--policies: no rookie_<steps>.pt in {d}; give online_vdn.rookie_steps at least one count")
    if rookie_steps is None:
        return expert, rookies[min(rookies)]
    if int(rookie_steps) not in rookies:
        raise ValueError(f"collect.rookie_steps: {rookie_steps} not among the rookies of {d} ({sorted(rookies)})")
    return expert, rookies[int(rookie_steps)]


def smax_map(name: str) -> str | None:
    """The SMAX map of ``--env`` (``3m`` or ``smax_3m``), or None when ``name`` names no SMAX map."""
    from marlcov.deep.envs.smax import ENV_PREFIX, MAP_NAMES

    bare = name[len(ENV_PREFIX):] if name.startswith(ENV_PREFIX) else name
    return bare if bare in MAP_NAMES else None


class MixJob(NamedTuple):
    """``count`` trajectories of ``source`` played by ``policy(obs, avail, t)``, whose
    ``agent_tags`` (``[m]``, or ``[B, m]`` for the episodes of its last rollout) name each
    agent's behaviour."""

    source: str
    policy: Any
    count: int


def source_skill_order(mean_returns: Mapping[str, float], behaviour: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table 1's order of the sources in a dataset: the mean return per agent of each source
    present, ``holds`` when they decrease in the order expert, unilateral, rookie, trivial, and
    (``behaviour``) the ``skill_order`` of the behaviour policies' evaluation (online VDN)."""
    present = [s for s in SOURCES if s in mean_returns]
    values = [float(mean_returns[s]) for s in present]
    out: dict[str, Any] = {"order": " > ".join(present), "mean_return_per_source": {s: float(mean_returns[s]) for s in present},
                           "holds": bool(all(a > b for a, b in zip(values, values[1:])))}
    if behaviour is not None:
        out["behaviour_policies"] = dict(behaviour)
    return out


def _play_mix(batch_env, jobs: Sequence[MixJob], mix: str, counts: Mapping[str, int], out_path: str | os.PathLike, *,
              seed: int, overwrite: bool, behaviour_order: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Play ``jobs`` in order on ``batch_env`` (an ``MPEBatch`` or ``SMAXBatch`` of B
    environments) and stream the trajectories into the HDF5 file ``out_path`` (written
    atomically). Trajectory k of the file is reset with seed ``base + k`` (base drawn from
    ``seed``, below ``COLLECT_SEED_SPAN``). Returns the summary of ``collect_dataset``."""
    from marlcov.deep.data.hdf5 import DatasetWriter

    n_trajectories = sum(job.count for job in jobs)
    B = batch_env.batch_size
    base = int(np.random.SeedSequence([int(seed), 1]).generate_state(1, dtype=np.uint64)[0] % np.uint64(COLLECT_SEED_SPAN - n_trajectories))
    returns: dict[str, list[np.ndarray]] = {s: [] for s in SOURCES}
    wins: dict[str, list[np.ndarray]] = {s: [] for s in SOURCES}
    written = 0
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with DatasetWriter(out_path, batch_env.spec.dataset_spec(), chunk_trajectories=min(64, B), overwrite=overwrite) as writer:
        for source, policy, count in jobs:
            done = 0
            while done < count:
                # Every rollout uses the full batch shape (compiled once) and keeps what is needed.
                batch = batch_env.rollout(policy, base + written, source=source)
                # Tags are read after the rollout: a policy may draw them per episode (SMAX unilateral).
                batch.agent_policy = np.broadcast_to(np.asarray(policy.agent_tags, dtype=str), batch.agent_policy.shape).copy()
                keep = min(B, count - done)
                batch = batch.take(slice(0, keep))
                writer.append(batch)
                returns[source].append(batch.returns().mean(axis=1))
                if getattr(batch_env, "last_wins", None) is not None:
                    wins[source].append(np.asarray(batch_env.last_wins)[:keep])
                done += keep
                written += keep
        means = {s: float(np.concatenate(v).mean()) for s, v in returns.items() if v}
        order = source_skill_order(means, behaviour_order)
        # The dataset's own record of Table 1's order (the writer keeps unknown attributes).
        writer._file.attrs["skill_order"] = json.dumps(order)
    out = {"path": str(out_path), "env": batch_env.spec.name, "mix": mix, "counts": dict(counts), "n_trajectories": written,
           "mean_return_per_source": means, "skill_order": order}
    if any(wins.values()):
        out["win_rate_per_source"] = {s: float(np.concatenate(v).mean()) for s, v in wins.items() if v}
    return out


def collect_dataset(
    env: str,
    mix: str,
    n_trajectories: int,
    policies_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    batch_size: int = 128,
    epsilon: float = 0.0,
    rookie_steps: int | None = None,
    env_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Collect ``n_trajectories`` of ``mix`` (Table 1) on an MPE task from the behaviour
    policies of ``policies_dir`` (``train-experts``) into the HDF5 file ``out_path``,
    ``batch_size`` episodes at a time, streamed to disk as they are played (``_play_mix``).

    The unilateral share is split as evenly as possible over the deviating agent.
    ``epsilon``: exploration of the expert and rookie policies. Returns ``{"path", "mix",
    "counts", "n_trajectories", "env", "mean_return_per_source"}``.
    """
    from marlcov.deep.envs.mpe import MPEBatch
    from marlcov.deep.marlhf.online_vdn import level_policy, trivial_policy, unilateral_policy

    env = env_name(env)
    counts = mix_counts(mix, int(n_trajectories))
    if batch_size < 1:
        raise ValueError(f"collect.batch_size: expected a positive integer, got {batch_size}")
    needs_levels = counts["expert"] + counts["unilateral"] + counts["rookie"] > 0
    expert_path, rookie_path = behaviour_checkpoints(policies_dir, rookie_steps) if needs_levels else (None, None)
    if needs_levels:
        from marlcov.deep.marlhf.vdn import load_policy

        for path in (expert_path, rookie_path):
            load_policy(path, "cpu", env_name=env)
    B = int(min(batch_size, n_trajectories))
    batch_env = MPEBatch(env, B, device="cpu", **dict(env_options or {}))
    m = batch_env.spec.n_agents
    jobs: list[MixJob] = []
    if counts["expert"]:
        jobs.append(MixJob("expert", level_policy(expert_path, m, "expert", device, epsilon, seed), counts["expert"]))
    for i, c in enumerate(proportional_counts(counts["unilateral"], [1] * m)):
        if c:
            jobs.append(MixJob("unilateral", unilateral_policy(expert_path, rookie_path, i, m, device, epsilon, seed + 1 + i), int(c)))
    if counts["rookie"]:
        jobs.append(MixJob("rookie", level_policy(rookie_path, m, "rookie", device, epsilon, seed), counts["rookie"]))
    if counts["trivial"]:
        jobs.append(MixJob("trivial", trivial_policy(m, seed), counts["trivial"]))
    behaviour = None
    metrics = Path(policies_dir) / "metrics.json" if policies_dir is not None else None
    if metrics is not None and metrics.exists():
        behaviour = json.loads(metrics.read_text()).get("summary", {}).get("skill_order")
    return _play_mix(batch_env, jobs, mix, counts, out_path, seed=seed, overwrite=overwrite, behaviour_order=behaviour)


def collect_smax_dataset(
    env: str,
    mix: str,
    n_trajectories: int,
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    batch_size: int = 128,
    horizon: int | None = None,
    rookie_prob: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Collect ``n_trajectories`` of ``mix`` (Table 1) on the SMAX map ``env`` (``3m`` or
    ``smax_3m``) from the scripted behaviours of ``deep.envs.smax_behaviours`` (focus-fire
    expert; unilateral: one agent per episode, drawn from the seed, takes a uniform available
    action with probability ``rookie_prob``; rookie: every agent does; trivial: uniform) into
    the HDF5 file ``out_path``, streamed and written atomically as ``collect_dataset`` does.
    Episodes are padded to ``horizon`` steps (``deep.envs.smax``; default JaxMARL's 100);
    ``rookie_prob`` defaults to ``ROOKIE_PROB`` (0.6). Behaviour k of ``SOURCES`` draws from a
    generator seeded with ``seed + k``; environments and policies run on the CPU. Returns the
    summary of ``collect_dataset`` plus ``win_rate_per_source`` and ``rookie_prob``."""
    from marlcov.deep.envs.smax import HORIZON, SMAXBatch
    from marlcov.deep.envs.smax_behaviours import ROOKIE_PROB, behaviour_policy

    name = smax_map(env)
    if name is None:
        from marlcov.deep.envs.smax import MAP_NAMES

        raise ValueError(f"--env: expected a SMAX map from {list(MAP_NAMES)} (optionally prefixed 'smax_'), got {env!r}")
    counts = mix_counts(mix, int(n_trajectories))
    if batch_size < 1:
        raise ValueError(f"collect.batch_size: expected a positive integer, got {batch_size}")
    prob = ROOKIE_PROB if rookie_prob is None else float(rookie_prob)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"rookie_prob: expected a probability in [0, 1], got {rookie_prob!r}")
    # Scripted policies cost little next to the environment step: everything stays on the CPU.
    batch_env = SMAXBatch(name, int(min(batch_size, n_trajectories)), horizon=HORIZON if horizon is None else int(horizon))
    jobs = [MixJob(source, behaviour_policy(source, batch_env.env, seed + k, prob), counts[source])
            for k, source in enumerate(SOURCES) if counts[source]]
    out = _play_mix(batch_env, jobs, mix, counts, out_path, seed=seed, overwrite=overwrite)
    out["rookie_prob"] = prob
    return out


def collect_continuous(
    env: str,
    n_trajectories: int,
    out_path: str | os.PathLike,
    *,
    expert_fraction: float = 0.5,
    noise: float = 0.1,
    seed: int = 0,
    batch_size: int = 128,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A continuous-action dataset of ``env`` (spread only; ``deep.envs.mpe_continuous``
    format): ``expert_fraction`` of ``n_trajectories`` (rounded by ``proportional_counts``)
    from the scripted landmark-assignment controller with Gaussian action noise of std
    ``noise`` (source ``"expert"``), the rest uniform on [-1, 1]^2 (source ``"random"``),
    ``batch_size`` episodes per rollout, written atomically. Returns ``{"path", "env",
    "counts", "n_trajectories", "noise", "mean_return_per_source"}``."""
    import h5py

    from marlcov.deep.envs.mpe_continuous import CONTINUOUS_ENV_NAMES, collect_continuous_dataset

    name = env_name(env)
    if name not in CONTINUOUS_ENV_NAMES:
        raise ValueError(f"--env: continuous actions exist for {list(CONTINUOUS_ENV_NAMES)} only ('spread'), got {env!r}")
    if not isinstance(n_trajectories, (int, np.integer)) or n_trajectories < 1:
        raise ValueError(f"--trajectories: expected a positive integer, got {n_trajectories!r}")
    if not 0.0 <= expert_fraction <= 1.0:
        raise ValueError(f"--expert-fraction: expected a fraction in [0, 1], got {expert_fraction!r}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"--noise: expected a non-negative standard deviation, got {noise!r}")
    if batch_size < 1:
        raise ValueError(f"collect.batch_size: expected a positive integer, got {batch_size}")
    if Path(out_path).exists() and not overwrite:
        # Checked now: the file is written only after every episode has been played.
        raise FileExistsError(f"{out_path}: exists; pass --overwrite to replace it")
    n_expert, n_random = (int(c) for c in proportional_counts(int(n_trajectories), [expert_fraction, 1.0 - expert_fraction]))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    path = collect_continuous_dataset(out_path, n_expert, n_random, name=name, noise=float(noise),
                                      batch_size=int(min(batch_size, n_trajectories)), seed=int(seed), overwrite=overwrite)
    with h5py.File(path, "r") as f:
        source, rewards = f["source"][()].astype(str), f["rewards"][()]
    team = rewards.astype(np.float64).sum(axis=1).mean(axis=1)
    return {"path": str(path), "env": name, "counts": {"expert": n_expert, "random": n_random}, "n_trajectories": len(source),
            "noise": float(noise), "mean_return_per_source": {s: float(team[source == s].mean()) for s in np.unique(source)}}


def pairs_path_for(dataset_path: str | os.PathLike) -> Path:
    """The default pairs file of a dataset: ``DATA.pairs.h5`` beside ``DATA.h5``."""
    p = Path(dataset_path)
    return p.with_name(p.name[: -len(p.suffix)] + PAIRS_SUFFIX if p.suffix else p.name + PAIRS_SUFFIX)


def label_dataset_file(dataset_path: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                       pairs_per_trajectory: int = 10, steepness: float = 5.0, seed: int = 0, overwrite: bool = False,
                       normalisation: str = "min-max") -> dict[str, Any]:
    """Bradley-Terry labels (one per agent) for ``pairs_per_trajectory * N`` pairs of a dataset,
    over returns normalised by ``normalisation`` (``deep.data.preferences``), written to a pairs
    file (default ``pairs_path_for(dataset_path)``)."""
    from marlcov.deep.data.hdf5 import DatasetReader, write_pairs_file
    from marlcov.deep.data.preferences import label_dataset

    out = Path(out_path) if out_path is not None else pairs_path_for(dataset_path)
    with DatasetReader(dataset_path) as reader:
        pairs = label_dataset(reader, pairs_per_trajectory, steepness, seed, normalisation=normalisation)
        write_pairs_file(out, pairs, reader, overwrite=overwrite)
    agree = float((pairs.labels == np.where(pairs.probs >= 0.5, 1, -1)).mean())
    return {"path": str(out), "pairs": len(pairs), "steepness": float(steepness), "normalisation": normalisation,
            "agreement_with_true_order": agree}


# ----------------------------------------------------------------------------- the reproduce chain
def _stage(path: Path, name: str, log: Log, make: Callable[[], Any]) -> bool:
    """Run ``make`` unless ``path`` exists; returns whether it ran."""
    if path.exists():
        log(f"[skip] {name}: {path} exists")
        return False
    log(f"[run ] {name}")
    make()
    return True


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

    def __init__(self, env: str, config: Mapping[str, Any], out_dir: str | os.PathLike, device: str = "cpu", log: Log | None = None) -> None:
        self.env = env_name(env)
        self.config = dict(config)
        self.root = Path(out_dir)
        self.dir = self.root / self.env
        self.device = device
        self.log = log or (lambda line: None)
        self.cfg = stage_configs(self.config, self.env)
        self.collect = section(self.config, "collect", self.env)
        self.label = section(self.config, "label", self.env)
        self.evaluate = section(self.config, "evaluate", self.env)
        self.table3 = section(self.config, "table3", self.env)
        self.seed_base = int(self.config.get("seed_base", 0))
        self.env_options = env_kwargs(self.env, self.cfg["online_vdn"])
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
        self._run(done, "behaviour policies", lambda: train_behaviour_policies(self.env, self.cfg["online_vdn"], d, self.device, self.seed_base))
        return d

    def dataset(self, mix: str) -> Path:
        policies = self.policies()
        path = self.dir / "data" / f"{mix}.h5"
        c = self.collect
        self._run(path, f"dataset {mix}", lambda: collect_dataset(
            self.env, mix, int(c.get("trajectories", 1024)), policies, path, seed=self.seed_base,
            batch_size=int(c.get("batch_size", 128)), epsilon=float(c.get("epsilon", 0.0)),
            rookie_steps=c.get("rookie_steps"), env_options=self.env_options))
        pairs = pairs_path_for(path)
        lb = self.label
        self._run(pairs, f"labels {mix}", lambda: label_dataset_file(
            path, pairs, pairs_per_trajectory=int(lb.get("pairs_per_trajectory", 10)),
            steepness=float(lb.get("steepness", 5.0)), seed=self.seed_base, normalisation=str(lb.get("normalisation", "min-max"))))
        return path

    # -- per-seed stages
    def _reward_config(self, alpha: float | None):
        from marlcov.deep.common import load_config

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
        self._run(d / "reward_model.pt", f"reward model {mix} seed {seed} alpha {cfg.alpha:g}",
                  lambda: train_reward_model(data, cfg, d, self.device, seed, pairs_path=pairs_path_for(data)))
        return d / "reward_model.pt"

    def reference(self, mix: str, seed: int) -> Path:
        from marlcov.deep.marlhf.reference import train_reference

        data = self.dataset(mix)
        d = self.reference_dir(mix, seed)
        self._run(d / "reference.pt", f"reference {mix} seed {seed}", lambda: train_reference(data, self.cfg["reference"], d, self.device, seed))
        return d / "reference.pt"

    def evaluated_policy(self, mix: str, seed: int, beta: float | None = None, alpha: float | None = None) -> dict[str, Any]:
        """Offline VDN and its evaluation for one (mix, seed, beta, alpha); returns the
        evaluation record (``eval.json``)."""
        from marlcov.deep.common import load_config
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
        self._run(d / "policy.pt", f"offline VDN {mix} seed {seed} {tag}",
                  lambda: train_offline_vdn(data, rm, ref, vcfg, d, self.device, seed))
        ev = self.evaluate

        def make_eval() -> None:
            res = evaluate_policy(d / "policy.pt", self.env, n_episodes=int(ev.get("episodes", 500)), seed=seed,
                                  batch_size=int(ev.get("batch_size", 250)), device=self.device, env_kwargs=self.env_options,
                                  progress=bool(ev.get("progress", True)))
            model = load_reward_model(rm, self.device)
            metrics = reward_metrics(model, data, self.device)
            record = {"env": self.env, "mix": mix, "seed": seed, "beta": vcfg.beta, "alpha": model.meta["config"].alpha,
                      "return_per_agent": res["return_per_agent"], "return_std": res["return_std"], "episodes": res["n_episodes"],
                      "mse": metrics["mse"], "pred_roughness": metrics["pred_roughness"], "true_roughness": metrics["true_roughness"],
                      "policy": str(d / "policy.pt"), "reward_model": str(rm)}
            _write_json(record, d / "eval.json")

        self._run(d / "eval.json", f"evaluate {mix} seed {seed} {tag}", make_eval)
        return _read_json(d / "eval.json")

    def plot(self, mix: str, models: Mapping[str, Path], name: str) -> Path:
        from marlcov.deep.marlhf.evaluate import plot_reward_trajectory
        from marlcov.deep.marlhf.reward_model import load_reward_model

        path = self.dir / "plots" / name
        loaded = {label: load_reward_model(p, self.device) for label, p in models.items()}
        self._run(path, f"plot {name}", lambda: plot_reward_trajectory(
            loaded, self.dataset(mix), 0, path, self.device, title=f"{ENV_LABELS[self.env]}, {MIX_LABELS[mix]}, trajectory 0"))
        return path


CELL_RESULT = "cell.json"
LEARNING_STAGES = ("reward_model", "reference", "policy")


def learning_cell(env: str, config: Mapping[str, Any], out_dir: str, device: str, stage: str, mix: str, seed: int,
                  beta: float | None = None, alpha: float | None = None) -> dict[str, Any]:
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
        d = {"reward_model": lambda: rep.reward_model_dir(mix, seed, alpha), "reference": lambda: rep.reference_dir(mix, seed),
             "policy": lambda: rep.policy_dir(mix, seed, beta, alpha)}[stage]()
        key = f"{stage} {mix} seed {seed}" + ("" if beta is None else f" beta {_fmt_beta(beta)}") + ("" if alpha is None else f" alpha {_fmt_beta(alpha)}")
        cells.append(Cell(key, "marlcov.deep.pipeline:learning_cell",
                          {"env": rep.env, "config": rep.config, "out_dir": str(rep.root.resolve()), "device": rep.device,
                           "stage": stage, "mix": mix, "seed": seed, "beta": beta, "alpha": alpha}, str(d.resolve() / CELL_RESULT)))
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


def _summary(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size), "values": v.tolist()}


def _cell(s: Mapping[str, Any] | None, digits: int = 2) -> str:
    if s is None:
        return "—"
    if s["n"] < 2:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def run_table2(env: str, config: Mapping[str, Any], out_dir: str | os.PathLike, seeds: int = 1, device: str = "cpu",
               log: Log | None = None, mixes: Sequence[str] | None = None, parallel: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
        rows[mix] = {"return": _summary([r["return_per_agent"] for r in records]), "mse": _summary([r["mse"] for r in records]),
                     "pred_roughness": _summary([r["pred_roughness"] for r in records]), "records": records}
        rep.plot(mix, {f"r_phi ({MIX_LABELS[mix]})": rep.reward_model(mix, rep.seed_base)}, f"table2_{mix}.png")
    result = {"table": "table2", "env": rep.env, "seeds": seeds, "rows": rows, "ran": rep.ran}
    _write_json(result, rep.dir / "table2.json")
    write_table_markdown(out_dir, "table2")
    return result


def run_table3(env: str, config: Mapping[str, Any], out_dir: str | os.PathLike, seeds: int = 1, device: str = "cpu",
               log: Log | None = None, parallel: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table 3 for one environment: on the ``table3.mix`` dataset (Diversified), the test
    return for each beta of ``table3.betas`` and for alpha = 0 at the standard beta; writes
    ``OUT/<env>/table3.json``, the alpha comparison plot and ``OUT/table3.md``. Cells run in
    parallel (options ``parallel``): first the reward models (standard alpha and alpha = 0)
    and references of every seed, which the (beta, seed) policies share, then the policies."""
    rep = Reproduction(env, config, out_dir, device, log)
    mix = rep.table3.get("mix", "diversified")
    betas = [float(b) for b in rep.table3.get("betas", [0.0, 0.1, 1.0, 10.0, 100.0])]
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
        cols[f"beta={_fmt_beta(beta)}"] = {"return": _summary([r["return_per_agent"] for r in records]), "records": records}
    records = [by_spec[(rep.cfg["offline_vdn"].beta, 0.0, s)] for s in seed_list]
    cols["alpha=0"] = {"return": _summary([r["return_per_agent"] for r in records]), "records": records}
    alpha = rep.cfg["reward_model"].alpha
    smooth = {f"alpha={alpha:g}": _summary([by_spec[(rep.cfg["offline_vdn"].beta, None, s)]["pred_roughness"] for s in seed_list]),
              "alpha=0": _summary([r["pred_roughness"] for r in records]),
              "true": _summary([r["true_roughness"] for r in records])}
    rep.plot(mix, {f"alpha = {alpha:g}": rep.reward_model(mix, rep.seed_base), "alpha = 0": rep.reward_model(mix, rep.seed_base, 0.0)}, "table3_alpha.png")
    result = {"table": "table3", "env": rep.env, "seeds": seeds, "mix": mix, "standard_beta": rep.cfg["offline_vdn"].beta,
              "columns": cols, "roughness": smooth, "ran": rep.ran}
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
            cells += [_cell(results[e]["rows"].get(mix, {}).get("return")) for e in envs]
            cells += [_cell(results[e]["rows"].get(mix, {}).get("mse")) for e in envs]
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
            lines.append("| " + " | ".join([ENV_LABELS[env]] + [_cell(r["columns"].get(c, {}).get("return")) for c in cols]) + " |")
        lines.append("")
        lines.append("Roughness of the standardised rewards on the same dataset (mean squared change between adjacent steps; lower is smoother):")
        lines.append("")
        kinds: list[str] = []
        for r in results.values():
            kinds += [k for k in r["roughness"] if k not in kinds]
        lines += ["| Environment | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for env, r in results.items():
            lines.append("| " + " | ".join([ENV_LABELS[env]] + [_cell(r["roughness"].get(k), 3) for k in kinds]) + " |")
        seeds = {e: r["seeds"] for e, r in results.items()}
    lines.append("")
    lines.append("Seeds: " + ", ".join(f"{ENV_LABELS[e]} {k}" for e, k in seeds.items()) + ".")
    path = root / f"{table}.md"
    atomic_write_text("\n".join(lines) + "\n", path)
    return path


def reproduce(table: str, env: str, scale: str = "small", seeds: int = 1, device: str = "cpu",
              out_dir: str | os.PathLike = "marlcov-deep", config: str | os.PathLike | Mapping[str, Any] | None = None,
              log: Log | None = None, workers: int | None = None, ray_address: str | None = None,
              threads: int | None = None) -> dict[str, Any]:
    """``marlcov deep reproduce``: the whole chain of ``table`` for ``env`` at ``scale``; the
    learning cells run in ``workers`` local processes (default: one per CPU, at most one per
    cell) or as Ray tasks at ``ray_address``, with ``threads`` torch threads each."""
    if table not in TABLES:
        raise ValueError(f"table: expected one of {list(TABLES)}, got {table!r}")
    if not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"--seeds: expected a positive integer, got {seeds!r}")
    cfg = load_pipeline_config(scale, config)
    runner = run_table2 if table == "table2" else run_table3
    result = runner(env, cfg, out_dir, int(seeds), device, log, parallel={"workers": workers, "ray_address": ray_address, "threads": threads})
    result["markdown"] = str(Path(out_dir) / f"{table}.md")
    return result

