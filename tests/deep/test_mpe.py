"""Batched JaxMARL MPE: episode length, final observations, seeding, DLPack, parity with mpe2."""

import time

import numpy as np
import pytest
import torch

from marlcov.deep.envs import mpe
from marlcov.deep.envs.mpe import ENV_NAMES, HORIZON, MPE_DT, MPEBatch, UniformRandomPolicy
from marlcov.deep.envs.parity import parity_report, random_joint_actions

pytestmark = pytest.mark.deep

PARITY_ATOL = 1e-5
#: One batch size throughout, so that each configuration compiles once.
B = 3


@pytest.mark.parametrize("name", ENV_NAMES)
def test_episode_lasts_exactly_25_steps(name):
    env = MPEBatch(name, B)
    step = env.reset(0)
    dones = []
    for _ in range(HORIZON):
        step = env.step(torch.zeros((B, env.spec.n_agents), dtype=torch.long))
        dones.append(bool(step.done.all()))
    assert HORIZON == 25
    assert dones == [False] * (HORIZON - 1) + [True]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(torch.zeros((B, env.spec.n_agents), dtype=torch.long))


def test_jaxmarl_default_max_steps_gives_26_steps():
    """The pitfall the wrapper corrects: JaxMARL's default ends episodes after 26 steps."""
    import jax

    env = mpe.make_jax_env("simple_spread_v3")
    default = type(env)()
    key = jax.random.PRNGKey(0)
    counts = []
    for e in (env, default):
        _, state = e.reset(key)
        n, done = 0, False
        while not done:
            _, state, _, dones, _ = e.step_env(key, state, {a: 0 for a in e.agents})
            n, done = n + 1, bool(dones["__all__"])
        counts.append(n)
    assert counts == [25, 26]


def test_recorded_last_observation_is_not_a_reset():
    env = MPEBatch("simple_spread_v3", B)
    push_right = lambda obs, avail, t: torch.full(obs.shape[:2], 2)  # noqa: E731
    batch = env.rollout(push_right, seeds=7)
    n_ent, m = 6, 3
    pos = batch.state[:, :, : 2 * n_ent].reshape(B, HORIZON + 1, n_ent, 2)[:, :, :m]
    vel = batch.state[:, :, 2 * n_ent :].reshape(B, HORIZON + 1, m, 2)
    # The integrator moves positions by dt times the previous velocity, also into the last step;
    # a reset observation would place the agents anew with zero velocity.
    np.testing.assert_allclose(pos[:, -1] - pos[:, -2], MPE_DT * vel[:, -2], atol=1e-5)
    assert np.all(np.abs(batch.obs[:, -1, :, 0]) > 0.1)
    np.testing.assert_array_equal(batch.obs[:, -1, :, :2], vel[:, -1])
    # The auto-resetting JaxMARL step would return the reset observation instead.
    fresh = env.reset(7)
    assert not np.allclose(batch.obs[:, -1], fresh.obs.numpy())


@pytest.mark.parametrize("name", ENV_NAMES)
def test_rollout_matches_dataset_layout(name):
    env = MPEBatch(name, B)
    batch = env.rollout(UniformRandomPolicy(1), seeds=[5, 6, 7], source="trivial")
    batch.validate(env.spec.dataset_spec())
    assert batch.obs.shape == (3, HORIZON + 1, env.spec.n_agents, env.spec.obs_dim)
    assert list(batch.source) == ["trivial"] * 3
    assert np.all(batch.avail)


def test_each_environment_depends_only_on_its_seed():
    env = MPEBatch("simple_reference_v3", B)
    policy = lambda obs, avail, t: torch.full(obs.shape[:2], (7 * t) % 50)  # noqa: E731
    a = env.rollout(policy, seeds=[11, 12, 13])
    b = env.rollout(policy, seeds=[12, 13, 14])
    np.testing.assert_array_equal(a.obs[1], b.obs[0])
    np.testing.assert_array_equal(a.rewards[1], b.rewards[0])
    assert not np.allclose(a.obs[0, 0], a.obs[1, 0])


def test_tag_default_prey_is_reproducible_from_seeds():
    env = MPEBatch("simple_tag_v3", B)
    noop = lambda obs, avail, t: torch.zeros(obs.shape[:2], dtype=torch.long)  # noqa: E731
    a, b = env.rollout(noop, seeds=3), env.rollout(noop, seeds=3)
    np.testing.assert_array_equal(a.state, b.state)
    prey_pos = a.state[:, :, 6:8]
    assert np.abs(prey_pos[:, -1] - prey_pos[:, 0]).max() > 0.0


def test_tag_calls_the_given_prey_policy_each_step():
    calls = []

    def prey(obs, avail, t):
        calls.append((tuple(obs.shape), tuple(avail.shape), t))
        return torch.zeros(obs.shape[:2], dtype=torch.long)

    env = MPEBatch("simple_tag_v3", B, prey_policy=prey)
    env.rollout(lambda o, a, t: torch.zeros(o.shape[:2], dtype=torch.long), seeds=0)
    assert calls == [((B, 1, 14), (B, 1, 5), t) for t in range(HORIZON)]


