"""Anchors and deviations by simulation (MPE): rollouts of the reference policy and of agent deviations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from marlcov.theory.dataset_coverage import (
    BonusModel,
)

from .deviations import _evaluate_batch
from .reference_policy import _step_masks, load_policy


# ----------------------------------------------------------------------------- simulator
def _make_simulator(spec, episodes: int):
    """An ``MPEBatch`` reproducing the dataset's environment, or ``(None, reason)``."""
    try:
        from marlcov.deep.envs import mpe
    except ImportError as exc:
        return None, f"the MPE simulator is unavailable ({exc})"
    if spec.env_name not in mpe.ENV_NAMES:
        return None, f"no simulator for environment {spec.env_name!r}"
    cfg = dict(spec.env_config)
    if spec.env_name == "simple_tag_v3" and cfg.get("prey_policy", "uniform") != "uniform":
        return None, f"the dataset's prey policy {cfg.get('prey_policy')!r} cannot be rebuilt from the file"
    kwargs = {"horizon": int(cfg.get("horizon", spec.horizon))}
    if "local_ratio" in cfg:
        kwargs["local_ratio"] = float(cfg["local_ratio"])
    if "num_agents" in cfg:
        kwargs["num_agents"] = int(cfg["num_agents"])
    return mpe.MPEBatch(spec.env_name, int(episodes), **kwargs), ""


def _rollout(env, act, seed: int) -> dict:
    """Play ``env.batch_size`` episodes with ``act(step, t) -> actions [B, m]`` (the step carries
    obs, state and avail); arrays in the dataset layout."""
    import torch

    H = env.spec.horizon
    cur = env.reset(seed)
    obs, state, actions, avail = [cur.obs.numpy().copy()], [cur.state.numpy().copy()], [], []
    for t in range(H):
        a = torch.as_tensor(act(cur, t)).to(torch.long)
        avail.append(cur.avail.numpy().copy())
        actions.append(a.numpy().copy())
        cur = env.step(a)
        obs.append(cur.obs.numpy().copy())
        state.append(cur.state.numpy().copy())
    return {
        "obs": np.stack(obs, 1),
        "state": np.stack(state, 1),
        "actions": np.stack(actions, 1).astype(np.int64),
        "avail": np.stack(avail, 1),
    }


def _simulate(
    env,
    spec,
    pol,
    fmap,
    point: BonusModel,
    evaluation,
    in_subset,
    in_uniform,
    can,
    hasher,
    sorted_sa,
    rookies: Mapping[str, Any],
    seed: int,
    episodes: int,
    say,
) -> dict:
    """Rollouts of ``pi*`` (the anchors) and of deviations of each agent; ``U_D`` by Monte Carlo,
    every rollout from the same reset seeds (common random numbers for the comparisons)."""
    import torch

    from marlcov.deep.envs.mpe import UniformRandomPolicy

    H, m = spec.horizon, spec.n_agents

    def reference(cur, t):
        return torch.as_tensor(pol(cur.obs, cur.avail, t)).to(torch.long)

    def uncertainty(d):
        values = np.where(_step_masks(d["avail"]), point.bonus(fmap(d, d["actions"][:, :H])), 0.0).sum(axis=1)
        se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
        return float(values.mean()), se

    say("simulator: reference rollouts")
    ref = _rollout(env, reference, seed)
    _evaluate_batch(evaluation, fmap, ref, ref["actions"], None, in_subset, in_uniform, can, hasher, sorted_sa, H)
    single, single_se = uncertainty(ref)

    def deviation(player, policy=None, mix=0.0, rng_seed=0):
        rng = np.random.default_rng(rng_seed)

        def act(cur, t):
            base = reference(cur, t).clone()
            if policy is not None:
                alt = torch.as_tensor(policy(cur.obs, cur.avail, t))[:, player].to(torch.long)
            else:
                fields = {"obs": cur.obs.numpy()[:, None], "state": cur.state.numpy()[:, None]}
                feats = fmap.unilateral(fields, base.numpy()[:, None, :], player)[:, 0]
                bonus = np.where(cur.avail.numpy()[:, player], point.step_bonus(feats, t), -np.inf)
                alt = torch.as_tensor(bonus.argmax(axis=-1))
                if mix > 0:
                    keep = torch.as_tensor(rng.random(alt.shape[0]) < mix)
                    alt = torch.where(keep, base[:, player], alt)
            base[:, player] = alt
            return base

        return act

    per_agent = []
    for i in range(m):
        candidates = {"uniform": deviation(i, UniformRandomPolicy(seed + i))}
        for name, rookie in rookies.items():
            candidates[f"rookie:{name}"] = deviation(i, load_policy(rookie))
        if can["unilateral"]:
            candidates["bonus-greedy"] = deviation(i)
            candidates["bonus-greedy-mix0.5"] = deviation(i, mix=0.5, rng_seed=seed + i)
        values = {}
        for name, act in candidates.items():
            say(f"simulator: agent {i} deviation {name}")
            mean, se = uncertainty(_rollout(env, act, seed))
            values[name] = {"value": mean, "stderr": se}
        worst = max(values, key=lambda k: values[k]["value"])
        per_agent.append({"candidates": values, "worst": {"name": worst, **values[worst]}})
    return {
        "episodes": int(episodes),
        "single": single,
        "single_stderr": single_se,
        "per_agent": per_agent,
        "unilateral": max(a["worst"]["value"] for a in per_agent),
    }
