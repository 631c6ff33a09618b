"""Training throughput of the MARLHF learners on CPU, each against an equivalent plain-torch loop
measured in the same run.

* Reward model (``deep.marlhf.reward_model.train_reward_model``, loss (1)-(2), MLP and GRU
  variants, ``variance="dataset"``): preference pairs per second of the whole trainer on an
  HDF5 dataset, against a hand-written loop with the same network sizes, batches, per-epoch
  ``Var_D(r_phi)`` and Adam step.
* Offline VDN (``deep.marlhf.vdn.fit_offline_vdn`` on the reward ``r_std`` (4) plus the KL
  reward of (3)): updates per second, against a hand-written target-network VDN update
  (same network, batch, gradient clipping and target copies).

Sizes are those of simple_spread_v3 (obs_dim 18, 3 agents, 5 actions, 25 steps) with synthetic
observations: throughput does not depend on the values. One torch thread; each side is warmed\nup once on a tiny input, then timed (best of 3 in the full run, interleaved).
``python benchmarks/bench_deep_training.py [--quick]`` prints the rows of ``run``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from marlcov.deep.data.hdf5 import DatasetWriter  # noqa: E402
from marlcov.deep.data.preferences import label_pairs, sample_pairs  # noqa: E402
from marlcov.deep.data.schema import DatasetSpec, TrajectoryBatch  # noqa: E402
from marlcov.deep.marlhf.reference import PolicyNet, ReferencePolicy  # noqa: E402
from marlcov.deep.marlhf.reward_model import RewardModelConfig, RewardNet, TrainedRewardModel, train_reward_model  # noqa: E402
from marlcov.deep.marlhf.vdn import OfflineVDNConfig, fit_offline_vdn, offline_rewards  # noqa: E402

OBS_DIM, N_AGENTS, N_ACTIONS, HORIZON, STATE_DIM = 18, 3, 5, 25, 54
PAIRS_PER_TRAJECTORY = 10


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def synthetic_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random trajectories of simple_spread_v3's sizes, rewards i.i.d. normal."""
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(n, HORIZON + 1, N_AGENTS, OBS_DIM)).astype(np.float32),
        "state": rng.normal(size=(n, HORIZON + 1, STATE_DIM)).astype(np.float32),
        "actions": rng.integers(0, N_ACTIONS, size=(n, HORIZON, N_AGENTS)).astype(np.int16),
        "avail": np.ones((n, HORIZON, N_AGENTS, N_ACTIONS), dtype=bool),
        "rewards": rng.normal(size=(n, HORIZON, N_AGENTS)).astype(np.float32),
    }


def write_dataset(path: Path, n: int) -> Path:
    """An HDF5 dataset of ``n`` synthetic trajectories with ``PAIRS_PER_TRAJECTORY`` labelled pairs each."""
    a = synthetic_arrays(n)
    spec = DatasetSpec("synthetic", {}, tuple(f"agent_{i}" for i in range(N_AGENTS)), OBS_DIM, STATE_DIM, N_ACTIONS, HORIZON)
    first, second = sample_pairs(n, PAIRS_PER_TRAJECTORY, 0)
    pairs = label_pairs(a["rewards"].sum(axis=1), first, second, 1.0, 1)
    with DatasetWriter(path, spec) as w:
        w.append(TrajectoryBatch(a["obs"], a["state"], a["actions"], a["avail"], a["rewards"], np.arange(n), "synthetic"))
        w.write_pairs(pairs)
    return path


# ----------------------------------------------------------------------------- reward model
class PlainRewardNet(torch.nn.Module):
    """r_phi written out by hand: the sizes of ``RewardNet`` (embeddings, then an MLP or a GRU and an MLP)."""

    def __init__(self, model: str, hidden: int, layers: int) -> None:
        super().__init__()
        self.model = model
        self.obs_embed = torch.nn.Linear(OBS_DIM + N_AGENTS, hidden)
        self.act_embed = torch.nn.Embedding(N_ACTIONS, hidden)
        width = hidden if model == "gru" else 2 * hidden
        if model == "gru":
            self.gru = torch.nn.GRU(2 * hidden, hidden, batch_first=True)
        dims = [width] + [hidden] * (layers - 2) + [1]
        mods: list[torch.nn.Module] = []
        for k in range(len(dims) - 1):
            mods += [torch.nn.Linear(dims[k], dims[k + 1]), torch.nn.ReLU()]
        self.head = torch.nn.Sequential(*mods[:-1])
        self.register_buffer("eye", torch.eye(N_AGENTS))

    def forward(self, obs, actions):
        B, H = obs.shape[:2]
        x = torch.cat([obs, self.eye.expand(B, H, N_AGENTS, N_AGENTS)], dim=-1)
        x = torch.relu(torch.cat([self.obs_embed(x), self.act_embed(actions)], dim=-1))
        if self.model == "gru":
            out, _ = self.gru(x.permute(0, 2, 1, 3).reshape(B * N_AGENTS, H, -1))
            x = torch.relu(out.reshape(B, N_AGENTS, H, -1).permute(0, 2, 1, 3))
        return self.head(x).squeeze(-1)


