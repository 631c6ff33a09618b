"""Reward model r_phi(s, a_i) and loss (1)-(2) of the MARLHF paper (section 5.2)."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.deep.checkpoints import load_checkpoint
from marlcov.deep.common import TrainingState
from marlcov.deep.marlhf import reward_model
from marlcov.deep.marlhf.evaluate import plot_reward_trajectory, reward_metrics
from marlcov.deep.marlhf.reward_model import (
    VAR_FLOOR,
    RewardModelConfig,
    RewardNet,
    load_reward_model,
    preference_nll,
    redrawn_labels,
    reward_model_loss,
    temporal_mse,
    train_reward_model,
)
from marlcov.theory.preferences import bradley_terry_probability
from tests.deep.synthetic import best_actions, write_argmax_reward_dataset

pytestmark = pytest.mark.deep

LOSS_ATOL = 1e-5

# A linear reward model r = w . [o, onehot(i), onehot(a)] + b on obs_dim = 1, m = 2, |A| = 2.
W = [0.5, 0.1, -0.2, 0.3, -0.4]
B0 = 0.05
OBS1, ACT1 = [[1.0, -1.0], [2.0, 0.0]], [[0, 1], [1, 0]]  # [h][i]
OBS2, ACT2 = [[0.0, 0.5], [-1.0, 1.0]], [[1, 1], [0, 0]]
Y = [1, -1]


def hand_reward(o, i, a):
    return W[0] * o + W[1 + i] + W[3 + a] + B0


def hand_rewards(obs, act):
    return [[hand_reward(obs[h][i], i, act[h][i]) for i in range(2)] for h in range(2)]


def linear_net():
    net = RewardNet(obs_dim=1, n_actions=2, n_agents=2, model="linear")
    with torch.no_grad():
        net.linear.weight.copy_(torch.tensor([W]))
        net.linear.bias.fill_(B0)
    return net


def net_rewards(net):
    obs = torch.tensor([OBS1, OBS2]).unsqueeze(-1)  # [2 trajectories, H=2, m=2, 1]
    act = torch.tensor([ACT1, ACT2])
    r = net(obs, act)
    return r[:1], r[1:]


def test_linear_model_and_loss_match_hand_computation():
    r1, r2 = hand_rewards(OBS1, ACT1), hand_rewards(OBS2, ACT2)
    # (1): sum_i -log sigma(y_i (R_i(tau1) - R_i(tau2)))
    nll = 0.0
    for i in range(2):
        R1 = r1[0][i] + r1[1][i]
        R2 = r2[0][i] + r2[1][i]
        nll += -math.log(1.0 / (1.0 + math.exp(-Y[i] * (R1 - R2))))
    # (2): mean over the two trajectories of sum_h ||r_{h+1} - r_h||^2
    mse = 0.5 * sum((r[1][i] - r[0][i]) ** 2 for r in (r1, r2) for i in range(2))
    alpha, var_d = 2.0, 0.7
    t1, t2 = net_rewards(linear_net())
    assert np.allclose(t1[0].detach().numpy(), r1, atol=LOSS_ATOL)
    assert np.allclose(t2[0].detach().numpy(), r2, atol=LOSS_ATOL)
    loss = reward_model_loss(t1, t2, torch.tensor([Y], dtype=torch.float32), alpha, var_d)
    assert loss.nll.item() == pytest.approx(nll, abs=LOSS_ATOL)
    assert loss.mse.item() == pytest.approx(mse, abs=LOSS_ATOL)
    assert loss.total.item() == pytest.approx(nll + alpha / var_d * mse, abs=LOSS_ATOL)
    # batch variance: population variance of the 8 predictions
    flat = [x for r in (r1, r2) for row in r for x in row]
    mean = sum(flat) / len(flat)
    var_b = sum((x - mean) ** 2 for x in flat) / len(flat)
    loss_b = reward_model_loss(t1, t2, torch.tensor([Y], dtype=torch.float32), alpha, None)
    assert loss_b.variance.item() == pytest.approx(var_b, abs=LOSS_ATOL)
    assert loss_b.total.item() == pytest.approx(nll + alpha / var_b * mse, abs=LOSS_ATOL)


def test_variance_is_detached():
    """The gradient of (1) with the batch variance equals the gradient with that variance
    frozen as a constant: no gradient flows through Var(r_phi)."""
    labels = torch.tensor([Y], dtype=torch.float32)
    grads = []
    for frozen in (False, True):
        net = linear_net()
        t1, t2 = net_rewards(net)
        var = None
        if frozen:
            var = torch.cat([t1, t2]).var(unbiased=False).item()
        reward_model_loss(t1, t2, labels, 3.0, var).total.backward()
        grads.append(net.linear.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    # ...whereas a variance that is not detached would change the gradient of the MSE term
    net = linear_net()
    t1, t2 = net_rewards(net)
    both = torch.cat([t1, t2])
    (preference_nll(t1, t2, labels) + 3.0 / both.var(unbiased=False) * temporal_mse(both)).backward()
    assert not torch.allclose(grads[0], net.linear.weight.grad, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(arrays(np.float64, (3, 2), elements=st.floats(-5, 5)), st.integers(2, 6), st.floats(0.1, 10))
def test_mse_term_vanishes_for_time_constant_rewards(levels, horizon, alpha):
    r = torch.tensor(levels).unsqueeze(1).expand(3, horizon, 2)  # constant along time
    labels = torch.ones(1, 2)
    loss = reward_model_loss(r[:1], r[1:2], labels, alpha, 1.0)
    assert float(temporal_mse(r)) == 0.0
    assert float(loss.total) == pytest.approx(float(loss.nll), abs=LOSS_ATOL)


@settings(max_examples=20, deadline=None)
@given(
    arrays(np.float64, (4, 3, 2), elements=st.floats(-3, 3)),
    arrays(np.float64, (4, 3, 2), elements=st.floats(-3, 3)),
    arrays(np.int8, (4, 2), elements=st.sampled_from([-1, 1])),
)
def test_nll_is_the_bradley_terry_negative_log_likelihood(r1, r2, y):
    p_first = bradley_terry_probability(r1.sum(axis=1), r2.sum(axis=1), 1.0)  # P(y_i = +1)
    likelihood = np.where(y == 1, p_first, 1.0 - p_first)
    expected = -np.log(likelihood).sum(axis=1).mean()
    got = float(preference_nll(torch.tensor(r1), torch.tensor(r2), torch.tensor(y)))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_variance_floor_keeps_constant_model_finite():
    r = torch.zeros(2, 3, 2)
    loss = reward_model_loss(r[:1], r[1:], torch.ones(1, 2), 1.0, None)
    assert float(loss.variance) == pytest.approx(VAR_FLOOR) and math.isfinite(float(loss.total))


@pytest.mark.parametrize("model", ["mlp", "gru", "linear"])
def test_shapes_and_gru_causality(model):
    torch.manual_seed(0)
    net = RewardNet(obs_dim=4, n_actions=3, n_agents=2, model=model, hidden=8, layers=3)
    obs, act = torch.randn(5, 6, 2, 4), torch.randint(0, 3, (5, 6, 2))
    r = net(obs, act)
    assert r.shape == (5, 6, 2)
    obs2 = obs.clone()
    obs2[:, 4:] += 1.0
    r2 = net(obs2, act)
    assert torch.allclose(r[:, :4], r2[:, :4])  # no step sees the future
    if model != "gru":
        assert torch.allclose(r[:, 5], net(obs[:, 5:], act[:, 5:])[:, 0])  # per-step model: no memory


TINY = {"model": "mlp", "hidden": 32, "layers": 3, "epochs": 12, "batch_size": 64, "val_fraction": 0.2, "progress": False}


def test_training_learns_the_reward_from_preferences(tmp_path):
    """The synthetic reward is white noise along time, which the MSE regulariser (2) opposes
    (scaled by 1/Var, it drives such a model to a constant), so this is the NLL alone."""
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=128, horizon=4)
    res = train_reward_model(data, dict(TINY, alpha=0.0), tmp_path / "rm", "cpu", seed=0)
    chance_nll = 2 * math.log(2)  # a constant reward model, two agents
    assert res["val_nll"] < 0.75 * chance_nll
    assert res["val_accuracy"] > 0.7
    model = load_reward_model(res["model"])
    # higher predicted reward for the rewarded action than for the others, on fresh observations
    obs = torch.randn(256, 1, 2, 4)
    best = torch.as_tensor(best_actions(obs.numpy()))
    r_all = torch.stack([model.rewards(obs, torch.full_like(best, a)) for a in range(3)], dim=-1)
    assert float((r_all.argmax(dim=-1) == best).float().mean()) > 0.8
    metrics = reward_metrics(model, data)
    assert metrics["mse"] < 1.0  # 2.0 for an uncorrelated prediction
    history = json.loads((tmp_path / "rm" / "metrics.json").read_text())["history"]
    assert len(history) == TINY["epochs"] and history[-1]["nll"] < history[0]["nll"]
    png = plot_reward_trajectory({"alpha=1": model}, data, 0, tmp_path / "fig.png")
    assert png.stat().st_size > 1000


def test_regularisation_gives_smoother_predictions(tmp_path):
    """Section 6.3: alpha > 0 gives smoother predicted rewards than alpha = 0."""
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=64, horizon=4)
    rough = {}
    for alpha in (0.0, 1.0):
        res = train_reward_model(data, dict(TINY, alpha=alpha, epochs=6), tmp_path / f"rm{alpha}", "cpu", seed=0)
        rough[alpha] = reward_metrics(load_reward_model(res["model"]), data)["pred_roughness"]
    assert rough[1.0] < 0.5 * rough[0.0]


def test_reward_metrics_against_known_predictions(tmp_path):
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=20, horizon=4)

    class Affine:
        """Predicts 2 * (true reward) + 3: standardisation makes it a perfect prediction."""

        def __init__(self, sign):
            self.sign = sign

        def rewards(self, obs, actions):
            best = torch.as_tensor(best_actions(obs.numpy()))
            return self.sign * 2.0 * (actions == best).double() + 3.0

    assert reward_metrics(Affine(1.0), data, batch_size=7)["mse"] == pytest.approx(0.0, abs=1e-9)
    assert reward_metrics(Affine(-1.0), data)["mse"] == pytest.approx(4.0, abs=1e-9)  # E[(-z - z)^2] = 4


def _interrupt_at(monkeypatch, step):
    original = TrainingState.maybe_save

    def maybe_save(self):
        saved = original(self)
        if saved and self.step == step:
            raise KeyboardInterrupt
        return saved

    monkeypatch.setattr(TrainingState, "maybe_save", maybe_save)


@pytest.mark.parametrize("variance", ["dataset", "batch", "none"])
@pytest.mark.parametrize("model", ["mlp", "gru"])
def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch, model, variance):
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=40, horizon=3, pairs_per_trajectory=4)
    cfg = dict(TINY, model=model, variance=variance, epochs=4, batch_size=32, checkpoint_every=5)  # 4 steps/epoch, 16 steps
    whole = train_reward_model(data, cfg, tmp_path / "whole", "cpu", seed=3)
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 10)  # mid-epoch: epoch 2, batch 2
        with pytest.raises(KeyboardInterrupt):
            train_reward_model(data, cfg, tmp_path / "cut", "cpu", seed=3)
    assert not (tmp_path / "cut" / "reward_model.pt").exists()
    assert torch.load(tmp_path / "cut" / "train_state.pt", weights_only=True)["step"] == 10
    steps = []
    loss_fn = reward_model.reward_model_loss
    monkeypatch.setattr(reward_model, "reward_model_loss", lambda *a: steps.append(1) or loss_fn(*a))
    resumed = train_reward_model(data, cfg, tmp_path / "cut", "cpu", seed=3)
    monkeypatch.undo()
    assert len(steps) == 6  # it continued; it did not start again
    a = load_checkpoint(whole["model"]).state_dicts["reward"]
    b = load_checkpoint(resumed["model"]).state_dicts["reward"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_nll"] == whole["train_nll"]
    other = train_reward_model(data, cfg, tmp_path / "other", "cpu", seed=4)
    c = load_checkpoint(other["model"]).state_dicts["reward"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_redrawn_labels_follow_the_probabilities_and_depend_only_on_seed_and_step():
    probs = torch.tensor([[0.0, 1.0, 0.25, 0.9]]).expand(20_000, 4)
    y = redrawn_labels(probs, seed=1, step=7)
    assert set(torch.unique(y).tolist()) <= {-1.0, 1.0}
    assert bool((y[:, 0] == -1).all()) and bool((y[:, 1] == 1).all())
    frac = (y[:, 2:] > 0).double().mean(dim=0)
    sigma = torch.sqrt(probs[0, 2:].double() * (1 - probs[0, 2:].double()) / 20_000)
    assert bool((frac - probs[0, 2:].double()).abs().lt(5 * sigma).all())
    assert torch.equal(y, redrawn_labels(probs, seed=1, step=7))
    assert not torch.equal(y, redrawn_labels(probs, seed=1, step=8))


def test_fixed_and_redrawn_labels_train_and_redrawn_needs_probabilities(tmp_path):
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=40, horizon=3, pairs_per_trajectory=4)
    cfg = dict(TINY, epochs=1)
    fixed = train_reward_model(data, dict(cfg, labels="fixed"), tmp_path / "fixed", "cpu", seed=0)
    redrawn = train_reward_model(data, cfg, tmp_path / "redrawn", "cpu", seed=0)
    a = load_checkpoint(fixed["model"]).state_dicts["reward"]
    b = load_checkpoint(redrawn["model"]).state_dicts["reward"]
    assert not all(torch.equal(a[k], b[k]) for k in a)
    from marlcov.deep.data.hdf5 import DatasetReader, read_pairs, write_pairs_file

    with DatasetReader(data) as reader:
        pairs = reader.pairs()
        pairs.probs = None
        write_pairs_file(tmp_path / "noprobs.pairs.h5", pairs, reader)
        assert read_pairs(tmp_path / "noprobs.pairs.h5", reader).probs is None
    with pytest.raises(ValueError, match="'probs'.*labels='fixed'"):
        train_reward_model(data, cfg, tmp_path / "x", "cpu", seed=0, pairs_path=tmp_path / "noprobs.pairs.h5")
    train_reward_model(data, dict(cfg, labels="fixed"), tmp_path / "y", "cpu", seed=0, pairs_path=tmp_path / "noprobs.pairs.h5")
    with pytest.raises(ValueError, match="labels"):
        RewardModelConfig(labels="sometimes")


def test_resume_refuses_a_changed_config(tmp_path):
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=20, horizon=3, pairs_per_trajectory=2)
    cfg = dict(TINY, epochs=1)
    train_reward_model(data, cfg, tmp_path / "rm", "cpu", seed=0)
    with pytest.raises(ValueError, match="another config"):
        train_reward_model(data, dict(cfg, alpha=0.0), tmp_path / "rm", "cpu", seed=0)
    train_reward_model(data, dict(cfg, alpha=0.0), tmp_path / "rm", "cpu", seed=0, resume=False)


def test_config_validation_and_file_format(tmp_path):
    (tmp_path / "rm.yaml").write_text("model: gru\nalpha: 0.5\nepochs: 1\nprogress: false\n")
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=12, horizon=3, pairs_per_trajectory=2)
    res = train_reward_model(data, tmp_path / "rm.yaml", tmp_path / "rm", "cpu", seed=0)
    model = load_reward_model(res["model"])
    assert model.meta["config"].model == "gru" and model.meta["config"].alpha == 0.5
    with pytest.raises(ValueError, match="model"):
        RewardModelConfig(model="transformer")
    with pytest.raises(ValueError, match="alpha"):
        RewardModelConfig(alpha=-1.0)
    ramp = RewardModelConfig(alpha=2.0, alpha_warmup_epochs=4)
    assert [ramp.alpha_at(e) for e in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert RewardModelConfig(alpha=2.0).alpha_at(0) == 2.0
    torch.save({"format": "marlcov.deep-policy/1"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="format"):
        load_reward_model(tmp_path / "bad.pt")
