"""Dataset coverage diagnostic on HDF5 and finite-game NPZ datasets (deep.diagnostics, deep.features)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.deep.data import DatasetReader, DatasetSpec, DatasetWriter, PreferencePairs, TrajectoryBatch
from marlcov.deep.data.preferences import sample_pairs
from marlcov.deep.diagnostics import (
    accumulate_pairs,
    bradley_terry_scores,
    coverage_command,
    diagnose,
    format_table,
    reference_trajectories,
)
from marlcov.deep.features import FileFeatures, RandomFourierFeatures, RewardModelFeatures, all_joint_actions, joint_action_index
from marlcov.theory.coverage import coverage_measures, reward_covariance, step_features, transition_covariances
from marlcov.theory.dataset_coverage import BonusModel
from marlcov.theory.games import random_markov_game
from marlcov.theory.identifiable import identifiable_measures
from marlcov.theory.io import save_dataset, save_game, save_policy
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset
from tests.deep.coverage_fixtures import PAD_RTOL, measures
from tests.deep.synthetic import write_random_dataset

pytestmark = pytest.mark.deep

EXACT_ATOL = 1e-8
SUM_RTOL = 1e-10


def all_features(reader, fmap):
    d = reader.read_fields(slice(0, len(reader)), list(set(fmap.fields) | {"actions"}))
    return fmap(d, d["actions"][:, : reader.spec.horizon], np.arange(len(reader)))


# The seed seeds the random Fourier feature map under test and the HDF5 file written for it.
@settings(max_examples=6, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([1, 3, 7, 1000]), st.integers(0, 4))
def test_streaming_hdf5_covariances_equal_the_in_memory_sums(tmp_path_factory, seed, block, groups):
    path = write_random_dataset(tmp_path_factory.mktemp("d") / "d.h5", seed=seed, N=23)
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
        w.append(
            TrajectoryBatch(
                np.zeros((N, H + 1, m, 1), np.float32),
                states[..., None].astype(np.float32),
                actions.astype(np.int16),
                np.ones((N, H, m, 2), bool),
                np.zeros((N, H, m), np.float32),
                np.arange(N),
            )
        )
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
    ident = identifiable_measures(game, ds, policy, 0.5)
    for key in ("single", "unilateral", "uniform"):
        assert abs(out["identifiable"][key] - getattr(ident, key)) <= EXACT_ATOL
    assert out["identifiable"]["worst_deviator"]["player"] == ident.worst_player


def test_hdf5_diagnostic_report(tmp_path):
    path = write_random_dataset(tmp_path / "d.h5", N=60, H=5)
    out = diagnose(
        path, features="random", bootstrap=15, seed=3, out_dir=tmp_path / "figs", feature_dim=16, groups=8, bootstrap_anchors=4, block=16
    )
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
    assert "unilateral (max)" in format_table(out) and "identifiable unilateral (max)" in format_table(out)


def test_command_wiring_reads_an_argparse_namespace(tmp_path):
    import argparse

    path = write_random_dataset(tmp_path / "d.h5", N=20, H=3)
    args = argparse.Namespace(
        game=str(path), data=None, policy=None, features="random", lam=1.0, bootstrap=0, seed=0, out=None, json=True, feature_dim=8
    )
    out = coverage_command(args)
    assert out["bootstrap"]["replicates"] == 0 and out["lambda"] == 1.0


def test_counts_match_distinct_pairs_by_hand(tmp_path):
    """Every trajectory written twice: each (state, joint action) occurs exactly twice."""
    rng = np.random.default_rng(0)
    N, H, m, nA = 10, 3, 2, 3
    acts = rng.integers(0, nA, size=(N // 2, H, m))
    states = rng.normal(size=(N // 2, H + 1, 3)) * 5
    path = write_random_dataset(tmp_path / "d.h5", N=N, H=H, actions=np.concatenate([acts, acts]), states=np.concatenate([states, states]))
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
    mix[half + half // 2 :, :, 0] = 0
    mix[half + half // 2 :, :, 1] = rng.integers(0, nA, size=(N - half - half // 2, H))

    def expert_policy(obs, avail, t):
        import torch

        return torch.zeros(avail.shape[:2], dtype=torch.long)

    results = {}
    for name, acts in (("pure", expert), ("mix", mix)):
        path = write_random_dataset(tmp_path / f"{name}.h5", N=N, H=H, actions=acts, states=states, state_dim=2, seed=4)
        results[name] = diagnose(path, expert_policy, bootstrap=0, feature_dim=32, groups=0)
    pure, mixed = results["pure"], results["mix"]
    assert pure["unilateral"] > 1.5 * mixed["unilateral"]
    assert pure["identifiable"]["unilateral"] > 1.5 * mixed["identifiable"]["unilateral"]
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
        want = 0.5 * np.exp(-np.sum((s2 - s) ** 2) / (2 * 4)) * np.exp(-(0.8**2) * differs)
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
    path = write_random_dataset(tmp_path / "d.h5", N=10, H=2)
    with pytest.raises(ValueError, match="features"):
        diagnose(path, features="nonexistent-file.npy")


@pytest.mark.slow
def test_simulator_deviations_on_mpe(tmp_path):
    from marlcov.deep.data import write_pairs_file
    from marlcov.deep.data.preferences import label_dataset
    from marlcov.deep.envs.mpe import MPEBatch, UniformRandomPolicy

    env = MPEBatch("simple_spread_v3", 8)
    path = tmp_path / "mpe.h5"
    with DatasetWriter(path, env.spec.dataset_spec()) as w:
        w.append(env.rollout(UniformRandomPolicy(0), 0, source="trivial"))
    with DatasetReader(path) as r:
        write_pairs_file(tmp_path / "pairs.h5", label_dataset(r, 3, seed=0), r)
    out = diagnose(
        path,
        UniformRandomPolicy(1),
        bootstrap=0,
        feature_dim=16,
        groups=0,
        simulate=True,
        episodes=8,
        pairs_path=tmp_path / "pairs.h5",
        rookies={"other-uniform": UniformRandomPolicy(2)},
    )
    sim = out["simulator"]
    assert out["reference"]["anchors"] == "simulator rollouts" and sim["episodes"] == 8
    for i, agent in enumerate(out["per_agent"]):
        cands = sim["per_agent"][i]["candidates"]
        assert set(cands) == {"uniform", "rookie:other-uniform", "bonus-greedy", "bonus-greedy-mix0.5"}
        assert agent["unilateral"] == max(c["value"] for c in cands.values()) and agent["estimator"] == "simulator"
    assert out["unilateral"] == max(a["unilateral"] for a in out["per_agent"])
    assert out["single"] == sim["single"]


# ----------------------------------------------------------------------------- padded episodes
def zero_policy(obs, avail, t):
    import torch

    return torch.zeros(avail.shape[:2], dtype=torch.long)


def fixed_features(spec, dim=8, seed=0):
    """A random-feature map with its standardisation given, so that it is the same map whatever
    the data (``fit_features=False``)."""
    return RandomFourierFeatures.for_spec(spec, dim, seed=seed, mean=np.full(spec.state_dim, 0.1), std=np.full(spec.state_dim, 1.3))


def test_unpadded_measures_equal_definition_1_computed_in_memory(tmp_path):
    """MPE-like data (every step real): the streamed diagnostic is the old formula, written here
    on whole arrays: Sigma_r, Sigma_p from all pairs, then sums over all H steps of the bonus at
    the reference, the best deviation of each agent and the best joint action."""
    path = write_random_dataset(tmp_path / "d.h5", N=30, H=4, m=2, nA=3, seed=11)
    with DatasetReader(path) as reader:
        spec, pairs = reader.spec, reader.pairs()
        d = reader.read_fields(slice(None), ["state", "actions"])
    fmap = fixed_features(spec)
    out = diagnose(path, zero_policy, fmap, lam=0.8, bootstrap=0, groups=0, fit_features=False)
    X = fmap(d, d["actions"])
    N, H, dim = X.shape
    diff = (X[pairs.first] - X[pairs.second]).reshape(len(pairs), H * dim)
    both = np.concatenate([X[pairs.first], X[pairs.second]])
    model = BonusModel.from_covariances(0.8 * np.eye(H * dim) + diff.T @ diff, 0.8 * np.eye(dim) + np.einsum("bhd,bhe->hde", both, both))

    def bonus_over(features):
        return np.moveaxis(model.bonus(np.moveaxis(features, 2, 1)), 1, 2)

    ref = np.zeros((N, H, 2), dtype=np.int64)
    want_single = model.bonus(fmap(d, ref)).sum(axis=1).mean()
    want_uni = [bonus_over(fmap.unilateral(d, ref, i)).max(axis=-1).sum(axis=1).mean() for i in range(2)]
    want_uniform = bonus_over(fmap.joint(d, H)).max(axis=-1).sum(axis=1).mean()
    assert out["single"] == pytest.approx(want_single, rel=PAD_RTOL)
    np.testing.assert_allclose([a["plug_in"] for a in out["per_agent"]], want_uni, rtol=PAD_RTOL)
    assert out["uniform"] == pytest.approx(want_uniform, rel=PAD_RTOL)
    assert out["dataset"]["real_steps"] == N * H and out["dataset"]["padded_trajectories"] == 0
    assert out["dataset"]["longest_episode"] == H
    # Identifiable: the reward term of psi_h - c_h, c_h the mean of psi_h over both trajectories of every pair.
    model = model.with_reference(both.mean(axis=0))
    ident = out["identifiable"]
    assert ident["single"] == pytest.approx(model.bonus(fmap(d, ref)).sum(axis=1).mean(), rel=PAD_RTOL)
    np.testing.assert_allclose(
        ident["per_agent"], [bonus_over(fmap.unilateral(d, ref, i)).max(axis=-1).sum(axis=1).mean() for i in range(2)], rtol=PAD_RTOL
    )
    assert ident["uniform"] == pytest.approx(bonus_over(fmap.joint(d, H)).max(axis=-1).sum(axis=1).mean(), rel=PAD_RTOL)
    assert len(ident["constant_directions"]) == H and "rank_rule" in ident


@pytest.mark.parametrize("use_policy", [False, True])
def test_padding_appended_to_episodes_leaves_the_diagnostic_unchanged(tmp_path, use_policy):
    """The same episodes stored with H = 5 steps and with 4 more padding steps; and episodes of
    lengths 1..5 stored padded to 5 and to 9 steps: the same report either way (counts, anchors,
    bootstrap and size curve included)."""
    N, H0, extra = 36, 5, 4
    lengths = np.random.default_rng(3).integers(1, H0 + 1, size=N)
    lengths[0] = H0
    kw = dict(N=N, H=H0, seed=7, pairs_per=4)
    policy = zero_policy if use_policy else None
    opts = dict(bootstrap=6, groups=4, bootstrap_anchors=12, feature_dim=8, seed=2, block=5)
    reports = {}
    for name, more in (
        ("full", {}),
        ("full+pad", {"horizon": H0 + extra}),
        ("cut", {"lengths": lengths}),
        ("cut+pad", {"lengths": lengths, "horizon": H0 + extra}),
    ):
        path = write_random_dataset(tmp_path / f"{name}.h5", **kw, **more)
        reports[name] = diagnose(path, policy, **opts)
    for a, b in (("full", "full+pad"), ("cut", "cut+pad")):
        np.testing.assert_allclose(measures(reports[b]), measures(reports[a]), rtol=PAD_RTOL, atol=PAD_RTOL)
        assert reports[b]["worst_deviator"]["player"] == reports[a]["worst_deviator"]["player"]
        assert reports[b]["reference"]["trajectories"] == reports[a]["reference"]["trajectories"]
    cut = reports["cut+pad"]
    assert cut["counts"]["transitions"] == cut["dataset"]["real_steps"] == lengths.sum()
    assert cut["dataset"]["padded_trajectories"] == np.sum(lengths < H0 + extra) and cut["dataset"]["longest_episode"] == H0
    # Cutting the episodes does change the data: fewer real steps, smaller sums.
    assert cut["single"] < reports["full"]["single"]
    assert all(np.isfinite(measures(r)).all() for r in reports.values())


def test_a_reference_policy_is_asked_for_actions_at_real_steps_only(tmp_path):
    """At a padded step no action is available: a policy would get an all-False mask there."""
    seen = []

    def strict(obs, avail, t):
        import torch

        assert bool(avail.any(dim=-1).all()), "the policy was shown a padded step"
        seen.append(int(avail.shape[0]))
        return torch.zeros(avail.shape[:2], dtype=torch.long)

    lengths = np.array([3, 1, 2, 3, 2, 1, 3, 2])
    path = write_random_dataset(tmp_path / "d.h5", N=8, H=3, lengths=lengths, horizon=6, seed=1)
    out = diagnose(path, strict, bootstrap=0, groups=0, feature_dim=8)
    assert np.isfinite(out["single"]) and np.isfinite(out["unilateral"]) and np.isfinite(out["uniform"])
    # The probe's first step of trajectory 0 (a function is its own deep copy), then steps 0, 1, 2
    # with 8, 6, 3 episodes running; none of steps 3-5.
    assert seen == [1, 8, 6, 3]


def _said(tmp_path, **kwargs):
    messages = []
    path = kwargs.pop("path")
    with pytest.raises(ValueError) as err:
        diagnose(path, progress=messages.append, bootstrap=0, groups=0, feature_dim=8, **kwargs)
    return str(err.value), messages


def test_every_check_fails_before_the_streaming_passes(tmp_path):
    path = write_random_dataset(tmp_path / "d.h5", N=12, H=3)
    for option, value, field in (
        ("reference_fraction", 0.0, "reference_fraction"),
        ("lam", 0.0, "lambda"),
        ("count_resolution", 0.0, "count_resolution"),
        ("bootstrap_anchors", -1, "bootstrap_anchors"),
        ("block", 0, "block"),
    ):
        msg, said = _said(tmp_path, path=path, **{option: value})
        assert field in msg and said == [], (option, msg, said)
    msg, said = _said(tmp_path, path=path, memory_bytes=1000)
    assert "memory_bytes" in msg and not any(s.startswith("pass") for s in said)

    def wrong_shape(obs, avail, t):
        import torch

        return torch.zeros(3, dtype=torch.long)

    msg, said = _said(tmp_path, path=path, policy=wrong_shape)
    assert msg.startswith("policy:") and said == []
    np.save(tmp_path / "few.npy", np.zeros((5, 3, 4)))
    msg, said = _said(tmp_path, path=path, features=str(tmp_path / "few.npy"))
    assert "feature file has 5 trajectories" in msg and said == []


def test_bad_episode_layouts_are_refused_before_the_streaming_passes(tmp_path):
    import h5py

    for name, tamper, expected in (
        ("hole", lambda f: f["avail"].__setitem__((5, 1), False), "trajectory 5 has a real step 2 after a padded step 1"),
        ("stuck", lambda f: f["avail"].__setitem__((7, 2, 1), False), "trajectory 7, step 2: agent 1 has no available action"),
        ("pairs", lambda f: f["pairs/first"].__setitem__(0, 99), "pairs/first: expected trajectory indices in [0, 11]"),
    ):
        path = write_random_dataset(tmp_path / f"{name}.h5", N=12, H=3)
        with h5py.File(path, "r+") as f:
            tamper(f)
        msg, said = _said(tmp_path, path=path)
        assert str(path) in msg and expected in msg, msg
        assert not any(s.startswith("pass") for s in said), said


def test_a_dataset_without_pairs_is_refused_with_its_name(tmp_path):
    path = write_random_dataset(tmp_path / "bare.h5", N=6, H=2, with_pairs=False)
    msg, said = _said(tmp_path, path=path)
    assert msg.startswith(f"{path}: no preference pairs") and "--pairs-file" in msg and said == []
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        diagnose(path, pairs_path=tmp_path / "nothere.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(ValueError, match="text.h5: not an HDF5 file"):
        diagnose(tmp_path / "text.h5")


@pytest.mark.parametrize("garbage", [b"garbage\n", bytes(range(256)), b"PK\x03\x04" + b"\0" * 40])
def test_a_garbage_policy_checkpoint_is_refused_naming_the_file(tmp_path, garbage):
    from marlcov.deep.diagnostics import load_policy

    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(garbage)
    with pytest.raises(ValueError, match="policy.pt: not a readable policy checkpoint") as info:
        load_policy(ckpt)
    assert len(str(info.value)) < 300 and "allow_pickle" not in str(info.value)