def plain_reward_training(dataset: dict[str, np.ndarray], cfg: RewardModelConfig) -> None:
    """Loss (1)-(2) with Var_D recomputed each epoch, Adam, the trainer's batch order."""
    torch.manual_seed(0)
    obs = torch.as_tensor(dataset["obs"][:, :HORIZON])
    actions = torch.as_tensor(dataset["actions"].astype(np.int64))
    first, second = (torch.as_tensor(x) for x in sample_pairs(len(obs), PAIRS_PER_TRAJECTORY, 0))
    labels = torch.where(torch.rand(first.shape[0], N_AGENTS) < 0.5, 1.0, -1.0)
    net = PlainRewardNet(cfg.model, cfg.hidden, cfg.layers)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    P = first.shape[0]
    for epoch in range(cfg.epochs):
        with torch.no_grad():
            var = (
                torch.cat([net(obs[k : k + 2048], actions[k : k + 2048]) for k in range(0, len(obs), 2048)])
                .double()
                .var(unbiased=False)
                .float()
            )
        order = torch.as_tensor(np.random.default_rng([0, epoch]).permutation(P))
        for k in range(0, P, cfg.batch_size):
            b = order[k : k + cfg.batch_size]
            i1, i2 = first[b], second[b]
            r = net(torch.cat([obs[i1], obs[i2]]), torch.cat([actions[i1], actions[i2]]))
            r1, r2 = r[: len(b)], r[len(b) :]
            nll = F.softplus(-labels[b] * (r1.sum(1) - r2.sum(1))).sum(-1).mean()
            mse = (r[:, 1:] - r[:, :-1]).pow(2).sum(dim=(1, 2)).mean()
            loss = nll + cfg.alpha / var * mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def reward_model_rows(quick: bool, tmp: Path) -> list[dict]:
    n, repeats = (64, 1) if quick else (512, 3)
    dataset = synthetic_arrays(n)
    path = write_dataset(tmp / "data.h5", n)
    warmup = write_dataset(tmp / "warmup.h5", 8)
    pairs = n * PAIRS_PER_TRAJECTORY
    rows = []
    for model, epochs in (("mlp", 1 if quick else 3), ("gru", 1)):
        cfg = RewardModelConfig(model=model, epochs=epochs, val_fraction=0.0, checkpoint_every=10**9, progress=False)
        train_reward_model(warmup, cfg, tmp / "warmup", seed=0, resume=False)
        plain_reward_training(synthetic_arrays(8), cfg)
        ours = bare = math.inf
        for _ in range(repeats):
            ours = min(ours, seconds(lambda: train_reward_model(path, cfg, tmp / f"rm_{model}", seed=0, resume=False)))
            bare = min(bare, seconds(lambda: plain_reward_training(dataset, cfg)))
        trained = pairs * epochs
        rows.append(
            {
                "name": f"reward model {model} (h={cfg.hidden}, L={cfg.layers}), {trained} pairs of batch {cfg.batch_size}",
                "ours_s": ours,
                "baseline": "plain torch loop",
                "baseline_s": bare,
                "ratio": ours / bare,
                "throughput_ratio": bare / ours,
                "ours_pairs_per_s": trained / ours,
                "baseline_pairs_per_s": trained / bare,
            }
        )
    return rows


