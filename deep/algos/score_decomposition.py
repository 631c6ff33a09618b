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

The behaviour model is ``deep.algos.score_diffusion``, the actor-critic
``deep.algos.score_actor_critic``; this module holds the config, the two-phase trainer (on
``deep.training.fit``), its files and the continuous evaluator, and re-exports the names of
the other two.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlcov.deep.algos.score_actor_critic import Actor, TwinCritic, actor_loss, critic_loss, soft_update
from marlcov.deep.algos.score_diffusion import MODES, Denoiser, Schedule, diffusion_loss
from marlcov.deep.algos.score_diffusion import agent_scores as agent_scores
from marlcov.deep.algos.score_diffusion import conditioning_mask as conditioning_mask
from marlcov.deep.algos.score_diffusion import sample_joint_actions as sample_joint_actions
from marlcov.deep.algos.score_diffusion import score_regulariser as score_regulariser
from marlcov.deep.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from marlcov.deep.common import TrainingState, atomic_write_text, eval_seed_start, fit, resolve_device, seed_everything, torch_generator
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigModel, Rule, config_values, load_config, one_of, setting
from marlcov.theory.objectives.score_decomposition import denoising_loss as denoising_loss
from marlcov.theory.objectives.score_decomposition import noised_actions as noised_actions
from marlcov.theory.objectives.score_decomposition import score_from_noise as score_from_noise
from marlcov.theory.objectives.score_decomposition import vp_alpha_bars

#: Records of the actor-critic phase that exist only on the delayed actor updates.
ACTOR_TERMS = ("actor_loss", "score_regulariser")


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
        run_config if run_config is not None else {"config": config_values(cfg), "seed": int(seed)},
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
            soft_update(target_actor, actor, cfg.tau)
            soft_update(target_critic, critic, cfg.tau)
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
    """Write the actor and the denoiser as a ``"score-model"`` checkpoint (atomically)."""
    return save_checkpoint(
        path,
        "score-model",
        {"actor": actor.state_dict(), "denoiser": denoiser.state_dict()},
        trainer="score-decomposition",
        env_name=env_name,
        config=config,
        meta=meta,
        networks={"actor": actor.network, "denoiser": denoiser.network},
    )


def score_model_from_checkpoint(
    checkpoint: Checkpoint, device: str | torch.device = "cpu"
) -> tuple[ActorPolicy, Denoiser, ScoreDecompositionConfig]:
    """``(policy, denoiser, config)`` of a ``"score-model"`` checkpoint."""
    actor, denoiser = checkpoint.module("actor", Actor, device), checkpoint.module("denoiser", Denoiser, device)
    return ActorPolicy(actor), denoiser, load_config(ScoreDecompositionConfig, checkpoint.config)


def load_score_decomposition(path, device: str | torch.device = "cpu") -> tuple[ActorPolicy, Denoiser, ScoreDecompositionConfig]:
    """``(policy, denoiser, config)`` of the ``"score-model"`` checkpoint at ``path``
    (``score_model_from_checkpoint`` of ``deep.checkpoints.load_checkpoint``)."""
    dev = resolve_device(device)
    return score_model_from_checkpoint(load_checkpoint(path, "score-model", dev), dev)


def evaluate_continuous_policy(
    policy,
    env_name: str = "simple_spread_v3",
    n_episodes: int = 100,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 250,
) -> dict[str, Any]:
    """True return of a continuous policy (callable, or path of a ``"score-model"`` checkpoint) over
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
    from marlcov.deep.data.external import continuous_trajectories

    cfg = load_config(ScoreDecompositionConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    spec, traj = continuous_trajectories(dataset_path)
    flat = transitions(traj.obs, traj.actions, traj.rewards)
    data = {k: torch.as_tensor(v, dtype=torch.float32, device=dev) for k, v in flat.items()}
    run_config = {"config": config_values(cfg), "seed": int(seed), "dataset": str(dataset_path.resolve())}
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
