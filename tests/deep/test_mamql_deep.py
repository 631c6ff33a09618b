"""Offline MAMQL (Haynam et al., section IV): marginalised critics, Boltzmann policies, the
IQ-Learn criterion with the chi-squared regulariser, reward recovery."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.deep.algos.mamql import (
    MAMQLConfig,
    demonstration_mask,
    fit_mamql,
    joint_action_values,
    load_mamql,
    mamql_terms,
    marginalised_critics,
    recovered_rewards,
    reward_loss,
    train_mamql,
)
from marlcov.deep.data.hdf5 import DatasetWriter
from marlcov.theory.objectives import mamql as theory_mamql
from tests.deep.synthetic import write_argmax_demonstrations
from tests.strategies import float_arrays, int_arrays

pytestmark = pytest.mark.deep

ATOL = 1e-5
#: The deep loss and the theory function on the same float64 numbers.
LOSS_ATOL = 1e-10


class FixedCritic(torch.nn.Module):
    """A critic whose output ``[B, T, m, A, .., A]`` is a given table, whatever the observation."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float64))

    def forward(self, obs):
        return self.table


def test_marginalised_critic_and_iq_objective_match_hand_computation():
    """Two agents, two actions, one trajectory of one step (H = 1, so V(s_2) = 0).

    Q_1 = [[1, 3], [0, 2]] (rows a_1), Q_2 = [[2, 0], [0, 2]]; uniform policies (0 sweeps):
    qbar_1 = (2, 1), qbar_2 = (1, 1). lam = 1: V_1 = log(e^2 + e^1), V_2 = 1 + log 2.
    Expert actions (0, 1): x_i = qbar_i(a_i) - gamma * 0; J_i = x_i - c x_i^2 - V_i(s_1).
    """
    q1 = [[1.0, 3.0], [0.0, 2.0]]
    q2 = [[2.0, 0.0], [0.0, 2.0]]
    table = torch.tensor([[[q1, q2], [q1, q2]]], dtype=torch.float64)  # [B=1, T=2, m=2, 2, 2]
    cfg = MAMQLConfig(lam=1.0, gamma=0.9, reg_coef=0.25, policy_iterations=0)
    obs = torch.zeros(1, 2, 2, 3)
    actions = torch.tensor([[[0, 1]]])
    avail = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    terms = mamql_terms(FixedCritic(table), obs, actions, avail, cfg)
    v1, v2 = math.log(math.exp(2) + math.exp(1)), 1 + math.log(2)
    x1, x2 = 2.0, 1.0
    hand = [x1 - 0.25 * x1**2 - v1, x2 - 0.25 * x2**2 - v2]
    assert terms["objective"].tolist() == pytest.approx(hand, abs=ATOL)
    assert terms["loss"].item() == pytest.approx(-sum(hand), abs=ATOL)
    assert terms["v_next"].abs().max().item() == 0.0
    # one Boltzmann sweep: pi_2 ∝ exp(1, 1) stays uniform, pi_1 ∝ (e^2, e^1); qbar_2 = pi_1 Q_2
    qbar, pi = marginalised_critics(table[:, 0], 2, 1.0, 1)
    p1 = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
    assert pi[0, 0].tolist() == pytest.approx(p1.tolist(), abs=ATOL)
    assert qbar[0, 1].tolist() == pytest.approx((p1 @ np.array(q2)).tolist(), abs=ATOL)
    assert qbar[0, 0].tolist() == pytest.approx([2.0, 1.0], abs=ATOL)


def test_recovered_reward_is_the_inverse_soft_bellman_operator():
    terms = {"q_taken": torch.tensor([[[1.0, 2.0], [0.5, -1.0]]]), "v_next": torch.tensor([[[0.4, 1.0], [0.0, 0.0]]])}
    got = recovered_rewards(terms, 0.5)
    assert got.flatten().tolist() == pytest.approx([0.8, 1.5, 0.5, -1.0], abs=ATOL)


