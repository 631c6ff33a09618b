"""Imitation reference pi_ref by behaviour cloning over the whole dataset (MARLHF paper, 5.3).

pi_ref approximates the behaviour policy pi^b that generated the dataset, to build the KL
reward of (3). One network, shared by all agents, maps agent i's local observation and its
one-hot id to action logits; unavailable actions (``avail`` False) are masked out of the
softmax, so pi_ref puts (numerically) zero mass on them. ``model``: ``"gru"`` (default, the
recurrent actor of the paper's public code: an embedding, a GRU along each agent's trajectory,
then the head, so pi_ref(. | o_{1..h,i}) sees the agent's history) or ``"mlp"`` (the current
observation only). A GRU reference takes whole trajectories ``[N, H, m, d]``; acting step by
step, ``ReferencePolicy`` carries its hidden state and starts afresh at ``t = 0``. The loss is the mean negative
log-likelihood of the dataset's actions over every real step and agent of every trajectory.

Padded episodes (SMAX; ``deep.common.step_masks``): a padded step has nothing available and a
filler action, so it says nothing about the behaviour policy. It is left out of the loss, of
the reported NLL and accuracy, and of the check that recorded actions are available.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from marlcov.deep.checkpoints import load_checkpoint, save_checkpoint
from marlcov.deep.common import (
    TrainingState,
    atomic_write_text,
    epoch_permutation,
    fit,
    load_dataset_arrays,
    masked,
    mlp,
    resolve_device,
    seed_everything,
    step_masks,
    with_agent_id,
)
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, ConfigModel, Rule, config_values, interval, load_config, one_of, setting

REFERENCE_MODELS = ("gru", "mlp")
#: Trajectories per forward pass when evaluating over a whole dataset.
EVAL_CHUNK = 2048


@dataclass(frozen=True)
class ReferenceConfig(ConfigModel):
    """Hyperparameters of behaviour cloning (defaults: Table 5, "IL"; a GRU as in the paper's code)."""

    model: str = setting("gru", one_of(REFERENCE_MODELS))
    hidden: int = setting(128, POSITIVE)
    layers: int = setting(3, POSITIVE)
    epochs: int = setting(100, POSITIVE)
    batch_size: int = setting(128, POSITIVE)
    lr: float = setting(1e-3, POSITIVE)
    val_fraction: float = setting(0.1, interval(0.0, 1.0, high_open=True))
    checkpoint_every: int = setting(500, NON_NEGATIVE)
    progress: bool = True

    rules = (
        Rule(("model", "layers"), "layers >= 2 for a GRU reference (embedding and head)", lambda c: c.model != "gru" or c.layers >= 2),
    )


class PolicyNet(torch.nn.Module):
    """Shared per-agent network: ``obs [..., m, obs_dim] -> logits [..., m, n_actions]`` (MLP),
    or ``obs [B, H, m, obs_dim] -> logits [B, H, m, n_actions]`` along time (GRU)."""

    def __init__(self, obs_dim: int, n_actions: int, n_agents: int, hidden: int = 128, layers: int = 3, model: str = "mlp") -> None:
        super().__init__()
        if model not in REFERENCE_MODELS:
            raise ValueError(f"model: expected one of {list(REFERENCE_MODELS)}, got {model!r}")
        self.obs_dim, self.n_actions, self.n_agents, self.kind = int(obs_dim), int(n_actions), int(n_agents), model
        if model == "mlp":
            self.body = mlp(obs_dim + n_agents, hidden, layers, n_actions)
            return
        self.embed = torch.nn.Linear(obs_dim + n_agents, hidden)
        self.gru = torch.nn.GRU(hidden, hidden, batch_first=True)
        self.head = mlp(hidden, hidden, layers - 1, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            return self.body(with_agent_id(obs))
        if obs.dim() != 4:
            raise ValueError(f"obs: a GRU reference takes trajectories [B, H, m, d], got shape {list(obs.shape)}")
        x = torch.relu(self.embed(with_agent_id(obs)))
        B, H, m, F_ = x.shape
        out, _ = self.gru(x.permute(0, 2, 1, 3).reshape(B * m, H, F_))
        return self.head(torch.relu(out.reshape(B, m, H, -1).permute(0, 2, 1, 3)))

    def step(self, obs: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the GRU: ``obs [B, m, d]`` and the hidden state ``[1, B * m, hidden]``
        (None at the start of an episode) -> ``(logits [B, m, A], next hidden state)``."""
        x = torch.relu(self.embed(with_agent_id(obs)))
        B, m, F_ = x.shape
        out, hidden = self.gru(x.reshape(B * m, 1, F_), hidden)
        return self.head(torch.relu(out.reshape(B, m, -1))), hidden

    def log_probs(self, obs: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        """log pi_ref(. | o_i) ``[..., m, n_actions]``, renormalised over available actions."""
        return F.log_softmax(masked(self(obs), avail), dim=-1)


def behaviour_cloning_loss(log_probs: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``-log pi_ref(a | o)``: ``log_probs [..., A]``, ``actions [...]``. Without
    ``valid``, over all leading axes; with ``valid [B, H]`` (real steps) and ``log_probs
    [B, H, m, A]``, over the real steps and all agents only."""
    nll = -log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    return nll.mean() if valid is None else nll[valid].mean()


def check_actions_available(actions: np.ndarray, avail: np.ndarray, where: str = "dataset") -> None:
    """ValueError when a recorded action of a real step is marked unavailable (masks and
    actions disagree); ``actions [N, H, m]``, ``avail [N, H, m, A]``. Padded steps (nothing
    available) hold a filler action and are not checked."""
    try:
        valid, _ = step_masks(avail)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    taken = np.take_along_axis(avail, actions.astype(np.int64)[..., None], axis=-1)[..., 0]
    bad = ~taken & valid[..., None]
    if bad.any():
        n, t, i = np.argwhere(bad)[0]
        raise ValueError(
            f"{where}: field 'avail' marks {int(bad.sum())} recorded action(s) of real steps as unavailable "
            f"(the first: trajectory {n}, step {t}, agent {i})"
        )


class ReferencePolicy:
    """A loaded pi_ref: ``log_probs(obs, avail)`` and the policy protocol (greedy or sampled)."""

    def __init__(self, net: PolicyNet, meta: Mapping[str, Any], sample: bool = False, generator: torch.Generator | None = None) -> None:
        self.net, self.meta, self.sample, self.generator = net, dict(meta), sample, generator
        self._hidden: torch.Tensor | None = None

    @torch.no_grad()
    def log_probs(self, obs: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        """log pi_ref over whole trajectories ``[N, H, m, d]`` (a GRU) or any steps (an MLP)."""
        return self.net.log_probs(obs, avail)

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        if self.net.kind == "gru":
            if t == 0:
                self._hidden = None
            logits, self._hidden = self.net.step(obs, self._hidden)
            logp = F.log_softmax(masked(logits, avail), dim=-1)
        else:
            logp = self.net.log_probs(obs, avail)
        if not self.sample:
            return logp.argmax(dim=-1)
        flat = logp.reshape(-1, logp.shape[-1]).exp()
        return torch.multinomial(flat, 1, generator=self.generator).reshape(logp.shape[:-1])


def save_reference(path, net: PolicyNet, config: ReferenceConfig, sizes: Mapping[str, Any], metrics: Mapping[str, Any]) -> Path:
    """Write pi_ref as a ``"reference"`` checkpoint (atomically): the network ``reference``
    built from ``sizes`` and ``config``."""
    return save_checkpoint(
        path,
        "reference",
        {"reference": net.state_dict()},
        trainer="reference",
        env_name=sizes.get("env_name"),
        config=config,
        meta={"metrics": dict(metrics)},
        networks={"reference": dict(sizes)},
    )


def load_reference(path: str | os.PathLike, device: str | torch.device = "cpu") -> ReferencePolicy:
    """pi_ref of a ``"reference"`` checkpoint written by ``train_reference``
    (``deep.checkpoints.load_checkpoint``)."""
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, "reference", dev)
    cfg = load_config(ReferenceConfig, ckpt.config)
    sizes = ckpt.network("reference", ("obs_dim", "n_actions", "n_agents"))
    net = PolicyNet(sizes["obs_dim"], sizes["n_actions"], sizes["n_agents"], cfg.hidden, cfg.layers, cfg.model).to(dev)
    ckpt.load_into(net, "reference").eval()
    return ReferencePolicy(net, {"config": cfg, "sizes": sizes, "metrics": ckpt.meta.get("metrics", {})})


@torch.no_grad()
def _metrics(net: PolicyNet, obs, actions, avail, valid, idx: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean NLL and accuracy of the greedy action over the real steps and agents of the
    trajectories ``idx``."""
    if len(idx) == 0:
        return {}
    nll, correct, n = 0.0, 0.0, 0
    for k in range(0, len(idx), EVAL_CHUNK):
        sel = torch.as_tensor(idx[k : k + EVAL_CHUNK], device=obs.device)
        logp = net.log_probs(obs[sel], avail[sel])
        a, v = actions[sel], valid[sel]
        nll += float(-logp.gather(-1, a.unsqueeze(-1)).squeeze(-1)[v].sum())
        correct += float((logp.argmax(dim=-1) == a)[v].sum())
        n += int(v.sum()) * a.shape[-1]
    return {f"{prefix}_nll": nll / n, f"{prefix}_accuracy": correct / n}


def train_reference(
    dataset_path: str | os.PathLike,
    config: ReferenceConfig | Mapping[str, Any] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = True,
) -> dict[str, Any]:
    """Behaviour cloning of pi_ref over every trajectory of the dataset.

    Writes ``reference.pt``, ``metrics.json``, ``config.json`` and the resumable
    ``train_state.pt`` to ``out_dir``; returns a summary with train/validation NLL and accuracy
    (over real steps; padded steps count nowhere).
    A ``val_fraction`` of the trajectories (seeded) is held out to report generalisation.
    """
    cfg = load_config(ReferenceConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    spec, arrays = load_dataset_arrays(dataset_path, ["obs", "actions", "avail"])
    check_actions_available(arrays["actions"], arrays["avail"], str(dataset_path))
    H = spec.horizon
    obs = torch.as_tensor(arrays["obs"][:, :H], dtype=torch.float32, device=dev)
    actions = torch.as_tensor(arrays["actions"].astype(np.int64), device=dev)
    avail = torch.as_tensor(arrays["avail"], device=dev)
    valid = torch.as_tensor(step_masks(arrays["avail"])[0], device=dev)
    del arrays
    N = obs.shape[0]
    split = np.random.default_rng([seed, 2]).permutation(N)
    n_val = int(round(cfg.val_fraction * N)) if N > 1 else 0
    val_idx, train_idx = split[:n_val], split[n_val:]

    seed_everything(seed)
    sizes = {"env_name": spec.env_name, "obs_dim": int(spec.obs_dim), "n_actions": int(spec.n_actions), "n_agents": int(spec.n_agents)}
    net = PolicyNet(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.hidden, cfg.layers, cfg.model).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    run_config = {"config": config_values(cfg), "seed": int(seed), "dataset": str(dataset_path.resolve())}
    state = TrainingState(out / "train_state.pt", cfg.checkpoint_every, {"net": net, "opt": opt}, config=run_config)
    if resume:
        state.load(map_location=dev)
    else:
        (out / "train_state.pt").unlink(missing_ok=True)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    order_epoch, order = -1, train_idx

    def update(step: int) -> dict[str, float]:
        nonlocal order_epoch, order
        epoch, k = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, train_idx[epoch_permutation(len(train_idx), seed, epoch)]
        batch = torch.as_tensor(order[k * cfg.batch_size : (k + 1) * cfg.batch_size], device=dev)
        loss = behaviour_cloning_loss(net.log_probs(obs[batch], avail[batch]), actions[batch], valid[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"nll": loss.detach()}

    def epoch_record(means: dict[str, float], step: int) -> dict[str, Any]:
        return {"epoch": step // steps_per_epoch, **means, **_metrics(net, obs, actions, avail, valid, val_idx, "val")}

    history = fit(state, total, update, cfg.progress, "reference (BC)", record_every=steps_per_epoch, finish_record=epoch_record)

    summary: dict[str, Any] = {
        "epochs": cfg.epochs,
        "steps": total,
        "train_trajectories": int(len(train_idx)),
        "val_trajectories": int(n_val),
    }
    summary.update(_metrics(net, obs, actions, avail, valid, train_idx, "train"))
    summary.update(_metrics(net, obs, actions, avail, valid, val_idx, "val"))
    metrics = {"summary": summary, "history": history}
    path = save_reference(out / "reference.pt", net, cfg, sizes, metrics)
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", out / "metrics.json")
    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out / "config.json")
    return {"model": str(path), "out_dir": str(out), **summary}
