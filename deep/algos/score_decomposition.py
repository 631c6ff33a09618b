"""Offline MARL with a sequential score-decomposition regulariser (Qiao et al., "Offline
Multi-agent Reinforcement Learning via (Sequential) Score Decomposition"), continuous actions.

What is implemented:

* Behaviour model. A conditional DDPM of the joint behaviour policy ``mu(a | o)`` written
  through the chain rule ``mu(a | o) = prod_i mu(a_i | a_<i, o)``: one small MLP denoiser
  ``eps_theta(x_t, t, o, a_masked, mask, i)`` predicts the noise added to agent i's action
  given the joint observation and the clean actions of the agents that ``mask`` selects
  (``a_<i`` for the sequential decomposition, none for the marginal ``mu_i(a_i | o)``).
  Variance-preserving schedule with ``diffusion_steps`` steps (Diffusion-QL's "vp" betas);
  trained by the denoising loss ``E ||eps_theta - eps||^2`` with teacher forcing (the dataset's
  own ``a_<i``) and, with probability ``prefix_dropout`` per agent, an empty prefix, so one
  network holds both the sequential conditionals and the marginals. ``sample_joint_actions``
  samples agent by agent (ancestral DDPM), which reproduces the joint behaviour, modes and
  their coordination included.
* Score of agent i: ``grad_{a_i} log mu_t(a_i | a_<i, o) = -eps_theta / sigma_t``. The joint
  score's chain-rule decomposition is ``theory.objectives.score_decomposition.
  sequential_conditional_scores``; agent i's regulariser uses the block ``grad_{a_i} log
  mu(a_i | a_<i)`` of its own term ("sequential") or the marginal score ``grad_{a_i} log
  mu_i(a_i)`` ("independent", the per-agent regularisation the paper argues against).
* Offline actor-critic, TD3+BC-like: twin joint critics ``Q(o, a)`` on the team reward (mean
  of the agents' rewards), TD3 targets (target policy smoothing, delayed actor and target
  updates, no bootstrap after the last step); decentralised deterministic actors
  ``pi_i(o_i)`` (one network with agent id, tanh output). The actor loss is
  ``-alpha Q(o, pi(o)) / mean|Q| + reg_weight * R`` where TD3+BC's behaviour-cloning term is
  replaced by the diffusion score term R: an SRPO-style surrogate
  ``R = E_{t, eps} sum_i w_t <sg(eps_theta(x_t^i, t | o, pi_<i(o)) - eps), x_t^i>`` with
  ``x_t^i = sqrt(abar_t) pi_i(o_i) + sigma_t eps`` and ``w_t = sigma_t``, whose gradient in
  ``pi_i`` is ``-w_t sigma_t sqrt(abar_t) grad_{a_i} log mu_t(a_i | a_<i)`` plus a zero-mean
  term: it pulls each agent's action towards the behaviour's modes given the actions the
  earlier agents' current policies take, so the agents select the same coordination pattern.

Not implemented: the paper's exact critic regularisation and hyperparameters, and MA-MuJoCo.
The schedule, the noising, the denoising loss and the score of a noise prediction are
``theory.objectives.score_decomposition``'s functions (``vp_alpha_bars``, ``noised_actions``,
``denoising_loss``, ``score_from_noise``), the ones the ``score.denoising_score`` check of
``marlcov verify`` evaluates on Gaussian-mixture behaviours.

Length: about 500 lines, over the package's ~400: the denoiser, the twin critic, the actor,
their losses around ``theory.objectives.score_decomposition``, the two-phase trainer (its own
loop: ``deep.training.fit`` records one phase at a time) and the continuous evaluator; a split
into networks and trainer is the next step.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlcov.deep.common import (
    TrainingState,
    atomic_torch_save,
    atomic_write_text,
    config_dict,
    eval_seed_start,
    fit,
    load_config,
    load_versioned,
    mlp,
    resolve_device,
    seed_everything,
    torch_generator,
    with_agent_id,
)
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigModel, Rule, one_of, setting
from marlcov.theory.objectives.score_decomposition import denoising_loss, noised_actions, score_from_noise, vp_alpha_bars

SCORE_DECOMPOSITION_FORMAT = "marlcov.deep-score-decomposition/1"
MODES = ("sequential", "independent")
#: Records of the actor-critic phase that exist only on the delayed actor updates.
ACTOR_TERMS = ("actor_loss", "score_regulariser")
TIME_EMBED = 16


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ScoreDecompositionConfig(ConfigModel):
    """Hyperparameters (``batch_size`` counts transitions; ``diffusion_updates`` denoiser
    steps come first, then ``updates`` actor-critic steps)."""

    mode: str = setting("sequential", one_of(MODES))
    diffusion_steps: int = setting(10, POSITIVE)
    beta_min: float = setting(0.1, POSITIVE)
    beta_max: float = setting(10.0, POSITIVE)
    prefix_dropout: float = setting(0.2, UNIT_INTERVAL)
    denoiser_hidden: int = setting(128, POSITIVE)
    denoiser_layers: int = setting(3, POSITIVE)
    diffusion_lr: float = setting(1e-3, POSITIVE)
    diffusion_updates: int = setting(2000, NON_NEGATIVE)
    hidden: int = setting(128, POSITIVE)
    layers: int = setting(3, POSITIVE)
    actor_lr: float = setting(3e-4, POSITIVE)
    critic_lr: float = setting(3e-4, POSITIVE)
    gamma: float = setting(0.99, UNIT_INTERVAL)
    tau: float = setting(0.005, UNIT_INTERVAL)
    policy_noise: float = setting(0.2, NON_NEGATIVE)
    noise_clip: float = setting(0.5, NON_NEGATIVE)
    policy_delay: int = setting(2, POSITIVE)
    alpha: float = setting(2.5, NON_NEGATIVE)
    reg_weight: float = setting(1.0, NON_NEGATIVE)
    batch_size: int = setting(256, POSITIVE)
    updates: int = setting(5000, NON_NEGATIVE)
    checkpoint_every: int = setting(1000, NON_NEGATIVE)
    eval_episodes: int = setting(0, NON_NEGATIVE)

    rules = (Rule(("beta_min", "beta_max"), "beta_min < beta_max", lambda c: c.beta_min < c.beta_max),)


# ----------------------------------------------------------------------------- diffusion model
def conditioning_mask(n_agents: int, mode: str, device=None) -> torch.Tensor:
    """``[m, m]``: row i marks the agents whose clean actions condition agent i (j < i when
    ``mode == "sequential"``, none when ``"independent"``)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
    if mode == "independent":
        return torch.zeros(n_agents, n_agents, device=device)
    return torch.tril(torch.ones(n_agents, n_agents, device=device), diagonal=-1)


