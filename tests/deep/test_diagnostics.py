"""Dataset coverage diagnostic on HDF5 and finite-game NPZ datasets (deep.diagnostics, deep.features)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep.data import DatasetReader, DatasetSpec, DatasetWriter, PreferencePairs, TrajectoryBatch
from deep.data.preferences import label_pairs, sample_pairs
from deep.diagnostics import (
    accumulate_pairs,
    bradley_terry_scores,
    coverage_command,
    diagnose,
    format_table,
    reference_trajectories,
)
from deep.features import FileFeatures, RandomFourierFeatures, RewardModelFeatures, all_joint_actions, joint_action_index
from theory.coverage import coverage_measures, reward_covariance, step_features, transition_covariances
from theory.games import random_markov_game
from theory.io import save_dataset, save_game, save_policy
from theory.policies import random_policy
from theory.preferences import sample_preference_dataset

pytestmark = pytest.mark.deep

EXACT_ATOL = 1e-8
SUM_RTOL = 1e-10


def write_dataset(path, *, N=40, H=4, m=2, nA=3, state_dim=3, obs_dim=2, seed=0, actions=None, states=None, pairs_per=3,
                  returns=None, chunk=8):
    """A small dataset file through the data layer's writer, with Bradley-Terry pairs."""
    rng = np.random.default_rng(seed)
    spec = DatasetSpec("toy", {"horizon": H}, tuple(f"agent_{i}" for i in range(m)), obs_dim, state_dim, nA, H)
    acts = rng.integers(0, nA, size=(N, H, m)) if actions is None else actions
    st_ = rng.normal(size=(N, H + 1, state_dim)) if states is None else states
    with DatasetWriter(path, spec, overwrite=True, chunk_trajectories=chunk) as w:
        w.append(TrajectoryBatch(rng.normal(size=(N, H + 1, m, obs_dim)).astype(np.float32), st_.astype(np.float32),
                                 acts.astype(np.int16), np.ones((N, H, m, nA), bool), rng.random((N, H, m)).astype(np.float32),
                                 np.arange(N), "mix"))
        f, s = sample_pairs(N, pairs_per, seed)
        R = rng.random((N, m)) if returns is None else returns
        w.write_pairs(label_pairs(R, f, s, seed=seed + 1))
    return path


def all_features(reader, fmap):
    d = reader.read_fields(slice(0, len(reader)), list(set(fmap.fields) | {"actions"}))
    return fmap(d, d["actions"][:, :reader.spec.horizon], np.arange(len(reader)))


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([1, 3, 7, 1000]), st.integers(0, 4))
def test_streaming_hdf5_covariances_equal_the_in_memory_sums(tmp_path_factory, seed, block, groups):
    path = write_dataset(tmp_path_factory.mktemp("d") / "d.h5", seed=seed, N=23)
    with DatasetReader(path) as reader:
        fmap = RandomFourierFeatures.for_spec(reader.spec, 8, seed=seed)
        pairs = reader.pairs()
        acc, mult = accumulate_pairs(reader, pairs, fmap, 0.7, groups, block)
        X = all_features(reader, fmap)
    H, d = X.shape[1:]
    diff = (X[pairs.first] - X[pairs.second]).reshape(len(pairs), H * d)
    want_r = 0.7 * np.eye(H * d) + diff.T @ diff
    both = np.concatenate([X[pairs.first], X[pairs.second]])
    want_p = 0.7 * np.eye(d) + np.einsum("bhd,bhe->hde", both, both)
    np.testing.assert_allclose(acc.sigma_r(), want_r, rtol=SUM_RTOL, atol=SUM_RTOL * len(pairs))
    np.testing.assert_allclose(acc.sigma_p(), want_p, rtol=SUM_RTOL, atol=SUM_RTOL * len(pairs))
    assert mult.sum() == 2 * len(pairs)
    if groups:
        np.testing.assert_allclose(acc.sigma_r(coefficients=np.ones(groups)), want_r, rtol=SUM_RTOL, atol=SUM_RTOL * len(pairs))


