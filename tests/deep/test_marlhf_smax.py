"""The MARLHF stack (reward model, reference, offline VDN, evaluation) on episodes padded to the
horizon, as SMAX stores its early ends: a padded step has nothing available, a filler action,
and counts nowhere (``deep.common.step_masks``)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.deep.common import step_masks
from marlcov.deep.marlhf.reference import PolicyNet, behaviour_cloning_loss, check_actions_available
from marlcov.deep.marlhf.reward_model import RewardNet, reward_model_loss, reward_statistics
from marlcov.deep.marlhf.vdn import AgentQNet, offline_rewards, vdn_td_loss
from marlcov.theory.objectives import log_sigmoid
from tests.strategies import float_arrays, int_arrays

pytestmark = pytest.mark.deep

#: float32 losses computed by hand in float64.
HAND_ATOL = 1e-5
#: The same float32 loss summed over trajectories with or without extra zeros (padding).
PAD_ATOL = 1e-5
#: A value far from every real one, put on padded steps: counted anywhere, it would show.
GARBAGE = 1000.0
#: The filler action of padded steps (SMAX's stop action).
FILLER = 0


def _masks(avail):
    valid, last = step_masks(np.asarray(avail))
    return torch.as_tensor(valid), torch.as_tensor(last)


def _avail_of_lengths(lengths, H, m, A):
    """Everything available on the real steps, nothing on the padding."""
    avail = np.zeros((len(lengths), H, m, A), dtype=bool)
    for n, length in enumerate(lengths):
        avail[n, :length] = True
    return avail


# ----------------------------------------------------------------------------- hand computations
def test_step_masks_of_two_padded_episodes():
    valid, last = step_masks(_avail_of_lengths([2, 3], 4, 2, 3))
    assert valid.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert last.tolist() == [[False, True, False, False], [False, False, True, False]]
    avail = _avail_of_lengths([2, 3], 4, 2, 3)
    avail[0, 3] = True  # a real step after the padding
    with pytest.raises(ValueError, match="avail"):
        step_masks(avail)


def test_reward_model_loss_on_padded_pairs_matches_hand_computation():
    """One pair: tau1 of 2 real steps, tau2 of 3, both padded to H = 4, m = 2 agents."""
    r1 = [[0.5, -1.0], [1.5, 0.25], [GARBAGE, GARBAGE], [GARBAGE, -GARBAGE]]
    r2 = [[-0.5, 2.0], [1.0, 0.0], [0.25, -0.75], [-GARBAGE, GARBAGE]]
    y = [1.0, -1.0]
    alpha = 2.0
    # R_i(tau1) = (2.0, -0.75), R_i(tau2) = (0.75, 1.25); margins y_i (R_i(tau1) - R_i(tau2)) = (1.25, 2.0)
    nll = math.log1p(math.exp(-1.25)) + math.log1p(math.exp(-2.0))
    # (2): tau1 has the pair (1, 2) only, tau2 the pairs (1, 2) and (2, 3)
    mse_1 = (1.5 - 0.5) ** 2 + (0.25 + 1.0) ** 2
    mse_2 = (1.0 + 0.5) ** 2 + (0.0 - 2.0) ** 2 + (0.25 - 1.0) ** 2 + (-0.75 - 0.0) ** 2
    mse = (mse_1 + mse_2) / 2
    real = [0.5, -1.0, 1.5, 0.25, -0.5, 2.0, 1.0, 0.0, 0.25, -0.75]
    mean = sum(real) / len(real)
    var = sum((x - mean) ** 2 for x in real) / len(real)
    valid = _masks(_avail_of_lengths([2, 3], 4, 2, 3))[0]
    loss = reward_model_loss(torch.tensor([r1]), torch.tensor([r2]), torch.tensor([y]), alpha, None, valid[:1], valid[1:])
    assert loss.nll.item() == pytest.approx(nll, abs=HAND_ATOL)
    assert loss.mse.item() == pytest.approx(mse, abs=HAND_ATOL)
    assert loss.variance.item() == pytest.approx(var, abs=HAND_ATOL)
    assert loss.total.item() == pytest.approx(nll + alpha / var * mse, abs=HAND_ATOL)
    # E_D and Var_D of r_phi over the real steps of both trajectories
    assert reward_statistics(torch.tensor([r1, r2]), valid) == pytest.approx((mean, var), abs=HAND_ATOL)
    with pytest.raises(ValueError, match="valid_first"):
        reward_model_loss(torch.tensor([r1]), torch.tensor([r2]), torch.tensor([y]), alpha, None, valid[:1], None)


def test_behaviour_cloning_loss_on_padded_trajectories_matches_hand_computation():
    """Trajectories of 2 and 3 real steps padded to 4, one agent, two actions; the padded
    steps' filler action has (almost) zero probability, so counting it would blow the loss up."""
    p0 = [[0.8, 0.3, 1e-30, 1e-30], [0.6, 0.5, 0.9, 1e-30]]  # pi(action 0) per step
    actions = [[0, 1, FILLER, FILLER], [1, 0, 0, FILLER]]
    probs = torch.tensor([[[[p, 1.0 - p]] for p in row] for row in p0], dtype=torch.float64)
    hand = -(math.log(0.8) + math.log(0.7) + math.log(0.4) + math.log(0.5) + math.log(0.9)) / 5
    valid = _masks(_avail_of_lengths([2, 3], 4, 1, 2))[0]
    loss = behaviour_cloning_loss(probs.log(), torch.tensor(actions)[..., None], valid)
    assert loss.item() == pytest.approx(hand, abs=HAND_ATOL)


