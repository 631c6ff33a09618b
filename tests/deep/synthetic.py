"""Synthetic trajectory batches and dataset files shared by the deep tests (no environment needed).

Each writer returns the path of an HDF5 dataset written through ``deep.data.DatasetWriter``;
its name says which reward and which labels the file carries.
"""

import numpy as np

from marlcov.deep.data.hdf5 import DatasetWriter
from marlcov.deep.data.preferences import label_pairs, sample_pairs
from marlcov.deep.data.schema import DatasetSpec, PreferencePairs, TrajectoryBatch

#: A 2-agent, 3-step layout for the data-layer tests (``random_batch``).
SPEC = DatasetSpec("toy", {"horizon": 3, "note": "synthetic"}, ("a", "b"), obs_dim=4, state_dim=5, n_actions=3, horizon=3)

#: Actions of the argmax task: the rewarded action is the argmax of the first SYNTH_ACTIONS features.
SYNTH_ACTIONS = 3


def random_batch(n: int, seed: int, source="expert", agent_policy=None) -> TrajectoryBatch:
    """``n`` trajectories of ``SPEC`` with normal observations, states and rewards and ~80% of
    the actions available."""
    rng = np.random.default_rng(seed)
    H, m = SPEC.horizon, SPEC.n_agents
    return TrajectoryBatch(
        obs=rng.normal(size=(n, H + 1, m, SPEC.obs_dim)).astype(np.float32),
        state=rng.normal(size=(n, H + 1, SPEC.state_dim)).astype(np.float32),
        actions=rng.integers(0, SPEC.n_actions, size=(n, H, m)),
        avail=rng.random((n, H, m, SPEC.n_actions)) < 0.8,
        rewards=rng.normal(size=(n, H, m)).astype(np.float32),
        seed=rng.integers(0, 2**40, size=n),
        source=source,
        agent_policy=agent_policy,
    )


def best_actions(obs: np.ndarray) -> np.ndarray:
    """The rewarded action of the argmax task: argmax of the first SYNTH_ACTIONS features."""
    return np.argmax(obs[..., :SYNTH_ACTIONS], axis=-1)


def _write(path, spec: DatasetSpec, batch: TrajectoryBatch, pairs: PreferencePairs | None, **writer_options):
    with DatasetWriter(path, spec, **writer_options) as writer:
        writer.append(batch)
        if pairs is not None:
            writer.write_pairs(pairs)
    return path


def write_argmax_reward_dataset(path, n=96, horizon=4, n_agents=2, obs_dim=4, seed=0, p_best=None, pairs_per_trajectory=10, steepness=5.0):
    """A dataset whose true reward is r_{h,i} = 1[a_{h,i} = argmax o_{h,i}[:3]]; observations are
    i.i.d. normal (the next observation does not depend on the action). Actions: uniform, or
    the rewarded action with probability ``p_best`` (else uniform). Labelled with the
    Bradley-Terry model of deep.data.preferences."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, horizon + 1, n_agents, obs_dim)).astype(np.float32)
    uniform = rng.integers(0, SYNTH_ACTIONS, size=(n, horizon, n_agents))
    best = best_actions(obs[:, :horizon])
    actions = uniform if p_best is None else np.where(rng.random(uniform.shape) < p_best, best, uniform)
    rewards = (actions == best).astype(np.float32)
    spec = DatasetSpec("synthetic", {"kind": "argmax"}, tuple(f"agent_{i}" for i in range(n_agents)), obs_dim, 2, SYNTH_ACTIONS, horizon)
    batch = TrajectoryBatch(
        obs,
        rng.normal(size=(n, horizon + 1, 2)).astype(np.float32),
        actions.astype(np.int16),
        np.ones((n, horizon, n_agents, SYNTH_ACTIONS), dtype=bool),
        rewards,
        np.arange(n),
        "synthetic",
    )
    first, second = sample_pairs(n, pairs_per_trajectory, seed)
    return _write(path, spec, batch, label_pairs(rewards.sum(axis=1), first, second, steepness, seed + 1))


def write_argmax_demonstrations(path, n=64, horizon=4, n_agents=2, obs_dim=4, n_actions=3, seed=0):
    """Demonstrations of the argmax task, no pairs: half "expert" trajectories (a_i = argmax
    o_i[:n_actions], reward 1 when taken), half "random" (uniform actions); i.i.d. normal observations."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, horizon + 1, n_agents, obs_dim)).astype(np.float32)
    best = np.argmax(obs[:, :horizon, :, :n_actions], axis=-1)
    random_actions = rng.integers(0, n_actions, size=best.shape)
    expert = np.arange(n) < n // 2
    actions = np.where(expert[:, None, None], best, random_actions)
    rewards = (actions == best).astype(np.float32)
    spec = DatasetSpec("synthetic", {"kind": "argmax"}, tuple(f"agent_{i}" for i in range(n_agents)), obs_dim, 2, n_actions, horizon)
    batch = TrajectoryBatch(
        obs,
        np.zeros((n, horizon + 1, 2), np.float32),
        actions.astype(np.int16),
        np.ones((n, horizon, n_agents, n_actions), dtype=bool),
        rewards,
        np.arange(n),
        np.where(expert, "expert", "random"),
    )
    return _write(path, spec, batch, None)


