"""Evaluation of the MARLHF pipeline (MARLHF paper, section 6, Tables 2-3 and Figure 2).

* ``evaluate_policy``: the true test return per agent of a policy (greedy for VDN policies)
  over many seeded environments of an MPE task or a SMAX map (there also the win rate). Test
  seeds start at ``deep.common.EVAL_SEED_BASE``, a range the training environments of
  ``online_vdn`` never reach.
* ``reward_metrics``: the MSE between standardised predicted and standardised true per-step
  rewards (Table 2), each standardised over all real steps, agents and trajectories of the
  evaluated dataset, computed in one streamed pass from running sums; and the smoothness of
  each (mean squared change between adjacent real steps of the standardised rewards), which is
  what the MSE regulariser (2) acts on.
* ``plot_reward_trajectory``: standardised predicted and true rewards along the real steps of
  one trajectory, averaged over agents, for one or more reward models (Figure 2).

Real steps: the padding of episodes that end early (SMAX; ``deep.common.step_masks``) counts
nowhere, as in training; without padding (MPE) every step is real.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlcov.deep.common import eval_seed_start, progress_bar, resolve_device, step_masks
from marlcov.theory.atomic import save_figure

#: A standard deviation below this is treated as zero (constant rewards) when standardising.
STD_FLOOR = 1e-8


def _as_policy(policy, device):
    if isinstance(policy, (str, os.PathLike)):
        from marlcov.deep.marlhf.vdn import load_policy

        return load_policy(policy, device)
    return policy


def batched_env(env_name: str, batch_size: int, env_kwargs: Mapping[str, Any] | None = None, device: str | torch.device = "cpu"):
    """``batch_size`` environments of ``env_name`` (``deep.envs.make_batch_env``)."""
    from marlcov.deep.envs import make_batch_env

    return make_batch_env(env_name, batch_size, device, **dict(env_kwargs or {}))


def evaluate_policy(
    policy,
    env_name: str,
    n_episodes: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    env_device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """True return of ``policy`` (a policy callable or a policy file) over ``n_episodes``
    seeded episodes of ``env_name`` (an MPE task or a SMAX map, ``deep.envs.make_batch_env``
    with ``env_kwargs``, returning tensors on ``env_device``): the one evaluator of the
    discrete-action trainers of ``deep``.

    Episode k is reset with seed ``EVAL_SEED_BASE + seed * n_episodes + k`` (``deep.common.eval_seed_start``); the same
    ``(seed, n_episodes)`` therefore gives the same environments to every policy evaluated.
    Returns ``returns [n_episodes, m]`` (list), ``per_agent`` means, ``return_per_agent`` (the
    mean over agents and episodes, the paper's "test return per agent"), ``return_std`` (std
    over episodes of the per-agent mean) and ``return_sem``; on SMAX also ``win_rate``, the
    fraction of episodes won.
    """
    if n_episodes < 1 or batch_size < 1:
        raise ValueError(f"n_episodes, batch_size: expected positive integers, got {n_episodes!r}, {batch_size!r}")
    dev = resolve_device(device)
    policy = _as_policy(policy, dev)
    base = eval_seed_start(seed, n_episodes)
    B = min(int(batch_size), int(n_episodes))
    env = batched_env(env_name, B, env_kwargs, env_device)
    n_batches = math.ceil(n_episodes / B)
    chunks, wins = [], []
    bar = progress_bar(n_batches, f"evaluate {env_name}", progress)
    for k in range(n_batches):
        batch = env.rollout(policy, base + k * B, source=getattr(policy, "name", "policy"))
        chunks.append(batch.returns())
        if hasattr(env, "last_wins"):
            wins.append(np.asarray(env.last_wins))
        bar.update(1)
    bar.close()
    returns = np.concatenate(chunks)[:n_episodes]
    per_episode = returns.mean(axis=1)
    out = {
        "env_name": env_name,
        "n_episodes": int(n_episodes),
        "seed": int(seed),
        "returns": returns.tolist(),
        "per_agent": returns.mean(axis=0).tolist(),
        "return_per_agent": float(per_episode.mean()),
        "return_std": float(per_episode.std()),
        "return_sem": float(per_episode.std(ddof=1) / math.sqrt(n_episodes)) if n_episodes > 1 else 0.0,
    }
    if wins:
        out["win_rate"] = float(np.concatenate(wins)[:n_episodes].mean())
    return out


def _standardise_from_sums(s: float, s2: float, n: int) -> tuple[float, float]:
    mean = s / n
    var = max(s2 / n - mean * mean, 0.0)
    std = math.sqrt(var)
    return mean, (std if std >= STD_FLOOR else 1.0)


def reward_metrics(
    reward_model, dataset_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 1024
) -> dict[str, float]:
    """Quality of a reward model on a dataset's true rewards (read for evaluation only).

    Returns ``mse``: mean over (trajectory, real step, agent) of ``(p~ - t~)^2`` where ``p~``
    and ``t~`` are r_phi and the true reward standardised over the dataset's real steps;
    ``pred_roughness`` and ``true_roughness``: mean over (trajectory, pair of adjacent real
    steps, agent) of the squared change of the standardised reward (lower is smoother);
    ``n_samples``: the number of (trajectory, real step, agent) triples.
    """
    from marlcov.deep.data.external import open_dataset

    dev = resolve_device(device)
    sums = np.zeros(9, dtype=np.float64)  # p, p^2, t, t^2, pt, dp^2, dt^2 (raw), count, pair count
    with open_dataset(dataset_path) as reader:
        H = reader.spec.horizon
        for _, d in reader.iter_batches(batch_size, fields=["obs", "actions", "avail", "rewards"]):
            valid, _ = step_masks(d["avail"])
            obs = torch.as_tensor(d["obs"][:, :H], device=dev)
            act = torch.as_tensor(d["actions"].astype(np.int64), device=dev)
            p_all = reward_model.rewards(obs, act).double().cpu().numpy()
            t_all = d["rewards"].astype(np.float64)
            p, t = p_all[valid], t_all[valid]
            # Adjacent steps (h, h+1) are both real exactly when h+1 is (real steps come first).
            pairs = valid[:, 1:]
            dp, dt = np.diff(p_all, axis=1)[pairs], np.diff(t_all, axis=1)[pairs]
            sums += [p.sum(), (p * p).sum(), t.sum(), (t * t).sum(), (p * t).sum(), (dp**2).sum(), (dt**2).sum(), p.size, dp.size]
    n, n_diff = int(sums[7]), int(sums[8])
    mp, sp = _standardise_from_sums(sums[0], sums[1], n)
    mt, st = _standardise_from_sums(sums[2], sums[3], n)
    e_pp = (sums[1] / n - mp * mp) / sp**2
    e_tt = (sums[3] / n - mt * mt) / st**2
    e_pt = (sums[4] / n - mp * mt) / (sp * st)
    return {
        "mse": float(e_pp + e_tt - 2 * e_pt),
        "pred_roughness": float(sums[5] / sp**2 / n_diff) if n_diff else 0.0,
        "true_roughness": float(sums[6] / st**2 / n_diff) if n_diff else 0.0,
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
    """Figure 2: standardised true and predicted rewards along the real steps of trajectory
    ``index``, averaged over agents, one line per reward model (``label -> TrainedRewardModel``).
    Each curve is standardised over the real steps of the whole dataset. Writes a PNG
    (matplotlib, Agg) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marlcov.deep.data.external import open_dataset

    dev = resolve_device(device)
    with open_dataset(dataset_path) as reader:
        if not 0 <= index < len(reader):
            raise ValueError(f"index: expected a trajectory index in [0, {len(reader) - 1}], got {index!r}")
        H = reader.spec.horizon
        t_sum = np.zeros(2)
        n = 0
        for _, d in reader.iter_batches(fields=["avail", "rewards"]):
            t = d["rewards"].astype(np.float64)[step_masks(d["avail"])[0]]
            t_sum += [t.sum(), (t * t).sum()]
            n += t.size
        traj = reader.read_fields([index], ["obs", "actions", "avail", "rewards"])
    mt, st = _standardise_from_sums(t_sum[0], t_sum[1], n)
    length = int(step_masks(traj["avail"])[0].sum())
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    steps = np.arange(1, length + 1)
    ax.plot(steps, ((traj["rewards"][0, :length].astype(np.float64) - mt) / st).mean(axis=1), color="black", lw=2, label="ground truth")
    obs = torch.as_tensor(traj["obs"][:, :H], device=dev)
    act = torch.as_tensor(traj["actions"].astype(np.int64), device=dev)
    for label, model in reward_models.items():
        m = predicted_reward_stats(model, dataset_path, dev)
        pred = (model.rewards(obs, act).double().cpu().numpy()[0, :length] - m[0]) / m[1]
        ax.plot(steps, pred.mean(axis=1), lw=1.5, label=label)
    ax.set_xlabel("step h")
    ax.set_ylabel("standardised reward (mean over agents)")
    ax.set_title(title or f"trajectory {index}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def predicted_reward_stats(
    reward_model, dataset_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 1024
) -> tuple[float, float]:
    """``(mean, std)`` of r_phi over every real step, agent and trajectory of a dataset."""
    from marlcov.deep.data.external import open_dataset

    dev = resolve_device(device)
    s = np.zeros(2)
    n = 0
    with open_dataset(dataset_path) as reader:
        H = reader.spec.horizon
        for _, d in reader.iter_batches(batch_size, fields=["obs", "actions", "avail"]):
            p = (
                reward_model.rewards(
                    torch.as_tensor(d["obs"][:, :H], device=dev), torch.as_tensor(d["actions"].astype(np.int64), device=dev)
                )
                .double()
                .cpu()
                .numpy()
            )
            p = p[step_masks(d["avail"])[0]]
            s += [p.sum(), (p * p).sum()]
            n += p.size
    return _standardise_from_sums(s[0], s[1], n)
