"""Online VDN on the batched MPE: the behaviour policies of the datasets (MARLHF paper, 6.2).

Each iteration plays ``n_envs`` whole episodes with the epsilon-greedy policy of the current
Q-network, stores them in a replay buffer of whole episodes, and makes ``updates_per_iteration``
VDN updates on batches of ``batch_episodes`` episodes (``deep.marlhf.vdn.vdn_td_loss``, team
reward = sum of the agents' true rewards, target network copied every ``target_update``
updates). Epsilon decays linearly from ``epsilon_start`` to ``epsilon_end`` over
``epsilon_decay_steps`` environment steps. An *environment step* is one step of one
environment, so an iteration counts ``n_envs * horizon`` of them.

Proficiency levels, saved in ``deep.checkpoints.CHECKPOINT_FORMAT``:

* ``rookie_<steps>.pt``: the greedy policy after the first iteration that reaches each count of
  ``rookie_steps`` environment steps (early stops) *and* scores above the trivial policy;
* ``expert.pt``: the best greedy policy among ``expert_checks`` candidates, taken at evenly
  spaced iterations from the last rookie target to the end (the final policy always among
  them). Online VDN's last iterate is not its best (measured at small scale: a final policy
  below the rookie), so the candidates are scored on *selection* episodes (reset seeds offset
  by ``SELECTION_SEED_OFFSET``) and the winner's reported return is measured afresh on the
  test episodes, which the selection never saw;
* trivial and unilateral joint policies are built from these with ``trivial_policy`` and
  ``unilateral_policy`` (n-1 experts and one rookie).

Table 1 orders the levels expert > rookie > trivial (uniform random). An early greedy policy can
score below uniform play (measured on simple_spread_v3 at small scale: rookie -35.3 against
-26.4), so a rookie is accepted only once its greedy test return exceeds the trivial policy's on
the same evaluation episodes; until then it is tried again, at most ``rookie_checks`` times
spread over the rest of the run (its ``env_steps`` records where it was taken). The summary's
``skill_order`` holds every level's test return and whether expert > rookie > trivial holds.

Checkpoints (``train_state.pt``) are written every ``checkpoint_every`` iterations and whenever
``checkpoint_seconds`` have passed since the last one, and right after a level is saved, so a
run killed early loses at most a minute; their cadence is not part of the config a resumed run
must match.

Training environments are seeded from ``(seed, iteration)``; evaluation (``deep.marlhf.evaluate``)
uses seeds from ``deep.common.EVAL_SEED_BASE`` up, a range training does not reach. Environments step on
the CPU (JaxMARL); learning runs on ``device``. The run resumes from ``train_state.pt`` (network,
target, optimiser, replay buffer, generators, iteration) after an interruption.

Length: about 450 lines: the trainer, its episode replay, the rookie and expert selection and
the joint behaviour policies built from the levels, one stage of the pipeline.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlcov.deep.common import (
    TrainingState,
    atomic_write_text,
    fit,
    resolve_device,
    seed_everything,
    torch_generator,
)
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigModel, Rule, config_values, each, load_config, setting
from marlcov.deep.marlhf.vdn import AgentQNet, GreedyPolicy, load_policy, save_policy, vdn_td_loss

#: Training environments draw their seeds below this; evaluation seeds start here.
TRAIN_SEED_SPAN = 2**31

#: Expert candidates are scored with evaluation seed ``seed + SELECTION_SEED_OFFSET``: episodes
#: disjoint from the test episodes of every run seed below the offset.
SELECTION_SEED_OFFSET = 2**20


@dataclass(frozen=True)
class OnlineVDNConfig(ConfigModel):
    """Hyperparameters of online VDN for the behaviour policies. With these defaults, on
    simple_spread_v3 (seed 0, one CPU thread, about 3 minutes): greedy test return per agent
    -24.3 for the rookie at 48k environment steps and -20.7 for the expert at 480k (uniform
    random play: about -27)."""

    n_envs: int = setting(64, POSITIVE)
    total_env_steps: int = setting(480_000, POSITIVE)
    rookie_steps: tuple[int, ...] = setting((48_000,), each(POSITIVE))
    hidden: int = setting(64, POSITIVE)
    layers: int = setting(3, POSITIVE)
    lr: float = setting(5e-4, POSITIVE)
    gamma: float = setting(0.99, UNIT_INTERVAL)
    buffer_episodes: int = setting(3000, POSITIVE)
    batch_episodes: int = setting(32, POSITIVE)
    updates_per_iteration: int = setting(32, POSITIVE)
    target_update: int = setting(200, POSITIVE)
    epsilon_start: float = setting(1.0, UNIT_INTERVAL)
    epsilon_end: float = setting(0.05, UNIT_INTERVAL)
    epsilon_decay_steps: int = setting(150_000, NON_NEGATIVE)
    learning_starts: int = setting(3200, NON_NEGATIVE)
    grad_clip: float = setting(10.0, POSITIVE)
    horizon: int = setting(25, POSITIVE)
    local_ratio: float = setting(0.5, UNIT_INTERVAL)
    eval_episodes: int = setting(256, POSITIVE)
    rookie_checks: int = setting(50, POSITIVE)
    expert_checks: int = setting(10, POSITIVE)
    checkpoint_every: int = setting(5, NON_NEGATIVE)
    checkpoint_seconds: float = setting(60.0, NON_NEGATIVE)
    progress: bool = True

    rules = (
        Rule(
            ("rookie_steps", "total_env_steps"),
            "rookie counts below total_env_steps",
            lambda c: all(s < c.total_env_steps for s in c.rookie_steps),
        ),
    )

    def epsilon(self, env_steps: int) -> float:
        """Linearly decayed exploration rate after ``env_steps`` environment steps."""
        frac = min(1.0, env_steps / max(1, self.epsilon_decay_steps))
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)


class EpisodeReplay:
    """Ring buffer of whole episodes on one device (``state_dict`` makes it resumable)."""

    def __init__(self, capacity: int, horizon: int, n_agents: int, obs_dim: int, n_actions: int, device: torch.device) -> None:
        H, m = horizon, n_agents
        self.capacity = int(capacity)
        self.obs = torch.zeros((capacity, H + 1, m, obs_dim), dtype=torch.float32, device=device)
        self.actions = torch.zeros((capacity, H, m), dtype=torch.int64, device=device)
        self.avail = torch.zeros((capacity, H, m, n_actions), dtype=torch.bool, device=device)
        self.rewards = torch.zeros((capacity, H), dtype=torch.float32, device=device)
        self.pos = 0
        self.size = 0

    def add(self, obs, actions, avail, team_rewards) -> None:
        """Append ``B`` episodes (oldest overwritten once full)."""
        B = obs.shape[0]
        idx = (self.pos + torch.arange(B, device=self.obs.device)) % self.capacity
        self.obs[idx] = obs.to(self.obs.device, torch.float32)
        self.actions[idx] = actions.to(self.obs.device, torch.int64)
        self.avail[idx] = avail.to(self.obs.device, torch.bool)
        self.rewards[idx] = team_rewards.to(self.obs.device, torch.float32)
        self.pos = int((self.pos + B) % self.capacity)
        self.size = int(min(self.capacity, self.size + B))

    def sample(self, batch: int, generator: torch.Generator):
        idx = torch.randint(0, self.size, (batch,), generator=generator, device=self.obs.device)
        return self.obs[idx], self.actions[idx], self.avail[idx], self.rewards[idx]

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {
            "obs": self.obs[:n],
            "actions": self.actions[:n],
            "avail": self.avail[:n],
            "rewards": self.rewards[:n],
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        n = int(state["size"])
        for name in ("obs", "actions", "avail", "rewards"):
            getattr(self, name)[:n] = state[name].to(self.obs.device)
        self.pos, self.size = int(state["pos"]), n


#: Config fields that set when checkpoints are written, not what the run computes.
CADENCE_FIELDS = ("checkpoint_every", "checkpoint_seconds", "progress")


def _rookie_try_due(iteration: int, target_steps: int, steps_per_iteration: int, n_iterations: int, checks: int) -> bool:
    """Whether a rookie still pending at ``iteration`` (0-based) is scored now: at the first
    iteration that reaches ``target_steps``, then at ``checks`` evenly spaced iterations up to
    the last."""
    first = max(0, math.ceil(target_steps / steps_per_iteration) - 1)
    if iteration < first:
        return False
    if iteration == first or iteration == n_iterations - 1:
        return True
    stride = max(1, (n_iterations - 1 - first) // max(1, checks))
    return (iteration - first) % stride == 0


def _expert_check_due(iteration: int, first: int, n_iterations: int, checks: int) -> bool:
    """Whether the greedy policy after ``iteration`` (0-based) is an expert candidate: ``checks``
    evenly spaced iterations from ``first`` to the last, the last always included."""
    if iteration < first:
        return False
    if iteration == n_iterations - 1:
        return True
    stride = max(1, (n_iterations - first) // max(1, checks))
    return (n_iterations - 1 - iteration) % stride == 0


def skill_order(levels: Sequence[Mapping[str, Any]], trivial_return: float) -> dict[str, Any]:
    """Table 1's order of the behaviour levels: every level's greedy test return per agent, the
    trivial (uniform) policy's, and ``holds``: expert > every rookie > trivial."""
    returns = {lv["name"]: float(lv["test_return_per_agent"]) for lv in levels}
    returns["trivial"] = float(trivial_return)
    rookies = [float(lv["test_return_per_agent"]) for lv in levels if lv["level"] == "rookie"]
    expert = returns.get("expert")
    holds = all(r > trivial_return for r in rookies) and (expert is None or all(expert > r for r in rookies + [trivial_return]))
    return {"test_return_per_agent": returns, "order": "expert > rookie > trivial", "holds": bool(holds)}


