"""Scripted behaviour policies for SMAX maps: the expert, unilateral, rookie and trivial
behaviours of the MARLHF paper's Table 1 without trained policies.

Every policy is a callable ``policy(obs, avail, t) -> actions`` as ``SMAXBatch.rollout``
expects (``obs [B, m, obs_dim]``, ``avail [B, m, n_actions]`` bool, ``actions [B, m]`` int64),
vectorised over the batch and the agents, with its randomness from its own seeded
``torch.Generator``; ``agent_tags`` names each agent's behaviour for the dataset's
``agent_policy`` field: ``[m]`` tags, or ``[B, m]`` for the episodes of the last rollout.

What the expert reads (JaxMARL's SMAX, ``observation_type = "unit_list"``):

* actions of an ally: 0-3 move north, east, south, west; 4 stop; ``5 + j`` attack enemy j
  (available only while enemy j is alive and within the ally's attack range, and the ally is
  alive); a dead ally has only the stop action;
* observation of an ally: one block of ``len(env.unit_features)`` features per other ally,
  then one per enemy j in order, then its own features. An enemy block holds the enemy's
  health fraction (feature 0) and its position relative to the observer divided by the
  observer's sight range (features 1-2); the block is all zero when the enemy is dead or out
  of sight.

The expert ("focus fire"): the team picks one target, the living enemy with the lowest health
among those that some ally can attack (ties to the lowest index); when none is in anybody's
range, the lowest-health enemy that some ally sees. Each ally attacks the target when it can;
otherwise it attacks the lowest-health enemy in its own range; otherwise it moves towards the
target if it sees it, else towards the closest enemy it sees, else east (the enemies start on
the east half of the map). Measured win rates against JaxMARL's heuristic enemy (greedy, i.e.
the expert itself, 200 episodes, reset seeds 0-199, horizon 100) are in ``docs/smax.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from marlcov.deep.envs.smax import N_MOVEMENT_ACTIONS, STOP_ACTION

#: Movement actions of SMAX (``_decode_discrete_actions``): unit vectors north, east, south, west.
NORTH, EAST, SOUTH, WEST = 0, 1, 2, 3
#: Probability that a rookie agent replaces the expert's action by a uniform available one.
ROOKIE_PROB = 0.6
BEHAVIOURS = ("expert", "unilateral", "rookie", "trivial")

_INF = float("inf")


def uniform_available(avail: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One action per row of ``avail [..., A]``, uniform over the available ones (action 0
    for a row with none; ``SMAXBatch.rollout`` replaces those by the stop action)."""
    u = torch.rand(avail.shape, generator=generator, device=avail.device)
    return torch.where(avail, u, torch.tensor(-1.0, device=avail.device)).argmax(dim=-1)


class FocusFirePolicy:
    """The scripted expert of the module docstring for one SMAX environment.

    Args:
        env: the JaxMARL environment of an ``SMAXBatch`` (``SMAXBatch.env``): its numbers of
            allies and enemies and its observation layout.
    """

    name = "expert"

    def __init__(self, env: Any) -> None:
        self.n_agents = int(env.num_allies)
        self.n_enemies = int(env.num_enemies)
        self.unit_dim = len(env.unit_features)
        self.enemy_offset = (self.n_agents - 1) * self.unit_dim
        self.agent_tags = ["expert"] * self.n_agents

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        B, m = obs.shape[:2]
        E, F = self.n_enemies, self.unit_dim
        enemy = obs[..., self.enemy_offset : self.enemy_offset + E * F].reshape(B, m, E, F)
        health, rel = enemy[..., 0], enemy[..., 1:3]  # [B, m, E], [B, m, E, 2]
        seen = health > 0
        can_attack = avail[..., N_MOVEMENT_ACTIONS : N_MOVEMENT_ACTIONS + E]  # [B, m, E]
        # Every ally that sees an enemy sees the same health fraction: the max is the team's view.
        team_health = health.max(dim=1).values  # [B, E]
        in_team_range = can_attack.any(dim=1)
        target = torch.where(
            in_team_range.any(-1),
            torch.where(in_team_range, team_health, _INF).argmin(-1),
            torch.where(seen.any(dim=1), team_health, _INF).argmin(-1),
        )  # [B]
        target_b = target[:, None].expand(B, m)

        own_target = torch.where(can_attack, health, _INF).argmin(-1)  # [B, m]
        hits_target = can_attack.gather(-1, target_b[..., None]).squeeze(-1)
        attack = torch.where(hits_target, target_b, own_target) + N_MOVEMENT_ACTIONS

        sees_target = seen.gather(-1, target_b[..., None]).squeeze(-1)
        closest = torch.where(seen, rel.norm(dim=-1), _INF).argmin(-1)
        towards = torch.where(sees_target, target_b, closest)
        direction = rel.gather(2, towards[..., None, None].expand(B, m, 1, 2)).squeeze(2)  # [B, m, 2]
        dx, dy = direction.unbind(-1)
        move = torch.where(dx.abs() >= dy.abs(), torch.where(dx > 0, EAST, WEST), torch.where(dy > 0, NORTH, SOUTH))
        move = torch.where(seen.any(-1), move, EAST)

        action = torch.where(can_attack.any(-1), attack, move)
        # A dead ally (stop only) and a finished episode (nothing available) stop.
        ok = avail.gather(-1, action[..., None]).squeeze(-1)
        return torch.where(ok, action, STOP_ACTION)


