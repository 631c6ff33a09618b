"""The MARLHF paper's Tag prey: the torch actor against flax's own layers, the loader's
refusals, inverse-CDF sampling, and episodes that depend on their seed alone."""

import jax
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

flax = pytest.importorskip("flax")
from flax.serialization import msgpack_serialize  # noqa: E402

from marlcov.deep.envs.mpe import MPEBatch  # noqa: E402
from marlcov.deep.envs.tag_prey import (  # noqa: E402
    HIDDEN,
    N_MOVES,
    PADDED_OBS_DIM,
    PREY_OBS_DIM,
    MarlhfPreyPolicy,
    categorical_from_uniform,
    load_marlhf_prey,
    prey_policy_from_spec,
)
from tests.deep.prey_params import flax_layers, flax_params, write_prey_file  # noqa: E402

pytestmark = pytest.mark.deep

#: float32 agreement of two implementations of the same network over a few recurrent steps.
PARITY_ATOL = 1e-5
B = 3


def flax_logits(params: dict, obs: np.ndarray) -> np.ndarray:
    """Logits ``[B, T, 5]`` of the paper's actor (Dense-ReLU, GRU, Dense-ReLU, Dense) run with
    flax's layers over observations ``[B, T, 14]`` zero-padded to 16, from a zero state."""
    d0, gru, d1, d2 = flax_layers()
    p = params["params"]
    h = np.zeros((obs.shape[0], HIDDEN), np.float32)
    out = []
    for t in range(obs.shape[1]):
        x = np.pad(obs[:, t], ((0, 0), (0, PADDED_OBS_DIM - PREY_OBS_DIM)))
        e = jax.nn.relu(d0.apply({"params": p["Dense_0"]}, x))
        h, y = gru.apply({"params": p["ScannedRNN_0"]["GRUCell_1"]}, h, e)
        out.append(d2.apply({"params": p["Dense_2"]}, jax.nn.relu(d1.apply({"params": p["Dense_1"]}, y))))
    return np.stack([np.asarray(o) for o in out], axis=1)


@pytest.fixture(scope="module")
def prey_file(tmp_path_factory):
    return write_prey_file(tmp_path_factory.mktemp("prey") / "fixed_good_agent.msgpack")


@settings(max_examples=15, deadline=None)
@given(obs=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 5), st.just(PREY_OBS_DIM)), elements=st.floats(-3, 3, width=32)))
def test_torch_actor_matches_flax_layers(prey_file, obs):
    policy = load_marlhf_prey(prey_file)
    h = torch.zeros((obs.shape[0], HIDDEN))
    got = []
    for t in range(obs.shape[1]):
        x = torch.nn.functional.pad(torch.from_numpy(obs[:, t]), (0, PADDED_OBS_DIM - PREY_OBS_DIM))
        logits, h = policy.network(x, h)
        got.append(logits.detach().numpy())
    np.testing.assert_allclose(np.stack(got, axis=1), flax_logits(flax_params(0), obs), atol=PARITY_ATOL)


@settings(max_examples=40, deadline=None)
@given(logits=arrays(np.float64, st.integers(2, 6), elements=st.floats(-8, 8)), blocked=st.lists(st.booleans(), min_size=6, max_size=6))
def test_inverse_cdf_draw_has_the_softmax_frequencies(logits, blocked):
    K, N = logits.shape[0], 4000
    mask = np.asarray(blocked[:K])
    mask[np.argmax(logits)] = False  # at least one action stays possible
    x = np.where(mask, -np.inf, logits)
    p = np.exp(x - x.max())
    p /= p.sum()
    u = (np.arange(N) + 0.5) / N
    actions = categorical_from_uniform(torch.from_numpy(np.tile(x, (N, 1))), torch.from_numpy(u)).numpy()
    assert not mask[actions].any()
    freq = np.bincount(actions, minlength=K) / N
    assert np.abs(freq - p).max() <= 1.0 / N + 1e-12


def test_an_episode_depends_on_its_seed_alone(prey_file):
    chase = lambda obs, avail, t: torch.full(obs.shape[:2], (t % 4) + 1)  # noqa: E731
    env3 = MPEBatch("simple_tag_v3", B, prey_policy=load_marlhf_prey(prey_file))
    a = env3.rollout(chase, seeds=[5, 6, 7])
    again = env3.rollout(chase, seeds=[5, 6, 7])
    np.testing.assert_array_equal(a.state, again.state)  # the recurrent state restarts each episode
    shifted = env3.rollout(chase, seeds=[6, 7, 8])
    np.testing.assert_array_equal(a.state[1:], shifted.state[:2])
    uniform = MPEBatch("simple_tag_v3", B).rollout(chase, seeds=[5, 6, 7])
    prey_xy = slice(6, 8)  # entity 3 (the prey) of the global state's positions
    assert not np.allclose(a.state[:, :, prey_xy], uniform.state[:, :, prey_xy])


def test_the_prey_moves_as_its_network_says(prey_file):
    """A network whose output prefers one move with probability ~1 moves the prey that way."""
    params = flax_params(0)
    params["params"]["Dense_2"]["kernel"] = np.zeros((HIDDEN, N_MOVES), np.float32)
    params["params"]["Dense_2"]["bias"] = np.array([0, 0, 40, 0, 0], np.float32)  # +x
    env = MPEBatch("simple_tag_v3", B, prey_policy=MarlhfPreyPolicy(params))
    noop = lambda obs, avail, t: torch.zeros(obs.shape[:2], dtype=torch.long)  # noqa: E731
    batch = env.rollout(noop, seeds=11)
    prey_x = batch.state[:, :, 6]
    assert (prey_x[:, -1] - prey_x[:, 0] > 0).all()


def test_loader_refuses_other_files(tmp_path):
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"\x00\x01 not msgpack")
    with pytest.raises(ValueError, match="garbage.msgpack"):
        load_marlhf_prey(garbage)
    params = flax_params(1)
    del params["params"]["Dense_2"]
    missing = tmp_path / "missing.msgpack"
    missing.write_bytes(msgpack_serialize(params))
    with pytest.raises(ValueError, match=r"missing.msgpack: field 'params/Dense_2/kernel' is missing"):
        load_marlhf_prey(missing)
    params = flax_params(1)
    params["params"]["Dense_0"]["kernel"] = np.zeros((14, HIDDEN), np.float32)
    wrong = tmp_path / "wrong.msgpack"
    wrong.write_bytes(msgpack_serialize(params))
    with pytest.raises(ValueError, match=r"'params/Dense_0/kernel': expected shape \[16, 128\], got \[14, 128\]"):
        load_marlhf_prey(wrong)


def test_configuration_strings(prey_file):
    assert prey_policy_from_spec("uniform") is None
    assert isinstance(prey_policy_from_spec(f"marlhf:{prey_file}"), MarlhfPreyPolicy)
    with pytest.raises(ValueError, match="prey_policy: expected 'uniform' or 'marlhf:PATH'"):
        prey_policy_from_spec("scripted")
    env = MPEBatch("simple_tag_v3", B, prey_policy=f"marlhf:{prey_file}")
    assert env.spec.config["prey_policy"] == f"marlhf:{prey_file}"
    with pytest.raises(ValueError, match="only simple_tag_v3 has a prey"):
        MPEBatch("simple_spread_v3", B, prey_policy=f"marlhf:{prey_file}")
