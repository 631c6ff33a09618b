"""SMAX wrapper: padded layout, lengths and wins recovered from stored arrays, reward scale,
determinism. One map (3m) is compiled per process to keep the module fast."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.deep

from marlcov.deep.data.hdf5 import DatasetReader, DatasetWriter  # noqa: E402
from marlcov.deep.envs.smax import (  # noqa: E402
    ENV_NAMES,
    STOP_ACTION,
    SMAXBatch,
    UniformRandomPolicy,
    episode_lengths,
    episode_wins,
    map_of,
)

#: A return is a sum of float32 rewards of at most 100 steps.
RETURN_ATOL = 1e-4
B = 16


def focus_fire(obs, avail, t):
    """Attack the lowest-index enemy in range, else walk east (towards the enemy's start); the
    dead stop."""
    attack = avail[..., 5:]
    target = attack.float().argmax(-1) + 5
    east = torch.where(avail[..., 1], torch.ones_like(target), torch.full_like(target, STOP_ACTION))
    return torch.where(attack.any(-1), target, east)


@pytest.fixture(scope="module")
def env():
    return SMAXBatch("3m", B)


@pytest.fixture(scope="module")
def random_batch(env):
    batch = env.rollout(UniformRandomPolicy(0), 100, source="uniform")
    return batch, env.last_lengths.copy(), env.last_wins.copy()


@pytest.fixture(scope="module")
def focus_batch(env):
    batch = env.rollout(focus_fire, 0, source="focus")
    return batch, env.last_lengths.copy(), env.last_wins.copy()


def test_spec_of_3m(env):
    spec = env.spec
    assert spec.name == "smax_3m" and spec.n_agents == 3 and spec.n_enemies == 3
    # 5 movement actions (4 moves, stop) + one attack per enemy.
    assert spec.n_actions == 5 + 3
    assert map_of("smax_2s3z") == "2s3z" and "smax_5m_vs_6m" in ENV_NAMES
    with pytest.raises(ValueError, match="env_name"):
        map_of("smac_3m")


def test_padding_layout_and_lengths(random_batch, env):
    batch, lengths, _ = random_batch
    H = env.spec.horizon
    assert batch.obs.shape == (B, H + 1, 3, env.spec.obs_dim) and batch.avail.shape == (B, H, 3, env.spec.n_actions)
    np.testing.assert_array_equal(episode_lengths(batch.avail), lengths)
    assert np.all((lengths >= 1) & (lengths <= H))
    for n, L in enumerate(lengths):
        # Every agent, dead or alive, can at least stop during a real step.
        assert batch.avail[n, :L, :, STOP_ACTION].all()
        assert not batch.avail[n, L:].any()
        assert np.all(batch.actions[n, L:] == STOP_ACTION)
        assert np.all(batch.rewards[n, L:] == 0)
        np.testing.assert_array_equal(batch.obs[n, L:], np.broadcast_to(batch.obs[n, L], batch.obs[n, L:].shape))
        np.testing.assert_array_equal(batch.state[n, L:], np.broadcast_to(batch.state[n, L], batch.state[n, L:].shape))
        # Actions taken in real steps were available.
        chosen = np.take_along_axis(batch.avail[n, :L], batch.actions[n, :L, :, None].astype(np.int64), axis=-1)
        assert chosen.all()


def test_team_reward_scale_and_wins(focus_batch, env):
    batch, lengths, wins = focus_batch
    assert wins.any() and not wins.all(), "focus fire should win some but not all 3m episodes"
    final_states = batch.state[np.arange(B), lengths]
    np.testing.assert_array_equal(episode_wins(final_states, 3, 3), wins)
    returns = batch.returns()
    # One team reward, shared by all allies.
    np.testing.assert_array_equal(returns, np.repeat(returns[:, :1], 3, axis=1))
    # A win removes all enemy health (1) and earns the bonus (1); anything else earns at most 1.
    np.testing.assert_allclose(returns[wins, 0], 2.0, atol=RETURN_ATOL)
    assert np.all(returns[~wins, 0] <= 1.0 + RETURN_ATOL)


def test_episode_wins_on_hand_made_states():
    # Two units (one ally, one enemy), 10 features each, then teams and types.
    alive_ally = np.r_[0.5, 3.0, 4.0, np.zeros(7)]
    dead = np.zeros(10)
    tail = np.array([0, 1, 0, 0])
    states = np.stack([np.r_[alive_ally, dead, tail], np.r_[dead, alive_ally, tail], np.r_[dead, dead, tail]])
    np.testing.assert_array_equal(episode_wins(states, 1, 1), [True, False, False])


def test_rollout_is_a_function_of_seeds(env, random_batch):
    batch, lengths, wins = random_batch
    again = env.rollout(UniformRandomPolicy(0), 100)
    for name in ("obs", "state", "actions", "avail", "rewards"):
        np.testing.assert_array_equal(getattr(again, name), getattr(batch, name))
    other = env.rollout(UniformRandomPolicy(0), 200)
    assert not np.array_equal(other.state[:, 0], batch.state[:, 0])


def test_finished_episodes_stay_frozen(env):
    cur = env.reset(7)
    zero = torch.full((B, 3), STOP_ACTION, dtype=torch.int64)
    policy = UniformRandomPolicy(1)
    while not bool(cur.done.all()):
        prev = cur
        cur = env.step(policy(cur.obs, cur.avail, env.t))
        frozen = prev.done
        assert torch.equal(cur.state[frozen], prev.state[frozen])
        assert not cur.avail[cur.done].any() and torch.all(cur.rewards[frozen] == 0)
    with pytest.raises(ValueError, match="actions"):
        env.step(zero[:, :2])
    with pytest.raises(ValueError, match="actions"):
        env.step(zero + 100)
    env.reset(7)
    # At the start every enemy is out of range: attacking it is not available.
    with pytest.raises(ValueError, match="not available"):
        env.step(torch.full((B, 3), 5, dtype=torch.int64))


def test_dataset_round_trip(tmp_path, focus_batch, env):
    batch, lengths, wins = focus_batch
    path = tmp_path / "smax.h5"
    with DatasetWriter(path, env.spec.dataset_spec()) as writer:
        writer.append(batch)
    with DatasetReader(path) as reader:
        back = reader.read(slice(None))
        assert reader.spec.env_name == "smax_3m"
    np.testing.assert_array_equal(episode_lengths(back.avail), lengths)
    np.testing.assert_array_equal(episode_wins(back.state[np.arange(B), lengths], 3, 3), wins)


@pytest.mark.slow
def test_episode_limit():
    short = SMAXBatch("3m", 4, horizon=4)
    batch = short.rollout(lambda obs, avail, t: torch.full(avail.shape[:2], STOP_ACTION), 0)
    # Standing still, nobody is in range of anybody within 4 steps: every episode hits the limit.
    np.testing.assert_array_equal(short.last_lengths, 4)
    assert batch.actions.shape[1] == 4 and not short.last_wins.any()


def test_collect_label_train_evaluate_chain(tmp_path, env, focus_batch, random_batch):
    """The MARLHF chain on SMAX: collect, label, train O-MAPL and OMIGA, evaluate the win rate."""
    from marlcov.deep.algos.omapl import evaluate_omapl, train_omapl
    from marlcov.deep.algos.omiga import train_omiga
    from marlcov.deep.data.preferences import label_dataset

    path = tmp_path / "3m.h5"
    with DatasetWriter(path, env.spec.dataset_spec()) as writer:
        writer.append(focus_batch[0])
        writer.append(random_batch[0])
    with DatasetReader(path) as reader:
        pairs = label_dataset(reader, pairs_per_trajectory=2, seed=0)
    with DatasetWriter(tmp_path / "labelled.h5", env.spec.dataset_spec()) as writer:
        writer.append(focus_batch[0])
        writer.append(random_batch[0])
        writer.write_pairs(pairs)
    tiny = {"steps": 3, "hidden": 16, "mixer_hidden": 8, "eval_episodes": B}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        omapl = train_omapl(tmp_path / "labelled.h5", {**tiny, "batch_pairs": 4}, tmp_path / "omapl", progress=False, evaluate=True)
        omiga = train_omiga(path, {**tiny, "batch_trajectories": 4}, tmp_path / "omiga", progress=False, evaluate=True)
    finally:
        torch.set_num_threads(threads)
    for metrics in (omapl, omiga):
        assert 0.0 <= metrics["eval"]["win_rate"] <= 1.0 and metrics["eval"]["episodes"] == B
        # Every recorded action was available, so no log-probability of a masked action
        # (about -1e9) enters a policy loss.
        assert all(abs(v) < 1e6 for h in metrics["history"] for v in h.values())
        assert 0.0 <= metrics["eval"]["return_mean"] <= 2.0 + RETURN_ATOL
    assert evaluate_omapl(tmp_path / "omapl" / "model.pt", n_episodes=B) == omapl["eval"]