def _iteration_seed(seed: int, iteration: int, n_envs: int) -> int:
    """Base reset seed of a training iteration (environment b gets base + b), below TRAIN_SEED_SPAN."""
    base = np.random.SeedSequence([int(seed), int(iteration)]).generate_state(1, dtype=np.uint64)[0]
    return int(base % np.uint64(TRAIN_SEED_SPAN - n_envs))


def train_behaviour_policies(
    env_name: str,
    config: OnlineVDNConfig | Mapping[str, Any] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = True,
    prey_policy=None,
) -> dict[str, Any]:
    """Train VDN online on ``env_name`` and save the expert and rookie checkpoints.

    Args:
        env_name: one of ``deep.envs.mpe.ENV_NAMES``.
        config: ``OnlineVDNConfig``, mapping or JSON/YAML file.
        out_dir: receives ``expert.pt``, ``rookie_<steps>.pt``, ``metrics.json``,
            ``config.json`` and the resumable ``train_state.pt``.
        device: where the Q-network learns; the environments step on the CPU.
        seed: seeds the initialisation, exploration, replay sampling and environment resets.
        prey_policy: simple_tag_v3 only: the fixed prey (default: uniform random), a policy
            or a configuration string of ``deep.envs.tag_prey.prey_policy_from_spec``.

    Returns ``{"expert": path, "rookies": {steps: path}, "levels": [...]}`` where each level
    records its env steps and greedy test return per agent.
    """
    from marlcov.deep.envs.mpe import MPEBatch

    cfg = load_config(OnlineVDNConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs: dict[str, Any] = {"horizon": cfg.horizon}
    if env_name != "simple_tag_v3":
        env_kwargs["local_ratio"] = cfg.local_ratio
    if prey_policy is not None:
        env_kwargs["prey_policy"] = prey_policy
    env = MPEBatch(env_name, cfg.n_envs, device="cpu", **env_kwargs)
    spec = env.spec
    H, m = spec.horizon, spec.n_agents

    seed_everything(seed)
    net = AgentQNet(spec.obs_dim, spec.n_actions, m, cfg.hidden, cfg.layers).to(dev)
    target = AgentQNet(spec.obs_dim, spec.n_actions, m, cfg.hidden, cfg.layers).to(dev)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    buffer = EpisodeReplay(cfg.buffer_episodes, H, m, spec.obs_dim, spec.n_actions, dev)
    explore_gen = torch_generator(seed * 2 + 1, dev)
    sample_gen = torch_generator(seed * 2 + 2, dev)
    result_fields = {k: v for k, v in config_values(cfg).items() if k not in CADENCE_FIELDS}
    run_config = {
        "config": result_fields,
        "seed": int(seed),
        "env_name": env_name,
        "prey_policy": None if env.spec.config.get("prey_policy", "uniform") == "uniform" else env.spec.config["prey_policy"],
    }
    state = TrainingState(
        out / "train_state.pt",
        cfg.checkpoint_every,
        {"net": net, "target": target, "opt": opt, "buffer": buffer},
        {"explore": explore_gen, "sample": sample_gen},
        run_config,
        cfg.checkpoint_seconds,
    )
    if resume:
        state.load(map_location=dev)
    else:
        (out / "train_state.pt").unlink(missing_ok=True)
    updates = int(state.extra.get("updates", 0))
    levels = list(json.loads(state.extra.get("levels", "[]")))
    steps_per_iteration = cfg.n_envs * H
    n_iterations = math.ceil(cfg.total_env_steps / steps_per_iteration)
    pending = sorted(int(s) for s in cfg.rookie_steps if not any(lv.get("target_steps") == int(s) for lv in levels))
    final_steps = n_iterations * steps_per_iteration
    expert_first = min(n_iterations - 1, max(0, math.ceil(max(cfg.rookie_steps, default=0) / steps_per_iteration) - 1))

    def test_return(policy, eval_seed: int = seed) -> dict[str, Any]:
        from marlcov.deep.marlhf.evaluate import evaluate_policy

        return evaluate_policy(
            policy,
            env_name,
            n_episodes=cfg.eval_episodes,
            seed=eval_seed,
            batch_size=min(cfg.eval_episodes, cfg.n_envs),
            env_kwargs=env_kwargs,
            progress=False,
        )

    if "trivial" not in state.extra:
        state.extra["trivial"] = float(test_return(trivial_policy(m, seed))["return_per_agent"])
    trivial_return = float(state.extra["trivial"])

    def level_record(name: str, path: Path, env_steps: int, target_steps: int | None, result: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "path": str(path),
            "level": "expert" if name == "expert" else "rookie",
            "env_steps": env_steps,
            "target_steps": target_steps,
            "test_return_per_agent": result["return_per_agent"],
            "test_return_std": result["return_std"],
            "above_trivial": bool(result["return_per_agent"] > trivial_return),
        }

    def save_rookie(name: str, env_steps: int, target_steps: int) -> dict[str, Any] | None:
        """Save and score the current greedy policy as rookie ``name``; one that does not beat
        the trivial policy is discarded (None) while tries remain."""
        result = test_return(GreedyPolicy(net, 0.0, None, env_name, {"name": name}))
        if result["return_per_agent"] <= trivial_return and env_steps < final_steps:
            return None
        meta = {"trainer": "online-vdn", "name": name, "level": "rookie", "env_steps": env_steps, "seed": int(seed)}
        path = save_policy(out / f"{name}.pt", net, env_name, cfg, meta)
        return level_record(name, path, env_steps, target_steps, result)

    def consider_expert(env_steps: int) -> None:
        """Score the current greedy policy on the selection episodes; keep it as
        ``expert_candidate.pt`` (``expert.pt`` once the run ends) if it beats every earlier
        candidate."""
        greedy = GreedyPolicy(net, 0.0, None, env_name, {"name": "expert"})
        score = float(test_return(greedy, seed + SELECTION_SEED_OFFSET)["return_per_agent"])
        best = json.loads(state.extra.get("expert_candidate", "null"))
        if best is None or score > best["selection_return_per_agent"]:
            meta = {"trainer": "online-vdn", "name": "expert", "level": "expert", "env_steps": env_steps, "seed": int(seed)}
            save_policy(out / "expert_candidate.pt", net, env_name, cfg, meta)
            state.extra["expert_candidate"] = json.dumps({"env_steps": env_steps, "selection_return_per_agent": score})
            state.request_save()
        candidates = json.loads(state.extra.get("expert_candidates", "[]"))
        state.extra["expert_candidates"] = json.dumps([*candidates, {"env_steps": env_steps, "selection_return_per_agent": score}])

    def iteration(it: int) -> dict[str, Any]:
        nonlocal updates
        env_steps = it * steps_per_iteration
        policy = GreedyPolicy(net, cfg.epsilon(env_steps), explore_gen)
        batch = env.rollout(policy, _iteration_seed(seed, it, cfg.n_envs), source="online-vdn")
        team = torch.as_tensor(batch.rewards, dtype=torch.float32).sum(dim=-1)
        buffer.add(torch.as_tensor(batch.obs), torch.as_tensor(batch.actions.astype(np.int64)), torch.as_tensor(batch.avail), team)
        env_steps += steps_per_iteration
        losses = []
        if env_steps >= cfg.learning_starts:
            for _ in range(cfg.updates_per_iteration):
                o, a, av, r = buffer.sample(cfg.batch_episodes, sample_gen)
                loss = vdn_td_loss(net, target, o, a, av, r, cfg.gamma)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                updates += 1
                losses.append(loss.detach())
                if updates % cfg.target_update == 0:
                    target.load_state_dict(net.state_dict())
        while pending and env_steps >= pending[0] and _rookie_try_due(it, pending[0], steps_per_iteration, n_iterations, cfg.rookie_checks):
            record = save_rookie(f"rookie_{pending[0]}", env_steps, pending[0])
            if record is None:
                break
            levels.append(record)
            pending.pop(0)
            state.request_save()
        if _expert_check_due(it, expert_first, n_iterations, cfg.expert_checks):
            consider_expert(env_steps)
        state.extra.update(updates=updates, levels=json.dumps(levels))
        return {
            "iteration": it + 1,
            "env_steps": env_steps,
            "epsilon": cfg.epsilon(env_steps - steps_per_iteration),
            "behaviour_return_per_agent": float(batch.returns().mean()),
            "td_loss": float(torch.stack(losses).mean()) if losses else None,
        }

    history = fit(state, n_iterations, iteration, cfg.progress, f"online VDN {env_name}")
    if not any(lv["name"] == "expert" for lv in levels):
        chosen = json.loads(state.extra["expert_candidate"])
        expert_path = out / "expert.pt"
        if (out / "expert_candidate.pt").exists():
            os.replace(out / "expert_candidate.pt", expert_path)
        levels.append(level_record("expert", expert_path, chosen["env_steps"], None, test_return(load_policy(expert_path, dev))))
        state.extra.update(levels=json.dumps(levels))
    state.save()
    result = {
        "env_name": env_name,
        "expert": str(out / "expert.pt"),
        "rookies": {str(lv["target_steps"]): lv["path"] for lv in levels if lv["level"] == "rookie"},
        "levels": levels,
        "env_steps": final_steps,
        "updates": updates,
        "skill_order": skill_order(levels, trivial_return),
        "expert_candidates": json.loads(state.extra.get("expert_candidates", "[]")),
    }
    atomic_write_text(json.dumps({"summary": result, "history": history}, indent=2) + "\n", out / "metrics.json")
    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out / "config.json")
    return result


