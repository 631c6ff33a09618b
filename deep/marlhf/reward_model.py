"""Per-agent reward model r_phi(s, a_i) trained from preferences (MARLHF paper, section 5.2).

One network, shared by all agents, maps agent i's local observation o_{h,i}, its action a_{h,i}
(one-hot) and its id (one-hot) to a scalar reward ``r_phi[h, i]``. Variants (``model``):

* ``"mlp"``: observation and action embedding layers, then hidden layers (appendix B.1).
* ``"gru"``: the same embeddings, then a GRU along the time axis of each agent (the RNN
  reward model the paper uses for Tag); ``r_phi[h, i]`` then depends on o_{1..h,i}, a_{1..h,i}.
* ``"linear"``: one affine map of ``[o, onehot(a), onehot(i)]`` (closed-form checks, baselines).

Loss (1), with R_{phi,i}(tau) = sum_h r_phi[h, i] and labels y_i in {+1, -1}:

    L = E_pairs[ sum_i -log sigma(y_i (R_{phi,i}(tau1) - R_{phi,i}(tau2))) ]
        + alpha / Var_D(r_phi) * L_MSE,
    L_MSE (2) = E_tau[ sum_{h=1}^{H-1} || r_phi[h+1, :] - r_phi[h, :] ||_2^2 ],

the expectation of (2) taken over both trajectories of every pair in the batch. Var_D(r_phi) is
detached (no gradient flows through it). ``variance="dataset"`` (the default, as in the paper)
computes it over every real step and agent of every trajectory of the dataset file (it needs no labels,
so the trajectories of held-out pairs count too), with no gradient, at the start of each epoch,
and keeps it for that epoch (it is saved with the resumable state); ``variance="batch"`` uses the variance of
the current batch's predictions instead. Both are floored at ``VAR_FLOOR``. ``variance="none"``
drops the normalisation (``alpha * L_MSE``), for ablations.

Labels (``labels``): ``"redrawn"`` (the default, as in the paper's public code) draws each
minibatch's labels afresh from the Bradley-Terry probabilities stored with the pairs
(``redrawn_labels``), so that over the epochs r_phi fits the probabilities rather than one draw
of them; ``"fixed"`` uses the labels stored in the pairs file. Validation metrics use the
stored labels either way.

Scaled by 1/Var, the regulariser is invariant to the scale of r_phi, and its gradient grows like
1/scale: on a task whose true reward is white noise along time (nothing for a smooth r_phi to
fit), it drives r_phi to a constant. It does the same from a random initialisation, whose r_phi
is uncorrelated with the labels, so that the NLL pulls on the scale less than the regulariser
pushes: ``alpha_warmup_epochs`` ramps alpha up from 0 so that r_phi first fits the preferences.
Measured on a Diversified simple_spread_v3 dataset (1024 trajectories, 10 pairs each, MLP,
20 epochs, alpha = 1): ``variance="dataset"`` collapsed to a constant (NLL 3 log 2), with or
without a 5-epoch warm-up; ``variance="none"`` kept the validation accuracy of alpha = 0 (0.81),
lowered the MSE to the standardised true reward from 0.61 to 0.47 and made r_phi about 6 times
smoother.

The saved model (a ``"reward-model"`` checkpoint of ``deep.checkpoints``) also holds the mean
and variance of r_phi over the whole dataset after training, which standardise it as in (4).

Padded episodes (SMAX; ``deep.common.step_masks``): only real steps count. R_{phi,i}(tau) sums
r_phi over the real steps of tau, (2) sums over pairs of consecutive real steps (h, h+1), and
E_D, Var_D (and the batch variance) run over real steps only. The network still runs over the
padded steps (r_phi is computed for every step, then masked): for the GRU this is exact because
the padding comes after the real steps, so it never feeds the recurrence of a real one.
Without padding (MPE) every step is real and the numbers are those of the unmasked formulas.

Length: a little over 400 lines, a sixth of them this docstring (the measured variance finding
and the padding rules belong with the code they explain).
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
    mlp,
    resolve_device,
    seed_everything,
    step_masks,
    with_agent_id,
)
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, ConfigModel, Rule, config_values, interval, load_config, one_of, setting
from marlcov.theory.objectives.marlhf import (
    VAR_FLOOR,
    RewardLossTerms,
    preference_nll,
    reward_loss,
    reward_variance,
    standardised_rewards,
    temporal_mse,  # noqa: F401 - documented name of this module
    trajectory_returns,
)

MODEL_KINDS = ("mlp", "gru", "linear")
VARIANCE_MODES = ("dataset", "batch", "none")
#: ``"redrawn"``: every minibatch draws its labels afresh from the pairs' Bradley-Terry
#: probabilities (the paper's public code); ``"fixed"``: the labels stored in the pairs file.
LABEL_MODES = ("redrawn", "fixed")
#: Trajectories per forward pass when predicting over a whole dataset without gradients.
PREDICT_CHUNK = 2048


@dataclass(frozen=True)
class RewardModelConfig(ConfigModel):
    """Hyperparameters of the reward model (defaults: Table 5, Spread)."""

    model: str = setting("mlp", one_of(MODEL_KINDS))
    hidden: int = setting(128, POSITIVE)
    layers: int = 4
    alpha: float = setting(1.0, NON_NEGATIVE)
    variance: str = setting("dataset", one_of(VARIANCE_MODES))
    alpha_warmup_epochs: int = setting(0, NON_NEGATIVE)
    epochs: int = setting(100, POSITIVE)
    batch_size: int = setting(256, POSITIVE)
    lr: float = setting(1e-3, POSITIVE)
    weight_decay: float = setting(0.0, NON_NEGATIVE)
    val_fraction: float = setting(0.1, interval(0.0, 1.0, high_open=True))
    labels: str = setting("redrawn", one_of(LABEL_MODES))
    checkpoint_every: int = setting(500, NON_NEGATIVE)
    progress: bool = True

    rules = (
        Rule(
            ("model", "layers"),
            "layers >= 2 (embedding and output) unless model is 'linear'",
            lambda c: c.model == "linear" or c.layers >= 2,
        ),
    )

    def alpha_at(self, epoch: int) -> float:
        """alpha in epoch ``epoch`` (0-based): ramped linearly from 0 over the first
        ``alpha_warmup_epochs`` epochs, then constant."""
        if self.alpha_warmup_epochs <= 0:
            return float(self.alpha)
        return float(self.alpha) * min(1.0, epoch / self.alpha_warmup_epochs)


# ----------------------------------------------------------------------------- networks
class RewardNet(torch.nn.Module):
    """r_phi: ``(obs [B, H, m, obs_dim], actions [B, H, m]) -> rewards [B, H, m]``."""

    def __init__(self, obs_dim: int, n_actions: int, n_agents: int, model: str = "mlp", hidden: int = 128, layers: int = 4) -> None:
        super().__init__()
        if model not in MODEL_KINDS:
            raise ValueError(f"model: expected one of {list(MODEL_KINDS)}, got {model!r}")
        self.obs_dim, self.n_actions, self.n_agents, self.kind = int(obs_dim), int(n_actions), int(n_agents), model
        if model == "linear":
            self.linear = torch.nn.Linear(obs_dim + n_actions + n_agents, 1)
            return
        self.obs_embed = torch.nn.Linear(obs_dim + n_agents, hidden)
        self.act_embed = torch.nn.Embedding(n_actions, hidden)
        if model == "gru":
            self.gru = torch.nn.GRU(2 * hidden, hidden, batch_first=True)
            self.head = mlp(hidden, hidden, layers - 1, 1)
        else:
            self.head = mlp(2 * hidden, hidden, layers - 1, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.long()
        if self.kind == "linear":
            x = torch.cat([with_agent_id(obs), F.one_hot(actions, self.n_actions).to(obs.dtype)], dim=-1)
            return self.linear(x).squeeze(-1)
        x = torch.relu(torch.cat([self.obs_embed(with_agent_id(obs)), self.act_embed(actions)], dim=-1))
        if self.kind == "gru":
            B, H, m, F_ = x.shape
            seq = x.permute(0, 2, 1, 3).reshape(B * m, H, F_)
            out, _ = self.gru(seq)
            x = torch.relu(out.reshape(B, m, H, -1).permute(0, 2, 1, 3))
        return self.head(x).squeeze(-1)


def build_reward_net(spec_sizes: Mapping[str, int], config: RewardModelConfig) -> RewardNet:
    return RewardNet(spec_sizes["obs_dim"], spec_sizes["n_actions"], spec_sizes["n_agents"], config.model, config.hidden, config.layers)


# ----------------------------------------------------------------------------- loss (1), (2)
#: The terms of loss (1) (``theory.objectives.marlhf.RewardLossTerms``).
RewardLoss = RewardLossTerms


def reward_model_loss(
    r_first: torch.Tensor,
    r_second: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    variance: torch.Tensor | float | None = None,
    valid_first: torch.Tensor | None = None,
    valid_second: torch.Tensor | None = None,
) -> RewardLoss:
    """Loss (1) on a batch of pairs (``theory.objectives.marlhf.reward_loss``): ``r_first``,
    ``r_second`` ``[P, H, m]``, ``labels [P, m]``. ``variance``: Var_D(r_phi) (over the training
    set), or None for the variance of this batch's predictions on real steps; either way it is
    detached and floored at ``VAR_FLOOR``. ``valid_first``, ``valid_second`` ``[P, H]``: the real
    steps of padded trajectories (both or neither; None: every step real)."""
    if (valid_first is None) != (valid_second is None):
        raise ValueError("valid_first, valid_second: give the step masks of both trajectories of the pairs, or neither")
    if variance is None:
        both = torch.cat([r_first, r_second], dim=0).detach()
        valid = None if valid_first is None else torch.cat([valid_first, valid_second], dim=0)
        variance = reward_variance(both, valid)
    elif isinstance(variance, torch.Tensor):
        variance = variance.detach()
    return reward_loss(r_first, r_second, labels.to(r_first.dtype), alpha, variance, valid_first, valid_second)


# ----------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_rewards(net: RewardNet, obs: torch.Tensor, actions: torch.Tensor, chunk: int = PREDICT_CHUNK) -> torch.Tensor:
    """r_phi over many trajectories, ``[N, H, m]``, in chunks and without gradients.
    ``obs [N, H, m, d]`` holds the H step observations (not the final one)."""
    was_training = net.training
    net.eval()
    out = torch.cat([net(obs[k : k + chunk], actions[k : k + chunk]) for k in range(0, obs.shape[0], chunk)], dim=0)
    net.train(was_training)
    return out


def reward_statistics(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[float, float]:
    """``(E_D r_phi, Var_D r_phi)`` (population variance) of ``rewards [N, H, m]`` over all agents
    and the real steps (``valid [N, H]``; None: every step) of every trajectory."""
    r = rewards.double() if valid is None else rewards.double()[valid]
    return float(r.mean()), float(r.var(unbiased=False))


class TrainedRewardModel:
    """A loaded reward model: the network and the dataset statistics that standardise it (4)."""

    def __init__(self, net: RewardNet, mean: float, var: float, meta: Mapping[str, Any]) -> None:
        self.net = net
        self.mean = float(mean)
        self.var = float(var)
        self.meta = dict(meta)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, VAR_FLOOR))

    def rewards(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """r_phi ``[N, H, m]``."""
        return predict_rewards(self.net, obs, actions)

    def standardised(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The per-agent terms of (4): ``(r_phi - E_D r_phi) / sqrt(Var_D r_phi)``, ``[N, H, m]``;
        r_std is their sum over agents."""
        return standardised_rewards(self.rewards(obs, actions), self.mean, self.var)