def test_joint_action_values_reads_the_joint_action():
    table = torch.randn(4, 3, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    actions = torch.tensor([[0, 1, 2], [2, 2, 2], [1, 0, 0], [0, 0, 1]])
    got = joint_action_values(table, actions)
    want = torch.stack([table[b, :, a[0], a[1], a[2]] for b, a in enumerate(actions)])
    assert torch.equal(got, want)


def _numpy_policies(tables, lam, sweeps):
    """Fixed-point Boltzmann policies with the theory functions alone (numpy, float64)."""
    m, A = len(tables), tables[0].shape[-1]
    pis = [np.full(tables[0].shape[:-m], 1.0 / A)[..., None].repeat(A, -1) for _ in range(m)]
    for _ in range(sweeps):
        pis = [theory_mamql.boltzmann_policy(theory_mamql.marginalise(tables[i], pis, i), lam) for i in range(m)]
    return pis


@settings(max_examples=15, deadline=None)
@given(
    data=st.data(),
    m=st.integers(1, 3),
    A=st.integers(2, 3),
    H=st.integers(1, 3),
    sweeps=st.integers(0, 3),
    lam=st.floats(0.2, 3.0),
    gamma=st.floats(0.0, 1.0),
    c=st.floats(0.0, 1.0),
)
def test_deep_loss_equals_the_checked_objective(data, m, A, H, sweeps, lam, gamma, c):
    """The torch loss is theory.objectives.mamql.iq_learn_objective of the marginalised critics,
    here recomputed in numpy from the theory functions alone on drawn joint tables."""
    B = 3
    table = data.draw(float_arrays((B, H + 1, m) + (A,) * m, -3.0, 3.0))
    actions = data.draw(int_arrays((B, H, m), 0, A - 1))
    cfg = MAMQLConfig(lam=lam, gamma=gamma, reg_coef=c, policy_iterations=sweeps)
    terms = mamql_terms(
        FixedCritic(table), torch.zeros(B, H + 1, m, 1), torch.as_tensor(actions), torch.ones(B, H, m, A, dtype=torch.bool), cfg
    )
    tables = [table[:, :, i] for i in range(m)]
    pis = _numpy_policies(tables, lam, sweeps)
    for i in range(m):
        qbar = theory_mamql.marginalise(tables[i], pis, i)
        v = theory_mamql.soft_value(qbar, lam)
        q_taken = np.take_along_axis(qbar[:, :H], actions[..., i : i + 1], axis=-1)[..., 0]
        v_next = np.concatenate([v[:, 1:H], np.zeros((B, 1))], axis=1)
        want = theory_mamql.iq_learn_objective(q_taken, v_next, v[:, 0], gamma, c)
        assert terms["objective"][i].item() == pytest.approx(float(want), abs=LOSS_ATOL)


def test_reward_loss_matches_hand_computation():
    """One agent, two actions, H = 2, gamma = 0.5: R(o_h, a_h) = table[h, a_h] = (1, -1) at
    actions (0, 1); rbar = q_taken - gamma v_next = (2 - 0.5, 0.5 - 0); loss = mean of (R - rbar)^2."""
    reward_net = FixedCritic([[[[1.0, 3.0]], [[0.0, -1.0]]]])  # [B=1, H=2, m=1, A=2]
    terms = {
        "q_taken": torch.tensor([[[2.0], [0.5]]], dtype=torch.float64),
        "v_next": torch.tensor([[[1.0], [0.0]]], dtype=torch.float64),
        "valid": torch.ones(1, 2, dtype=torch.bool),
    }
    got = reward_loss(reward_net, torch.zeros(1, 3, 1, 1), torch.tensor([[[0], [1]]]), terms, 0.5)
    assert got.item() == pytest.approx(((1.0 - 1.5) ** 2 + (-1.0 - 0.5) ** 2) / 2, abs=LOSS_ATOL)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), m=st.integers(1, 3), A=st.integers(2, 3), H=st.integers(1, 3), gamma=st.floats(0.0, 1.0))
def test_reward_recovery_equals_the_checked_functions(data, m, A, H, gamma):
    """Reward recovery: ``recovered_rewards`` is theory's ``inverse_soft_bellman`` and
    ``reward_loss`` its ``reward_regression_loss`` (the functions of the ``mamql.reward_recovery``
    check) on the same float64 numbers, padding steps excluded."""
    B = 3
    table = data.draw(float_arrays((B, H, m) + (A,) * m, -3.0, 3.0))
    actions = data.draw(int_arrays((B, H, m), 0, A - 1))
    q_taken, v_next = data.draw(float_arrays((B, H, m), -3.0, 3.0)), data.draw(float_arrays((B, H, m), -3.0, 3.0))
    valid = np.arange(H)[None, :] < data.draw(int_arrays(B, 1, H))[:, None]
    terms = {"q_taken": torch.as_tensor(q_taken), "v_next": torch.as_tensor(v_next), "valid": torch.as_tensor(valid)}
    np.testing.assert_allclose(
        recovered_rewards(terms, gamma).numpy(), theory_mamql.inverse_soft_bellman(q_taken, v_next, gamma), atol=LOSS_ATOL
    )
    got = reward_loss(FixedCritic(table), torch.zeros(B, H + 1, m, 1), torch.as_tensor(actions), terms, gamma)
    r_pred = np.stack([table[(b, h, i, *actions[b, h])] for b in range(B) for h in range(H) for i in range(m)]).reshape(B, H, m)
    want = theory_mamql.reward_regression_loss(r_pred[valid], q_taken[valid], v_next[valid], gamma)
    assert got.item() == pytest.approx(float(want), abs=LOSS_ATOL)