def _linear_q(W, b):
    """Q_i(o, a) = W[a] . [o, onehot(i)] + b[a] (obs_dim 1, two agents, two actions)."""
    net = AgentQNet(obs_dim=1, n_actions=2, n_agents=2, layers=1)
    with torch.no_grad():
        net.body[0].weight.copy_(torch.tensor(W))
        net.body[0].bias.copy_(torch.tensor(b))
    return net


def test_td_loss_on_padded_trajectories_matches_hand_computation():
    """Linear Q-networks, trajectories of 2 and 3 real steps padded to H = 4: the TD error
    averages over the 5 real steps, the last real step does not bootstrap, and the bootstrap
    max runs over the next step's available actions only."""
    W, b = [[0.5, 0.1, -0.1], [-0.3, 0.2, 0.4]], [0.05, -0.05]
    Wt, bt = [[0.4, 0.0, 0.2], [0.1, -0.2, 0.3]], [0.0, 0.1]
    lengths = [2, 3]
    # obs[n][h][i], H + 1 = 5 entries; after the final observation (entry L) it repeats
    obs = [
        [[1.0, -2.0], [0.5, 3.0], [-1.5, 0.5], [-1.5, 0.5], [-1.5, 0.5]],
        [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5], [1.0, -3.0], [1.0, -3.0]],
    ]
    actions = [[[0, 1], [1, 1], [FILLER, FILLER], [FILLER, FILLER]], [[1, 0], [0, 1], [1, 1], [FILLER, FILLER]]]
    avail = _avail_of_lengths(lengths, 4, 2, 2)
    avail[0, 1, 0, 0] = False  # agent 0 may only take action 1 at step 1 of trajectory 0
    avail[1, 2, 1, 0] = False
    rewards = [[1.0, -0.5, GARBAGE, GARBAGE], [0.25, 2.0, -1.0, GARBAGE]]
    gamma = 0.9

    def q(Wm, bm, o, i, a):
        return Wm[a][0] * o + Wm[a][1 + i] + bm[a]

    errors = []
    for n, length in enumerate(lengths):
        for h in range(length):
            q_tot = sum(q(W, b, obs[n][h][i], i, actions[n][h][i]) for i in range(2))
            target = rewards[n][h]
            if h < length - 1:
                target += gamma * sum(max(q(Wt, bt, obs[n][h + 1][i], i, a) for a in range(2) if avail[n, h + 1, i, a]) for i in range(2))
            errors.append((q_tot - target) ** 2)
    hand = sum(errors) / len(errors)
    valid, last = _masks(avail)
    loss = vdn_td_loss(
        _linear_q(W, b),
        _linear_q(Wt, bt),
        torch.tensor(obs).unsqueeze(-1),
        torch.tensor(actions),
        torch.as_tensor(avail),
        torch.tensor(rewards),
        gamma,
        valid,
        last,
    )
    assert loss.item() == pytest.approx(hand, abs=HAND_ATOL)
    with pytest.raises(ValueError, match="valid, last"):
        vdn_td_loss(
            _linear_q(W, b),
            _linear_q(Wt, bt),
            torch.tensor(obs).unsqueeze(-1),
            torch.tensor(actions),
            torch.as_tensor(avail),
            torch.tensor(rewards),
            gamma,
            valid,
            None,
        )


