"""Collection of the datasets of Table 1 (MPE from behaviour policies, SMAX from scripted
behaviours, continuous-action Spread) and their preference labels, each streamed to an HDF5
file written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import env_name
from .mixes import SOURCES, behaviour_checkpoints, mix_counts, proportional_counts, source_skill_order

#: Collection seeds stay below the evaluation range of ``deep.marlhf.evaluate``.
COLLECT_SEED_SPAN = 2**31
PAIRS_SUFFIX = ".pairs.h5"


def smax_map(name: str) -> str | None:
    """The SMAX map of ``--env`` (``3m`` or ``smax_3m``), or None when ``name`` names no SMAX map."""
    from marlcov.deep.envs.smax import ENV_PREFIX, MAP_NAMES

    bare = name[len(ENV_PREFIX) :] if name.startswith(ENV_PREFIX) else name
    return bare if bare in MAP_NAMES else None


class MixJob(NamedTuple):
    """``count`` trajectories of ``source`` played by ``policy(obs, avail, t)``, whose
    ``agent_tags`` (``[m]``, or ``[B, m]`` for the episodes of its last rollout) name each
    agent's behaviour."""

    source: str
    policy: Any
    count: int


def _play_mix(
    batch_env,
    jobs: Sequence[MixJob],
    mix: str,
    counts: Mapping[str, int],
    out_path: str | os.PathLike,
    *,
    seed: int,
    overwrite: bool,
    behaviour_order: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
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
        writer.set_json_attribute("skill_order", order)
    out = {
        "path": str(out_path),
        "env": batch_env.spec.name,
        "mix": mix,
        "counts": dict(counts),
        "n_trajectories": written,
        "mean_return_per_source": means,
        "skill_order": order,
    }
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
    jobs = [
        MixJob(source, behaviour_policy(source, batch_env.env, seed + k, prob), counts[source])
        for k, source in enumerate(SOURCES)
        if counts[source]
    ]
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
    """A continuous-action dataset of ``env`` (spread only; ``deep.envs.mpe_continuous``): ``expert_fraction`` of ``n_trajectories`` (rounded by ``proportional_counts``)
    from the scripted landmark-assignment controller with Gaussian action noise of std
    ``noise`` (source ``"expert"``), the rest uniform on [-1, 1]^2 (source ``"random"``),
    ``batch_size`` episodes per rollout, written atomically in the dataset schema. Returns ``{"path", "env",
    "counts", "n_trajectories", "noise", "mean_return_per_source"}``."""
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
    path = collect_continuous_dataset(
        out_path,
        n_expert,
        n_random,
        name=name,
        noise=float(noise),
        batch_size=int(min(batch_size, n_trajectories)),
        seed=int(seed),
        overwrite=overwrite,
    )
    from marlcov.deep.data.hdf5 import DatasetReader

    with DatasetReader(path) as reader:
        source = reader.read_fields(slice(None), ["source"])["source"]
        team = reader.returns().mean(axis=1)
    return {
        "path": str(path),
        "env": name,
        "counts": {"expert": n_expert, "random": n_random},
        "n_trajectories": len(source),
        "noise": float(noise),
        "mean_return_per_source": {s: float(team[source == s].mean()) for s in np.unique(source)},
    }


def pairs_path_for(dataset_path: str | os.PathLike) -> Path:
    """The default pairs file of a dataset: ``DATA.pairs.h5`` beside ``DATA.h5``."""
    p = Path(dataset_path)
    return p.with_name(p.name[: -len(p.suffix)] + PAIRS_SUFFIX if p.suffix else p.name + PAIRS_SUFFIX)


def label_dataset_file(
    dataset_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    pairs_per_trajectory: int = 10,
    steepness: float = 5.0,
    seed: int = 0,
    overwrite: bool = False,
    normalisation: str = "min-max",
) -> dict[str, Any]:
    """Bradley-Terry labels (one per agent) for ``pairs_per_trajectory * N`` pairs of a dataset,
    over returns normalised by ``normalisation`` (``deep.data.preferences``), written to a pairs
    file (default ``pairs_path_for(dataset_path)``)."""
    from marlcov.deep.data.external import open_dataset
    from marlcov.deep.data.hdf5 import write_pairs_file
    from marlcov.deep.data.preferences import label_dataset

    out = Path(out_path) if out_path is not None else pairs_path_for(dataset_path)
    with open_dataset(dataset_path) as reader:
        pairs = label_dataset(reader, pairs_per_trajectory, steepness, seed, normalisation=normalisation)
        write_pairs_file(out, pairs, reader, overwrite=overwrite)
    agree = float((pairs.labels == np.where(pairs.probs >= 0.5, 1, -1)).mean())
    return {
        "path": str(out),
        "pairs": len(pairs),
        "steepness": float(steepness),
        "normalisation": normalisation,
        "agreement_with_true_order": agree,
    }