def test_spread_rewards_follow_the_local_ratio_formula():
    """r_i = lambda * (-collisions_i) + (1 - lambda) * (-sum_l min_j |p_j - l|), from positions."""
    env = MPEBatch("simple_spread_v3", B)
    batch = env.rollout(UniformRandomPolicy(3), seeds=40)
    pos = batch.state[:, 1:, :12].reshape(B, HORIZON, 6, 2).astype(np.float64)
    agents, landmarks = pos[:, :, :3], pos[:, :, 3:]
    to_landmark = np.linalg.norm(agents[:, :, :, None] - landmarks[:, :, None], axis=-1)
    global_r = -to_landmark.min(axis=2).sum(axis=-1)
    between = np.linalg.norm(agents[:, :, :, None] - agents[:, :, None], axis=-1)
    collisions = ((between < 0.3) & ~np.eye(3, dtype=bool)).sum(axis=-1)
    expected = 0.5 * -collisions + 0.5 * global_r[..., None]
    np.testing.assert_allclose(batch.rewards, expected, atol=1e-5)


def test_reference_rewards_follow_the_local_ratio_formula():
    """r_i = lambda * own_i + (1 - lambda) * mean_j own_j, own_i = -|p_other - goal landmark of other|."""
    env = MPEBatch("simple_reference_v3", B)
    batch = env.rollout(UniformRandomPolicy(4), seeds=50)
    state = batch.state[:, 1:].astype(np.float64)
    pos = state[..., :10].reshape(B, HORIZON, 5, 2)
    goal = state[..., 34:40].reshape(B, HORIZON, 2, 3).argmax(axis=-1)
    landmark_of = np.take_along_axis(pos[:, :, 2:], goal[..., None].repeat(2, axis=-1), axis=2)
    own = -np.linalg.norm(pos[:, :, [1, 0]] - landmark_of[:, :, [1, 0]], axis=-1)
    expected = 0.5 * own + 0.5 * own.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(batch.rewards, expected, atol=1e-5)


def test_outputs_reach_torch_without_copy_on_cpu():
    import jax.numpy as jnp

    x = jnp.arange(12.0).reshape(3, 4)
    t = mpe.to_torch(x)
    assert t.data_ptr() == x.unsafe_buffer_pointer()
    np.testing.assert_array_equal(t.numpy(), np.asarray(x))


def test_bad_input_is_rejected_with_the_field_named():
    env = MPEBatch("simple_spread_v3", B)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros((B, 3), dtype=torch.long))
    env.reset(0)
    with pytest.raises(ValueError, match="actions: expected actions in"):
        env.step(torch.full((B, 3), 5))
    with pytest.raises(ValueError, match="actions: expected shape"):
        env.step(torch.zeros((B + 1, 3), dtype=torch.long))
    with pytest.raises(ValueError, match="actions: expected integer"):
        env.step(torch.zeros((B, 3)))
    with pytest.raises(ValueError, match="name"):
        MPEBatch("simple_push_v3", 2)


def test_deferred_action_checks_raise_once_per_episode():
    """On an accelerator the range check is gathered on the device and read at the episode's
    end (one host synchronisation per episode); forced here on the CPU."""
    env = MPEBatch("simple_spread_v3", B, horizon=3)
    env._defer_action_checks = True
    env.reset(0)
    env.step(torch.full((B, 3), 5))
    env.step(torch.zeros((B, 3), dtype=torch.long))
    with pytest.raises(ValueError, match="actions: expected actions in \\[0, 4\\] at some step of this episode"):
        env.step(torch.zeros((B, 3), dtype=torch.long))
    env.reset(0)
    env.step(torch.full((B, 3), -1))
    with pytest.raises(ValueError, match="at some step of this episode"):
        env.reset(1)  # an episode cut short is checked when the next one starts
    env.reset(2)
    for _ in range(3):
        env.step(torch.zeros((B, 3), dtype=torch.long))
    with pytest.raises(ValueError, match="prey_policy"):
        MPEBatch("simple_spread_v3", B, prey_policy=UniformRandomPolicy())
    with pytest.raises(ValueError, match="seeds"):
        env.reset([1, 2])


def test_uniform_policy_respects_availability():
    avail = torch.zeros((500, 2, 5), dtype=torch.bool)
    avail[:, :, [1, 3]] = True
    a = UniformRandomPolicy(0)(torch.zeros((500, 2, 4)), avail, 0)
    assert set(a.unique().tolist()) == {1, 3}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_parity_with_mpe2_on_replayed_actions(name):
    start = time.perf_counter()
    report = parity_report(name, [101, 102, 103], random_joint_actions(name, 3, seed=5))
    assert report["length_ours"] == HORIZON and report["length_mpe2"] == [HORIZON]
    assert report["obs_max_abs"] < PARITY_ATOL
    assert report["rewards_max_abs"] < PARITY_ATOL
    assert report["positions_max_abs"] < PARITY_ATOL
    assert time.perf_counter() - start < 60


def test_one_factory_rebuilds_a_datasets_environment():
    from marlcov.deep.data.schema import DatasetSpec
    from marlcov.deep.envs import make_batch_env, spec_env_kwargs

    spec = DatasetSpec("simple_spread_v3", {"local_ratio": 0.25, "num_agents": 3, "other": 1}, ("a0", "a1", "a2"), 18, 54, 5, 7)
    assert spec_env_kwargs(spec) == {"horizon": 7, "local_ratio": 0.25, "num_agents": 3}
    smax = DatasetSpec("smax_3m", {"map": "3m"}, ("a0", "a1", "a2"), 10, 20, 9, 100)
    assert spec_env_kwargs(smax) == {"horizon": 100}
    env = make_batch_env(spec.env_name, 2, "cpu", **spec_env_kwargs(spec))
    assert env.spec.horizon == 7 and env.batch_size == 2
    with pytest.raises(ValueError, match="env_name: expected an MPE task"):
        make_batch_env("simple_nothing_v3", 2)
    with pytest.raises(ValueError, match="a SMAX map takes only 'horizon'"):
        make_batch_env("smax_3m", 2, local_ratio=0.5)