# ----------------------------------------------------------------------------- joint policies
class JointPolicy:
    """Agent i acts with ``policies[i]`` (each a policy of the protocol, called on the whole
    joint observation; column i of its output is kept). ``agent_tags[i]`` names agent i's
    policy for the dataset's ``agent_policy`` field."""

    def __init__(self, policies: Sequence[Any], agent_tags: Sequence[str], name: str) -> None:
        if len(policies) != len(agent_tags):
            raise ValueError(f"agent_tags: expected {len(policies)} tags, got {len(agent_tags)}")
        self.policies, self.agent_tags, self.name = list(policies), list(agent_tags), name

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        outputs: dict[int, torch.Tensor] = {}
        for p in self.policies:
            if id(p) not in outputs:
                outputs[id(p)] = torch.as_tensor(p(obs, avail, t), device=obs.device)
        return torch.stack([outputs[id(p)][:, i] for i, p in enumerate(self.policies)], dim=1)


def trivial_policy(n_agents: int, seed: int = 0) -> JointPolicy:
    """Every agent uniform over its available actions (the "trivial" behaviour of Table 1)."""
    from marlcov.deep.envs.mpe import UniformRandomPolicy

    uniform = UniformRandomPolicy(seed)
    return JointPolicy([uniform] * n_agents, ["trivial"] * n_agents, "trivial")


