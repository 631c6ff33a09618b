"""Offline multi-agent learners on the HDF5 datasets of ``deep.data``, among them O-MAPL
(``omapl``, from preference pairs) and OMIGA (``omiga``, from rewards). Their losses are the
functions of ``theory.objectives`` applied to torch tensors; this module holds what those two
share (it imports none of the submodules): the dataset
in memory with its step masks, the local networks, the linear state-conditioned mixer, the
training loop with resumable checkpoints, and greedy evaluation in the environment.

Step masks. A dataset stores every episode padded to ``H`` steps (SMAX episodes end early;
``deep.envs.smax``). ``step_masks`` (``deep.common``, re-exported here) gives ``valid[n, t]``,
True for real steps (some action available), and ``last[n, t]`` for the final real step of an
episode, after which the value of the next state is 0 (the finite-horizon convention of both
papers; for MPE the last step is ``H - 1``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marlcov.deep.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from marlcov.deep.common import (
    EVAL_SEED_BASE,
    MASKED_LOGIT,
    atomic_write_text,
    fit,
    load_dataset_arrays,
    masked,
    mlp,
    step_masks,
    with_agent_id,
)
from marlcov.deep.data.schema import DatasetSpec

__all__ = [
    "EVAL_SEED_BASE",
    "OfflineData",
    "load_offline_data",
    "step_masks",
    "LocalNet",
    "LinearMixer",
    "taken",
    "fit",
    "save_model",
    "load_policy",
    "policy_from_checkpoint",
    "make_env",
    "greedy_policy",
    "evaluate_policy_net",
]


def __getattr__(name: str):
    if name == "MODEL_FORMAT":
        raise AttributeError(f"{__name__}.MODEL_FORMAT is now marlcov.deep.checkpoints.CHECKPOINT_FORMAT (every model file has it)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Largest exponent ``(Q - V)/temperature`` given to the behaviour-cloning weights: the weights
#: only scale the policy loss, and exp of a larger value would overflow float32.
MAX_WEIGHT_EXPONENT = 10.0


class OfflineData:
    """A dataset's trajectories as tensors: ``obs [N, H+1, m, d]``, ``state [N, H+1, S]``,
    ``actions [N, H, m]`` (int64), ``avail [N, H, m, A]``, ``rewards [N, H, m]``, ``valid`` and
    ``last [N, H]``; ``pairs`` (first, second, y) when the file has preference pairs, ``y[P]``
    the fraction of agents that prefer ``first``."""

    def __init__(self, spec: DatasetSpec, arrays: Mapping[str, np.ndarray], pairs, device: torch.device) -> None:
        self.spec = spec
        valid, last = step_masks(arrays["avail"])
        chosen = np.take_along_axis(arrays["avail"], arrays["actions"].astype(np.int64)[..., None], axis=-1)[..., 0]
        if not np.all(chosen | ~valid[..., None]):
            n, t, i = np.argwhere(~chosen & valid[..., None])[0]
            raise ValueError(f"actions: trajectory {n}, step {t}, agent {i} took an action its avail mask rules out")
        self.obs = torch.as_tensor(arrays["obs"], dtype=torch.float32, device=device)
        self.state = torch.as_tensor(arrays["state"], dtype=torch.float32, device=device)
        self.actions = torch.as_tensor(arrays["actions"].astype(np.int64), device=device)
        self.avail = torch.as_tensor(arrays["avail"], dtype=torch.bool, device=device)
        self.rewards = torch.as_tensor(arrays["rewards"], dtype=torch.float32, device=device)
        self.valid = torch.as_tensor(valid, device=device)
        self.last = torch.as_tensor(last, device=device)
        self.pairs = None
        if pairs is not None:
            y = (np.asarray(pairs.labels) == 1).mean(axis=1)
            self.pairs = (
                torch.as_tensor(pairs.first, device=device),
                torch.as_tensor(pairs.second, device=device),
                torch.as_tensor(y, dtype=torch.float32, device=device),
            )

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The trajectories at ``index`` as a dict of tensors."""
        return {name: getattr(self, name)[index] for name in ("obs", "state", "actions", "avail", "rewards", "valid", "last")}


def load_offline_data(
    dataset_path: str | os.PathLike, device: torch.device, need_pairs: bool = False, pairs_path: str | os.PathLike | None = None
) -> OfflineData:
    """Read a dataset file (and its preference pairs when ``need_pairs``: those stored in the
    dataset, or those of the pairs file ``pairs_path`` written for it) into memory."""
    from marlcov.deep.data.external import open_dataset
    from marlcov.deep.data.hdf5 import read_pairs

    spec, arrays = load_dataset_arrays(dataset_path, ["obs", "state", "actions", "avail", "rewards"])
    if spec.continuous:
        raise ValueError(
            f"{dataset_path}: continuous actions (action_dim {spec.action_dim}); these trainers need discrete ones "
            "(score decomposition trains on continuous actions)"
        )
    pairs = None
    if need_pairs:
        with open_dataset(dataset_path) as reader:
            pairs = reader.pairs() if pairs_path is None else read_pairs(pairs_path, reader)
    return OfflineData(spec, arrays, pairs, device)


