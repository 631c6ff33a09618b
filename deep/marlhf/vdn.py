"""Offline VDN on the MARLHF reward (MARLHF paper, section 5.3, equations (3) and (4)).

Value decomposition (VDN): ``Q_tot(o, a) = sum_i Q_i(o_i, a_i)``, one network shared by the
agents (local observation plus one-hot agent id -> Q-values of the agent's actions), trained by
one-step double Q-learning against a target network Q' that is copied every ``target_update``
updates:

    y_h = r_h + gamma * 1[h < L] * sum_i Q'_i(o_{h+1,i}, argmax_{a' available} Q_i(o_{h+1,i}, a')),

L the episode's last real step, after which nothing is bootstrapped (MPE episodes are truncated
at H, SMAX episodes end early, and the objective (3) is a finite-horizon sum). The team reward
of a dataset step is

    r_h = sum_i (r_phi(o_{h,i}, a_{h,i}) - E_D r_phi) / sqrt(Var_D r_phi)          (4)
          + sum_i clip(beta * (log pi_ref(a_{h,i} | o_{h,i}) + log |A_{h,i}|), -10, 1),

the second line being the KL reward -beta log(pi_w / pi_ref) of (3) with pi_w replaced by the
uniform 1/|A| (section 5.3: Q-learning has no explicit pi_w), each agent's term clipped to
``kl_clip`` as in the paper's public code; (3) and (4) are ``theory.objectives.marlhf``.
|A_{h,i}| counts agent i's available actions at step h (the full action set in MPE). A batch is ``batch_size`` whole
trajectories, every real step of them used. The greedy policy takes the best available action
of Q_i for each agent.

Padded episodes (SMAX; ``deep.common.step_masks``): a padded step has nothing available and a
filler action. Its rewards (both terms) are 0, it is not checked against ``avail``, and it is
left out of the TD loss, which averages over real steps only. Without padding (MPE) every step
is real and the numbers are those of the unmasked formulas.

Policies (offline and online VDN alike) are saved as ``"q-policy"`` checkpoints
(``deep.checkpoints``): the Q-network's state dict ``q`` and its sizes (``networks["q"]``:
obs_dim, n_actions, n_agents, hidden, layers), the environment, the trainer's config and
``meta`` (trainer, level, env steps, ...); ``load_policy`` reads them (and policies written in
the earlier ``marlcov.deep-policy/1``) through ``load_checkpoint``.

Length: a little over 400 lines: the agent network, the TD loss (shared with online VDN), the
greedy policy and its file, and the offline trainer with its reward (4) and KL reward (3), which
read one another's shapes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlcov.deep.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from marlcov.deep.common import (
    TrainingState,
    atomic_write_text,
    fit,
    load_dataset_arrays,
    masked,
    mlp,
    resolve_device,
    seed_everything,
    step_masks,
    torch_generator,
    with_agent_id,
)
from marlcov.deep.config_model import (
    FINITE_RANGE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    ConfigModel,
    config_values,
    load_config,
    optional,
    setting,
)
from marlcov.theory.objectives.marlhf import KL_CLIP, kl_reward_terms, team_reward

#: Trajectories per forward pass of the reference when computing the KL reward of a dataset.
REWARD_CHUNK = 2048


@dataclass(frozen=True)
class OfflineVDNConfig(ConfigModel):
    """Hyperparameters of offline VDN (defaults: Table 5, section 5.3 and the paper's public
    code: gamma 0.9, double Q-learning, target copied every 3 updates, each agent's KL reward
    clipped to [-10, 1]; beta = 1 for Spread and Reference, 3 to 10 for Tag).

    ``kl_clip``: per-agent bounds of the KL reward term (None: unclipped, the printed (3));
    ``double_q``: the bootstrap action is the online network's greedy one, valued by the target
    network (False: the target network's own max)."""

    beta: float = setting(1.0, NON_NEGATIVE)
    gamma: float = setting(0.9, UNIT_INTERVAL)
    hidden: int = setting(128, POSITIVE)
    layers: int = setting(3, POSITIVE)
    lr: float = setting(1e-3, POSITIVE)
    batch_size: int = setting(64, POSITIVE)
    updates: int = setting(10000, POSITIVE)
    target_update: int = setting(3, POSITIVE)
    double_q: bool = True
    kl_clip: tuple[float, float] | None = setting(KL_CLIP, optional(FINITE_RANGE))
    grad_clip: float = setting(10.0, POSITIVE)
    checkpoint_every: int = setting(1000, NON_NEGATIVE)
    progress: bool = True


# ----------------------------------------------------------------------------- networks, policies
class AgentQNet(torch.nn.Module):
    """Shared per-agent Q-network: ``obs [..., m, obs_dim] -> Q [..., m, n_actions]``."""

    def __init__(self, obs_dim: int, n_actions: int, n_agents: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.network = {
            "obs_dim": int(obs_dim),
            "n_actions": int(n_actions),
            "n_agents": int(n_agents),
            "hidden": int(hidden),
            "layers": int(layers),
        }
        self.body = mlp(obs_dim + n_agents, hidden, layers, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(with_agent_id(obs))


class GreedyPolicy:
    """Policy protocol ``(obs [B, m, d], avail [B, m, A], t) -> actions [B, m]``: the best
    available action of each agent's Q-values, or with probability ``epsilon`` (per agent) a
    uniformly drawn available action (from ``generator``)."""

    def __init__(
        self,
        net: AgentQNet,
        epsilon: float = 0.0,
        generator: torch.Generator | None = None,
        env_name: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a value in [0, 1], got {epsilon!r}")
        self.net, self.epsilon, self.generator = net, float(epsilon), generator
        self.env_name, self.meta = env_name, dict(meta or {})
        self.name = self.meta.get("name", "greedy")

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        obs, avail = obs.to(dev), avail.to(dev)
        greedy = masked(self.net(obs), avail).argmax(dim=-1)
        if self.epsilon <= 0.0:
            return greedy
        u = torch.rand(avail.shape, generator=self.generator, device=dev)
        random_action = torch.where(avail, u, torch.tensor(-1.0, device=dev)).argmax(dim=-1)
        explore = torch.rand(greedy.shape, generator=self.generator, device=dev) < self.epsilon
        return torch.where(explore, random_action, greedy)


def save_policy(path: str | os.PathLike, net: AgentQNet, env_name: str, config: Any, meta: Mapping[str, Any]) -> Path:
    """Write a greedy Q-policy as a ``"q-policy"`` checkpoint (atomically); its trainer is
    ``meta["trainer"]`` (default ``"vdn"``)."""
    cfg = config_values(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    meta = dict(meta)
    return save_checkpoint(
        path,
        "q-policy",
        {"q": net.state_dict()},
        trainer=str(meta.get("trainer", "vdn")),
        env_name=env_name,
        config=cfg,
        meta=meta,
        networks={"q": net.network},
    )


def policy_from_checkpoint(
    checkpoint: Checkpoint,
    device: str | torch.device = "cpu",
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
    env_name: str | None = None,
) -> GreedyPolicy:
    """The ``GreedyPolicy`` of a ``"q-policy"`` checkpoint. Raises ValueError naming the file
    and field when a field is missing or does not fit, or when ``env_name`` is given and differs."""
    if env_name is not None and checkpoint.env_name != env_name:
        raise ValueError(f"{checkpoint.path}: field 'env_name' is {checkpoint.env_name!r}; expected {env_name!r}")
    net = checkpoint.module("q", AgentQNet, device)
    meta = dict(checkpoint.meta)
    meta.setdefault("config", checkpoint.config)
    return GreedyPolicy(net, epsilon, generator, checkpoint.env_name, meta)


def load_policy(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
    env_name: str | None = None,
) -> GreedyPolicy:
    """The ``GreedyPolicy`` of the ``"q-policy"`` checkpoint at ``path``
    (``policy_from_checkpoint`` of ``deep.checkpoints.load_checkpoint``)."""
    dev = resolve_device(device)
    return policy_from_checkpoint(load_checkpoint(path, "q-policy", dev), dev, epsilon, generator, env_name)


# ----------------------------------------------------------------------------- rewards (3), (4)
def step_mask_tensors(avail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``deep.common.step_masks`` of ``avail [N, H, m, A]`` as tensors on its device:
    ``(valid, last)`` ``[N, H]``."""
    valid, last = step_masks(avail.cpu().numpy())
    return torch.as_tensor(valid, device=avail.device), torch.as_tensor(last, device=avail.device)


def kl_reward(
    ref_log_probs: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor, beta: float, clip: tuple[float, float] | None = KL_CLIP
) -> torch.Tensor:
    """Per-step KL reward of (3) with pi_w = 1/|A|: ``sum_i clip(beta (log pi_ref(a_i|o_i) + log |A_i|))``
    (``theory.objectives.marlhf.kl_reward_terms``; ``clip`` None: unclipped).

    ``ref_log_probs [..., m, A]``, ``actions [..., m]``, ``avail [..., m, A]`` -> ``[...]``.
    """
    logp = ref_log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    n_avail = avail.sum(dim=-1).clamp_min(1)
    return kl_reward_terms(logp, n_avail, beta, clip).sum(dim=-1)


@torch.no_grad()
def offline_rewards(
    reward_model,
    reference,
    obs: torch.Tensor,
    actions: torch.Tensor,
    avail: torch.Tensor,
    beta: float,
    valid: torch.Tensor | None = None,
    kl_clip: tuple[float, float] | None = KL_CLIP,
) -> dict[str, torch.Tensor]:
    """The team reward of every dataset step, ``[N, H]``: ``r_std`` (4), ``kl`` (the KL reward
    of (3) after the 1/|A| substitution) and ``total = r_std + kl``; all three are 0 on padded
    steps.

    ``reward_model``: a ``TrainedRewardModel``; ``reference``: a ``ReferencePolicy`` (may be
    None when ``beta == 0``); ``obs [N, H, m, d]`` the step observations, ``actions [N, H, m]``,
    ``avail [N, H, m, A]``; ``valid [N, H]`` the real steps (None: ``step_masks`` of ``avail``).
    """
    if valid is None:
        valid, _ = step_mask_tensors(avail)
    r_std = team_reward(reward_model.standardised(obs, actions), valid)
    if beta > 0:
        if reference is None:
            raise ValueError("reference: a reference policy is needed when beta > 0")
        kl = torch.cat(
            [
                kl_reward(
                    reference.log_probs(obs[k : k + REWARD_CHUNK], avail[k : k + REWARD_CHUNK]),
                    actions[k : k + REWARD_CHUNK],
                    avail[k : k + REWARD_CHUNK],
                    beta,
                    kl_clip,
                )
                for k in range(0, obs.shape[0], REWARD_CHUNK)
            ]
        )
        kl = kl.masked_fill(~valid, 0.0)
    else:
        kl = torch.zeros_like(r_std)
    return {"r_std": r_std, "kl": kl, "total": r_std + kl}


# ----------------------------------------------------------------------------- Q-learning
def vdn_td_loss(
    q_net: AgentQNet,
    target_net: AgentQNet,
    obs: torch.Tensor,
    actions: torch.Tensor,
    avail: torch.Tensor,
    rewards: torch.Tensor,
    gamma: float,
    valid: torch.Tensor | None = None,
    last: torch.Tensor | None = None,
    double_q: bool = False,
) -> torch.Tensor:
    """Mean squared TD error of Q_tot over the real steps of whole trajectories.

    ``obs [B, H+1, m, d]`` (the last entry is the final observation), ``actions [B, H, m]``,
    ``avail [B, H, m, A]`` (of the step actions), ``rewards [B, H]`` team rewards; ``valid``
    and ``last [B, H]`` (``deep.common.step_masks``, both or neither): the real steps and each
    episode's last one, after which nothing is bootstrapped. Without them every step is real
    and only step ``H - 1`` ends an episode. ``double_q``: each agent's bootstrap action is the
    best available one of ``q_net``, valued by ``target_net`` (double Q-learning); otherwise the
    target network's own maximum.
    """
    if (valid is None) != (last is None):
        raise ValueError("valid, last: give both step masks or neither")
    H = actions.shape[1]
    q = q_net(obs[:, :H]).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1).sum(dim=-1)
    with torch.no_grad():
        target_q = masked(target_net(obs[:, 1:H]), avail[:, 1:])
        if double_q:
            greedy = masked(q_net(obs[:, 1:H]), avail[:, 1:]).argmax(dim=-1, keepdim=True)
            q_next = target_q.gather(-1, greedy).squeeze(-1).sum(dim=-1)
        else:
            q_next = target_q.max(dim=-1).values.sum(dim=-1)
        bootstrap = torch.cat([q_next, torch.zeros_like(q_next[:, :1])], dim=1)
        if last is not None:
            # The step after an episode's last real step is padding, whose masked max is
            # MASKED_LOGIT: the finite horizon gives it the value 0 instead.
            bootstrap = bootstrap.masked_fill(last, 0.0)
        target = rewards + gamma * bootstrap
    sq = (q - target).pow(2)
    return sq.mean() if valid is None else sq[valid].mean()


def fit_offline_vdn(
    obs: torch.Tensor,
    actions: torch.Tensor,
    avail: torch.Tensor,
    rewards: torch.Tensor,
    config: OfflineVDNConfig,
    seed: int = 0,
    state_path: str | os.PathLike | None = None,
    resume: bool = True,
    run_config: Mapping[str, Any] | None = None,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[AgentQNet, list[dict[str, float]]]:
    """Offline VDN on in-memory tensors (all on one device): ``obs [N, H+1, m, d]``,
    ``actions [N, H, m]``, ``avail [N, H, m, A]``, team ``rewards [N, H]``; ``masks``: the
    step masks ``(valid, last)`` ``[N, H]`` of padded episodes (None: ``step_masks`` of
    ``avail``). Batches of ``batch_size`` trajectories are drawn with a seeded torch generator.
    With ``state_path``, training resumes from / checkpoints to it. Returns the Q-network and
    the loss history."""
    cfg = config
    dev = obs.device
    valid, last = step_mask_tensors(avail) if masks is None else masks
    N = obs.shape[0]
    seed_everything(seed)
    net = AgentQNet(obs.shape[-1], avail.shape[-1], obs.shape[-2], cfg.hidden, cfg.layers).to(dev)
    target = AgentQNet(obs.shape[-1], avail.shape[-1], obs.shape[-2], cfg.hidden, cfg.layers).to(dev)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch_generator(seed, dev)
    state = TrainingState(
        state_path,
        cfg.checkpoint_every if state_path else 0,
        {"net": net, "target": target, "opt": opt},
        {"batches": gen},
        run_config if run_config is not None else {"config": config_values(cfg), "seed": int(seed)},
    )
    if state_path is not None:
        if resume:
            state.load(map_location=dev)
        else:
            Path(state_path).unlink(missing_ok=True)

    def update(step: int) -> dict[str, float]:
        idx = torch.randint(0, N, (min(cfg.batch_size, N),), generator=gen, device=dev)
        loss = vdn_td_loss(net, target, obs[idx], actions[idx], avail[idx], rewards[idx], cfg.gamma, valid[idx], last[idx], cfg.double_q)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if (step + 1) % cfg.target_update == 0:
            target.load_state_dict(net.state_dict())
        return {"td_loss": loss.detach()}

    history = fit(
        state, cfg.updates, update, cfg.progress, "offline VDN", record_every=max(1, min(1000, cfg.updates // 20)), step_key="update"
    )
    net.eval()
    return net, history


def train_offline_vdn(
    dataset_path: str | os.PathLike,
    reward_model_path: str | os.PathLike,
    reference_path: str | os.PathLike | None,
    config: OfflineVDNConfig | Mapping[str, Any] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = True,
) -> dict[str, Any]:
    """The second step of the pipeline: offline VDN on ``r_std + KL reward`` over a dataset.

    Args:
        dataset_path: HDF5 dataset; reads ``obs``, ``actions``, ``avail`` (not the rewards);
            episodes may be padded (``deep.common.step_masks``).
        reward_model_path: ``reward_model.pt`` of ``train_reward_model``.
        reference_path: ``reference.pt`` of ``train_reference`` (None allowed when beta = 0).
        config: ``OfflineVDNConfig``, mapping or JSON/YAML file.
        out_dir: receives ``policy.pt`` (a ``"q-policy"`` checkpoint), ``metrics.json``, ``config.json``
            and the resumable ``train_state.pt``.

    Returns a summary: the policy path and the mean per-step r_std and KL reward over the
    dataset's real steps.
    """
    from marlcov.deep.marlhf.reference import check_actions_available, load_reference
    from marlcov.deep.marlhf.reward_model import load_reward_model

    cfg = load_config(OfflineVDNConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    spec, arrays = load_dataset_arrays(dataset_path, ["obs", "actions", "avail"])
    check_actions_available(arrays["actions"], arrays["avail"], str(dataset_path))
    H = spec.horizon
    obs = torch.as_tensor(arrays["obs"], dtype=torch.float32, device=dev)
    actions = torch.as_tensor(arrays["actions"].astype(np.int64), device=dev)
    avail = torch.as_tensor(arrays["avail"], device=dev)
    valid, last = (torch.as_tensor(mask, device=dev) for mask in step_masks(arrays["avail"]))
    del arrays
    reward_model = load_reward_model(reward_model_path, dev)
    reference = load_reference(reference_path, dev) if reference_path is not None and cfg.beta > 0 else None
    rew = offline_rewards(reward_model, reference, obs[:, :H], actions, avail, cfg.beta, valid, cfg.kl_clip)
    run_config = {
        "config": config_values(cfg),
        "seed": int(seed),
        "dataset": str(dataset_path.resolve()),
        "reward_model": str(Path(reward_model_path).resolve()),
        "reference": None if reference_path is None else str(Path(reference_path).resolve()),
    }
    net, history = fit_offline_vdn(obs, actions, avail, rew["total"], cfg, seed, out / "train_state.pt", resume, run_config, (valid, last))
    summary = {
        "updates": cfg.updates,
        "beta": cfg.beta,
        "mean_r_std": float(rew["r_std"][valid].mean()),
        "mean_kl_reward": float(rew["kl"][valid].mean()),
        "final_td_loss": history[-1]["td_loss"] if history else None,
    }
    path = save_policy(
        out / "policy.pt",
        net,
        spec.env_name,
        cfg,
        {"trainer": "offline-vdn", "name": "offline-vdn", **{k: v for k, v in summary.items() if v is not None}},
    )
    atomic_write_text(json.dumps({"summary": summary, "history": history}, indent=2) + "\n", out / "metrics.json")
    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out / "config.json")
    return {"policy": str(path), "out_dir": str(out), **summary}