def level_policy(
    path: str | os.PathLike, n_agents: int, tag: str | None = None, device: str | torch.device = "cpu", epsilon: float = 0.0, seed: int = 0
) -> JointPolicy:
    """All agents from one checkpoint (the "expert" or "rookie" behaviour)."""
    p = load_policy(path, device, epsilon, torch_generator(seed, resolve_device(device)))
    tag = tag or str(p.meta.get("level", "policy"))
    return JointPolicy([p] * n_agents, [tag] * n_agents, tag)


def unilateral_policy(
    expert_path: str | os.PathLike,
    rookie_path: str | os.PathLike,
    deviator: int,
    n_agents: int,
    device: str | torch.device = "cpu",
    epsilon: float = 0.0,
    seed: int = 0,
) -> JointPolicy:
    """n-1 experts and one rookie at position ``deviator`` (the "unilateral" behaviour)."""
    if not 0 <= deviator < n_agents:
        raise ValueError(f"deviator: expected an agent index in [0, {n_agents - 1}], got {deviator!r}")
    dev = resolve_device(device)
    expert = load_policy(expert_path, dev, epsilon, torch_generator(seed, dev))
    rookie = load_policy(rookie_path, dev, epsilon, torch_generator(seed + 1, dev))
    if expert.env_name != rookie.env_name:
        raise ValueError(f"rookie_path: environment {rookie.env_name!r} differs from the expert's {expert.env_name!r}")
    policies = [rookie if i == deviator else expert for i in range(n_agents)]
    tags = ["rookie" if i == deviator else "expert" for i in range(n_agents)]
    return JointPolicy(policies, tags, f"unilateral-{deviator}")