class Schedule:
    """The DDPM quantities of ``vp_alpha_bars`` as float32 tensors on ``device``."""

    def __init__(self, alpha_bars: np.ndarray, device=None) -> None:
        ab = np.asarray(alpha_bars, dtype=np.float64)
        prev = np.concatenate([[1.0], ab[:-1]])
        self.steps = len(ab)
        self.alpha_bars = torch.as_tensor(ab, dtype=torch.float32, device=device)
        self.alphas = torch.as_tensor(ab / prev, dtype=torch.float32, device=device)
        self.posterior_var = torch.as_tensor((1 - ab / prev) * (1 - prev) / (1 - ab), dtype=torch.float32, device=device)


class Denoiser(torch.nn.Module):
    """``eps_theta(x_t [B, m, da], t [B, m], obs [B, m, d], actions [B, m, da], mask [B?, m, m])
    -> [B, m, da]``: for each agent i the noise in its noised action, given the joint
    observation, the clean actions of the agents ``mask[i]`` selects and the step index t."""

    def __init__(self, obs_dim: int, action_dim: int, n_agents: int, steps: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.network = {
            "obs_dim": int(obs_dim),
            "action_dim": int(action_dim),
            "n_agents": int(n_agents),
            "steps": int(steps),
            "hidden": int(hidden),
            "layers": int(layers),
        }
        m = n_agents
        in_dim = action_dim + TIME_EMBED + m * obs_dim + m * action_dim + m + m
        self.body = mlp(in_dim, hidden, layers, action_dim)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(100.0), TIME_EMBED // 2)), persistent=False)

    def forward(self, x_t, t, obs, actions, mask):
        B, m = x_t.shape[:2]
        phase = (t.to(x_t.dtype) / self.network["steps"])[..., None] * self.freqs
        emb = torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)
        joint_obs = obs.reshape(B, 1, -1).expand(B, m, -1)
        mask = mask.to(x_t.dtype).expand(B, m, m)
        cond = (actions[:, None, :, :] * mask[..., None]).reshape(B, m, -1)
        eye = torch.eye(m, dtype=x_t.dtype, device=x_t.device).expand(B, m, m)
        return self.body(torch.cat([x_t, emb, joint_obs, cond, mask, eye], dim=-1))