def test_unavailable_actions_get_no_probability():
    table = torch.zeros(1, 2, 3, 3)
    table[0, 0, 2, :] = 10.0  # agent 0 would love action 2, which is unavailable
    avail = torch.tensor([[[True, True, False], [True, True, True]]])
    _, pi = marginalised_critics(table, 2, 1.0, 2, avail)
    assert pi[0, 0, 2].item() == 0.0 and pi[0, 0].sum().item() == pytest.approx(1.0)


def test_demonstration_mask_filters_tags():
    arrays = {
        "actions": np.zeros((3, 1, 2)),
        "source": np.array(["expert", "mix", "random"]),
        "agent_policy": np.array([["expert", "expert"], ["expert", "rookie"], ["rookie", "rookie"]]),
    }
    assert demonstration_mask(arrays, "agent_policy", ("expert",)).tolist() == [True, False, False]
    assert demonstration_mask(arrays, "source", ("expert", "mix")).tolist() == [True, True, False]
    assert demonstration_mask(arrays, "all", ()).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="demo_field"):
        demonstration_mask(arrays, "level", ("expert",))


def test_training_imitates_the_expert_and_recovers_its_reward(tmp_path):
    """On the expert half only, the Boltzmann policy's greedy action matches the expert's on
    most demonstration steps and the recovered reward correlates positively with the truth."""
    path = write_argmax_demonstrations(tmp_path / "d.h5")
    cfg = MAMQLConfig(hidden=64, layers=2, lr=3e-3, batch_size=16, updates=300, checkpoint_every=0, demo_field="source")
    res = train_mamql(path, cfg, tmp_path / "run", seed=0, progress=False)
    assert res["n_demonstrations"] == 32 and res["n_trajectories"] == 64
    assert res["demo_greedy_agreement"] > 0.9
    assert res["reward_corr_inverse_operator"] > 0.3
    policy, reward_net = load_mamql(res["policy"], greedy=True)
    obs = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(3))
    acts = policy(obs, torch.ones(5, 2, 3, dtype=torch.bool), 0)
    assert acts.shape == (5, 2)
    with pytest.raises(ValueError, match="no trajectory"):
        train_mamql(path, MAMQLConfig(updates=1, demo_tags=("nobody",)), tmp_path / "run2", progress=False)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    """N updates in one go, and a run killed after N/2 + 1 updates (checkpoint at N/2) then
    resumed, give identical parameters; two runs with one seed are identical."""
    from marlcov.deep.common import load_dataset_arrays

    path = write_argmax_demonstrations(tmp_path / "d.h5", n=16)
    _, arrays = load_dataset_arrays(path, ["obs", "actions", "avail"])
    obs = torch.as_tensor(arrays["obs"])
    actions = torch.as_tensor(arrays["actions"].astype(np.int64))
    avail = torch.as_tensor(arrays["avail"])
    cfg = MAMQLConfig(hidden=16, layers=2, batch_size=4, updates=12, checkpoint_every=6, demo_field="all")
    c_full, r_full, _ = fit_mamql(obs, actions, avail, cfg, 1, progress=False)
    state = tmp_path / "train_state.pt"
    with pytest.raises(KeyboardInterrupt):
        _interrupted_fit(obs, actions, avail, cfg, state, {"run": 1}, stop_after=7)
    assert state.exists()
    c_res, r_res, _ = fit_mamql(obs, actions, avail, cfg, 1, state, True, {"run": 1}, progress=False)
    c_again, _, _ = fit_mamql(obs, actions, avail, cfg, 1, progress=False)
    for net in (c_res, c_again):
        for p, q in zip(c_full.parameters(), net.parameters()):
            assert torch.equal(p, q)
    for p, q in zip(r_full.parameters(), r_res.parameters()):
        assert torch.equal(p, q)


def _interrupted_fit(obs, actions, avail, cfg, state_path, run_config, stop_after):
    """Run ``fit_mamql`` and raise KeyboardInterrupt at its ``stop_after``-th optimiser step."""
    calls = {"n": 0}
    original = torch.optim.Adam.step

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2 * stop_after:  # two optimisers step per update
            raise KeyboardInterrupt
        return original(self, *a, **k)

    torch.optim.Adam.step = step
    try:
        fit_mamql(obs, actions, avail, cfg, 1, state_path, True, run_config, progress=False)
    finally:
        torch.optim.Adam.step = original


