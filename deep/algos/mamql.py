"""Offline MAMQL: multi-agent marginal Q-learning from demonstrations (Haynam et al., section IV).

What is implemented (offline variant: no environment rollouts during training, only the expert
demonstrations of a dataset):

* A joint critic per agent, ``Q_i(o, a_1, ..., a_m)``, one network shared by the agents (the
  joint observation ``o = (o_1, ..., o_m)`` flattened, plus a one-hot agent id, mapped to the
  ``A^m`` joint-action values of agent i).
* Boltzmann policies ``pi_i(a_i|o) ∝ exp(lam qbar_i(o, a_i))`` and marginalised critics
  ``qbar_i(o, a_i) = E_{a_-i ~ pi_-i} Q_i(o, a_i, a_-i)`` (``theory.objectives.mamql.marginalise``
  and ``boltzmann_policy``). The two depend on each other; the policies are the result of
  ``policy_iterations`` fixed-point sweeps ``pi <- Boltzmann(marginalise(Q, pi))`` from the
  uniform policy, held fixed (no gradient) while the critic is updated, as the paper treats
  ``pi_-i`` as fixed during an update. The expectation over ``a_-i`` is exact (``A^(m-1)``
  terms), not the paper's one-sample estimate: MPE's action sets are small enough.
* The IQ-Learn criterion with the chi-squared regulariser ``phi(x) = x - c x^2``
  (``theory.objectives.mamql.iq_learn_objective``, ``c = reg_coef``; IQ-Learn's
  ``c = 1 / (4 alpha)``) on whole expert trajectories, finite horizon: the value after the last
  step is zero, ``V_i = soft_value(qbar_i)``. The loss is ``-sum_i J_i``.
* Reward recovery: the inverse soft Bellman operator ``rbar_i = qbar_i(o_h, a_{h,i}) - gamma
  V_i(o_{h+1})`` (``inverse_soft_bellman``), and a reward network ``R_i(o, a)`` of the joint
  action regressed onto it (``reward_regression_loss``, the constraint of Eq. 9), with the
  critic's values held fixed.

Episodes padded to the horizon (SMAX ends episodes early; padding steps have no available
action) contribute nothing after their last real step, whose next value is zero. The joint
critic has ``A^m`` outputs, so the exact marginalisation is limited to ``MAX_JOINT_ACTIONS``
joint actions: 3-agent MPE (125) and SMAX 3m (512), not the 5-agent maps.

Demonstrations are the trajectories of a dataset whose tags say "expert": by default those in
which every agent's ``agent_policy`` tag is in ``demo_tags`` (``demo_field="source"`` filters
on the trajectory's ``source`` tag instead, ``"all"`` takes the whole file).

Length: about 480 lines, over the package's ~400: the joint critic, its marginalisation, the
recovered-reward regression, the Boltzmann policy, its file format, the demonstration and
reward-recovery metrics and the trainer are one method; a split into networks, metrics and
trainer is the next step (the objectives themselves are ``theory.objectives.mamql``).
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
    MASKED_LOGIT,
    TrainingState,
    atomic_write_text,
    fit,
    load_dataset_arrays,
    mlp,
    resolve_device,
    seed_everything,
    torch_generator,
)
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigModel, config_values, load_config, one_of, setting
from marlcov.deep.data.schema import DatasetSpec
from marlcov.theory.objectives.mamql import (
    boltzmann_policy,
    inverse_soft_bellman,
    iq_learn_objective,
    marginalise,
    reward_regression_loss,
    soft_value,
)

DEMO_FIELDS = ("agent_policy", "source", "all")
#: Joint action sets larger than this make the exact marginalisation too costly.
MAX_JOINT_ACTIONS = 4096


@dataclass(frozen=True)
class MAMQLConfig(ConfigModel):
    """Hyperparameters of offline MAMQL (``lam``: rationality of the Boltzmann policies;
    ``reg_coef``: ``c`` of the chi-squared regulariser; ``batch_size`` counts trajectories)."""

    lam: float = setting(1.0, POSITIVE)
    gamma: float = setting(0.99, UNIT_INTERVAL)
    reg_coef: float = setting(0.5, NON_NEGATIVE)
    policy_iterations: int = setting(2, NON_NEGATIVE)
    hidden: int = setting(128, POSITIVE)
    layers: int = setting(3, POSITIVE)
    lr: float = setting(3e-4, POSITIVE)
    reward_lr: float = setting(1e-3, POSITIVE)
    batch_size: int = setting(32, POSITIVE)
    updates: int = setting(2000, POSITIVE)
    grad_clip: float = setting(10.0, POSITIVE)
    demo_field: str = setting("agent_policy", one_of(DEMO_FIELDS))
    demo_tags: tuple[str, ...] = ("expert",)
    checkpoint_every: int = setting(500, NON_NEGATIVE)
    eval_episodes: int = setting(0, NON_NEGATIVE)
    eval_greedy: bool = True


# ----------------------------------------------------------------------------- networks
class JointCritic(torch.nn.Module):
    """``obs [..., m, d] -> Q [..., m, A, ..., A]``: agent i's value of every joint action,
    from the joint observation and a one-hot agent id (parameters shared by the agents).
    Also used, with its own parameters, as the reward network ``R_i(o, a)``."""

    def __init__(self, obs_dim: int, n_actions: int, n_agents: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        if n_actions**n_agents > MAX_JOINT_ACTIONS:
            raise ValueError(
                f"n_actions, n_agents: {n_actions}^{n_agents} joint actions exceed {MAX_JOINT_ACTIONS}, the most the "
                "exact marginalisation handles (3-agent MPE and SMAX 3m fit; 5-agent maps do not)"
            )
        self.network = {
            "obs_dim": int(obs_dim),
            "n_actions": int(n_actions),
            "n_agents": int(n_agents),
            "hidden": int(hidden),
            "layers": int(layers),
        }
        self.body = mlp(n_agents * obs_dim + n_agents, hidden, layers, n_actions**n_agents)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        m, A = self.network["n_agents"], self.network["n_actions"]
        lead = obs.shape[:-2]
        joint = obs.reshape(*lead, 1, -1).expand(*lead, m, obs.shape[-2] * obs.shape[-1])
        eye = torch.eye(m, dtype=obs.dtype, device=obs.device).expand(*lead, m, m)
        return self.body(torch.cat([joint, eye], dim=-1)).reshape(*lead, m, *([A] * m))


def marginalised_critics(q_joint: torch.Tensor, n_agents: int, lam: float, iterations: int, avail: torch.Tensor | None = None):
    """``(qbar [..., m, A], pi [..., m, A])``: the marginalised critics of ``q_joint [..., m,
    A, ..., A]`` (``m = n_agents`` trailing action axes) under the Boltzmann policies reached by
    ``iterations`` fixed-point sweeps from the uniform policy over the available actions (the
    policies carry no gradient; ``qbar`` does, through ``q_joint``). Unavailable actions
    (``avail [..., m, A]`` False) get probability zero."""
    n = int(n_agents)
    if q_joint.ndim < n + 1 or q_joint.shape[-n - 1] != n or len(set(q_joint.shape[-n:])) != 1:
        raise ValueError(f"q_joint: expected shape [..., {n}, A, ..., A] with {n} action axes, got {list(q_joint.shape)}")
    A = q_joint.shape[-1]
    batch_shape = q_joint.shape[: q_joint.ndim - n - 1]
    tables = [q_joint.select(q_joint.ndim - n - 1, i) for i in range(n)]

    def policy_of(qbar_i, i):
        if avail is not None:
            qbar_i = qbar_i.masked_fill(~avail[..., i, :], MASKED_LOGIT)
        return boltzmann_policy(qbar_i, lam)

    with torch.no_grad():
        if avail is None:
            pis = [torch.full((*batch_shape, A), 1.0 / A, dtype=q_joint.dtype, device=q_joint.device) for _ in range(n)]
        else:
            a = avail.to(q_joint.dtype)
            pis = [a[..., i, :] / a[..., i, :].sum(-1, keepdim=True).clamp_min(1.0) for i in range(n)]
        for _ in range(iterations):
            pis = [policy_of(marginalise(tables[i], pis, i), i) for i in range(n)]
    qbar = torch.stack([marginalise(tables[i], pis, i) for i in range(n)], dim=-2)
    return qbar, torch.stack(pis, dim=-2)


def soft_values(qbar: torch.Tensor, lam: float, avail: torch.Tensor | None = None) -> torch.Tensor:
    """``V_i = (1/lam) log sum_{a_i available} exp(lam qbar_i)``: ``[..., m, A] -> [..., m]``."""
    if avail is not None:
        qbar = qbar.masked_fill(~avail, MASKED_LOGIT)
    return soft_value(qbar, lam)


class MAMQLTerms(dict):
    """The pieces of the MAMQL loss on a batch of whole trajectories (a dict of tensors):
    ``q_taken``, ``v_next`` ``[B, H, m]``; ``v_initial`` ``[B, m]``; ``objective`` ``[m]`` (the
    IQ-Learn criterion of each agent); ``loss`` (``-sum_i objective_i``); ``log_pi``
    ``[B, H, m]`` (the Boltzmann log-probability of the expert actions); ``pi`` ``[B, H+1, m, A]``
    (the Boltzmann policies the critics were marginalised over); ``valid`` ``[B, H]`` (real steps)."""


def step_masks(avail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(valid, last)`` ``[B, H]`` of trajectories padded to ``H`` steps (SMAX episodes end
    early): a step is real when some action is available, ``last`` marks each episode's final
    real step (its next value is 0)."""
    valid = avail.any(dim=-1).any(dim=-1)
    lengths = valid.sum(dim=1, keepdim=True)
    last = torch.arange(avail.shape[1], device=avail.device)[None, :] == lengths - 1
    return valid, last


