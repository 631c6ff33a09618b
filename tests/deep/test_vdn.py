"""Offline VDN with the standardised reward (4) and the KL reward of (3) (MARLHF paper, 5.3)."""

import math

import numpy as np
import pytest
import torch

from marlcov.deep.checkpoints import CHECKPOINT_FORMAT
from marlcov.deep.common import TrainingState
from marlcov.deep.marlhf.reference import train_reference
from marlcov.deep.marlhf.reward_model import train_reward_model
from marlcov.deep.marlhf.vdn import (
    AgentQNet,
    GreedyPolicy,
    OfflineVDNConfig,
    fit_offline_vdn,
    kl_reward,
    load_policy,
    save_policy,
    train_offline_vdn,
    vdn_td_loss,
)
from tests.deep.synthetic import best_actions, write_argmax_reward_dataset

pytestmark = pytest.mark.deep

ATOL = 1e-5


def test_kl_reward_is_beta_times_log_ref_plus_log_action_count():
    """Section 5.3: with pi_w = 1/|A|, -beta log(pi_w / pi_ref) = beta (log pi_ref + log |A|),
    summed over agents; |A| counts the available actions."""
    p_ref = [[0.5, 0.25, 0.25], [0.6, 0.4, 0.0]]  # agent 1 cannot take action 2
    avail = [[True, True, True], [True, True, False]]
    actions = [1, 0]
    beta = 0.7
    hand = beta * ((math.log(0.25) + math.log(3)) + (math.log(0.6) + math.log(2)))
    logp = torch.log(torch.tensor([p_ref]).clamp_min(1e-30))
    got = kl_reward(logp, torch.tensor([actions]), torch.tensor([avail]), beta)
    assert got.shape == (1,) and got.item() == pytest.approx(hand, abs=ATOL)
    # a reference equal to the uniform policy gives no KL reward at all
    uniform = torch.log(torch.tensor([[[1 / 3] * 3, [0.5, 0.5, 1e-30]]]))
    assert kl_reward(uniform, torch.tensor([actions]), torch.tensor([avail]), 5.0).item() == pytest.approx(0.0, abs=ATOL)


def test_td_loss_matches_hand_computation():
    """Linear Q_i(o, a) = W[a] . [o, onehot(i)] + b[a]; two steps, two agents, two actions;
    the bootstrap max skips an unavailable action and the last step does not bootstrap."""
    W, b = [[0.5, 0.1, -0.1], [-0.3, 0.2, 0.4]], [0.05, -0.05]
    Wt, bt = [[0.4, 0.0, 0.2], [0.1, -0.2, 0.3]], [0.0, 0.1]
    obs = [[1.0, -2.0], [0.5, 3.0], [9.0, 9.0]]  # [h][i], H + 1 = 3 entries
    actions = [[0, 1], [1, 1]]
    avail = [[[True, True], [True, True]], [[True, True], [False, True]]]
    rewards = [1.0, -0.5]
    gamma = 0.9

    def q(Wm, bm, o, i, a):
        return Wm[a][0] * o + Wm[a][1 + i] + bm[a]

    q_tot = [sum(q(W, b, obs[h][i], i, actions[h][i]) for i in range(2)) for h in range(2)]
    boot = sum(max(q(Wt, bt, obs[1][i], i, a) for a in range(2) if avail[1][i][a]) for i in range(2))
    targets = [rewards[0] + gamma * boot, rewards[1]]
    hand = sum((q_tot[h] - targets[h]) ** 2 for h in range(2)) / 2

    def linear(Wm, bm):
        net = AgentQNet(obs_dim=1, n_actions=2, n_agents=2, layers=1)
        with torch.no_grad():
            net.body[0].weight.copy_(torch.tensor(Wm))
            net.body[0].bias.copy_(torch.tensor(bm))
        return net

    loss = vdn_td_loss(
        linear(W, b),
        linear(Wt, bt),
        torch.tensor([obs]).unsqueeze(-1),
        torch.tensor([actions]),
        torch.tensor([avail]),
        torch.tensor([rewards]),
        gamma,
    )
    assert loss.item() == pytest.approx(hand, abs=ATOL)

    # Double Q: the online network picks each agent's available action, the target values it.
    # With these online weights agent 0's pick (action 1) is not the target's argmax (action 0).
    W2, b2 = [[-0.5, 0.1, -0.1], [0.3, 0.2, 0.4]], [0.05, -0.05]
    q_tot2 = [sum(q(W2, b2, obs[h][i], i, actions[h][i]) for i in range(2)) for h in range(2)]
    picks = [max((a for a in range(2) if avail[1][i][a]), key=lambda a: q(W2, b2, obs[1][i], i, a)) for i in range(2)]
    assert picks == [1, 1]
    boot_double = sum(q(Wt, bt, obs[1][i], i, picks[i]) for i in range(2))
    targets_double = [rewards[0] + gamma * boot_double, rewards[1]]
    hand_double = sum((q_tot2[h] - targets_double[h]) ** 2 for h in range(2)) / 2
    loss = vdn_td_loss(
        linear(W2, b2),
        linear(Wt, bt),
        torch.tensor([obs]).unsqueeze(-1),
        torch.tensor([actions]),
        torch.tensor([avail]),
        torch.tensor([rewards]),
        gamma,
        double_q=True,
    )
    assert loss.item() == pytest.approx(hand_double, abs=ATOL)
    single = vdn_td_loss(
        linear(W2, b2),
        linear(Wt, bt),
        torch.tensor([obs]).unsqueeze(-1),
        torch.tensor([actions]),
        torch.tensor([avail]),
        torch.tensor([rewards]),
        gamma,
    )
    assert single.item() != pytest.approx(loss.item(), abs=1e-3)