def test_config_validation():
    with pytest.raises(ValueError, match="lam"):
        MAMQLConfig(lam=0.0)
    with pytest.raises(ValueError, match="demo_field"):
        MAMQLConfig(demo_field="level")


def test_end_to_end_on_mpe_spread(tmp_path):
    """A tiny simple_spread dataset (expert-tagged and rookie-tagged halves), trained on the
    expert half and evaluated in the environment."""
    from marlcov.deep.envs.mpe import MPEBatch, UniformRandomPolicy

    env = MPEBatch("simple_spread_v3", 8, horizon=5)
    expert = env.rollout(UniformRandomPolicy(0), 0, source="collect", agent_policy=["expert"] * 3)
    rookie = env.rollout(UniformRandomPolicy(1), 100, source="collect", agent_policy=["expert", "rookie", "expert"])
    with DatasetWriter(tmp_path / "spread.h5", env.spec.dataset_spec()) as w:
        w.append(expert)
        w.append(rookie)
    cfg = MAMQLConfig(hidden=32, layers=2, batch_size=4, updates=10, checkpoint_every=0, eval_episodes=8)
    res = train_mamql(tmp_path / "spread.h5", cfg, tmp_path / "run", seed=0, progress=False)
    assert res["n_demonstrations"] == 8 and res["n_trajectories"] == 16
    assert math.isfinite(res["eval_return_per_agent"]) and res["eval_return_per_agent"] < 0  # spread rewards are negative distances
    assert (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "train_state.pt").exists()


@settings(max_examples=10, deadline=None)
@given(data=st.data(), pad=st.integers(1, 3), sweeps=st.integers(0, 2))
def test_padding_steps_do_not_change_the_objective(data, pad, sweeps):
    """Episodes of 2 real steps padded with ``pad`` steps of no available action (as SMAX stores
    early ends) have the objective of the unpadded episodes; the value after the last real
    step is zero."""
    B, m, A, H = 3, 2, 3, 2
    table = data.draw(float_arrays((B, H + 1 + pad, m, A, A), -3.0, 3.0))
    actions = data.draw(int_arrays((B, H + pad, m), 0, A - 1))
    avail = np.zeros((B, H + pad, m, A), dtype=bool)
    avail[:, :H] = True
    cfg = MAMQLConfig(lam=0.7, gamma=0.9, reg_coef=0.3, policy_iterations=sweeps)
    padded = mamql_terms(FixedCritic(table), torch.zeros(B, H + 1 + pad, m, 1), torch.as_tensor(actions), torch.as_tensor(avail), cfg)
    # unpadded: the value after step H is zero there too, whatever obs H + 1 holds
    short = mamql_terms(
        FixedCritic(table[:, : H + 1]),
        torch.zeros(B, H + 1, m, 1),
        torch.as_tensor(actions[:, :H]),
        torch.ones(B, H, m, A, dtype=torch.bool),
        cfg,
    )
    assert torch.allclose(padded["objective"], short["objective"], atol=1e-10)
    assert padded["valid"][:, H:].sum().item() == 0 and padded["v_next"][:, H - 1 :].abs().max().item() == 0.0


@pytest.mark.slow
def test_end_to_end_on_smax_3m_with_early_ends(tmp_path):
    """SMAX 3m episodes end early (padded steps with nothing available): training and
    evaluation run, and the evaluation reports a win rate."""
    from marlcov.deep.envs.mpe import UniformRandomPolicy
    from marlcov.deep.envs.smax import SMAXBatch

    env = SMAXBatch("3m", 8, horizon=20)
    batch = env.rollout(UniformRandomPolicy(0), 0, source="expert")
    assert not batch.avail.any(axis=(2, 3)).all()  # some episode ended early
    with DatasetWriter(tmp_path / "smax.h5", env.spec.dataset_spec()) as w:
        w.append(batch)
    cfg = MAMQLConfig(hidden=32, layers=2, batch_size=4, updates=5, checkpoint_every=0, eval_episodes=8, demo_field="source")
    res = train_mamql(tmp_path / "smax.h5", cfg, tmp_path / "run", seed=0, progress=False)
    assert math.isfinite(res["final_loss"]) and math.isfinite(res["demo_log_likelihood"])
    assert 0.0 <= res["eval_win_rate"] <= 1.0 and 0.0 <= res["eval_return_per_agent"] <= 2.0