def mamql_terms(critic: JointCritic, obs: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor, config: MAMQLConfig) -> MAMQLTerms:
    """The MAMQL critic loss on expert trajectories ``obs [B, H+1, m, d]``, ``actions [B, H, m]``,
    ``avail [B, H, m, A]``; the value after an episode's last real step is zero (finite
    horizon). Padding steps (nothing available) get ``q_taken = v_next = 0``, so they add
    ``phi(0) = 0`` to the criterion."""
    H = actions.shape[1]
    valid, last = step_masks(avail)
    step_avail = avail | ~valid[..., None, None]
    full_avail = torch.cat([step_avail, torch.ones_like(avail[:, :1])], dim=1)
    qbar, pi = marginalised_critics(critic(obs), actions.shape[-1], config.lam, config.policy_iterations, full_avail)
    v = soft_values(qbar, config.lam, full_avail)
    idx = actions.long().unsqueeze(-1)
    zero = torch.zeros((), dtype=qbar.dtype, device=qbar.device)
    q_taken = torch.where(valid[..., None], qbar[:, :H].gather(-1, idx).squeeze(-1), zero)
    v_next = torch.where((valid & ~last)[..., None], v[:, 1 : H + 1], zero)
    v_initial = v[:, 0]
    objective = torch.stack(
        [
            iq_learn_objective(q_taken[..., i], v_next[..., i], v_initial[:, i], config.gamma, config.reg_coef)
            for i in range(actions.shape[-1])
        ]
    )
    logits = (config.lam * qbar[:, :H]).masked_fill(~step_avail, MASKED_LOGIT)
    log_pi = torch.log_softmax(logits, dim=-1).gather(-1, idx).squeeze(-1)
    return MAMQLTerms(
        q_taken=q_taken, v_next=v_next, v_initial=v_initial, objective=objective, loss=-objective.sum(), log_pi=log_pi, pi=pi, valid=valid
    )