class LocalNet(nn.Module):
    """A network shared by all agents (one-hot agent id appended): ``obs [..., m, d] -> [..., m, out]``."""

    def __init__(self, obs_dim: int, n_agents: int, hidden: int, layers: int, out_dim: int) -> None:
        super().__init__()
        self.network = {
            "obs_dim": int(obs_dim),
            "n_agents": int(n_agents),
            "hidden": int(hidden),
            "layers": int(layers),
            "out_dim": int(out_dim),
        }
        self.net = mlp(obs_dim + n_agents, hidden, layers, out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(with_agent_id(obs))


class LinearMixer(nn.Module):
    """State-conditioned linear mixing ``M_s[x] = sum_i w_i(s) x_i + b(s)`` with ``w_i(s) >= 0``
    (absolute value of a hypernetwork's output, as in QMIX). ``state [..., S] -> (w [..., m], b [...])``."""

    def __init__(self, state_dim: int, n_agents: int, hidden: int) -> None:
        super().__init__()
        self.network = {"state_dim": int(state_dim), "n_agents": int(n_agents), "hidden": int(hidden)}
        self.weights = mlp(state_dim, hidden, 2, n_agents)
        self.bias = mlp(state_dim, hidden, 2, 1)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.abs(self.weights(state)), self.bias(state).squeeze(-1)


def taken(values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``values [..., A]`` at ``actions [...]``."""
    return values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def masked_log_probs(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Log-softmax over available actions; rows with nothing available (padding) get uniform
    log-probabilities instead of NaN (they are excluded from every loss)."""
    any_avail = avail.any(dim=-1, keepdim=True)
    return torch.log_softmax(masked(logits, avail | ~any_avail), dim=-1)


def clipped_exponent_values(q: torch.Tensor, v: torch.Tensor, scale: torch.Tensor | float, temperature: float) -> torch.Tensor:
    """``q`` lowered where ``scale (q - v)/temperature > MAX_WEIGHT_EXPONENT`` so that the
    weight ``exp(scale (q - v)/temperature)`` computed from it stays finite."""
    cap = MAX_WEIGHT_EXPONENT * temperature
    return torch.where(scale * (q - v) > cap, v + cap / scale, q)


def save_model(
    path: Path,
    spec: DatasetSpec,
    config: Mapping[str, Any],
    policy: LocalNet,
    extra_modules: Mapping[str, LocalNet | LinearMixer],
    trainer: str,
) -> Path:
    """Write the trained policy (and the value networks) with the dataset spec and config as a
    ``"policy"`` checkpoint (atomically)."""
    modules = {"policy": policy, **extra_modules}
    return save_checkpoint(
        path,
        "policy",
        {name: m.state_dict() for name, m in modules.items()},
        trainer=trainer,
        env_name=spec.env_name,
        config=config,
        networks={name: m.network for name, m in modules.items()},
        dataset_spec=spec.to_attrs(),
    )


def policy_from_checkpoint(checkpoint: Checkpoint, device: str | torch.device = "cpu") -> tuple[LocalNet, DatasetSpec, dict]:
    """``(policy_net, spec, config)`` of a ``"policy"`` checkpoint."""
    spec = DatasetSpec.from_attrs(checkpoint.spec_attrs(), str(checkpoint.path))
    return checkpoint.module("policy", LocalNet, device), spec, checkpoint.config


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[LocalNet, DatasetSpec, dict]:
    """``(policy_net, spec, config)`` from a model file written by a trainer of this package
    (``policy_from_checkpoint`` of ``deep.checkpoints.load_checkpoint``)."""
    return policy_from_checkpoint(load_checkpoint(path, "policy", device), device)


def make_env(spec: DatasetSpec, batch_size: int, device: str | torch.device = "cpu"):
    """A batched environment of the dataset's configuration (``deep.envs.make_batch_env``)."""
    from marlcov.deep.envs import make_batch_env, spec_env_kwargs

    return make_batch_env(spec.env_name, batch_size, device, **spec_env_kwargs(spec))


def greedy_policy(policy_net: nn.Module) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """The argmax policy of ``policy_net`` over available actions."""

    @torch.no_grad()
    def act(obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        logits = policy_net(obs.float())
        return logits.masked_fill(~avail, MASKED_LOGIT).argmax(dim=-1)

    return act


def evaluate_policy_net(
    policy_net: nn.Module, spec: DatasetSpec, n_episodes: int = 32, seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Greedy play of ``policy_net`` (``deep.marlhf.evaluate.evaluate_policy``, episodes from
    reset seed ``eval_seed_start(seed, n_episodes)``): mean team return (mean over agents of the
    undiscounted return) and its std, and for SMAX the win rate."""
    from marlcov.deep.envs import spec_env_kwargs
    from marlcov.deep.marlhf.evaluate import evaluate_policy

    if n_episodes < 1:
        raise ValueError(f"n_episodes: expected a positive integer, got {n_episodes!r}")
    policy_net.eval()
    res = evaluate_policy(
        greedy_policy(policy_net),
        spec.env_name,
        n_episodes,
        seed,
        n_episodes,
        device,
        spec_env_kwargs(spec),
        progress=False,
        env_device=device,
    )
    out = {"return_mean": res["return_per_agent"], "return_std": res["return_std"], "episodes": res["n_episodes"]}
    if "win_rate" in res:
        out["win_rate"] = res["win_rate"]
    return out


def write_metrics(out_dir: Path, metrics: Mapping[str, Any]) -> Path:
    return atomic_write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", out_dir / "metrics.json")