def save_reward_model(
    path: str | os.PathLike,
    net: RewardNet,
    config: RewardModelConfig,
    sizes: Mapping[str, Any],
    mean: float,
    var: float,
    metrics: Mapping[str, Any],
) -> Path:
    """Write a ``"reward-model"`` checkpoint (atomically): the network ``reward`` built from
    ``sizes`` and ``config``, and the dataset statistics of (4) in the field ``stats``."""
    return save_checkpoint(
        path,
        "reward-model",
        {"reward": net.state_dict()},
        trainer="reward-model",
        env_name=sizes.get("env_name"),
        config=config,
        meta={"metrics": dict(metrics)},
        networks={"reward": dict(sizes)},
        fields={"stats": {"mean": float(mean), "var": float(var)}},
    )


def load_reward_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedRewardModel:
    """The reward model of a ``"reward-model"`` checkpoint written by ``train_reward_model``
    (``deep.checkpoints.load_checkpoint``)."""
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, "reward-model", dev)
    config = load_config(RewardModelConfig, ckpt.config)
    sizes = ckpt.network("reward", ("obs_dim", "n_actions", "n_agents"))
    net = ckpt.load_into(build_reward_net(sizes, config).to(dev), "reward")
    net.eval()
    stats = ckpt.field("stats")
    meta = {"config": config, "sizes": sizes, "metrics": ckpt.meta.get("metrics", {})}
    return TrainedRewardModel(net, stats["mean"], stats["var"], meta)