def test_kl_reward_is_clipped_per_agent():
    """The paper's public code clips each agent's term to [-10, 1] before summing over agents."""
    p_ref = [[0.98, 0.01, 0.01], [0.98, 0.01, 0.01]]
    avail = [[True, True, True], [True, True, True]]
    actions = [0, 1]  # agent 0 follows the mode (term > 1), agent 1 does not (term < -10 at beta = 5)
    beta = 5.0
    logp = torch.log(torch.tensor([p_ref]))
    raw = [beta * (math.log(0.98) + math.log(3)), beta * (math.log(0.01) + math.log(3))]
    assert raw[0] > 1.0 and raw[1] < -10.0
    got = kl_reward(logp, torch.tensor([actions]), torch.tensor([avail]), beta)
    assert got.item() == pytest.approx(1.0 - 10.0, abs=ATOL)
    unclipped = kl_reward(logp, torch.tensor([actions]), torch.tensor([avail]), beta, clip=None)
    assert unclipped.item() == pytest.approx(sum(raw), abs=ATOL)


def test_defaults_follow_the_official_code():
    cfg = OfflineVDNConfig()
    assert cfg.gamma == 0.9 and cfg.double_q and cfg.target_update == 3 and cfg.kl_clip == (-10.0, 1.0)
    assert OfflineVDNConfig(kl_clip=[-2, 2]).kl_clip == (-2.0, 2.0)
    assert OfflineVDNConfig(kl_clip=None).kl_clip is None
    with pytest.raises(ValueError, match="kl_clip"):
        OfflineVDNConfig(kl_clip=(1.0, -1.0))


def _synthetic_tensors(n=256, horizon=3, m=2, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, horizon + 1, m, d, generator=g)
    actions = torch.randint(0, 3, (n, horizon, m), generator=g)
    avail = torch.ones(n, horizon, m, 3, dtype=torch.bool)
    best = torch.as_tensor(best_actions(obs[:, :horizon].numpy()))
    return obs, actions, avail, best


FAST = {"hidden": 32, "layers": 2, "batch_size": 32, "updates": 600, "target_update": 50, "gamma": 0.5, "progress": False}


def _greedy_accuracy(net, n=512, m=2, d=4, seed=1):
    obs = torch.randn(n, m, d, generator=torch.Generator().manual_seed(seed))
    policy = GreedyPolicy(net)
    acts = policy(obs, torch.ones(n, m, 3, dtype=torch.bool), 0)
    return float((acts == torch.as_tensor(best_actions(obs.numpy()))).float().mean())


def test_greedy_policy_learns_the_known_best_action():
    obs, actions, avail, best = _synthetic_tensors()
    rewards = (actions == best).float().sum(dim=-1)  # team reward: agents on their best action
    net, history = fit_offline_vdn(obs, actions, avail, rewards, OfflineVDNConfig(**FAST), seed=0)
    assert _greedy_accuracy(net) > 0.9
    assert history[-1]["td_loss"] < history[0]["td_loss"]


def test_kl_reward_alone_makes_q_learning_follow_the_reference_mode():
    """Section 5.3: with r_std = 0, Q-learning on the substituted KL reward picks, for each
    agent, the action the reference policy prefers."""
    obs, actions, avail, best = _synthetic_tensors(seed=2)
    ref_log_probs = torch.log_softmax(3.0 * obs[:, :-1, :, :3], dim=-1)  # mode: argmax o[:3]
    rewards = kl_reward(ref_log_probs, actions, avail, beta=1.0)
    net, _ = fit_offline_vdn(obs, actions, avail, rewards, OfflineVDNConfig(**FAST), seed=0)
    assert _greedy_accuracy(net) > 0.9


def test_masked_actions_are_never_chosen():
    torch.manual_seed(0)
    net = AgentQNet(obs_dim=4, n_actions=3, n_agents=2, hidden=8, layers=2)
    obs = torch.randn(64, 2, 4)
    avail = torch.ones(64, 2, 3, dtype=torch.bool)
    avail[:, :, 0] = False
    avail[:32, 1, 2] = False
    for eps in (0.0, 0.5, 1.0):
        acts = GreedyPolicy(net, eps, torch.Generator().manual_seed(1))(obs, avail, 0)
        assert bool(avail.gather(-1, acts.unsqueeze(-1)).all())