def diffusion_loss(denoiser: Denoiser, schedule: Schedule, obs, actions, prefix_dropout: float, generator: torch.Generator):
    """The denoising loss ``E ||eps_theta(x_t, t | o, a_<i) - eps||^2`` (theory's
    ``denoising_loss`` on ``noised_actions``) of the sequential conditionals on a batch ``obs
    [B, m, d]``, clean ``actions [B, m, da]``: each agent gets its own step t and noise (drawn in
    that order from ``generator``, in the actions' dtype); its prefix ``a_<i`` is dropped
    (marginal model) with probability ``prefix_dropout``."""
    B, m, _ = actions.shape
    dev = actions.device
    t = torch.randint(0, schedule.steps, (B, m), generator=generator, device=dev)
    eps = torch.randn(actions.shape, generator=generator, device=dev, dtype=actions.dtype)
    ab = schedule.alpha_bars[t][..., None].to(actions.dtype)
    keep = (torch.rand(B, m, 1, generator=generator, device=dev) >= prefix_dropout).float()
    mask = conditioning_mask(m, "sequential", dev) * keep
    return denoising_loss(denoiser(noised_actions(actions, eps, ab), t, obs, actions, mask), eps)


@torch.no_grad()
def agent_scores(denoiser, schedule: Schedule, obs, actions, t, eps, mode: str):
    """``(scores, eps_pred, x_t)``: agent i's score ``grad_{a_i} log mu_t(a_i | a_<i, o)``
    (``"sequential"``) or ``grad_{a_i} log mu_t(a_i | o)`` (``"independent"``) at its noised
    action ``x_t = sqrt(abar_t) a_i + sigma_t eps_i``, ``t [B, m]`` step indices. ``[B, m, da]``."""
    m = actions.shape[1]
    ab = schedule.alpha_bars[t][..., None].to(actions.dtype)
    x_t = noised_actions(actions, eps, ab)
    eps_pred = denoiser(x_t, t, obs, actions, conditioning_mask(m, mode, actions.device))
    return score_from_noise(eps_pred, ab), eps_pred, x_t


def score_regulariser(denoiser, schedule: Schedule, obs, actions, mode: str, generator: torch.Generator, t=None, eps=None):
    """The SRPO-style surrogate ``R = mean_B sum_i w_t <sg(eps_theta - eps), x_t^i>`` (module
    docstring) of the policy's joint action ``actions [B, m, da]``; its gradient in ``a_i`` is
    ``w_t sqrt(abar_t) (eps_theta - eps)``. The conditioning actions ``a_<i`` are held fixed."""
    B, m, _ = actions.shape
    if t is None:
        t = torch.randint(0, schedule.steps, (B, m), generator=generator, device=actions.device)
    if eps is None:
        eps = torch.randn(actions.shape, generator=generator, device=actions.device)
    _, eps_pred, _ = agent_scores(denoiser, schedule, obs, actions.detach(), t, eps, mode)
    ab = schedule.alpha_bars[t][..., None].to(actions.dtype)
    x_t = noised_actions(actions, eps, ab)
    w = torch.sqrt(1.0 - ab)
    return (w * (eps_pred - eps) * x_t).sum(dim=(-1, -2)).mean()