def test_check_actions_available_skips_padded_steps():
    avail = _avail_of_lengths([2, 3], 4, 2, 5)
    actions = np.full((2, 4, 2), 4, dtype=np.int16)  # the filler is unavailable on padded steps
    check_actions_available(actions, avail, "d.h5")
    avail[1, 2, 0, 4] = False  # ... but not on a real step
    with pytest.raises(ValueError, match=r"d\.h5: field 'avail' .* trajectory 1, step 2, agent 0"):
        check_actions_available(actions, avail, "d.h5")
    avail[0, 3] = True  # a real step after the padding
    with pytest.raises(ValueError, match=r"d\.h5: avail"):
        check_actions_available(actions, avail, "d.h5")


class _ConstantRewardModel:
    """``standardised`` is 1 for every step and agent (padding included)."""

    def standardised(self, obs, actions):
        return torch.ones(actions.shape)


class _FixedReference:
    def __init__(self, log_probs):
        self.table = log_probs

    def log_probs(self, obs, avail):
        return self.table[: obs.shape[0]]


def test_offline_rewards_are_zero_on_padded_steps():
    """r_std (4) and the KL reward of (3) on trajectories of 2 and 3 real steps padded to 4,
    two agents, three actions (agent 1 has two available on real steps)."""
    avail = _avail_of_lengths([2, 3], 4, 2, 3)
    avail[:, :, 1, 2] = False
    actions = torch.zeros(2, 4, 2, dtype=torch.int64)
    p_ref = torch.tensor([[0.5, 0.25, 0.25], [0.6, 0.4, 0.0]]).clamp_min(1e-30).log()
    beta = 0.5
    reference = _FixedReference(p_ref.expand(2, 4, 2, 3))
    rew = offline_rewards(_ConstantRewardModel(), reference, torch.zeros(2, 4, 2, 1), actions, torch.as_tensor(avail), beta)
    kl = beta * ((math.log(0.5) + math.log(3)) + (math.log(0.6) + math.log(2)))
    real = torch.as_tensor(step_masks(avail)[0])
    assert torch.equal(rew["r_std"], torch.where(real, 2.0, 0.0))
    assert torch.allclose(rew["kl"], torch.where(real, kl, 0.0).float(), atol=HAND_ATOL)
    assert torch.equal(rew["total"], rew["r_std"] + rew["kl"])