def write_action_zero_reward_dataset(
    path, n=24, horizon=6, n_agents=2, obs_dim=4, state_dim=5, n_actions=3, seed=0, env_name="simple_spread_v3"
):
    """Random trajectories of random lengths (no action available after the end, as in SMAX),
    reward 1 for action 0 at real steps, and one team label per pair: +1 when the first
    trajectory's true team return is at least the second's, else -1."""
    rng = np.random.default_rng(seed)
    H, m = horizon, n_agents
    spec = DatasetSpec(
        env_name,
        {"horizon": H, "local_ratio": 0.5, "num_agents": m},
        tuple(f"agent_{i}" for i in range(m)),
        obs_dim,
        state_dim,
        n_actions,
        H,
    )
    lengths = rng.integers(2, H + 1, size=n)
    avail = np.broadcast_to(np.arange(H)[None, :, None, None] < lengths[:, None, None, None], (n, H, m, n_actions)).copy()
    actions = rng.integers(0, n_actions, size=(n, H, m)).astype(np.int16)
    rewards = ((actions == 0) & avail.any(-1)).astype(np.float32)
    batch = TrajectoryBatch(
        rng.normal(size=(n, H + 1, m, obs_dim)).astype(np.float32),
        rng.normal(size=(n, H + 1, state_dim)).astype(np.float32),
        actions,
        avail,
        rewards,
        np.arange(n),
    )
    returns = rewards.sum(axis=(1, 2))
    first = rng.integers(0, n, size=4 * n)
    second = (first + rng.integers(1, n, size=4 * n)) % n
    labels = np.repeat(np.where(returns[first] >= returns[second], 1, -1)[:, None], m, axis=1)
    return _write(path, spec, batch, PreferencePairs(first, second, labels))


def write_random_dataset(
    path,
    *,
    N=40,
    H=4,
    m=2,
    nA=3,
    state_dim=3,
    obs_dim=2,
    seed=0,
    actions=None,
    states=None,
    pairs_per=3,
    returns=None,
    chunk=8,
    lengths=None,
    horizon=None,
    with_pairs=True,
):
    """Normal observations, uniform rewards, uniform actions (or ``actions [N, H, m]``) and normal
    states (or ``states [N, H+1, s]``), with Bradley-Terry pairs over uniform per-agent returns
    (or ``returns [N, m]``; no pairs with ``with_pairs=False``). ``H`` steps are drawn; with
    ``lengths [N]`` (<= H) and/or ``horizon`` (>= max length) the episodes are cut and padded as
    SMAX stores them (``smax_padded``)."""
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, nA, size=(N, H, m)) if actions is None else actions
    states = rng.normal(size=(N, H + 1, state_dim)) if states is None else states
    arrays = {
        "obs": rng.normal(size=(N, H + 1, m, obs_dim)),
        "state": states,
        "actions": acts,
        "avail": np.ones((N, H, m, nA), bool),
        "rewards": rng.random((N, H, m)),
    }
    if lengths is not None or horizon is not None:
        arrays = smax_padded(arrays, np.full(N, H) if lengths is None else lengths, H if horizon is None else horizon)
    T = arrays["actions"].shape[1]
    spec = DatasetSpec("toy", {"horizon": T}, tuple(f"agent_{i}" for i in range(m)), obs_dim, state_dim, nA, T)
    batch = TrajectoryBatch(
        arrays["obs"].astype(np.float32),
        arrays["state"].astype(np.float32),
        arrays["actions"].astype(np.int16),
        arrays["avail"],
        arrays["rewards"].astype(np.float32),
        np.arange(N),
        "mix",
    )
    f, s = sample_pairs(N, pairs_per, seed)
    R = rng.random((N, m)) if returns is None else returns
    pairs = label_pairs(R, f, s, seed=seed + 1) if with_pairs else None
    return _write(path, spec, batch, pairs, overwrite=True, chunk_trajectories=chunk)


def smax_padded(arrays, lengths, horizon, stop=0):
    """Trajectories (``obs [N, T+1, m, o]``, ``state [N, T+1, s]``, ``actions [N, T, m]``,
    ``avail [N, T, m, A]``, ``rewards [N, T, m]``) cut after ``lengths [N]`` (<= T) real steps and
    padded to ``horizon`` steps as ``deep.envs.smax`` stores them: ``avail`` all False, action
    ``stop``, reward 0, obs and state repeating the observation that follows the last real step."""
    lengths = np.asarray(lengths)
    T = arrays["actions"].shape[1]
    real = np.arange(horizon)[None, :] < lengths[:, None]
    seen = np.minimum(np.arange(horizon + 1)[None, :], lengths[:, None])
    step = np.broadcast_to(np.minimum(np.arange(horizon), T - 1), real.shape)
    out = {
        "obs": np.take_along_axis(arrays["obs"], seen[:, :, None, None], axis=1),
        "state": np.take_along_axis(arrays["state"], seen[:, :, None], axis=1),
    }
    for name in ("actions", "avail", "rewards"):
        x = arrays[name]
        out[name] = np.take_along_axis(x, step.reshape(*step.shape, *[1] * (x.ndim - 2)), axis=1).copy()
    out["actions"][~real] = stop
    out["avail"][~real] = False
    out["rewards"][~real] = 0.0
    return out
