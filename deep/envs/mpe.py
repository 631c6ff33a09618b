"""Batched MPE (simple_spread_v3, simple_tag_v3, simple_reference_v3) on JaxMARL, seen from torch.

The physics, observations and rewards are JaxMARL's (the implementation the MARLHF paper used,
section 6.1); this module only batches, jit-compiles and hands arrays to torch:

* Episodes last ``horizon`` steps (25, as in PettingZoo's ``max_cycles=25``). JaxMARL ends an
  episode when ``step >= max_steps`` is seen *before* the step counter is incremented, so its
  default ``max_steps=25`` gives 26 steps; the environment is built with ``max_steps =
  horizon - 1``.
* Steps use JaxMARL's non-resetting ``step_env``: the observation after the last step is the
  true final observation. (``MultiAgentEnv.step`` auto-resets and returns the *reset*
  observation on the last step, which would corrupt recorded trajectories.) All batch members
  are in lock-step, since no episode ends early; ``reset`` starts them all again.
* JaxMARL has no termination/truncation split; MPE has no termination either, so ``done`` is
  True exactly at step ``horizon``, which is a truncation (a learner may bootstrap through it
  or not; the paper's finite-horizon objective does not).
* Outputs are torch tensors sharing memory with the jax buffers (DLPack, zero-copy on CPU).
  They are read-only views in spirit: clone before writing into them.
* On a GPU, XLA must not preallocate the memory torch needs: ``XLA_PYTHON_CLIENT_PREALLOCATE``
  is set to ``false`` here before jax is first imported (a jax imported earlier keeps its
  setting).
* simple_tag_v3: the three adversaries (predators) are the controlled agents and share the
  team reward ``10 x collisions``; the prey follows a fixed policy, any callable of the policy
  protocol below (default: uniform random, drawn inside the compiled step from the
  environment's own key, so an episode is reproducible from its seed). The MARLHF paper's
  prey is a pretrained recurrent actor (``tag_prey.py``); a prey policy with a ``reset(seeds)``
  method is reset with the episodes.
* simple_spread_v3 and simple_reference_v3 mix each agent's own and the global reward with
  ``local_ratio`` (0.5, JaxMARL's and PettingZoo's default, which the paper's configuration
  leaves unchanged).

A *policy* here is a callable ``policy(obs, avail, t) -> actions`` with ``obs [B, k, obs_dim]``
float32, ``avail [B, k, n_actions]`` bool, the step index ``t`` (0-based) and integer
``actions [B, k]``, all torch tensors on the environment's device.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


@contextlib.contextmanager
def silenced_stdout():
    """Swallow what is printed to stdout, at the file-descriptor level: jaxmarl prints lines
    about optional submodules on import (past ``contextlib.redirect_stdout``), and stdout must
    stay clean for ``--json`` output."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
            for stream in (sys.stdout, sys.__stdout__):
                if stream is not None:
                    stream.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


with silenced_stdout():
    from jaxmarl.environments.mpe import SimpleReferenceMPE, SimpleSpreadMPE, SimpleTagMPE  # noqa: E402
    from jaxmarl.environments.mpe.default_params import DT  # noqa: E402

from marlcov.deep.data.schema import DatasetSpec, TrajectoryBatch  # noqa: E402
from marlcov.deep.envs.tag_prey import prey_policy_from_spec  # noqa: E402

ENV_NAMES = ("simple_spread_v3", "simple_tag_v3", "simple_reference_v3")
HORIZON = 25
DEFAULT_LOCAL_RATIO = 0.5
#: Time step of the MPE integrator (JaxMARL's and PettingZoo's ``dt``).
MPE_DT = DT
#: Movement actions of an MPE agent: no-op, -x, +x, -y, +y.
N_MOVES = 5
MAX_SEED = 2**32 - 1

Policy = Callable[[torch.Tensor, torch.Tensor, int], Any]