# ----------------------------------------------------------------------------- offline VDN
def plain_vdn(obs, actions, avail, rewards, cfg: OfflineVDNConfig) -> None:
    """Target-network VDN updates written out by hand (the update of ``fit_offline_vdn``, double
    Q-learning when ``cfg.double_q``)."""
    torch.manual_seed(0)
    dims = [OBS_DIM + N_AGENTS] + [cfg.hidden] * (cfg.layers - 1) + [N_ACTIONS]
    mods: list[torch.nn.Module] = []
    for k in range(len(dims) - 1):
        mods += [torch.nn.Linear(dims[k], dims[k + 1]), torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods[:-1])
    target = torch.nn.Sequential(
        *[type(m)(m.in_features, m.out_features) if isinstance(m, torch.nn.Linear) else torch.nn.ReLU() for m in mods[:-1]]
    )
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    N, H = actions.shape[:2]
    x_all = torch.cat([obs, torch.eye(N_AGENTS).expand(N, H + 1, N_AGENTS, N_AGENTS)], dim=-1)
    for u in range(1, cfg.updates + 1):
        idx = torch.randint(0, N, (cfg.batch_size,), generator=gen)
        x, a, r = x_all[idx], actions[idx], rewards[idx]
        q = net(x[:, :H]).gather(-1, a.unsqueeze(-1)).squeeze(-1).sum(-1)
        with torch.no_grad():
            t_next = target(x[:, 1:H]).masked_fill(~avail[idx, 1:], -1e9)
            if cfg.double_q:
                pick = net(x[:, 1:H]).masked_fill(~avail[idx, 1:], -1e9).argmax(-1, keepdim=True)
                q_next = t_next.gather(-1, pick).squeeze(-1).sum(-1)
            else:
                q_next = t_next.max(-1).values.sum(-1)
            y = r + cfg.gamma * torch.cat([q_next, torch.zeros(len(idx), 1)], dim=1)
        loss = (q - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if u % cfg.target_update == 0:
            target.load_state_dict(net.state_dict())


def vdn_rows(quick: bool) -> list[dict]:
    n, repeats = (256, 1) if quick else (1024, 3)
    a = synthetic_arrays(n)
    obs = torch.as_tensor(a["obs"])
    actions = torch.as_tensor(a["actions"].astype(np.int64))
    avail = torch.as_tensor(a["avail"])
    cfg = OfflineVDNConfig(updates=60 if quick else 500, progress=False)
    torch.manual_seed(0)
    reward_model = TrainedRewardModel(RewardNet(OBS_DIM, N_ACTIONS, N_AGENTS).eval(), 0.0, 1.0, {})
    reference = ReferencePolicy(PolicyNet(OBS_DIM, N_ACTIONS, N_AGENTS).eval(), {})
    rewards = offline_rewards(reward_model, reference, obs[:, :HORIZON], actions, avail, cfg.beta)["total"]
    fit_offline_vdn(obs, actions, avail, rewards, OfflineVDNConfig(updates=5, progress=False), seed=0)
    plain_vdn(obs, actions, avail, rewards, OfflineVDNConfig(updates=5))
    ours = bare = math.inf
    for _ in range(repeats):
        ours = min(ours, seconds(lambda: fit_offline_vdn(obs, actions, avail, rewards, cfg, seed=0)))
        bare = min(bare, seconds(lambda: plain_vdn(obs, actions, avail, rewards, cfg)))
    return [
        {
            "name": f"offline VDN + KL reward (h={cfg.hidden}, L={cfg.layers}), {cfg.updates} updates of batch {cfg.batch_size}x{HORIZON}",
            "ours_s": ours,
            "baseline": "plain torch loop",
            "baseline_s": bare,
            "ratio": ours / bare,
            "throughput_ratio": bare / ours,
            "ours_updates_per_s": cfg.updates / ours,
            "baseline_updates_per_s": cfg.updates / bare,
        }
    ]


def run(quick: bool) -> list[dict]:
    """Rows ``name, ours_s, baseline, baseline_s, ratio`` (``ratio = ours_s / baseline_s``, as in
    every benchmark module) and ``throughput_ratio = baseline_s / ours_s`` (1: parity, below 1: slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return reward_model_rows(quick, Path(tmp)) + vdn_rows(quick)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run(args.quick):
        rate = {k: v for k, v in row.items() if k.endswith("_per_s")}
        print(
            f"{row['name']:<80} ours {row['ours_s']:.3f}s  plain {row['baseline_s']:.3f}s  throughput ratio {row['throughput_ratio']:.3f}  "
            + "  ".join(f"{k}={v:.0f}" for k, v in rate.items())
        )