def test_resumed_fit_equals_uninterrupted(tmp_path, monkeypatch):
    obs, actions, avail, best = _synthetic_tensors(n=64)
    rewards = (actions == best).float().sum(dim=-1)
    cfg = OfflineVDNConfig(**dict(FAST, updates=40, target_update=7, checkpoint_every=10))
    whole, _ = fit_offline_vdn(obs, actions, avail, rewards, cfg, seed=5, state_path=tmp_path / "a.pt")
    original = TrainingState.maybe_save

    def interrupt(self):
        saved = original(self)
        if saved and self.step == 20:
            raise KeyboardInterrupt
        return saved

    with monkeypatch.context() as mp:
        mp.setattr(TrainingState, "maybe_save", interrupt)
        with pytest.raises(KeyboardInterrupt):
            fit_offline_vdn(obs, actions, avail, rewards, cfg, seed=5, state_path=tmp_path / "b.pt")
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 20
    resumed, _ = fit_offline_vdn(obs, actions, avail, rewards, cfg, seed=5, state_path=tmp_path / "b.pt")
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pipeline_from_preferences_to_a_policy(tmp_path):
    """Reward model, reference and offline VDN on files, end to end: the greedy policy of the
    learnt reward picks the rewarded action far more often than chance (1/3)."""
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=160, horizon=3, p_best=0.5)
    rm = train_reward_model(
        data, {"hidden": 32, "layers": 3, "epochs": 10, "batch_size": 64, "alpha": 0.0, "progress": False}, tmp_path / "rm", "cpu", seed=0
    )
    ref = train_reference(
        data, {"hidden": 32, "layers": 2, "epochs": 10, "batch_size": 32, "progress": False}, tmp_path / "ref", "cpu", seed=0
    )
    (tmp_path / "vdn.yaml").write_text(
        "hidden: 32\nlayers: 2\nbatch_size: 32\nupdates: 500\ntarget_update: 50\ngamma: 0.5\nbeta: 0.3\nprogress: false\n"
    )
    res = train_offline_vdn(data, rm["model"], ref["model"], tmp_path / "vdn.yaml", tmp_path / "vdn", "cpu", seed=0)
    policy = load_policy(res["policy"], env_name="synthetic")
    assert policy.meta["trainer"] == "offline-vdn" and policy.meta["config"]["beta"] == 0.3
    assert _greedy_accuracy(policy.net) > 0.7
    assert res["mean_kl_reward"] != 0.0
    # beta = 0 needs no reference
    res0 = train_offline_vdn(data, rm["model"], None, dict(FAST, updates=20, beta=0.0), tmp_path / "vdn0", "cpu", seed=0)
    assert res0["mean_kl_reward"] == 0.0
    with pytest.raises(ValueError, match="reference"):
        train_offline_vdn(data, rm["model"], None, dict(FAST, updates=20, beta=1.0), tmp_path / "vdn1", "cpu", seed=0)


def test_policy_file_format_is_validated(tmp_path):
    net = AgentQNet(obs_dim=4, n_actions=3, n_agents=2, hidden=8, layers=2)
    path = save_policy(tmp_path / "p.pt", net, "simple_spread_v3", {"x": 1}, {"level": "expert"})
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == CHECKPOINT_FORMAT and obj["env_name"] == "simple_spread_v3"
    p = load_policy(path)
    assert p.meta["level"] == "expert" and p.env_name == "simple_spread_v3"
    obs = torch.randn(5, 2, 4)
    assert torch.equal(p(obs, torch.ones(5, 2, 3, dtype=torch.bool), 0), net(obs).argmax(-1))
    with pytest.raises(ValueError, match="env_name"):
        load_policy(path, env_name="simple_tag_v3")
    for field in ("networks", "state_dicts"):
        broken = dict(obj)
        del broken[field]
        torch.save(broken, tmp_path / "b.pt")
        with pytest.raises(ValueError, match=field):
            load_policy(tmp_path / "b.pt")
    broken = dict(obj, networks='{"q": {"obs_dim": 5, "n_actions": 3, "n_agents": 2, "hidden": 8, "layers": 2}}')
    torch.save(broken, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_policy(tmp_path / "c.pt")
    torch.save(dict(obj, format="marlcov.deep-policy/0"), tmp_path / "d.pt")
    with pytest.raises(ValueError, match="format"):
        load_policy(tmp_path / "d.pt")


def test_config_validation():
    with pytest.raises(ValueError, match="beta"):
        OfflineVDNConfig(beta=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        OfflineVDNConfig(gamma=1.5)
    with pytest.raises(ValueError, match="unknown"):
        train_offline_vdn("x.h5", "rm.pt", None, {"betta": 1.0}, "out")
    assert np.isclose(OfflineVDNConfig().beta, 1.0)