@dataclass(frozen=True)
class MPESpec:
    """Sizes of a batched MPE task as seen by the controlled agents."""

    name: str
    agent_names: tuple[str, ...]
    obs_dim: int
    state_dim: int
    n_actions: int
    horizon: int
    config: Mapping[str, Any]

    @property
    def n_agents(self) -> int:
        return len(self.agent_names)

    def dataset_spec(self) -> DatasetSpec:
        """The HDF5 dataset spec of trajectories of this task."""
        return DatasetSpec(self.name, dict(self.config), self.agent_names, self.obs_dim, self.state_dim, self.n_actions, self.horizon)


class MPEStep(NamedTuple):
    """One batched observation: ``obs [B, m, obs_dim]``, global ``state [B, state_dim]``,
    ``avail [B, m, n_actions]``, ``rewards [B, m]`` of the step that led here (zeros after a
    reset) and ``done [B]`` (True after step ``horizon``)."""

    obs: torch.Tensor
    state: torch.Tensor
    avail: torch.Tensor
    rewards: torch.Tensor
    done: torch.Tensor


def make_jax_env(name: str, horizon: int = HORIZON, local_ratio: float = DEFAULT_LOCAL_RATIO, num_agents: int = 3):
    """The JaxMARL environment behind ``name`` with episodes of exactly ``horizon`` steps."""
    if name not in ENV_NAMES:
        raise ValueError(f"name: expected one of {list(ENV_NAMES)}, got {name!r}")
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon: expected a positive integer, got {horizon!r}")
    if not 0.0 <= local_ratio <= 1.0:
        raise ValueError(f"local_ratio: expected a value in [0, 1], got {local_ratio!r}")
    max_steps = int(horizon) - 1
    if name == "simple_spread_v3":
        return SimpleSpreadMPE(num_agents=num_agents, num_landmarks=num_agents, local_ratio=local_ratio, max_steps=max_steps)
    if name == "simple_tag_v3":
        return SimpleTagMPE(num_good_agents=1, num_adversaries=3, num_obs=2, max_steps=max_steps)
    return SimpleReferenceMPE(local_ratio=local_ratio, max_steps=max_steps)


def global_state(name: str, env, state) -> jax.Array:
    """Global state vector: all entity positions, the agents' velocities, and for
    simple_reference_v3 the agents' communication states and one-hot goal landmarks."""
    parts = [state.p_pos.ravel(), state.p_vel[: env.num_agents].ravel()]
    if name == "simple_reference_v3":
        parts += [state.c.ravel(), jax.nn.one_hot(state.goal, env.num_landmarks).ravel()]
    return jnp.concatenate(parts)


