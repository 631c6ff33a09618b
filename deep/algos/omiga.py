"""OMIGA (Wang et al., arXiv 2307.11620): offline MARL with implicit global-to-local value
regularisation, discrete actions, trained on the dataset's rewards or on the rewards of any
given reward function (e.g. a MARLHF reward model).

Networks: local ``Q_i(o_i, .)`` (with a slowly updated target copy ``Q_i^-``), local ``V_i(o_i)``,
a mixer with non-negative weights ``w(s)`` and offset ``b(s)`` (``Q_tot = sum_i w_i Q_i + b``,
``V_tot = sum_i w_i V_i + b``), and local policies. One gradient step (section 4.4) on the
steps of a batch of trajectories:

1. ``V_i`` minimises Proposition 4.4's convex objective
   ``E_D[exp(w_i (Q_i^-(o_i, a_i) - V_i(o_i))/alpha) + w_i V_i(o_i)/alpha]`` with ``Q_i^-`` and
   ``w`` fixed (``theory.objectives.omiga.local_value_loss``; Eq. 13).
2. ``Q_i``, ``w`` and ``b`` minimise ``E_D[(r + gamma V_tot(s') - Q_tot(s, a))^2]`` with ``V_tot(s')``
   fixed and 0 after an episode's last step (Eq. 14). ``r`` is the team reward: the mean over
   agents of the dataset's rewards or of ``reward_fn(obs, actions) [B, H, m]``.
3. ``pi_i`` maximises ``E_D[exp(w_i (Q_i^- - V_i)/alpha) log pi_i(a_i|o_i)]``
   (``omiga.local_policy_objective``; Eq. 15), the implicit local policy of section 4.2.
4. ``Q_i^-`` follows ``Q_i`` by Polyak averaging with rate ``tau``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from marlcov.deep.algos import (
    LinearMixer,
    LocalNet,
    clipped_exponent_values,
    evaluate_policy_net,
    fit,
    load_offline_data,
    load_policy,
    masked_log_probs,
    save_model,
    taken,
    write_metrics,
)
from marlcov.deep.common import TrainingState, resolve_device, seed_everything, torch_generator
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigModel, config_values, interval, load_config, setting
from marlcov.theory.objectives import omapl, omiga

__all__ = ["OMIGAConfig", "OMIGAModel", "RewardFn", "omiga_losses", "train_omiga", "evaluate_omiga"]

#: ``reward_fn(obs [B, H, m, d], actions [B, H, m]) -> rewards [B, H, m]``.
RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OMIGAConfig(ConfigModel):
    """Hyperparameters of OMIGA (``alpha`` the regularisation strength, ``tau`` the target
    rate; ``batch_trajectories`` trajectories per gradient step)."""

    hidden: int = setting(64, POSITIVE)
    layers: int = setting(2, POSITIVE)
    mixer_hidden: int = setting(32, POSITIVE)
    lr: float = setting(3e-4, POSITIVE)
    steps: int = setting(2000, POSITIVE)
    batch_trajectories: int = setting(32, POSITIVE)
    gamma: float = setting(0.99, UNIT_INTERVAL)
    alpha: float = setting(1.0, POSITIVE)
    tau: float = setting(0.005, interval(0.0, 1.0, low_open=True))
    grad_clip: float = setting(10.0, POSITIVE)
    checkpoint_every: int = setting(200, NON_NEGATIVE)
    eval_episodes: int = setting(32, NON_NEGATIVE)


class OMIGAModel(torch.nn.Module):
    """OMIGA's local Q (and target), local V, mixer and policy networks."""

    def __init__(self, obs_dim: int, state_dim: int, n_agents: int, n_actions: int, cfg: OMIGAConfig) -> None:
        super().__init__()
        self.q = LocalNet(obs_dim, n_agents, cfg.hidden, cfg.layers, n_actions)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = LocalNet(obs_dim, n_agents, cfg.hidden, cfg.layers, 1)
        self.mixer = LinearMixer(state_dim, n_agents, cfg.mixer_hidden)
        self.policy = LocalNet(obs_dim, n_agents, cfg.hidden, cfg.layers, n_actions)

    def values(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``q_taken``, ``q_target_taken``, ``log_pi_taken [B, H, m]``; ``v``, ``w [B, H+1, m]``; ``b [B, H+1]``."""
        H = batch["actions"].shape[1]
        obs = batch["obs"][:, :H]
        w, b = self.mixer(batch["state"])
        with torch.no_grad():
            q_target = taken(self.q_target(obs), batch["actions"])
        logits = self.policy(obs)
        return {
            "q_taken": taken(self.q(obs), batch["actions"]),
            "q_target_taken": q_target,
            "v": self.v(batch["obs"]).squeeze(-1),
            "w": w,
            "b": b,
            "log_pi_taken": taken(masked_log_probs(logits, batch["avail"]), batch["actions"]),
        }

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        for p, p_t in zip(self.q.parameters(), self.q_target.parameters()):
            p_t.lerp_(p, tau)


def omiga_losses(
    out: dict[str, torch.Tensor], team_rewards: torch.Tensor, valid: torch.Tensor, last: torch.Tensor, cfg: OMIGAConfig
) -> dict[str, torch.Tensor]:
    """OMIGA's three losses on trajectories: ``out`` from ``OMIGAModel.values``,
    ``team_rewards``, ``valid``, ``last [B, H]``. Returns the minimised ``loss`` (their sum) and
    ``value`` (Eq. 13), ``q`` (Eq. 14, mean squared error) and ``policy`` (Eq. 15, maximised)."""
    H = last.shape[1]
    w, b, v = out["w"], out["b"], out["v"]
    w_now, w_fixed = w[:, :H][valid], w.detach()[:, :H][valid]
    q_tgt = out["q_target_taken"][valid]
    v_now = v[:, :H][valid]
    value = torch.mean(omiga.local_value_loss(q_tgt[..., None], v_now, w_fixed, cfg.alpha))
    q_tot = omapl.linear_mix(out["q_taken"][valid], w_now, b[:, :H][valid])
    v_next = omapl.linear_mix(v.detach()[:, 1:], w.detach()[:, 1:], b.detach()[:, 1:])
    v_next = torch.where(last, torch.zeros_like(v_next), v_next)[valid]
    target = team_rewards[valid] + cfg.gamma * v_next
    q_loss = torch.mean((q_tot - target) ** 2)
    v_fixed = v_now.detach()
    q_w = clipped_exponent_values(q_tgt, v_fixed, w_fixed, cfg.alpha)
    policy = omiga.local_policy_objective(out["log_pi_taken"][valid], q_w, v_fixed, w_fixed, cfg.alpha)
    return {"loss": value + q_loss - policy, "value": value, "q": q_loss, "policy": policy}


def team_rewards_of(batch: dict[str, torch.Tensor], reward_fn: RewardFn | None) -> torch.Tensor:
    """Mean over agents of the dataset's rewards, or of ``reward_fn``'s ``[B, H, m]`` rewards."""
    if reward_fn is None:
        return batch["rewards"].mean(dim=-1)
    H = batch["actions"].shape[1]
    with torch.no_grad():
        r = torch.as_tensor(reward_fn(batch["obs"][:, :H], batch["actions"]), dtype=torch.float32, device=batch["obs"].device)
    if r.shape != batch["actions"].shape:
        raise ValueError(f"reward_fn: expected rewards of shape {list(batch['actions'].shape)} [B, H, m], got {list(r.shape)}")
    return r.mean(dim=-1)


def _reward_name(reward_fn: RewardFn) -> str:
    return str(getattr(reward_fn, "name", getattr(reward_fn, "__name__", type(reward_fn).__name__)))


def train_omiga(
    dataset_path: str | os.PathLike,
    config: OMIGAConfig | dict | str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "omiga_run",
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    reward_fn: RewardFn | None = None,
    resume: bool = True,
    evaluate: bool = False,
) -> dict[str, Any]:
    """Train OMIGA on ``dataset_path``'s trajectories.

    Args:
        config: an ``OMIGAConfig``, a dict of its fields or a JSON/YAML file.
        out_dir: receives ``train_state.pt`` (resumable), ``model.pt`` and ``metrics.json``.
        reward_fn: None for the dataset's true rewards, else ``r(obs, actions) -> [B, H, m]``
            (a reward model's prediction); a resumed run must be given the same one.
        evaluate: also play ``eval_episodes`` greedy episodes in the environment, evaluation
            run ``seed`` (reset seeds from ``deep.common.eval_seed_start(seed, eval_episodes)``).
    Returns metrics: final losses, per-step history, and the evaluation if asked.
    """
    cfg = load_config(OMIGAConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    data = load_offline_data(dataset_path, dev)
    spec = data.spec
    model = OMIGAModel(spec.obs_dim, spec.state_dim, spec.n_agents, spec.n_actions, cfg).to(dev)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    gen = torch_generator(seed, "cpu")
    run_config = {
        **config_values(cfg),
        "dataset": str(dataset_path),
        "seed": int(seed),
        "rewards": "dataset" if reward_fn is None else _reward_name(reward_fn),
    }
    state = TrainingState(out / "train_state.pt", cfg.checkpoint_every, {"model": model, "optim": optim}, {"batches": gen}, run_config)
    if resume:
        state.load(dev)

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(data), (min(cfg.batch_trajectories, len(data)),), generator=gen).to(dev)
        batch = data.take(idx)
        terms = omiga_losses(model.values(batch), team_rewards_of(batch, reward_fn), batch["valid"], batch["last"], cfg)
        optim.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        model.update_target(cfg.tau)
        return {k: v.detach() for k, v in terms.items()}

    history = fit(state, cfg.steps, step, progress, "OMIGA")
    save_model(out / "model.pt", spec, config_values(cfg), model.policy, {"q": model.q, "v": model.v, "mixer": model.mixer}, "omiga")
    metrics: dict[str, Any] = {
        "algo": "omiga",
        "env": spec.env_name,
        "seed": int(seed),
        "rewards": run_config["rewards"],
        "steps": len(history),
        "final": history[-1] if history else {},
        "history": history,
    }
    if evaluate:
        metrics["eval"] = evaluate_policy_net(model.policy, spec, cfg.eval_episodes, seed, dev)
    write_metrics(out, metrics)
    return metrics


def evaluate_omiga(model_path: str | os.PathLike, n_episodes: int = 32, seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """Greedy (argmax) play of a trained OMIGA policy (``out_dir/model.pt``): mean return, and
    the win rate on SMAX."""
    dev = resolve_device(device)
    policy, spec, _ = load_policy(model_path, dev)
    return evaluate_policy_net(policy, spec, n_episodes, seed, dev)
