"""The offline actor-critic of score decomposition (``deep.algos.score_decomposition``),
TD3+BC-like: twin joint critics ``Q(o, a)`` with TD3 targets, decentralised deterministic
actors ``pi_i(o_i)``, and the actor loss with the behaviour-cloning term replaced by the
diffusion score regulariser (``deep.algos.score_diffusion``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from marlcov.deep.algos.score_diffusion import Denoiser, Schedule, score_regulariser
from marlcov.deep.common import mlp, with_agent_id

if TYPE_CHECKING:
    from marlcov.deep.algos.score_decomposition import ScoreDecompositionConfig


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


def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, parameter by parameter."""
    with torch.no_grad():
        for p_t, p in zip(target.parameters(), source.parameters()):
            p_t.mul_(1.0 - tau).add_(p, alpha=tau)
