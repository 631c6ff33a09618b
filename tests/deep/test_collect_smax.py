"""``marlcov deep collect`` on SMAX maps (Table 1 mixes of scripted behaviours) and on
continuous-action spread, then ``marlcov deep label``: counts and tags per mix, the HDF5 round
trip and SMAX padding, the scripted expert against uniform play, determinism, bad input.

Every SMAX environment here has one shape (3m, B = 8, horizon 100), so the map compiles once
per process (``deep.envs.smax._compiled_functions`` is cached and jit keeps the shape)."""

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.deep

from marlcov.cli import main  # noqa: E402
from marlcov.deep.data.hdf5 import DatasetReader, read_pairs  # noqa: E402
from marlcov.deep.envs.mpe_continuous import read_continuous_dataset  # noqa: E402
from marlcov.deep.envs.smax import STOP_ACTION, SMAXBatch, episode_lengths, episode_wins  # noqa: E402
from marlcov.deep.envs.smax_behaviours import FocusFirePolicy, UniformAvailablePolicy, behaviour_policy  # noqa: E402
from marlcov.deep.pipeline import MIXES, SOURCES, collect_smax_dataset, mix_counts  # noqa: E402

B = 8
#: Episodes of the expert-against-uniform check (8 batches).
MATCH_EPISODES = 64


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def env():
    return SMAXBatch("3m", B)


@pytest.fixture(scope="module")
def mixes(env, tmp_path_factory):
    """One 12-trajectory dataset of each mix (seed 0), and the diversified one again with seed 0
    and with seed 1."""
    root = tmp_path_factory.mktemp("smax")
    out = {mix: (root / f"{mix}.h5", collect_smax_dataset("3m", mix, 12, root / f"{mix}.h5", seed=0, batch_size=B)) for mix in MIXES}
    out["again"] = (root / "again.h5", collect_smax_dataset("smax_3m", "diversified", 12, root / "again.h5", seed=0, batch_size=B))
    out["other"] = (root / "other.h5", collect_smax_dataset("3m", "diversified", 12, root / "other.h5", seed=1, batch_size=B))
    return out


def read_all(path):
    with DatasetReader(path) as reader:
        return reader.spec, reader.read_fields(slice(None))


# ----------------------------------------------------------------------------- mixes and tags
@pytest.mark.parametrize("mix", list(MIXES))
def test_each_mix_has_exact_source_counts_and_tags(mixes, mix):
    path, res = mixes[mix]
    expected = mix_counts(mix, 12)
    assert res["counts"] == expected and res["n_trajectories"] == 12
    _, d = read_all(path)
    sources, counts = np.unique(d["source"], return_counts=True)
    assert dict(zip(sources, counts)) == {s: c for s, c in expected.items() if c}
    # Sources are written in the order of Table 1.
    assert list(dict.fromkeys(d["source"])) == [s for s in SOURCES if expected[s]]
    tags = d["agent_policy"]
    for source in ("expert", "rookie", "trivial"):
        assert np.all(tags[d["source"] == source] == source)
    uni = tags[d["source"] == "unilateral"]
    assert np.all((uni == "rookie").sum(axis=1) == 1) and np.all((uni == "expert").sum(axis=1) == 2)
    assert len(np.unique(d["seed"])) == 12


def test_file_round_trips_with_the_smax_padding(env, mixes):
    """The stored expert episodes are the expert's rollouts from the stored seeds, padded as
    deep.envs.smax documents; lengths and wins are recovered from the file alone."""
    spec, d = read_all(mixes["diversified"][0])
    assert (spec.env_name, spec.horizon, spec.n_actions, spec.n_agents) == ("smax_3m", 100, 8, 3)
    assert spec.env_config["map"] == "3m"
    expert = d["source"] == "expert"
    seeds = d["seed"][expert]
    assert np.array_equal(seeds, seeds[0] + np.arange(len(seeds)))
    replay = env.rollout(FocusFirePolicy(env.env), int(seeds[0]))
    k = len(seeds)
    for name in ("obs", "state", "actions", "avail", "rewards"):
        assert np.array_equal(d[name][expert], getattr(replay, name)[:k]), name
    lengths = episode_lengths(d["avail"])
    assert np.array_equal(lengths[expert], env.last_lengths[:k])
    assert lengths.min() >= 1 and lengths.max() <= 100
    H = spec.horizon
    padded = np.arange(H)[None, :] >= lengths[:, None]  # [N, H]
    assert not d["avail"][padded].any() and np.all(d["actions"][padded] == STOP_ACTION) and np.all(d["rewards"][padded] == 0)
    assert d["avail"][~padded].any(axis=-1).all()  # every agent has an action in a real step
    final = d["state"][np.arange(len(lengths)), lengths]
    assert np.array_equal(episode_wins(final, 3, 3)[expert], env.last_wins[:k])