def test_hdf5_path_with_one_hot_file_features_equals_the_finite_game_covariances(tmp_path):
    """A finite-game preference dataset stored as HDF5 trajectories, with one-hot features in a
    .npy file: the streaming HDF5 covariances are theory.coverage's."""
    game = random_markov_game(3, (2, 2), 3, seed=1).with_one_hot_features()
    ds = sample_preference_dataset(game, random_policy(game, seed=2), 15, seed=3)
    H, m, N = game.horizon, game.n_players, 2 * ds.n_pairs
    states = ds.states.reshape(N, H + 1)
    actions = ds.actions.reshape(N, H, m)
    spec = DatasetSpec("finite", {}, ("p0", "p1"), 1, 1, 2, H)
    path = tmp_path / "finite.h5"
    with DatasetWriter(path, spec) as w:
        w.append(TrajectoryBatch(np.zeros((N, H + 1, m, 1), np.float32), states[..., None].astype(np.float32), actions.astype(np.int16),
                                 np.ones((N, H, m, 2), bool), np.zeros((N, H, m), np.float32), np.arange(N)))
        w.write_pairs(PreferencePairs(np.arange(0, N, 2), np.arange(1, N, 2), ds.prefs))
    feats = step_features(game.features, states, actions)
    np.save(tmp_path / "psi.npy", feats)
    with DatasetReader(path) as reader:
        fmap = FileFeatures(tmp_path / "psi.npy", m, 2)
        acc, _ = accumulate_pairs(reader, reader.pairs(), fmap, 1.0, 0, block=4)
    np.testing.assert_allclose(acc.sigma_r(), reward_covariance(game.features, ds), rtol=0, atol=EXACT_ATOL)
    np.testing.assert_allclose(acc.sigma_p(), transition_covariances(game.features, ds), rtol=0, atol=EXACT_ATOL)


def test_finite_npz_diagnostic_agrees_with_the_exact_measures(tmp_path):
    game = random_markov_game(4, (2, 3), 3, seed=7)
    policy = random_policy(game, seed=8)
    ds = sample_preference_dataset(game, random_policy(game, seed=9), 40, seed=10)
    save_game(game, tmp_path / "g.npz")
    save_policy(policy, tmp_path / "p.npz")
    save_dataset(ds, tmp_path / "d.npz")
    out = diagnose(tmp_path / "d.npz", tmp_path / "p.npz", game=tmp_path / "g.npz", lam=0.5, bootstrap=10, out_dir=tmp_path / "figs")
    exact = coverage_measures(game, ds, policy, 0.5)
    assert abs(out["single"] - exact.single) <= EXACT_ATOL
    assert abs(out["unilateral"] - exact.unilateral) <= EXACT_ATOL
    assert abs(out["uniform"] - exact.uniform) <= EXACT_ATOL
    assert out["worst_deviator"] == {"player": exact.worst_player, "value": out["unilateral"]}
    np.testing.assert_allclose([a["unilateral"] for a in out["per_agent"]], exact.per_player, rtol=0, atol=EXACT_ATOL)
    assert out["bootstrap"]["replicates"] == 10
    assert out["sizes"][-1]["single"] == pytest.approx(exact.single, abs=EXACT_ATOL)
    assert all((tmp_path / "figs" / n).exists() for n in ("unilateral_per_agent.png", "bonus_histograms.png", "coverage_vs_size.png"))
    json.dumps(out)


def test_hdf5_diagnostic_report(tmp_path):
    path = write_dataset(tmp_path / "d.h5", N=60, H=5)
    out = diagnose(path, features="random", bootstrap=15, seed=3, out_dir=tmp_path / "figs", feature_dim=16, groups=8,
                   bootstrap_anchors=4, block=16)
    for key in ("lambda", "single", "unilateral", "uniform", "worst_deviator", "per_agent", "bootstrap", "counts"):
        assert key in out
    json.dumps(out)
    per_agent = [a["unilateral"] for a in out["per_agent"]]
    assert out["unilateral"] == max(per_agent)
    assert out["worst_deviator"]["player"] == int(np.argmax(per_agent))
    # Anchors' own actions are among agent i's choices, and the joint maximum bounds every agent's.
    assert all(v >= out["single"] - 1e-12 for v in per_agent)
    assert out["uniform"] >= out["unilateral"] - 1e-12
    assert out["bootstrap"]["replicates"] == 15 and out["bootstrap"]["groups"] == 8
    # More data never increases the bonus, so each measure is non-increasing along the prefixes.
    for key in ("single", "unilateral", "uniform"):
        values = [s[key] for s in out["sizes"]]
        assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), (key, values)
    assert [s["fraction"] for s in out["sizes"]] == [0.125, 0.25, 0.5, 1.0]
    assert len(out["figures"]) == 3 and all((tmp_path / "figs").joinpath(p.split("/")[-1]).exists() for p in out["figures"])
    assert "unilateral (max)" in format_table(out)


def test_command_wiring_reads_an_argparse_namespace(tmp_path):
    import argparse

    path = write_dataset(tmp_path / "d.h5", N=20, H=3)
    args = argparse.Namespace(game=str(path), data=None, policy=None, features="random", lam=1.0, bootstrap=0, seed=0,
                              out=None, json=True, feature_dim=8)
    out = coverage_command(args)
    assert out["bootstrap"]["replicates"] == 0 and out["lambda"] == 1.0