@torch.no_grad()
def sample_joint_actions(
    denoiser: Denoiser, schedule: Schedule, obs, mode: str, generator: torch.Generator, clip: float | None = None
) -> torch.Tensor:
    """Joint actions ``[B, m, da]`` drawn from the diffusion model by ancestral DDPM sampling,
    agent after agent given the earlier agents' sampled actions (``"sequential"``: the joint
    behaviour), or all agents at once from their marginals (``"independent"``: the product of
    marginals). ``clip`` bounds each denoised action (None: no bound)."""
    B, m = obs.shape[:2]
    da = denoiser.network["action_dim"]
    dev = obs.device
    mask = conditioning_mask(m, mode, dev)
    actions = torch.zeros(B, m, da, device=dev)
    groups = [[i] for i in range(m)] if mode == "sequential" else [list(range(m))]
    for group in groups:
        x = torch.randn(B, m, da, generator=generator, device=dev)
        for k in range(schedule.steps - 1, -1, -1):
            t = torch.full((B, m), k, device=dev, dtype=torch.long)
            eps = denoiser(x, t, obs, actions, mask)
            ab, a = schedule.alpha_bars[k], schedule.alphas[k]
            mean = (x - (1 - a) / torch.sqrt(1 - ab) * eps) / torch.sqrt(a)
            if k > 0:
                mean = mean + torch.sqrt(schedule.posterior_var[k]) * torch.randn(x.shape, generator=generator, device=dev)
            x = mean if clip is None else mean.clamp(-clip, clip)
        actions[:, group] = x[:, group]
    return actions


