"""Imitation reference pi_ref by behaviour cloning (MARLHF paper, section 5.3)."""

import json
import math

import numpy as np
import pytest
import torch

from marlcov.deep.checkpoints import load_checkpoint
from marlcov.deep.common import TrainingState
from marlcov.deep.marlhf.reference import (
    PolicyNet,
    ReferenceConfig,
    behaviour_cloning_loss,
    check_actions_available,
    load_reference,
    train_reference,
)
from tests.deep.synthetic import best_actions, write_argmax_reward_dataset

pytestmark = pytest.mark.deep

LOSS_ATOL = 1e-6
TINY = {"hidden": 32, "layers": 2, "epochs": 15, "batch_size": 16, "val_fraction": 0.25, "progress": False}


def test_masked_log_probs_and_loss_match_hand_computation():
    """One linear layer (layers=1): logits = W [o, onehot(i)] + b; with action 2 masked for
    agent 1, its softmax runs over actions 0 and 1 only."""
    net = PolicyNet(obs_dim=1, n_actions=3, n_agents=2, layers=1)
    W = [[1.0, 0.0, 0.5], [-1.0, 0.2, 0.0], [0.3, -0.4, 0.1]]  # [action][o, id0, id1]
    b = [0.0, 0.1, -0.2]
    with torch.no_grad():
        net.body[0].weight.copy_(torch.tensor(W))
        net.body[0].bias.copy_(torch.tensor(b))
    obs = [0.7, -1.2]
    avail = [[True, True, True], [True, True, False]]
    actions = [2, 1]
    expected_logp = []
    for i in range(2):
        logits = [W[a][0] * obs[i] + W[a][1 + i] + b[a] for a in range(3)]
        z = math.log(sum(math.exp(logits[a]) for a in range(3) if avail[i][a]))
        expected_logp.append([logits[a] - z if avail[i][a] else None for a in range(3)])
    logp = net.log_probs(torch.tensor(obs).reshape(1, 2, 1), torch.tensor([avail]))[0]
    for i in range(2):
        for a in range(3):
            if avail[i][a]:
                assert logp[i, a].item() == pytest.approx(expected_logp[i][a], abs=LOSS_ATOL)
            else:
                assert logp[i, a].exp().item() == 0.0
    loss = behaviour_cloning_loss(logp.unsqueeze(0), torch.tensor([actions]))
    hand = -(expected_logp[0][2] + expected_logp[1][1]) / 2
    assert loss.item() == pytest.approx(hand, abs=LOSS_ATOL)


def test_check_actions_available():
    avail = np.ones((2, 3, 2, 4), dtype=bool)
    actions = np.zeros((2, 3, 2), dtype=np.int16)
    check_actions_available(actions, avail)
    avail[1, 2, 0, 0] = False
    with pytest.raises(ValueError, match="avail"):
        check_actions_available(actions, avail)


def test_cloning_recovers_the_behaviour_policy(tmp_path):
    """Behaviour: the rewarded action with probability 0.9, else uniform; its mode is the
    rewarded action, which pi_ref must learn to rank first on fresh observations."""
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=160, horizon=4, p_best=0.9, pairs_per_trajectory=1)
    res = train_reference(data, dict(TINY, batch_size=32, epochs=25), tmp_path / "ref", "cpu", seed=0)
    assert res["val_accuracy"] > 0.8
    ref = load_reference(res["model"])
    obs = torch.randn(512, 1, 2, 4)  # first steps of fresh trajectories (the default reference is a GRU)
    best = torch.as_tensor(best_actions(obs.numpy()))
    logp = ref.log_probs(obs)
    assert float((logp.argmax(dim=-1) == best).float().mean()) > 0.9
    # the behaviour puts 0.9 + 0.1/3 on its mode; a short cloning run gets well above chance
    p_mode = logp.exp().gather(-1, best.unsqueeze(-1)).mean().item()
    assert 0.5 < p_mode < 0.99
    assert torch.equal(ref(obs[:, 0], torch.ones(512, 2, 3, dtype=torch.bool), 0), logp[:, 0].argmax(dim=-1))