def test_unilateral_episodes_have_one_noisy_agent_and_expert_teammates(env, mixes):
    """In a unilateral episode the agents tagged "expert" play exactly the focus-fire action
    at every real step; the one tagged "rookie" departs from it."""
    _, d = read_all(mixes["mix-unilateral"][0])
    uni = d["source"] == "unilateral"
    obs, avail, actions, tags = d["obs"][uni][:, :-1], d["avail"][uni], d["actions"][uni], d["agent_policy"][uni]
    N, H, m = actions.shape
    expert = FocusFirePolicy(env.env)(torch.from_numpy(obs.reshape(N * H, m, -1)), torch.from_numpy(avail.reshape(N * H, m, -1)), 0)
    expert = expert.numpy().reshape(N, H, m)
    real = avail.any(axis=-1)  # [N, H, m]
    same = (expert == actions) | ~real
    assert same[np.broadcast_to((tags == "expert")[:, None, :], same.shape)].all()
    rookie_steps = real & (tags == "rookie")[:, None, :]
    assert (expert != actions)[rookie_steps].mean() > 0.2


def test_unilateral_deviator_is_drawn_per_episode_and_seeded(env):
    a, b = (behaviour_policy("unilateral", env.env, seed=3) for _ in range(2))
    env.rollout(a, 0)
    env.rollout(b, 0)
    assert np.array_equal(a.agent_tags, b.agent_tags) and a.agent_tags.shape == (B, 3)
    deviator = (a.agent_tags == "rookie").argmax(axis=1)
    assert np.all((a.agent_tags == "rookie").sum(axis=1) == 1) and len(np.unique(deviator)) > 1


def test_collection_is_deterministic_for_a_seed(mixes):
    _, first = read_all(mixes["diversified"][0])
    _, again = read_all(mixes["again"][0])
    _, other = read_all(mixes["other"][0])
    for name in first:
        assert np.array_equal(first[name], again[name]), name
    assert not np.array_equal(first["seed"], other["seed"])
    assert mixes["diversified"][1] == {**mixes["again"][1], "path": mixes["diversified"][1]["path"]}


# ----------------------------------------------------------------------------- behaviours
def test_focus_fire_expert_beats_uniform_play_on_3m(env):
    """64 seeded episodes each (reset seeds 10,000 onwards): the scripted expert wins and
    returns more than uniform available actions."""
    results = {}
    for name, policy in (("expert", FocusFirePolicy(env.env)), ("uniform", UniformAvailablePolicy(3, seed=0))):
        wins, returns = [], []
        for k in range(0, MATCH_EPISODES, B):
            batch = env.rollout(policy, 10_000 + k)
            wins.append(env.last_wins)
            returns.append(batch.returns().mean(axis=1))
        results[name] = (np.concatenate(wins).mean(), np.concatenate(returns).mean())
    (expert_win, expert_return), (uniform_win, uniform_return) = results["expert"], results["uniform"]
    assert expert_win >= 0.3 and uniform_win <= 0.05
    assert expert_return > uniform_return + 0.5


def test_expert_actions_are_available_and_the_dead_stop(env):
    batch = env.rollout(FocusFirePolicy(env.env), 20_000)
    chosen = np.take_along_axis(batch.avail, batch.actions[..., None].astype(np.int64), axis=-1)[..., 0]
    real = batch.avail.any(axis=-1)
    assert chosen[real].all()
    dead = real & ~batch.avail[..., :STOP_ACTION].any(axis=-1)
    assert np.all(batch.actions[dead] == STOP_ACTION)


