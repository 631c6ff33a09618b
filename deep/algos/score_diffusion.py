"""The behaviour model of score decomposition (``deep.algos.score_decomposition``): a
conditional DDPM of the joint behaviour ``mu(a | o) = prod_i mu(a_i | a_<i, o)``, one denoiser
for the sequential conditionals and the marginals, its denoising loss, the per-agent scores
``grad_{a_i} log mu_t(a_i | a_<i, o) = -eps_theta / sigma_t``, the SRPO-style score
regulariser of a policy and ancestral sampling. The schedule, the noising, the loss and the
score of a noise prediction are ``theory.objectives.score_decomposition``'s functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from marlcov.deep.common import mlp
from marlcov.theory.objectives.score_decomposition import denoising_loss, noised_actions, score_from_noise

#: ``"sequential"``: agent i conditions on the clean actions of agents j < i; ``"independent"``: on none.
MODES = ("sequential", "independent")
#: Size of the sinusoidal embedding of the diffusion step.
TIME_EMBED = 16


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