# ----------------------------------------------------------------------------- unpadded data: the old formulas, exactly
def test_unpadded_batches_give_the_unmasked_formulas_bit_for_bit():
    """Without padding (MPE) every step is real: the masked losses, their gradients and the
    statistics equal the formulas without masks exactly."""
    g = torch.Generator().manual_seed(0)
    B, H, m, A, d = 6, 5, 3, 4, 2
    obs = torch.randn(B, H + 1, m, d, generator=g)
    actions = torch.randint(0, A, (B, H, m), generator=g)
    avail = torch.ones(B, H, m, A, dtype=torch.bool)
    valid, last = _masks(avail)
    labels = torch.where(torch.rand(B // 2, m, generator=g) < 0.5, 1.0, -1.0)

    torch.manual_seed(1)
    net = RewardNet(d, A, m, "gru", hidden=8, layers=2)
    grads = []
    for masked in (True, False):
        net.zero_grad()
        r = net(obs[:, :H], actions)
        r1, r2 = r[: B // 2], r[B // 2 :]
        if masked:
            loss = reward_model_loss(r1, r2, labels, 0.7, None, valid[: B // 2], valid[B // 2 :])
            total = loss.total
        else:
            both = torch.cat([r1, r2])
            nll = -log_sigmoid(labels * (r1.sum(dim=1) - r2.sum(dim=1))).sum(dim=-1).mean()
            mse = (both[:, 1:] - both[:, :-1]).pow(2).sum(dim=(1, 2)).mean()
            total = nll + 0.7 / both.detach().var(unbiased=False).clamp_min(1e-8) * mse
        total.backward()
        grads.append((total.detach(), [p.grad.clone() for p in net.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0]) and all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))
    r = net(obs[:, :H], actions).detach().double()
    assert reward_statistics(r, valid) == (float(r.mean()), float(r.var(unbiased=False)))

    policy = PolicyNet(d, A, m, hidden=8, layers=2)
    logp = policy.log_probs(obs[:, :H], avail)
    assert torch.equal(behaviour_cloning_loss(logp, actions, valid), -logp.gather(-1, actions.unsqueeze(-1)).mean())

    q_net, target = AgentQNet(d, A, m, 8, 2), AgentQNet(d, A, m, 8, 2)
    rewards = torch.randn(B, H, generator=g)
    masked_loss = vdn_td_loss(q_net, target, obs, actions, avail, rewards, 0.9, valid, last)
    q = q_net(obs[:, :H]).gather(-1, actions.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
    with torch.no_grad():
        q_next = target(obs[:, 1:H]).max(dim=-1).values.sum(dim=-1)
        y = rewards + 0.9 * torch.cat([q_next, torch.zeros(B, 1)], dim=1)
    assert torch.equal(masked_loss, (q - y).pow(2).mean())


# ----------------------------------------------------------------------------- property: padding changes nothing
@st.composite
def padded_batches(draw, H, m, A, d, B=4):
    """numpy trajectories of drawn lengths (1..H real steps) stored as SMAX stores them, padded to ``H``."""
    lengths = draw(int_arrays(B, 1, H))
    obs = draw(float_arrays((B, H + 1, m, d), -3.0, 3.0)).astype(np.float32)
    avail = draw(arrays(np.bool_, (B, H, m, A)))
    avail[..., FILLER] = True  # some action is always available on a real step (SMAX: stop)
    actions = np.argmax(draw(float_arrays((B, H, m, A), 0.0, 1.0)) * avail, axis=-1)
    real = np.arange(H)[None, :] < np.asarray(lengths)[:, None]
    avail &= real[..., None, None]
    actions = np.where(real[..., None], actions, FILLER)
    final = obs[np.arange(B), lengths]
    obs = np.where((np.arange(H + 1)[None, :] > np.asarray(lengths)[:, None])[..., None, None], final[:, None], obs)
    rewards = np.where(real, draw(float_arrays((B, H), -3.0, 3.0)), GARBAGE).astype(np.float32)
    return obs, actions, avail, rewards


def _append_padding(obs, actions, avail, rewards, pad):
    return (
        np.concatenate([obs, np.repeat(obs[:, -1:], pad, axis=1)], axis=1),
        np.concatenate([actions, np.full((actions.shape[0], pad, actions.shape[2]), FILLER)], axis=1),
        np.concatenate([avail, np.zeros((avail.shape[0], pad, *avail.shape[2:]), dtype=bool)], axis=1),
        np.concatenate([rewards, np.full((rewards.shape[0], pad), GARBAGE, dtype=np.float32)], axis=1),
    )


def _losses(nets, obs, actions, avail, rewards):
    """The reward-model loss (1) with the batch variance, the BC loss and the VDN TD loss of a
    batch whose first half are the first trajectories of the pairs and second half the second."""
    reward_net, policy, q_net, target = nets
    obs, actions, avail, rewards = (torch.as_tensor(x) for x in (obs, actions, avail, rewards))
    valid, last = _masks(avail)
    H, P = actions.shape[1], actions.shape[0] // 2
    r = reward_net(obs[:, :H], actions)
    labels = torch.tensor([[1.0, -1.0]]).expand(P, 2)
    rm = reward_model_loss(r[:P], r[P:], labels, 0.5, None, valid[:P], valid[P:])
    bc = behaviour_cloning_loss(policy.log_probs(obs[:, :H], avail), actions, valid)
    td = vdn_td_loss(q_net, target, obs, actions, avail, rewards, 0.9, valid, last)
    return torch.stack([rm.total, rm.nll, rm.mse, rm.variance, bc, td])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(2, 5).flatmap(lambda H: padded_batches(H, m=2, A=4, d=3)),
    pad=st.integers(1, 4),
    model=st.sampled_from(["mlp", "gru"]),
)
def test_appending_padding_changes_no_loss(seed, batch, pad, model):
    """Trajectories of drawn lengths in [1, H], padded to H and then to H + pad: the reward
    model loss (every term, the MLP or the GRU), the BC loss and the VDN TD loss are unchanged."""
    m, A, d = 2, 4, 3
    torch.manual_seed(seed)  # the four networks' initial weights (torch draws)
    nets = (
        RewardNet(d, A, m, model, hidden=8, layers=2),
        PolicyNet(d, A, m, hidden=8, layers=2),
        AgentQNet(d, A, m, 8, 2),
        AgentQNet(d, A, m, 8, 2),
    )
    with torch.no_grad():
        short = _losses(nets, *batch)
        long = _losses(nets, *_append_padding(*batch, pad))
    assert torch.isfinite(short).all()
    assert torch.allclose(short, long, rtol=0.0, atol=PAD_ATOL), (short, long)


# ----------------------------------------------------------------------------- end to end on SMAX 3m
@pytest.mark.slow
def test_marlhf_end_to_end_on_smax_3m_with_early_ends(tmp_path):
    """Reward model, reference and offline VDN on a tiny 3m dataset whose episodes end early,
    then evaluation by ``deep.marlhf.evaluate`` and by ``marlcov deep compare``'s MARLHF cell:
    both play the same episodes and report the same return and win rate."""
    from marlcov.deep.compare import algorithm_cell
    from marlcov.deep.data.hdf5 import DatasetWriter
    from marlcov.deep.data.preferences import label_pairs, sample_pairs
    from marlcov.deep.envs.mpe import UniformRandomPolicy
    from marlcov.deep.envs.smax import SMAXBatch
    from marlcov.deep.marlhf.evaluate import evaluate_policy, reward_metrics
    from marlcov.deep.marlhf.reward_model import load_reward_model, train_reward_model

    H, B = 20, 8
    env = SMAXBatch("3m", B, horizon=H)
    batches = [env.rollout(UniformRandomPolicy(k), 100 * k, source="uniform") for k in range(2)]
    avail = np.concatenate([b.avail for b in batches])
    assert not avail.any(axis=(2, 3)).all()  # some episode ended early
    returns = np.concatenate([b.returns() for b in batches])
    first, second = sample_pairs(len(returns), 4, 0)
    data = tmp_path / "smax.h5"
    with DatasetWriter(data, env.spec.dataset_spec()) as w:
        for b in batches:
            w.append(b)
        w.write_pairs(label_pairs(returns, first, second, seed=1))

    rm = train_reward_model(
        data, {"hidden": 16, "layers": 2, "epochs": 3, "batch_size": 16, "alpha": 0.5, "progress": False}, tmp_path / "rm", "cpu", seed=0
    )
    assert math.isfinite(rm["train_nll"]) and rm["reward_var"] > 0
    configs = {
        "reference": {"hidden": 16, "layers": 2, "epochs": 2, "batch_size": 8, "progress": False},
        "offline_vdn": {"hidden": 16, "layers": 2, "batch_size": 8, "updates": 30, "target_update": 10, "beta": 0.5, "progress": False},
    }
    cell = algorithm_cell(
        "marlhf", str(data), str(data), configs, str(tmp_path / "marlhf"), 0, {"episodes": B, "batch_size": B}, reward_model=rm["model"]
    )
    assert math.isfinite(cell["train"]["final_td_loss"]) and math.isfinite(cell["train"]["mean_kl_reward"])
    assert 0.0 <= cell["win_rate"] <= 1.0 and 0.0 <= cell["return_per_agent"] <= 2.0

    ev = evaluate_policy(
        tmp_path / "marlhf" / "vdn" / "policy.pt", "smax_3m", n_episodes=B, seed=0, batch_size=B, env_kwargs={"horizon": H}, progress=False
    )
    assert ev["return_per_agent"] == pytest.approx(cell["return_per_agent"]) and ev["win_rate"] == cell["win_rate"]
    with pytest.raises(ValueError, match="env_kwargs"):
        evaluate_policy(tmp_path / "marlhf" / "vdn" / "policy.pt", "smax_3m", n_episodes=B, env_kwargs={"local_ratio": 0.5})

    metrics = reward_metrics(load_reward_model(rm["model"]), data)
    assert metrics["n_samples"] == int(step_masks(avail)[0].sum()) * env.spec.n_agents
    assert all(math.isfinite(metrics[k]) for k in ("mse", "pred_roughness", "true_roughness"))
