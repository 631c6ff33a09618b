"""Evaluation of the MARLHF pipeline (MARLHF paper, section 6, Tables 2-3 and Figure 2).

* ``evaluate_policy``: the true test return per agent of a policy (greedy for VDN policies)
  over many seeded environments. Test seeds start at ``deep.common.EVAL_SEED_BASE``, a range the training
  environments of ``online_vdn`` never reach.
* ``reward_metrics``: the MSE between standardised predicted and standardised true per-step
  rewards (Table 2), each standardised over all steps, agents and trajectories of the
  evaluated dataset, computed in one streamed pass from running sums; and the smoothness of
  each (mean squared change between adjacent steps of the standardised rewards), which is
  what the MSE regulariser (2) acts on.
* ``plot_reward_trajectory``: standardised predicted and true rewards along one trajectory,
  averaged over agents, for one or more reward models (Figure 2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from deep.common import eval_seed_start, progress_bar, resolve_device

#: A standard deviation below this is treated as zero (constant rewards) when standardising.
STD_FLOOR = 1e-8


def _as_policy(policy, device):
    if isinstance(policy, (str, os.PathLike)):
        from deep.marlhf.vdn import load_policy

        return load_policy(policy, device)
    return policy


def evaluate_policy(
    policy,
    env_name: str,
    n_episodes: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """True return of ``policy`` (a policy callable or a policy file) over ``n_episodes``
    seeded episodes of ``env_name``.

    Episode k is reset with seed ``EVAL_SEED_BASE + seed * n_episodes + k`` (``deep.common.eval_seed_start``); the same
    ``(seed, n_episodes)`` therefore gives the same environments to every policy evaluated.
    Returns ``returns [n_episodes, m]`` (list), ``per_agent`` means, ``return_per_agent`` (the
    mean over agents and episodes, the paper's "test return per agent"), ``return_std`` (std
    over episodes of the per-agent mean) and ``return_sem``.
    """
    from deep.envs.mpe import MPEBatch

    if n_episodes < 1 or batch_size < 1:
        raise ValueError(f"n_episodes, batch_size: expected positive integers, got {n_episodes!r}, {batch_size!r}")
    dev = resolve_device(device)
    policy = _as_policy(policy, dev)
    base = eval_seed_start(seed, n_episodes)
    B = min(int(batch_size), int(n_episodes))
    env = MPEBatch(env_name, B, device="cpu", **dict(env_kwargs or {}))
    n_batches = math.ceil(n_episodes / B)
    chunks = []
    bar = progress_bar(n_batches, f"evaluate {env_name}", progress)
    for k in range(n_batches):
        batch = env.rollout(policy, base + k * B, source=getattr(policy, "name", "policy"))
        chunks.append(batch.returns())
        bar.update(1)
    bar.close()
    returns = np.concatenate(chunks)[:n_episodes]
    per_episode = returns.mean(axis=1)
    return {
        "env_name": env_name,
        "n_episodes": int(n_episodes),
        "seed": int(seed),
        "returns": returns.tolist(),
        "per_agent": returns.mean(axis=0).tolist(),
        "return_per_agent": float(per_episode.mean()),
        "return_std": float(per_episode.std()),
        "return_sem": float(per_episode.std(ddof=1) / math.sqrt(n_episodes)) if n_episodes > 1 else 0.0,
    }


def _standardise_from_sums(s: float, s2: float, n: int) -> tuple[float, float]:
    mean = s / n
    var = max(s2 / n - mean * mean, 0.0)
    std = math.sqrt(var)
    return mean, (std if std >= STD_FLOOR else 1.0)


def reward_metrics(reward_model, dataset_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 1024) -> dict[str, float]:
    """Quality of a reward model on a dataset's true rewards (read for evaluation only).

    Returns ``mse``: mean over (trajectory, step, agent) of ``(p~ - t~)^2`` where ``p~`` and
    ``t~`` are r_phi and the true reward standardised over the dataset; ``pred_roughness`` and
    ``true_roughness``: mean over (trajectory, step pair, agent) of the squared change of the
    standardised reward between adjacent steps (lower is smoother).
    """
    from deep.data.hdf5 import DatasetReader

    dev = resolve_device(device)
    sums = np.zeros(8, dtype=np.float64)  # p, p^2, t, t^2, pt, dp^2, dt^2 (raw), count
    with DatasetReader(dataset_path) as reader:
        H = reader.spec.horizon
        for _, d in reader.iter_batches(batch_size, fields=["obs", "actions", "rewards"]):
            obs = torch.as_tensor(d["obs"][:, :H], device=dev)
            act = torch.as_tensor(d["actions"].astype(np.int64), device=dev)
            p = reward_model.rewards(obs, act).double().cpu().numpy()
            t = d["rewards"].astype(np.float64)
            sums += [p.sum(), (p * p).sum(), t.sum(), (t * t).sum(), (p * t).sum(),
                     (np.diff(p, axis=1) ** 2).sum(), (np.diff(t, axis=1) ** 2).sum(), p.size]
    n = int(sums[7])
    mp, sp = _standardise_from_sums(sums[0], sums[1], n)
    mt, st = _standardise_from_sums(sums[2], sums[3], n)
    e_pp = (sums[1] / n - mp * mp) / sp**2
    e_tt = (sums[3] / n - mt * mt) / st**2
    e_pt = (sums[4] / n - mp * mt) / (sp * st)
    n_diff = n * (H - 1) / H
    return {
        "mse": float(e_pp + e_tt - 2 * e_pt),
        "pred_roughness": float(sums[5] / sp**2 / n_diff) if H > 1 else 0.0,
        "true_roughness": float(sums[6] / st**2 / n_diff) if H > 1 else 0.0,
        "n_samples": n,
    }


def plot_reward_trajectory(
    reward_models: Mapping[str, Any],
    dataset_path: str | os.PathLike,
    index: int,
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    title: str | None = None,
) -> Path:
    """Figure 2: standardised true and predicted rewards along trajectory ``index``, averaged
    over agents, one line per reward model (``label -> TrainedRewardModel``). Each curve is
    standardised over the whole dataset. Writes a PNG (matplotlib, Agg) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deep.data.hdf5 import DatasetReader

    dev = resolve_device(device)
    with DatasetReader(dataset_path) as reader:
        if not 0 <= index < len(reader):
            raise ValueError(f"index: expected a trajectory index in [0, {len(reader) - 1}], got {index!r}")
        H = reader.spec.horizon
        t_sum = np.zeros(2)
        n = 0
        for _, d in reader.iter_batches(fields=["rewards"]):
            t = d["rewards"].astype(np.float64)
            t_sum += [t.sum(), (t * t).sum()]
            n += t.size
        traj = reader.read_fields([index], ["obs", "actions", "rewards"])
    mt, st = _standardise_from_sums(t_sum[0], t_sum[1], n)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    steps = np.arange(1, H + 1)
    ax.plot(steps, ((traj["rewards"][0].astype(np.float64) - mt) / st).mean(axis=1), color="black", lw=2, label="ground truth")
    obs = torch.as_tensor(traj["obs"][:, :H], device=dev)
    act = torch.as_tensor(traj["actions"].astype(np.int64), device=dev)
    for label, model in reward_models.items():
        m = predicted_reward_stats(model, dataset_path, dev)
        pred = (model.rewards(obs, act).double().cpu().numpy()[0] - m[0]) / m[1]
        ax.plot(steps, pred.mean(axis=1), lw=1.5, label=label)
    ax.set_xlabel("step h")
    ax.set_ylabel("standardised reward (mean over agents)")
    ax.set_title(title or f"trajectory {index}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def predicted_reward_stats(reward_model, dataset_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 1024) -> tuple[float, float]:
    """``(mean, std)`` of r_phi over every step, agent and trajectory of a dataset."""
    from deep.data.hdf5 import DatasetReader

    dev = resolve_device(device)
    s = np.zeros(2)
    n = 0
    with DatasetReader(dataset_path) as reader:
        H = reader.spec.horizon
        for _, d in reader.iter_batches(batch_size, fields=["obs", "actions"]):
            p = reward_model.rewards(torch.as_tensor(d["obs"][:, :H], device=dev), torch.as_tensor(d["actions"].astype(np.int64), device=dev)).double().cpu().numpy()
            s += [p.sum(), (p * p).sum()]
            n += p.size
    return _standardise_from_sums(s[0], s[1], n)