class NoisyExpertPolicy:
    """The expert with its noisy agents, at each step and independently, taking a uniform
    available action instead with probability ``prob``.

    ``deviators="all"``: every agent is noisy (the rookie behaviour, tags ``"rookie"``);
    ``deviators="one"``: at the start of each rollout one agent per episode is drawn uniformly
    to be noisy and the others play the expert (the unilateral behaviour; ``agent_tags`` is then
    ``[B, m]``: ``"rookie"`` for the deviator, ``"expert"`` for the others).
    """

    def __init__(
        self, env: Any, prob: float = ROOKIE_PROB, deviators: str = "all", seed: int = 0, device: str | torch.device = "cpu"
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob: expected a probability in [0, 1], got {prob!r}")
        if deviators not in ("all", "one"):
            raise ValueError(f"deviators: expected 'all' or 'one', got {deviators!r}")
        self.expert = FocusFirePolicy(env)
        self.n_agents = self.expert.n_agents
        self.prob, self.deviators = float(prob), deviators
        self.name = "rookie" if deviators == "all" else "unilateral"
        self.generator = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
        self.agent_tags: Any = ["rookie"] * self.n_agents
        self._noisy: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        B, m = obs.shape[:2]
        if t == 0 or self._noisy is None or self._noisy.shape[0] != B:
            if self.deviators == "all":
                self._noisy = torch.ones((B, m), dtype=torch.bool, device=obs.device)
            else:
                who = torch.randint(m, (B,), generator=self.generator, device=obs.device)
                self._noisy = torch.arange(m, device=obs.device)[None, :] == who[:, None]
                self.agent_tags = np.where(self._noisy.cpu().numpy(), "rookie", "expert")
        explore = self._noisy & (torch.rand((B, m), generator=self.generator, device=obs.device) < self.prob)
        return torch.where(explore, uniform_available(avail, self.generator), self.expert(obs, avail, t))


class UniformAvailablePolicy:
    """The trivial behaviour: every agent uniform over its available actions."""

    name = "trivial"

    def __init__(self, n_agents: int, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.generator = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
        self.agent_tags = ["trivial"] * int(n_agents)

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        return uniform_available(avail, self.generator)


def behaviour_policy(behaviour: str, env: Any, seed: int = 0, rookie_prob: float = ROOKIE_PROB, device: str | torch.device = "cpu"):
    """The scripted policy of ``behaviour`` (one of ``BEHAVIOURS``) for the JaxMARL environment
    ``env`` of an ``SMAXBatch``; ``seed`` seeds its generator (the expert has none)."""
    if behaviour == "expert":
        return FocusFirePolicy(env)
    if behaviour == "unilateral":
        return NoisyExpertPolicy(env, rookie_prob, "one", seed, device)
    if behaviour == "rookie":
        return NoisyExpertPolicy(env, rookie_prob, "all", seed, device)
    if behaviour == "trivial":
        return UniformAvailablePolicy(env.num_allies, seed, device)
    raise ValueError(f"behaviour: expected one of {list(BEHAVIOURS)}, got {behaviour!r}")