# ----------------------------------------------------------------------------- training
def _load_pairs(dataset_path: Path, pairs_path: str | os.PathLike | None):
    from marlcov.deep.data.external import open_dataset
    from marlcov.deep.data.hdf5 import read_pairs

    with open_dataset(dataset_path) as reader:
        if pairs_path is None:
            return reader.pairs()
        return read_pairs(pairs_path, reader)


def redrawn_labels(probs: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Labels in {+1, -1} drawn with ``P(y = +1) = probs`` from a generator of ``(seed, step)``
    alone, so a resumed run draws the same labels as an uninterrupted one."""
    u = torch.as_tensor(np.random.default_rng([int(seed), 2, int(step)]).random(tuple(probs.shape)), dtype=probs.dtype, device=probs.device)
    return torch.where(u < probs, 1.0, -1.0).to(probs.dtype)


def _sizes(spec) -> dict[str, Any]:
    return {
        "env_name": spec.env_name,
        "obs_dim": int(spec.obs_dim),
        "n_actions": int(spec.n_actions),
        "n_agents": int(spec.n_agents),
        "horizon": int(spec.horizon),
    }


def train_reward_model(
    dataset_path: str | os.PathLike,
    config: RewardModelConfig | Mapping[str, Any] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = True,
    pairs_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train r_phi on the preference pairs of a dataset with loss (1).

    Args:
        dataset_path: HDF5 dataset (``deep.data``); only ``obs``, ``actions``, ``avail`` (for
            the step masks of padded episodes) and the pairs are read, never the true rewards.
        config: ``RewardModelConfig``, a mapping or a JSON/YAML file.
        out_dir: receives ``reward_model.pt`` (the result), ``metrics.json``, ``config.json``
            and ``train_state.pt`` (the resumable state, saved every ``checkpoint_every`` steps).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: seeds the initialisation, the train/validation split and the batch orders.
        resume: continue from ``out_dir/train_state.pt`` when it exists.
        pairs_path: a separate pairs file; default: the pairs stored in the dataset file.

    Returns a summary: paths, final train/validation NLL and accuracy, E_D and Var_D of r_phi.
    """
    cfg = load_config(RewardModelConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    spec, arrays = load_dataset_arrays(dataset_path, ["obs", "actions", "avail"])
    H = spec.horizon
    obs = torch.as_tensor(arrays["obs"][:, :H], dtype=torch.float32, device=dev)
    actions = torch.as_tensor(arrays["actions"].astype(np.int64), device=dev)
    valid = torch.as_tensor(step_masks(arrays["avail"])[0], device=dev)
    del arrays
    pairs = _load_pairs(dataset_path, pairs_path)
    P = len(pairs)
    if P < 1:
        raise ValueError(f"{dataset_path}: the preference pairs are empty")
    split = np.random.default_rng([seed, 1]).permutation(P)
    n_val = int(round(cfg.val_fraction * P)) if P > 1 else 0
    val_idx, train_idx = split[:n_val], split[n_val:]
    first = torch.as_tensor(pairs.first, device=dev)
    second = torch.as_tensor(pairs.second, device=dev)
    labels = torch.as_tensor(pairs.labels.astype(np.float32), device=dev)
    probs = None
    if cfg.labels == "redrawn":
        if pairs.probs is None:
            raise ValueError(
                f"{pairs_path or dataset_path}: field 'probs' of the pairs is missing; labels='redrawn' draws every "
                "minibatch's labels from it (label the dataset again, or set labels='fixed')"
            )
        probs = torch.as_tensor(pairs.probs, dtype=torch.float32, device=dev)

    seed_everything(seed)
    sizes = _sizes(spec)
    net = build_reward_net(sizes, cfg).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_config = {
        "config": config_values(cfg),
        "seed": int(seed),
        "dataset": str(dataset_path.resolve()),
        "pairs": None if pairs_path is None else str(Path(pairs_path).resolve()),
    }
    state = TrainingState(out / "train_state.pt", cfg.checkpoint_every, {"net": net, "opt": opt}, config=run_config)
    if resume:
        state.load(map_location=dev)
    else:
        (out / "train_state.pt").unlink(missing_ok=True)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch

    def dataset_variance() -> float:
        return reward_statistics(predict_rewards(net, obs, actions), valid)[1]

    order_epoch, order = -1, train_idx

    def update(step: int) -> dict[str, float]:
        nonlocal order_epoch, order
        epoch, k = divmod(step, steps_per_epoch)
        if k == 0 and cfg.variance == "dataset":
            state.extra["variance"] = dataset_variance()
        if epoch != order_epoch:
            order_epoch, order = epoch, train_idx[epoch_permutation(len(train_idx), seed, epoch)]
        batch = torch.as_tensor(order[k * cfg.batch_size : (k + 1) * cfg.batch_size], device=dev)
        i1, i2 = first[batch], second[batch]
        r = net(torch.cat([obs[i1], obs[i2]]), torch.cat([actions[i1], actions[i2]]))
        r1, r2 = r[: len(batch)], r[len(batch) :]
        var = {"dataset": state.extra.get("variance"), "batch": None, "none": 1.0}[cfg.variance]
        y = labels[batch] if probs is None else redrawn_labels(probs[batch], seed, step)
        loss = reward_model_loss(r1, r2, y, cfg.alpha_at(epoch), var, valid[i1], valid[i2])
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        return {"loss": loss.total.detach(), "nll": loss.nll.detach(), "mse": loss.mse.detach()}

    def epoch_record(means: dict[str, float], step: int) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": step // steps_per_epoch, **means}
        if n_val:
            record.update(_pair_metrics(net, obs, actions, valid, first, second, labels, val_idx, "val"))
        return record

    net.train()
    history = fit(state, total, update, cfg.progress, "reward model", record_every=steps_per_epoch, finish_record=epoch_record)

    all_r = predict_rewards(net, obs, actions)
    mean, var = reward_statistics(all_r, valid)
    summary: dict[str, Any] = {
        "epochs": cfg.epochs,
        "steps": total,
        "train_pairs": len(train_idx),
        "val_pairs": int(n_val),
        "reward_mean": mean,
        "reward_var": var,
    }
    summary.update(_pair_metrics(net, obs, actions, valid, first, second, labels, train_idx, "train"))
    if n_val:
        summary.update(_pair_metrics(net, obs, actions, valid, first, second, labels, val_idx, "val"))
    metrics = {"summary": summary, "history": history}
    model_path = save_reward_model(out / "reward_model.pt", net, cfg, sizes, mean, var, metrics)
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", out / "metrics.json")
    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out / "config.json")
    return {"model": str(model_path), "out_dir": str(out), **summary}


@torch.no_grad()
def _pair_metrics(net, obs, actions, valid, first, second, labels, idx: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean NLL (first term of (1)) and label accuracy of r_phi on the pairs ``idx``."""
    if len(idx) == 0:
        return {}
    idx_t = torch.as_tensor(idx, device=obs.device)
    R = trajectory_returns(predict_rewards(net, obs, actions), valid)
    d = R[first[idx_t]] - R[second[idx_t]]
    y = labels[idx_t]
    nll = float(preference_nll(d[:, None], torch.zeros_like(d[:, None]), y))
    acc = float(((d * y) > 0).float().mean())
    return {f"{prefix}_nll": nll, f"{prefix}_accuracy": acc}