# ----------------------------------------------------------------------------- actor-critic
class Actor(torch.nn.Module):
    """Decentralised deterministic actors ``pi_i(o_i) in [-1, 1]^da`` (shared, with agent id)."""

    def __init__(self, obs_dim: int, action_dim: int, n_agents: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.network = {
            "obs_dim": int(obs_dim),
            "action_dim": int(action_dim),
            "n_agents": int(n_agents),
            "hidden": int(hidden),
            "layers": int(layers),
        }
        self.body = mlp(obs_dim + n_agents, hidden, layers, action_dim)

    def forward(self, obs):
        return torch.tanh(self.body(with_agent_id(obs)))


class TwinCritic(torch.nn.Module):
    """Two joint critics ``Q_k(o, a)`` of the joint observation and joint action: ``[B, 2]``."""

    def __init__(self, obs_dim: int, action_dim: int, n_agents: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        in_dim = n_agents * (obs_dim + action_dim)
        self.q1, self.q2 = mlp(in_dim, hidden, layers, 1), mlp(in_dim, hidden, layers, 1)

    def forward(self, obs, actions):
        x = torch.cat([obs.flatten(-2), actions.flatten(-2)], dim=-1)
        return torch.cat([self.q1(x), self.q2(x)], dim=-1)


def critic_loss(
    critic: TwinCritic,
    target_critic: TwinCritic,
    target_actor: Actor,
    batch: Mapping[str, torch.Tensor],
    config: ScoreDecompositionConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """TD3's loss: ``sum_k mean (Q_k(o, a) - y)^2``, ``y = r + gamma (1 - last) min_k Q'_k(o',
    clip(pi'(o') + clip(noise)))``."""
    with torch.no_grad():
        a_next = target_actor(batch["next_obs"])
        noise = torch.randn(a_next.shape, generator=generator, device=a_next.device) * config.policy_noise
        a_next = (a_next + noise.clamp(-config.noise_clip, config.noise_clip)).clamp(-1.0, 1.0)
        q_next = target_critic(batch["next_obs"], a_next).min(dim=-1).values
        y = batch["reward"] + config.gamma * (1.0 - batch["last"]) * q_next
    q = critic(batch["obs"], batch["actions"])
    return ((q - y[:, None]) ** 2).mean(dim=0).sum()


def actor_loss(
    actor: Actor,
    critic: TwinCritic,
    denoiser: Denoiser,
    schedule: Schedule,
    obs,
    config: ScoreDecompositionConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, R)``: ``-alpha mean Q_1(o, pi(o)) / mean|Q_1| + reg_weight R``."""
    a = actor(obs)
    q = critic(obs, a)[:, 0]
    lam = config.alpha / q.abs().mean().detach().clamp_min(1e-6)
    reg = score_regulariser(denoiser, schedule, obs, a, config.mode, generator)
    return -lam * q.mean() + config.reg_weight * reg, reg


def _soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for p_t, p in zip(target.parameters(), source.parameters()):
            p_t.mul_(1.0 - tau).add_(p, alpha=tau)


def transitions(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray]:
    """Flatten trajectories ``obs [N, H+1, m, d]``, ``actions [N, H, m, da]``, ``rewards [N, H,
    m]`` into transitions with the team reward (mean over agents) and ``last`` = 1 at step H."""
    N, H = actions.shape[:2]
    last = np.zeros((N, H), np.float32)
    last[:, -1] = 1.0
    return {
        "obs": obs[:, :H].reshape(N * H, *obs.shape[2:]),
        "next_obs": obs[:, 1:].reshape(N * H, *obs.shape[2:]),
        "actions": actions.reshape(N * H, *actions.shape[2:]),
        "reward": rewards.mean(axis=-1).reshape(N * H),
        "last": last.reshape(N * H),
    }


class ActorPolicy:
    """Continuous policy protocol ``(obs [B, m, d], t) -> actions [B, m, da]`` of a trained actor."""

    name = "score-decomposition"

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    @torch.no_grad()
    def __call__(self, obs, t):
        dev = next(self.actor.parameters()).device
        return self.actor(torch.as_tensor(obs, dtype=torch.float32, device=dev)).cpu()


def fit_score_decomposition(
    data: Mapping[str, torch.Tensor],
    config: ScoreDecompositionConfig,
    seed: int = 0,
    state_path: str | os.PathLike | None = None,
    resume: bool = True,
    run_config: Mapping[str, Any] | None = None,
    progress: bool = True,
):
    """Train the denoiser, then the actor-critic, on in-memory transitions (``transitions``'
    fields as tensors on one device). Checkpoints to / resumes from ``state_path``. Returns
    ``(actor, critic, denoiser, schedule, history)``."""
    cfg = config
    dev = data["obs"].device
    n, m, d = data["obs"].shape
    da = data["actions"].shape[-1]
    seed_everything(seed)
    schedule = Schedule(vp_alpha_bars(cfg.diffusion_steps, cfg.beta_min, cfg.beta_max), dev)
    denoiser = Denoiser(d, da, m, cfg.diffusion_steps, cfg.denoiser_hidden, cfg.denoiser_layers).to(dev)
    actor = Actor(d, da, m, cfg.hidden, cfg.layers).to(dev)
    critic = TwinCritic(d, da, m, cfg.hidden, cfg.layers).to(dev)
    target_actor, target_critic = copy.deepcopy(actor), copy.deepcopy(critic)
    d_opt = torch.optim.Adam(denoiser.parameters(), lr=cfg.diffusion_lr)
    a_opt = torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr)
    c_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    gen = torch_generator(seed, dev)
    objects = {
        "denoiser": denoiser,
        "actor": actor,
        "critic": critic,
        "target_actor": target_actor,
        "target_critic": target_critic,
        "d_opt": d_opt,
        "a_opt": a_opt,
        "c_opt": c_opt,
    }
    state = TrainingState(
        state_path,
        cfg.checkpoint_every if state_path else 0,
        objects,
        {"gen": gen},
        run_config if run_config is not None else {"config": config_dict(cfg), "seed": int(seed)},
    )
    if state_path is not None:
        if resume:
            state.load(map_location=dev)
        else:
            Path(state_path).unlink(missing_ok=True)
    log_every = max(1, min(500, max(cfg.diffusion_updates, cfg.updates) // 20))
    # The sums of the current record, per phase (a record never spans the two phases); in the
    # checkpoint, so that a resumed run records what an uninterrupted one does.
    sums = json.loads(state.extra.get("sums", "{}"))

    def record(phase: str, step: int, **values: float) -> dict[str, Any]:
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        sums["n"] = sums.get("n", 0) + 1
        out = {}
        if sums["n"] == log_every:
            # The actor's terms are means over the delayed actor updates of the record only.
            counts = {k: actor_updates(step - log_every + 1, step) if k in ACTOR_TERMS else log_every for k in sums}
            out = {"phase": phase, "update": step, **{k: v / counts[k] for k, v in sums.items() if k != "n"}}
            sums.clear()
        state.extra["sums"] = json.dumps(sums)
        return out

    def actor_updates(first: int, last: int) -> int:
        """Actor updates among steps ``first..last`` of the actor-critic phase."""
        start = cfg.diffusion_updates
        return (last - start) // cfg.policy_delay - (first - 1 - start) // cfg.policy_delay

    def update(step: int) -> dict[str, Any]:
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen, device=dev)
        batch = {k: v[idx] for k, v in data.items()}
        if step < cfg.diffusion_updates:
            loss = diffusion_loss(denoiser, schedule, batch["obs"], batch["actions"], cfg.prefix_dropout, gen)
            d_opt.zero_grad(set_to_none=True)
            loss.backward()
            d_opt.step()
            return record("diffusion", step, denoising_loss=loss.item())
        if step == cfg.diffusion_updates:
            sums.clear()
        c_loss = critic_loss(critic, target_critic, target_actor, batch, cfg, gen)
        c_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        c_opt.step()
        values = {"critic_loss": c_loss.item()}
        if (step - cfg.diffusion_updates) % cfg.policy_delay == 0:
            a_loss, reg = actor_loss(actor, critic, denoiser, schedule, batch["obs"], cfg, gen)
            a_opt.zero_grad(set_to_none=True)
            a_loss.backward()
            a_opt.step()
            _soft_update(target_actor, actor, cfg.tau)
            _soft_update(target_critic, critic, cfg.tau)
            values.update(actor_loss=a_loss.item(), score_regulariser=reg.item())
        return record("actor-critic", step, **values)

    # Records are made by ``record`` per phase, so fit keeps each step's (mostly empty) result.
    history = fit(state, cfg.diffusion_updates + cfg.updates, update, progress, "score decomposition")
    for net in (actor, critic, denoiser):
        net.eval()
    return actor, critic, denoiser, schedule, history


def save_score_decomposition(
    path, actor: Actor, denoiser: Denoiser, env_name: str, config: ScoreDecompositionConfig, meta: Mapping[str, Any]
) -> Path:
    """Write the actor and the denoiser in ``SCORE_DECOMPOSITION_FORMAT`` (atomically)."""
    return atomic_torch_save(
        {
            "format": SCORE_DECOMPOSITION_FORMAT,
            "env_name": str(env_name),
            "actor_network": json.dumps(actor.network),
            "denoiser_network": json.dumps(denoiser.network),
            "config": json.dumps(config_dict(config)),
            "meta": json.dumps(dict(meta)),
            "actor": actor.state_dict(),
            "denoiser": denoiser.state_dict(),
        },
        path,
    )


def load_score_decomposition(path, device: str | torch.device = "cpu") -> tuple[ActorPolicy, Denoiser, ScoreDecompositionConfig]:
    """``(policy, denoiser, config)`` of a ``SCORE_DECOMPOSITION_FORMAT`` file."""
    dev = resolve_device(device)
    obj = load_versioned(path, SCORE_DECOMPOSITION_FORMAT, dev)
    for field in ("env_name", "actor_network", "denoiser_network", "config", "actor", "denoiser"):
        if field not in obj:
            raise ValueError(f"{path}: field '{field}' is missing")
    actor = Actor(**json.loads(obj["actor_network"])).to(dev)
    denoiser = Denoiser(**json.loads(obj["denoiser_network"])).to(dev)
    try:
        actor.load_state_dict(obj["actor"])
        denoiser.load_state_dict(obj["denoiser"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: fields 'actor'/'denoiser' do not fit their networks: {exc}") from exc
    actor.eval()
    denoiser.eval()
    return ActorPolicy(actor), denoiser, load_config(ScoreDecompositionConfig, json.loads(obj["config"]))


def evaluate_continuous_policy(
    policy,
    env_name: str = "simple_spread_v3",
    n_episodes: int = 100,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 250,
) -> dict[str, Any]:
    """True return of a continuous policy (callable or ``SCORE_DECOMPOSITION_FORMAT`` file) over
    ``n_episodes`` episodes seeded from ``deep.common.eval_seed_start(seed, n_episodes)`` on."""
    from marlcov.deep.envs.mpe_continuous import ContinuousMPEBatch

    if isinstance(policy, (str, os.PathLike)):
        policy = load_score_decomposition(policy)[0]
    if n_episodes < 1:
        raise ValueError(f"n_episodes: expected a positive integer, got {n_episodes!r}")
    B = min(int(batch_size), int(n_episodes))
    env = ContinuousMPEBatch(env_name, B, **dict(env_kwargs or {}))
    base = eval_seed_start(seed, n_episodes)
    chunks = [env.rollout(policy, base + k, source="eval").returns() for k in range(0, n_episodes, B)]
    returns = np.concatenate(chunks)[:n_episodes]
    per_episode = returns.mean(axis=1)
    return {
        "env_name": env_name,
        "n_episodes": int(n_episodes),
        "return_per_agent": float(per_episode.mean()),
        "return_std": float(per_episode.std()),
        "per_agent": returns.mean(axis=0).tolist(),
    }


def train_score_decomposition(
    dataset_path: str | os.PathLike,
    config: ScoreDecompositionConfig | Mapping[str, Any] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
) -> dict[str, Any]:
    """Offline actor-critic with the diffusion score regulariser on a continuous-action dataset
    (``deep.envs.mpe_continuous``; all trajectories, true team rewards).

    ``out_dir`` receives ``score_decomposition.pt``, ``metrics.json``, ``config.json`` and the
    resumable ``train_state.pt``. Returns the metrics: final losses, the dataset's mean return
    per agent, and with ``eval_episodes > 0`` the learned policy's true return.
    """
    from marlcov.deep.envs.mpe_continuous import read_continuous_dataset

    cfg = load_config(ScoreDecompositionConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    spec, traj = read_continuous_dataset(dataset_path)
    flat = transitions(traj.obs, traj.actions, traj.rewards)
    data = {k: torch.as_tensor(v, dtype=torch.float32, device=dev) for k, v in flat.items()}
    run_config = {"config": config_dict(cfg), "seed": int(seed), "dataset": str(dataset_path.resolve())}
    actor, critic, denoiser, schedule, history = fit_score_decomposition(
        data, cfg, seed, out / "train_state.pt", resume, run_config, progress
    )
    last = {}
    for row in history:
        last.update({k: v for k, v in row.items() if k not in ("phase", "update")})
    metrics: dict[str, Any] = {
        "n_trajectories": len(traj),
        "diffusion_updates": cfg.diffusion_updates,
        "updates": cfg.updates,
        "mode": cfg.mode,
        "dataset_return_per_agent": float(traj.returns().mean()),
        **{f"final_{k}": v for k, v in last.items()},
    }
    path = save_score_decomposition(
        out / "score_decomposition.pt", actor, denoiser, spec.env_name, cfg, {"trainer": "score-decomposition", **metrics}
    )
    if cfg.eval_episodes > 0:
        kwargs = {k: spec.env_config[k] for k in ("horizon", "local_ratio", "num_agents") if k in spec.env_config}
        ev = evaluate_continuous_policy(ActorPolicy(actor), spec.env_name, cfg.eval_episodes, seed, kwargs)
        metrics.update({"eval_return_per_agent": ev["return_per_agent"], "eval_return_std": ev["return_std"]})
    atomic_write_text(json.dumps({"metrics": metrics, "history": history}, indent=2) + "\n", out / "metrics.json")
    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out / "config.json")
    return {"policy": str(path), "out_dir": str(out), **metrics}