def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch):
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=40, horizon=3, pairs_per_trajectory=1)
    cfg = dict(TINY, epochs=3, checkpoint_every=4)  # 30 train trajectories, 2 steps/epoch, 6 steps
    whole = train_reference(data, cfg, tmp_path / "whole", "cpu", seed=1)
    original = TrainingState.maybe_save

    def interrupt(self):
        saved = original(self)
        if saved and self.step == 4:
            raise KeyboardInterrupt
        return saved

    with monkeypatch.context() as mp:
        mp.setattr(TrainingState, "maybe_save", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_reference(data, cfg, tmp_path / "cut", "cpu", seed=1)
    assert torch.load(tmp_path / "cut" / "train_state.pt", weights_only=True)["step"] == 4
    resumed = train_reference(data, cfg, tmp_path / "cut", "cpu", seed=1)
    a = load_checkpoint(whole["model"]).state_dicts["reference"]
    b = load_checkpoint(resumed["model"]).state_dicts["reference"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_nll"] == whole["train_nll"]


def test_config_and_format_errors(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        ReferenceConfig(epochs=0)
    torch.save({"format": "marlcov.deep-reward-model/1"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format"):
        load_reference(tmp_path / "x.pt")


def test_gru_reference_acting_step_by_step_equals_its_trajectory_log_probs():
    """A GRU pi_ref depends on the agent's history only: stepping it through an episode (hidden
    state carried, reset at t = 0) gives the log-probabilities of the whole-trajectory pass."""
    from marlcov.deep.marlhf.reference import ReferencePolicy

    torch.manual_seed(0)
    net = PolicyNet(obs_dim=4, n_actions=3, n_agents=2, hidden=8, layers=2, model="gru").eval()
    obs = torch.randn(5, 6, 2, 4)
    avail = torch.ones(5, 6, 2, 3, dtype=torch.bool)
    avail[:, 2, 1, 0] = False
    whole = net.log_probs(obs, avail)
    changed = obs.clone()
    changed[:, 4:] += 1.0
    assert torch.allclose(net.log_probs(changed, avail)[:, :4], whole[:, :4])  # no step sees the future
    assert not torch.allclose(net.log_probs(changed, avail)[:, 4:], whole[:, 4:])
    policy = ReferencePolicy(net, {})
    for _episode in range(2):  # the second episode starts afresh at t = 0
        for t in range(6):
            assert torch.equal(policy(obs[:, t], avail[:, t], t), whole[:, t].argmax(dim=-1))
    with pytest.raises(ValueError, match="trajectories"):
        net(obs[:, 0])


def test_gru_is_the_default_and_old_mlp_files_still_load(tmp_path):
    data = write_argmax_reward_dataset(tmp_path / "d.h5", n=24, horizon=3)
    assert ReferenceConfig().model == "gru"
    res = train_reference(data, dict(TINY, epochs=2), tmp_path / "gru", "cpu", seed=0)
    assert load_reference(res["model"]).net.kind == "gru"
    mlp_res = train_reference(data, dict(TINY, epochs=2, model="mlp"), tmp_path / "mlp", "cpu", seed=0)
    new = load_checkpoint(mlp_res["model"])
    fields = dict(new.config)
    del fields["model"]  # a reference file written before the GRU option, in the format of then
    old_file = {
        "format": "marlcov.deep-reference/1",
        "config": json.dumps(fields),
        "sizes": json.dumps(new.networks["reference"]),
        "state_dict": new.state_dicts["reference"],
        "metrics": json.dumps(new.meta["metrics"]),
    }
    torch.save(old_file, tmp_path / "old.pt")
    old = load_reference(tmp_path / "old.pt")
    assert old.net.kind == "mlp"
    obs = torch.randn(3, 3, 2, 4)
    assert torch.equal(old.log_probs(obs), load_reference(mlp_res["model"]).log_probs(obs))
    with pytest.raises(ValueError, match="model"):
        ReferenceConfig(model="lstm")