def test_counts_match_distinct_pairs_by_hand(tmp_path):
    """Every trajectory written twice: each (state, joint action) occurs exactly twice."""
    rng = np.random.default_rng(0)
    N, H, m, nA = 10, 3, 2, 3
    acts = rng.integers(0, nA, size=(N // 2, H, m))
    states = rng.normal(size=(N // 2, H + 1, 3)) * 5
    path = write_dataset(tmp_path / "d.h5", N=N, H=H, actions=np.concatenate([acts, acts]), states=np.concatenate([states, states]))
    out = diagnose(path, bootstrap=0, feature_dim=8, groups=0)
    assert out["counts"]["joint_saco"] == pytest.approx(0.5)
    assert out["counts"]["transitions"] == N * H


def test_unilateral_coverage_separates_pure_expert_from_mix_unilateral(tmp_path):
    """The design of Table 1: with the same expert reference, a dataset where one agent at a time
    deviates covers unilateral deviations better than pure expert data, while single-policy
    coverage of the expert hardly tells them apart."""
    rng = np.random.default_rng(1)
    N, H, m, nA = 200, 4, 2, 3
    states = rng.normal(size=(N, H + 1, 2))
    expert = np.zeros((N, H, m), dtype=np.int64)
    mix = expert.copy()
    half = N // 2
    mix[half:, :, 0] = rng.integers(0, nA, size=(N - half, H))
    mix[half + half // 2:, :, 0] = 0
    mix[half + half // 2:, :, 1] = rng.integers(0, nA, size=(N - half - half // 2, H))

    def expert_policy(obs, avail, t):
        import torch

        return torch.zeros(avail.shape[:2], dtype=torch.long)

    results = {}
    for name, acts in (("pure", expert), ("mix", mix)):
        path = write_dataset(tmp_path / f"{name}.h5", N=N, H=H, actions=acts, states=states, state_dim=2, seed=4)
        results[name] = diagnose(path, expert_policy, bootstrap=0, feature_dim=32, groups=0)
    pure, mixed = results["pure"], results["mix"]
    assert pure["unilateral"] > 1.5 * mixed["unilateral"]
    assert abs(pure["single"] - mixed["single"]) < 0.5 * (pure["unilateral"] - mixed["unilateral"])


def test_bradley_terry_ranking_recovers_the_order_of_strengths():
    rng = np.random.default_rng(0)
    N, m = 60, 2
    strength = np.linspace(-3, 3, N)
    first, second = sample_pairs(N, 30, 1)
    p = 1 / (1 + np.exp(-(strength[first] - strength[second])))
    labels = np.where(rng.random((len(first), m)) < p[:, None], 1, -1)
    theta = bradley_terry_scores(first, second, labels, N)
    assert np.all(np.isfinite(theta))
    rank = np.argsort(np.argsort(theta[:, 0]))
    assert np.corrcoef(rank, np.arange(N))[0, 1] > 0.95
    top = reference_trajectories(theta, np.ones(N, bool), 0.1)
    assert len(top) == 6 and np.all(top >= N - 15)
    always = bradley_terry_scores([0, 0, 0], [1, 2, 3], np.ones((3, 1)), 4)
    assert np.all(np.isfinite(always)) and np.argmax(always[:, 0]) == 0


def test_random_fourier_features_are_bounded_and_their_variants_agree():
    rng = np.random.default_rng(0)
    fmap = RandomFourierFeatures(3, 2, 3, 64, seed=5)
    fields = {"state": rng.normal(size=(4, 6, 3))}
    actions = rng.integers(0, 3, size=(4, 5, 2))
    x = fmap(fields, actions)
    assert x.shape == (4, 5, 64) and np.all(np.linalg.norm(x, axis=-1) <= 1 + 1e-12)
    uni = fmap.unilateral(fields, actions, 1)
    for a in range(3):
        alt = actions.copy()
        alt[..., 1] = a
        np.testing.assert_allclose(uni[:, :, a], fmap(fields, alt), atol=1e-12)
    joint = fmap.joint(fields, 5)
    table = all_joint_actions(2, 3)
    assert np.array_equal(joint_action_index(table, 3), np.arange(9))
    np.testing.assert_allclose(joint[:, :, 4], fmap(fields, np.broadcast_to(table[4], (4, 5, 2))), atol=1e-12)
    agents = RandomFourierFeatures(3, 2, 3, 16, action_encoding="agents", seed=1)
    assert agents(fields, actions).shape == (4, 5, 16)
    with pytest.raises(ValueError, match="actions"):
        fmap(fields, actions + 3)


def test_random_fourier_kernel_matches_its_documented_limit():
    rng = np.random.default_rng(1)
    fmap = RandomFourierFeatures(4, 2, 3, 20000, seed=2, action_scale=0.8)
    s = rng.normal(size=(1, 1, 4))
    s2 = s + 0.5 * rng.normal(size=(1, 1, 4))
    fields = {"state": np.concatenate([s, s2])}
    a = np.array([[[0, 1]], [[0, 1]]])
    b = np.array([[[0, 1]], [[2, 1]]])
    for acts, differs in ((a, 0), (b, 1)):
        x = fmap(fields, acts)
        want = 0.5 * np.exp(-np.sum((s2 - s) ** 2) / (2 * 4)) * np.exp(-0.8 ** 2 * differs)
        assert abs(float(x[0, 0] @ x[1, 0]) - want) < 0.02


def test_reward_model_penultimate_layer_features():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(3 + 1, 5)
            self.head = torch.nn.Linear(5, 1)

        def forward(self, obs, actions):
            return self.head(torch.relu(self.body(torch.cat([obs, actions[..., None].float()], -1)))).squeeze(-1)

    torch.manual_seed(0)
    net = Net()
    fmap = RewardModelFeatures(net, 2, 4, 3, normalize=False)
    assert fmap.dim == 10
    obs = np.random.default_rng(0).normal(size=(2, 4, 2, 3)).astype(np.float32)
    acts = np.random.default_rng(1).integers(0, 4, size=(2, 3, 2))
    x = fmap({"obs": obs}, acts)
    with torch.no_grad():
        hidden = torch.relu(net.body(torch.cat([torch.as_tensor(obs[:, :3]), torch.as_tensor(acts)[..., None].float()], -1)))
    np.testing.assert_allclose(x, hidden.reshape(2, 3, 10).double().numpy(), atol=1e-6)
    unit = RewardModelFeatures(net, 2, 4, 3)({"obs": obs}, acts)
    norms = np.linalg.norm(unit, axis=-1)
    assert np.all((np.abs(norms - 1) < 1e-9) | (norms == 0))


def test_file_features_refuse_other_actions(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((5, 3, 4)))
    fmap = FileFeatures(tmp_path / "f.npy", 2, 3)
    fields = {"actions": np.zeros((2, 3, 2), np.int16)}
    assert fmap(fields, np.zeros((2, 3, 2)), np.array([4, 1])).shape == (2, 3, 4)
    with pytest.raises(NotImplementedError):
        fmap(fields, np.ones((2, 3, 2)), np.array([4, 1]))
    with pytest.raises(NotImplementedError):
        fmap.joint(fields, 3, np.array([0, 1]))


def test_bad_inputs_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="expected an HDF5"):
        diagnose(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="game"):
        diagnose(tmp_path / "x.npz")
    path = write_dataset(tmp_path / "d.h5", N=10, H=2)
    with pytest.raises(ValueError, match="features"):
        diagnose(path, features="nonexistent-file.npy")


@pytest.mark.slow
def test_simulator_deviations_on_mpe(tmp_path):
    from deep.data import write_pairs_file
    from deep.data.preferences import label_dataset
    from deep.envs.mpe import MPEBatch, UniformRandomPolicy

    env = MPEBatch("simple_spread_v3", 8)
    path = tmp_path / "mpe.h5"
    with DatasetWriter(path, env.spec.dataset_spec()) as w:
        w.append(env.rollout(UniformRandomPolicy(0), 0, source="trivial"))
    with DatasetReader(path) as r:
        write_pairs_file(tmp_path / "pairs.h5", label_dataset(r, 3, seed=0), r)
    out = diagnose(path, UniformRandomPolicy(1), bootstrap=0, feature_dim=16, groups=0, simulate=True, episodes=8,
                   pairs_path=tmp_path / "pairs.h5", rookies={"other-uniform": UniformRandomPolicy(2)})
    sim = out["simulator"]
    assert out["reference"]["anchors"] == "simulator rollouts" and sim["episodes"] == 8
    for i, agent in enumerate(out["per_agent"]):
        cands = sim["per_agent"][i]["candidates"]
        assert set(cands) == {"uniform", "rookie:other-uniform", "bonus-greedy", "bonus-greedy-mix0.5"}
        assert agent["unilateral"] == max(c["value"] for c in cands.values()) and agent["estimator"] == "simulator"
    assert out["unilateral"] == max(a["unilateral"] for a in out["per_agent"])
    assert out["single"] == sim["single"]