def joint_action_values(table: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``table [..., m, A, ..., A]`` read at the joint action ``actions [..., m]``: ``[..., m]``."""
    m, A = actions.shape[-1], table.shape[-1]
    flat_index = torch.zeros_like(actions[..., 0], dtype=torch.long)
    for j in range(m):
        flat_index = flat_index * A + actions[..., j].long()
    flat = table.reshape(*table.shape[: table.ndim - m], A**m)
    return flat.gather(-1, flat_index.unsqueeze(-1).unsqueeze(-1).expand(*flat.shape[:-1], 1)).squeeze(-1)


def recovered_rewards(terms: Mapping[str, torch.Tensor], gamma: float) -> torch.Tensor:
    """``rbar_i = qbar_i(o_h, a_{h,i}) - gamma V_i(o_{h+1})`` of every step, ``[B, H, m]``."""
    return inverse_soft_bellman(terms["q_taken"], terms["v_next"], gamma)


def reward_loss(
    reward_net: JointCritic, obs: torch.Tensor, actions: torch.Tensor, terms: Mapping[str, torch.Tensor], gamma: float
) -> torch.Tensor:
    """Eq. 9's constraint: ``mean (R_i(o_h, a_h) - (qbar_i - gamma V_i(o_{h+1})))^2`` over steps
    and agents, the critic's values held fixed."""
    H = actions.shape[1]
    r_pred = joint_action_values(reward_net(obs[:, :H]), actions)
    valid = terms["valid"]
    return reward_regression_loss(r_pred[valid], terms["q_taken"].detach()[valid], terms["v_next"].detach()[valid], gamma)


# ----------------------------------------------------------------------------- policy
class BoltzmannPolicy:
    """Policy protocol ``(obs [B, m, d], avail [B, m, A], t) -> actions [B, m]``: each agent
    samples from ``pi_i ∝ exp(lam qbar_i)`` (from ``generator``), or takes its argmax with
    ``greedy``."""

    def __init__(
        self,
        critic: JointCritic,
        lam: float,
        iterations: int,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        name: str = "mamql",
    ) -> None:
        self.critic, self.lam, self.iterations = critic, float(lam), int(iterations)
        self.greedy, self.generator, self.name = bool(greedy), generator, name

    @torch.no_grad()
    def probabilities(self, obs: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        dev = next(self.critic.parameters()).device
        obs = obs.to(dev)
        avail = None if avail is None else avail.to(dev)
        qbar, _ = marginalised_critics(self.critic(obs), obs.shape[-2], self.lam, self.iterations, avail)
        logits = self.lam * qbar
        if avail is not None:
            logits = logits.masked_fill(~avail, MASKED_LOGIT)
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        p = self.probabilities(obs, avail)
        if self.greedy:
            return p.argmax(dim=-1)
        flat = p.reshape(-1, p.shape[-1])
        return torch.multinomial(flat, 1, generator=self.generator).reshape(p.shape[:-1])


def save_mamql(
    path: str | os.PathLike, critic: JointCritic, reward_net: JointCritic, spec: DatasetSpec, config: MAMQLConfig, meta: Mapping[str, Any]
) -> Path:
    """Write the critic and reward networks, with the dataset's spec, as a ``"q-function"``
    checkpoint (atomically)."""
    return save_checkpoint(
        path,
        "q-function",
        {"critic": critic.state_dict(), "reward": reward_net.state_dict()},
        trainer="mamql",
        env_name=spec.env_name,
        config=config,
        meta=meta,
        networks={"critic": critic.network, "reward": reward_net.network},
        dataset_spec=spec.to_attrs(),
    )


def mamql_from_checkpoint(
    checkpoint: Checkpoint, device: str | torch.device = "cpu", greedy: bool = False, generator: torch.Generator | None = None
) -> tuple[BoltzmannPolicy, JointCritic]:
    """``(policy, reward_net)`` of a ``"q-function"`` checkpoint; ValueError naming the file and
    field when a field is missing or does not fit."""
    cfg = load_config(MAMQLConfig, checkpoint.config)
    critic, reward_net = checkpoint.module("critic", JointCritic, device), checkpoint.module("reward", JointCritic, device)
    return BoltzmannPolicy(critic, cfg.lam, cfg.policy_iterations, greedy, generator), reward_net


def load_mamql(
    path: str | os.PathLike, device: str | torch.device = "cpu", greedy: bool = False, generator: torch.Generator | None = None
) -> tuple[BoltzmannPolicy, JointCritic]:
    """``(policy, reward_net)`` from the ``"q-function"`` checkpoint at ``path``
    (``mamql_from_checkpoint`` of ``deep.checkpoints.load_checkpoint``)."""
    dev = resolve_device(device)
    return mamql_from_checkpoint(load_checkpoint(path, "q-function", dev), dev, greedy, generator)


# ----------------------------------------------------------------------------- data
def demonstration_mask(arrays: Mapping[str, np.ndarray], demo_field: str, demo_tags) -> np.ndarray:
    """``[N]`` bool: the trajectories that are demonstrations (see the module docstring)."""
    if demo_field not in DEMO_FIELDS:
        raise ValueError(f"demo_field: expected one of {list(DEMO_FIELDS)}, got {demo_field!r}")
    tags = np.asarray(list(demo_tags), dtype=str)
    if demo_field == "all":
        return np.ones(len(arrays["actions"]), dtype=bool)
    if demo_field == "source":
        return np.isin(arrays["source"], tags)
    return np.isin(arrays["agent_policy"], tags).all(axis=-1)


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.reshape(-1).double(), y.reshape(-1).double()
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else float("nan")


@torch.no_grad()
def demonstration_metrics(critic: JointCritic, obs, actions, avail, config: MAMQLConfig, chunk: int = 256) -> dict[str, float]:
    """On demonstrations: the Boltzmann policy's mean log-likelihood of the expert actions and
    the fraction of steps on which its greedy action is the expert's."""
    H = actions.shape[1]
    logp, agree = [], []
    for k in range(0, obs.shape[0], chunk):
        sl = slice(k, k + chunk)
        terms = mamql_terms(critic, obs[sl], actions[sl], avail[sl], config)
        valid = terms["valid"]
        logp.append(terms["log_pi"][valid])
        step_avail = avail[sl] | ~valid[..., None, None]
        qbar, _ = marginalised_critics(critic(obs[sl, :H]), actions.shape[-1], config.lam, config.policy_iterations, step_avail)
        agree.append((qbar.masked_fill(~step_avail, MASKED_LOGIT).argmax(-1) == actions[sl].long())[valid].float())
    return {"demo_log_likelihood": float(torch.cat(logp).mean()), "demo_greedy_agreement": float(torch.cat(agree).mean())}


@torch.no_grad()
def reward_recovery_metrics(
    critic: JointCritic, reward_net: JointCritic, obs, actions, avail, rewards, config: MAMQLConfig, chunk: int = 256
) -> dict[str, float]:
    """Pearson correlation with the true rewards ``[N, H, m]`` (read for evaluation only) of the
    rewards recovered along the given trajectories (any behaviour, not only the expert's): by
    the inverse operator ``qbar_i(o_h, a_{h,i}) - gamma V_i(o_{h+1})`` and by the reward network."""
    H = actions.shape[1]
    rbar, rnet, true = [], [], []
    for k in range(0, obs.shape[0], chunk):
        sl = slice(k, k + chunk)
        terms = mamql_terms(critic, obs[sl], actions[sl], avail[sl], config)
        valid = terms["valid"]
        rbar.append(recovered_rewards(terms, config.gamma)[valid])
        rnet.append(joint_action_values(reward_net(obs[sl, :H]), actions[sl])[valid])
        true.append(rewards[sl][valid])
    true = torch.cat(true)
    return {"reward_corr_inverse_operator": _pearson(torch.cat(rbar), true), "reward_corr_reward_net": _pearson(torch.cat(rnet), true)}


# ----------------------------------------------------------------------------- training
def fit_mamql(
    obs: torch.Tensor,
    actions: torch.Tensor,
    avail: torch.Tensor,
    config: MAMQLConfig,
    seed: int = 0,
    state_path: str | os.PathLike | None = None,
    resume: bool = True,
    run_config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[JointCritic, JointCritic, list[dict[str, float]]]:
    """Offline MAMQL on in-memory demonstrations ``obs [N, H+1, m, d]``, ``actions [N, H, m]``,
    ``avail [N, H, m, A]`` (one device). Batches of trajectories come from a seeded generator;
    with ``state_path`` the run checkpoints there and resumes from it. Returns the critic, the
    reward network and the loss history."""
    cfg = config
    dev = obs.device
    N, m, d, A = obs.shape[0], obs.shape[-2], obs.shape[-1], avail.shape[-1]
    if N == 0:
        raise ValueError("obs: no demonstrations (0 trajectories)")
    seed_everything(seed)
    critic = JointCritic(d, A, m, cfg.hidden, cfg.layers).to(dev)
    reward_net = JointCritic(d, A, m, cfg.hidden, cfg.layers).to(dev)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    ropt = torch.optim.Adam(reward_net.parameters(), lr=cfg.reward_lr)
    gen = torch_generator(seed, dev)
    state = TrainingState(
        state_path,
        cfg.checkpoint_every if state_path else 0,
        {"critic": critic, "reward": reward_net, "opt": opt, "ropt": ropt},
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
        terms = mamql_terms(critic, obs[idx], actions[idx], avail[idx], cfg)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.grad_clip)
        opt.step()
        rl = reward_loss(reward_net, obs[idx], actions[idx], terms, cfg.gamma)
        ropt.zero_grad(set_to_none=True)
        rl.backward()
        ropt.step()
        return {"loss": terms["loss"].detach(), "reward_loss": rl.detach()}

    history = fit(state, cfg.updates, update, progress, "MAMQL", record_every=max(1, min(500, cfg.updates // 20)), step_key="update")
    critic.eval()
    reward_net.eval()
    return critic, reward_net, history


def evaluate_mamql(
    policy_path: str | os.PathLike, n_episodes: int = 100, seed: int = 0, greedy: bool = True, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """True return of the learned Boltzmann policy in the environment of its dataset (MPE or
    SMAX), ``n_episodes`` episodes from seed ``deep.common.eval_seed_start(seed, n_episodes)``
    (``deep.marlhf.evaluate.evaluate_policy``): mean return per agent and its std over episodes,
    and on SMAX the win rate."""
    from marlcov.deep.envs import spec_env_kwargs
    from marlcov.deep.marlhf.evaluate import evaluate_policy

    if n_episodes < 1:
        raise ValueError(f"n_episodes: expected a positive integer, got {n_episodes!r}")
    dev = resolve_device(device)
    ckpt = load_checkpoint(policy_path, "q-function", dev)
    policy, _ = mamql_from_checkpoint(ckpt, dev, greedy=greedy, generator=torch_generator(seed, dev))
    spec = DatasetSpec.from_attrs(ckpt.spec_attrs(), str(policy_path))
    res = evaluate_policy(policy, spec.env_name, n_episodes, seed, n_episodes, dev, spec_env_kwargs(spec), progress=False, env_device=dev)
    out = {
        "env_name": spec.env_name,
        "n_episodes": int(n_episodes),
        "return_per_agent": res["return_per_agent"],
        "return_std": res["return_std"],
    }
    if "win_rate" in res:
        out["win_rate"] = res["win_rate"]
    return out


def train_mamql(
    dataset_path: str | os.PathLike,
    config: MAMQLConfig | Mapping[str, Any] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
) -> dict[str, Any]:
    """Offline MAMQL on the demonstrations of an HDF5 dataset.

    Args:
        dataset_path: HDF5 dataset (``deep.data.hdf5``); reads ``obs``, ``actions``, ``avail``,
            the tags, and ``rewards`` for the reward-recovery metrics only.
        config: ``MAMQLConfig``, mapping or JSON/YAML file.
        out_dir: receives ``mamql.pt`` (a ``"q-function"`` checkpoint), ``metrics.json``, ``config.json``
            and the resumable ``train_state.pt``.

    Returns the metrics: number of demonstrations, final losses, ``demonstration_metrics`` on
    the demonstrations, ``reward_recovery_metrics`` on every trajectory of the file and, with
    ``eval_episodes > 0``, the true return of the learned policy (and the win rate on SMAX).
    """
    cfg = load_config(MAMQLConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    spec, arrays = load_dataset_arrays(dataset_path, ["obs", "actions", "avail", "rewards", "source", "agent_policy"])
    demo = demonstration_mask(arrays, cfg.demo_field, cfg.demo_tags)
    if not demo.any():
        sources, policies = sorted(set(arrays["source"].tolist())), sorted(set(arrays["agent_policy"].ravel().tolist()))
        raise ValueError(
            f"{dataset_path}: no trajectory has {cfg.demo_field} tags in {list(cfg.demo_tags)} (sources {sources}, policies {policies})"
        )
    obs_all = torch.as_tensor(arrays["obs"], dtype=torch.float32, device=dev)
    actions_all = torch.as_tensor(arrays["actions"].astype(np.int64), device=dev)
    avail_all = torch.as_tensor(arrays["avail"], device=dev)
    rewards_all = torch.as_tensor(arrays["rewards"], dtype=torch.float32, device=dev)
    real, _ = step_masks(avail_all)
    if bool((~avail_all.gather(-1, actions_all.unsqueeze(-1)).squeeze(-1) & real[..., None]).any()):
        raise ValueError(f"{dataset_path}: field 'actions' holds unavailable actions on real steps")
    keep = torch.as_tensor(demo, device=dev)
    obs, actions, avail = obs_all[keep], actions_all[keep], avail_all[keep]
    run_config = {"config": config_values(cfg), "seed": int(seed), "dataset": str(dataset_path.resolve())}
    critic, reward_net, history = fit_mamql(obs, actions, avail, cfg, seed, out / "train_state.pt", resume, run_config, progress)
    metrics: dict[str, Any] = {
        "n_demonstrations": int(demo.sum()),
        "n_trajectories": int(len(demo)),
        "updates": cfg.updates,
        "final_loss": history[-1]["loss"] if history else None,
        "final_reward_loss": history[-1]["reward_loss"] if history else None,
    }
    metrics.update(demonstration_metrics(critic, obs, actions, avail, cfg))
    metrics.update(reward_recovery_metrics(critic, reward_net, obs_all, actions_all, avail_all, rewards_all, cfg))
    path = save_mamql(out / "mamql.pt", critic, reward_net, spec, cfg, {"trainer": "mamql", **metrics})
    if cfg.eval_episodes > 0:
        ev = evaluate_mamql(path, cfg.eval_episodes, seed, cfg.eval_greedy, dev)
        metrics.update({f"eval_{k}": v for k, v in ev.items() if k not in ("env_name", "n_episodes")})
    atomic_write_text(json.dumps({"metrics": metrics, "history": history}, indent=2) + "\n", out / "metrics.json")
    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out / "config.json")
    return {"policy": str(path), "out_dir": str(out), **metrics}