def jax_device(device: str | torch.device):
    """The JAX device matching a torch device name (CPU, or the CUDA device of the same index)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return jax.devices("cpu")[0]
    if kind == "cuda":
        try:
            return jax.devices("gpu")[torch.device(device).index or 0]
        except RuntimeError as exc:
            raise ValueError(
                f"device: jax has no CUDA backend here ({exc}); install jax with CUDA support, e.g. pip install 'jax[cuda12]'"
            ) from exc
    raise ValueError(f"device: expected 'cpu' or 'cuda[:k]', got {device!r}")


def to_torch(x: jax.Array) -> torch.Tensor:
    """A torch view of a JAX array through DLPack (no copy on CPU)."""
    return torch.from_dlpack(x)


@functools.cache
def _compiled_functions(name: str, horizon: int, local_ratio: float, num_agents: int, prey_mode: str):
    """The JaxMARL env and its jitted, vmapped ``(reset, reset_to, step)`` of one configuration, shared by every
    ``MPEBatch`` of that configuration so that each batch shape compiles once per process.
    ``prey_mode``: "none" (no prey), "internal" (uniform prey drawn from the env key) or
    "external" (prey actions passed in)."""
    env = make_jax_env(name, horizon, local_ratio, num_agents)
    agents = list(env.agents)
    if name == "simple_tag_v3":
        ctrl = [agents.index(a) for a in env.adversaries]
        prey = [agents.index(a) for a in env.good_agents]
    else:
        ctrl, prey = list(range(len(agents))), []

    def pack(obs: dict):
        ctrl_obs = jnp.stack([obs[agents[i]] for i in ctrl])
        prey_obs = jnp.stack([obs[agents[i]] for i in prey]) if prey else None
        return ctrl_obs, prey_obs

    def reset_one(key, init_state):
        key, k_reset = jax.random.split(key)
        st = env.reset(k_reset)[1] if init_state is None else init_state
        ctrl_obs, prey_obs = pack(env.get_obs(st))
        return key, st, ctrl_obs, prey_obs, global_state(name, env, st)

    def step_one(key, st, a_ctrl, a_prey):
        key, k_step, k_prey = jax.random.split(key, 3)
        if prey_mode == "internal":
            a_prey = jax.random.randint(k_prey, (len(prey),), 0, N_MOVES)
        joint = [None] * len(agents)
        for j, i in enumerate(ctrl):
            joint[i] = a_ctrl[j]
        for j, i in enumerate(prey):
            joint[i] = a_prey[j]
        obs, st, rew, dones, _ = env.step_env(k_step, st, {a: joint[i] for i, a in enumerate(agents)})
        ctrl_obs, prey_obs = pack(obs)
        r = jnp.stack([rew[agents[i]] for i in ctrl]).astype(jnp.float32)
        return key, st, ctrl_obs, prey_obs, global_state(name, env, st), r, dones["__all__"]

    prey_axis = 0 if prey_mode == "external" else None
    return (
        env,
        jax.jit(jax.vmap(lambda k: reset_one(k, None))),
        jax.jit(jax.vmap(reset_one)),
        jax.jit(jax.vmap(step_one, in_axes=(0, 0, 0, prey_axis))),
    )


class MPEBatch:
    """``batch_size`` copies of one MPE task, stepped together by a compiled, vmapped step.

    Args:
        name: one of ``ENV_NAMES``.
        batch_size: number of environments B.
        horizon: episode length (25 as in PettingZoo).
        local_ratio: own/global reward mix of spread and reference (ignored by tag).
        num_agents: agents (and landmarks) of simple_spread_v3.
        prey_policy: simple_tag_v3 only: a policy for the prey (``k = 1``), or None for the
            uniform random prey drawn from the environment's keys, or a configuration string
            of ``tag_prey.prey_policy_from_spec`` (``"uniform"``, ``"marlhf:PATH"``: the MARLHF
            paper's pretrained prey), which the dataset's ``env_config`` then records.
        device: ``"cpu"`` or ``"cuda"``; the jax computation and the returned tensors live there.
    """

    def __init__(
        self,
        name: str,
        batch_size: int,
        *,
        horizon: int = HORIZON,
        local_ratio: float = DEFAULT_LOCAL_RATIO,
        num_agents: int = 3,
        prey_policy: Policy | str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        prey_spec = None
        if isinstance(prey_policy, str):
            prey_spec, prey_policy = prey_policy, prey_policy_from_spec(prey_policy, device=device)
        if prey_policy is not None and name != "simple_tag_v3":
            raise ValueError(f"prey_policy: only simple_tag_v3 has a prey, got it for {name!r}")
        mode = "internal" if prey_policy is None else "external"
        if name != "simple_tag_v3":
            mode = "none"
        self.env, self._reset_fn, self._reset_to_fn, self._step_fn = _compiled_functions(
            name, int(horizon), float(local_ratio), int(num_agents), mode
        )
        self.name = name
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self._jdev = jax_device(self.device)
        self.prey_policy = prey_policy
        env = self.env
        agents = list(env.agents)
        if name == "simple_tag_v3":
            self._ctrl = [agents.index(a) for a in env.adversaries]
            self._prey = [agents.index(a) for a in env.good_agents]
            config = {
                "horizon": int(horizon),
                "num_adversaries": 3,
                "num_good_agents": 1,
                "num_obstacles": 2,
                "prey_policy": prey_spec
                or ("uniform" if prey_policy is None else getattr(prey_policy, "name", type(prey_policy).__name__)),
            }
        else:
            self._ctrl = list(range(len(agents)))
            self._prey = []
            config = {"horizon": int(horizon), "local_ratio": float(local_ratio)}
            if name == "simple_spread_v3":
                config["num_agents"] = int(num_agents)
        ctrl_names = tuple(agents[i] for i in self._ctrl)
        n_actions = env.action_spaces[ctrl_names[0]].n
        obs_dim = env.observation_spaces[ctrl_names[0]].shape[0]
        _, st0 = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        state_dim = jax.eval_shape(lambda s: global_state(name, env, s), st0).shape[0]
        self.spec = MPESpec(name, ctrl_names, int(obs_dim), int(state_dim), int(n_actions), int(horizon), config)
        B, m = self.batch_size, self.spec.n_agents
        with jax.default_device(self._jdev):
            self._avail = to_torch(jnp.ones((B, m, self.spec.n_actions), dtype=bool))
            self._zero_rewards = to_torch(jnp.zeros((B, m), dtype=jnp.float32))
        self._prey_avail = torch.ones((B, len(self._prey), N_MOVES), dtype=torch.bool, device=self.device)
        self.t: int | None = None
        self.seeds: np.ndarray | None = None
        self._out_of_range: dict[str, torch.Tensor] = {}
        #: On an accelerator the range check of the actions is read once per episode, not per step.
        self._defer_action_checks = self.device.type != "cpu"
        self._n_actions_of = {"actions": self.spec.n_actions, "prey_policy output": N_MOVES}

    # ------------------------------------------------------------------ API
    def _seed_array(self, seeds: int | Sequence[int] | np.ndarray) -> np.ndarray:
        B = self.batch_size
        arr = np.asarray(seeds, dtype=np.int64)
        if arr.ndim == 0:
            arr = arr + np.arange(B, dtype=np.int64)
        if arr.shape != (B,):
            raise ValueError(f"seeds: expected one base seed or {B} seeds, got shape {list(arr.shape)}")
        if arr.min() < 0 or arr.max() > MAX_SEED:
            raise ValueError(f"seeds: expected integers in [0, {MAX_SEED}]")
        return arr

    def reset(self, seeds: int | Sequence[int] | np.ndarray, initial_state=None) -> MPEStep:
        """Start all B episodes. ``seeds``: one base seed (environment b gets ``seed + b``) or
        ``[B]`` seeds; environment b is a function of its seed and its actions alone.
        ``initial_state``: optional batched JaxMARL ``State`` to start from instead of the
        seeded random one (used by the parity tests)."""
        if self._out_of_range:
            self._check_episode_actions()
        self.seeds = self._seed_array(seeds)
        if hasattr(self.prey_policy, "reset"):
            # A stateful prey (the MARLHF paper's recurrent one) restarts with the episodes.
            self.prey_policy.reset(self.seeds)
        with jax.default_device(self._jdev):
            keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(self.seeds.astype(np.uint32)))
            if initial_state is None:
                out = self._reset_fn(keys)
            else:
                out = self._reset_to_fn(keys, jax.device_put(initial_state, self._jdev))
        self._keys, self._state, obs, self._prey_obs, state_vec = out
        self.t = 0
        return MPEStep(
            to_torch(obs),
            to_torch(state_vec),
            self._avail,
            self._zero_rewards,
            torch.zeros(self.batch_size, dtype=torch.bool, device=self.device),
        )

    def _actions_to_jax(self, actions, k: int, n_actions: int, field: str) -> jax.Array:
        t = torch.as_tensor(actions, device=self.device)
        if t.shape != (self.batch_size, k):
            raise ValueError(f"{field}: expected shape {[self.batch_size, k]}, got {list(t.shape)}")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{field}: expected integer actions, got dtype {t.dtype}")
        bad = ((t < 0) | (t >= n_actions)).any()
        if not self._defer_action_checks:
            if bool(bad):
                raise ValueError(f"{field}: expected actions in [0, {n_actions - 1}]")
        else:
            # Reading the flag is a host synchronisation: on an accelerator it is gathered on
            # the device and read once per episode (``_check_episode_actions``).
            self._out_of_range[field] = (self._out_of_range[field] | bad) if field in self._out_of_range else bad
        return jax.dlpack.from_dlpack(t.to(torch.int32).contiguous())

    def _check_episode_actions(self) -> None:
        """ValueError naming the field if any action of the episode so far was out of range
        (deferred checks only: on the CPU actions are checked at once)."""
        flags, self._out_of_range = self._out_of_range, {}
        for field, bad in flags.items():
            if bool(bad):
                raise ValueError(f"{field}: expected actions in [0, {self._n_actions_of[field] - 1}] at some step of this episode")

    def step(self, actions) -> MPEStep:
        """Advance all B environments by one step with ``actions [B, m]`` (torch, numpy or list)."""
        if self.t is None:
            raise RuntimeError("step: call reset first")
        if self.t >= self.spec.horizon:
            raise RuntimeError(f"step: the episodes ended after {self.spec.horizon} steps; call reset")
        a = self._actions_to_jax(actions, self.spec.n_agents, self.spec.n_actions, "actions")
        if self.prey_policy is not None:
            prey_obs = to_torch(self._prey_obs)
            prey_actions = self._actions_to_jax(
                self.prey_policy(prey_obs, self._prey_avail, self.t), len(self._prey), N_MOVES, "prey_policy output"
            )
        else:
            prey_actions = None
        out = self._step_fn(self._keys, self._state, a, prey_actions)
        self._keys, self._state, obs, self._prey_obs, state_vec, rewards, done = out
        self.t += 1
        if self.t == self.spec.horizon and self._out_of_range:
            self._check_episode_actions()
        return MPEStep(to_torch(obs), to_torch(state_vec), self._avail, to_torch(rewards), to_torch(done))

    def rollout(
        self,
        policy: Policy,
        seeds: int | Sequence[int] | np.ndarray,
        *,
        source: str = "unknown",
        agent_policy: Sequence[str] | None = None,
    ) -> TrajectoryBatch:
        """Play B complete episodes with ``policy`` and return them in the dataset layout
        (``obs``/``state`` hold H+1 entries, the last being the true final observation)."""
        spec, B = self.spec, self.batch_size
        H, m = spec.horizon, spec.n_agents
        cur = self.reset(seeds)
        obs = torch.empty((B, H + 1, m, spec.obs_dim), dtype=torch.float32, device=self.device)
        state = torch.empty((B, H + 1, spec.state_dim), dtype=torch.float32, device=self.device)
        actions = torch.empty((B, H, m), dtype=torch.int16, device=self.device)
        avail = torch.empty((B, H, m, spec.n_actions), dtype=torch.bool, device=self.device)
        rewards = torch.empty((B, H, m), dtype=torch.float32, device=self.device)
        obs[:, 0], state[:, 0] = cur.obs, cur.state
        for t in range(H):
            a = torch.as_tensor(policy(cur.obs, cur.avail, t), device=self.device)
            avail[:, t] = cur.avail
            cur = self.step(a)
            actions[:, t] = a
            obs[:, t + 1], state[:, t + 1], rewards[:, t] = cur.obs, cur.state, cur.rewards
        host = [x.cpu().numpy() for x in (obs, state, actions, avail, rewards)]
        return TrajectoryBatch(*host, seed=self.seeds.copy(), source=source, agent_policy=agent_policy)


class UniformRandomPolicy:
    """The trivial policy: each agent draws uniformly among its available actions (torch
    generator seeded with ``seed``)."""

    name = "uniform"

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        u = torch.rand(avail.shape, generator=self.generator, device=avail.device)
        return torch.where(avail, u, torch.tensor(-1.0, device=avail.device)).argmax(dim=-1)