# ----------------------------------------------------------------------------- command line
def test_cli_collect_then_label_on_3m(env, tmp_path, capsys):
    data = tmp_path / "3m.h5"
    code, out, err = run(
        capsys,
        "deep",
        "collect",
        "--env",
        "3m",
        "--mix",
        "mix-unilateral",
        "--trajectories",
        16,
        "--batch-size",
        B,
        "--out",
        data,
        "--seed",
        2,
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["env"] == "smax_3m" and res["counts"] == {"expert": 8, "unilateral": 4, "rookie": 0, "trivial": 4}
    assert set(res["win_rate_per_source"]) == {"expert", "unilateral", "trivial"}
    code, out, err = run(capsys, "deep", "label", data, "--pairs-per-trajectory", 2, "--json")
    assert code == 0, err
    pairs_file = tmp_path / "3m.pairs.h5"
    assert json.loads(out)["path"] == str(pairs_file)
    with DatasetReader(data) as reader:
        pairs = read_pairs(pairs_file, reader)
        assert len(reader) == 16
    assert len(pairs) == 32 and pairs.labels.shape == (32, 3)
    # SMAX's team reward is the same for every ally, and so is the probability of each label.
    assert np.allclose(pairs.probs, pairs.probs[:, :1])


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--env", "3m", "--mix", "diversified", "--policies", "runs/policies"], "--policies"),
        (["--env", "3m", "--mix", "diversified", "--epsilon", "0.1"], "--epsilon"),
        (["--env", "3m", "--mix", "diversified", "--trajectories", "1"], "--trajectories"),
        (["--env", "3m"], "--mix"),
        (["--env", "pong", "--mix", "diversified"], "--env"),
        (["--env", "spread", "--mix", "diversified"], "--policies"),
        (["--env", "3m", "--mix", "diversified", "--noise", "0.1"], "--noise"),
        (["--env", "spread", "--continuous", "--mix", "diversified"], "--mix"),
        (["--env", "3m", "--continuous"], "--env"),
        (["--env", "spread", "--continuous", "--expert-fraction", "1.5"], "--expert-fraction"),
        (["--env", "spread", "--continuous", "--noise", "-1"], "--noise"),
        (["--env", "spread", "--continuous", "--trajectories", "0"], "--trajectories"),
        (["--env", "spread", "--continuous", "--seed", "99999"], "seed"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_option(tmp_path, capsys, argv, option):
    code, out, err = run(capsys, "deep", "collect", *argv, "--out", tmp_path / "x.h5")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and option in err
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- continuous spread
def test_cli_collects_a_continuous_spread_dataset(tmp_path, capsys):
    path = tmp_path / "c.h5"
    code, out, err = run(
        capsys,
        "deep",
        "collect",
        "--env",
        "spread",
        "--continuous",
        "--trajectories",
        8,
        "--expert-fraction",
        0.25,
        "--noise",
        0.2,
        "--batch-size",
        4,
        "--out",
        path,
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["counts"] == {"expert": 2, "random": 6} and res["n_trajectories"] == 8 and res["noise"] == 0.2
    spec, data = read_continuous_dataset(path)
    assert spec.env_name == "simple_spread_v3" and data.actions.shape == (8, 25, 3, 2)
    assert list(data.source) == ["expert"] * 2 + ["random"] * 6
    assert np.abs(data.actions).max() <= 1.0
    team = data.returns().mean(axis=1)
    assert res["mean_return_per_source"]["expert"] == pytest.approx(team[:2].mean())
    assert team[:2].mean() > team[2:].mean()  # the landmark-assignment controller beats uniform forces
    code, _, err = run(
        capsys,
        "deep",
        "collect",
        "--env",
        "spread",
        "--continuous",
        "--trajectories",
        8,
        "--expert-fraction",
        0.25,
        "--noise",
        0.2,
        "--batch-size",
        4,
        "--out",
        tmp_path / "again.h5",
    )
    assert code == 0, err
    _, again = read_continuous_dataset(tmp_path / "again.h5")
    assert np.array_equal(again.actions, data.actions) and np.array_equal(again.obs, data.obs)
