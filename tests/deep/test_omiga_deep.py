"""OMIGA in torch: losses against hand-computed values and against the numpy evaluation of the
``theory.objectives.omiga`` functions, Proposition 4.4's minimiser reached by gradient descent,
training on dataset rewards or on a reward function, resumption, and greedy evaluation on MPE."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.deep

from marlcov.deep.algos import step_masks  # noqa: E402
from marlcov.deep.algos.omiga import OMIGAConfig, evaluate_omiga, omiga_losses, train_omiga  # noqa: E402
from marlcov.deep.common import TrainingState  # noqa: E402
from marlcov.deep.data.hdf5 import DatasetWriter  # noqa: E402
from marlcov.deep.envs.mpe import MPEBatch, UniformRandomPolicy  # noqa: E402
from marlcov.theory.objectives import omapl as omapl_np  # noqa: E402
from marlcov.theory.objectives import omiga as omiga_np  # noqa: E402
from tests.deep.loss_tolerances import LOSS_ATOL, LOSS_RTOL  # noqa: E402
from tests.deep.synthetic import write_action_zero_reward_dataset  # noqa: E402
from tests.strategies import float_arrays, int_arrays  # noqa: E402

TINY = {"steps": 60, "hidden": 16, "mixer_hidden": 8, "batch_trajectories": 8, "lr": 3e-3, "checkpoint_every": 10}
#: Gradient descent on Proposition 4.4's objective gets this close to its closed-form minimiser.
MINIMISER_ATOL = 1e-6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_action_zero_reward_dataset(tmp_path_factory.mktemp("omiga") / "data.h5", seed=4)


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_losses_on_hand_computed_steps():
    """One trajectory of two steps, one agent with w = 2, b = 0.5, alpha = 1, gamma = 0.5."""
    out = {
        "q_taken": _t([[[1.0], [2.0]]]),
        "q_target_taken": _t([[[1.5], [0.5]]]),
        "v": _t([[[0.2], [0.4], [0.9]]]),
        "w": torch.full((1, 3, 1), 2.0, dtype=torch.float64),
        "b": torch.full((1, 3), 0.5, dtype=torch.float64),
        "log_pi_taken": _t([[[-0.1], [-0.2]]]),
    }
    valid, last = torch.tensor([[True, True]]), torch.tensor([[False, True]])
    terms = omiga_losses(out, _t([[1.0, 0.0]]), valid, last, OMIGAConfig(alpha=1.0, gamma=0.5))
    assert float(terms["value"]) == pytest.approx((math.exp(2 * 1.3) + 0.4 + math.exp(2 * 0.1) + 0.8) / 2, abs=1e-12)
    # Q_tot = (2.5, 4.5); targets 1 + 0.5 * (2 * 0.4 + 0.5) = 1.65 and 0 (last step).
    assert float(terms["q"]) == pytest.approx(((2.5 - 1.65) ** 2 + 4.5**2) / 2, abs=1e-12)
    assert float(terms["policy"]) == pytest.approx((math.exp(2.6) * -0.1 + math.exp(0.2) * -0.2) / 2, abs=1e-12)


@st.composite
def network_outputs(draw):
    """Episode lengths and the network outputs of a batch: ``Q``, target ``Q``, ``V`` and rewards in
    [-3, 3], mixing weights in [0, 3], log-probabilities in [-3, 0]."""
    B, H, m = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    lengths = draw(int_arrays(B, 1, H))
    q, q_tgt = draw(float_arrays((B, H, m), -3.0, 3.0)), draw(float_arrays((B, H, m), -3.0, 3.0))
    v, w, b = (
        draw(float_arrays((B, H + 1, m), -3.0, 3.0)),
        draw(float_arrays((B, H + 1, m), 0.0, 3.0)),
        draw(float_arrays((B, H + 1), -3.0, 3.0)),
    )
    log_pi, r = draw(float_arrays((B, H, m), -3.0, 0.0)), draw(float_arrays((B, H), -3.0, 3.0))
    return lengths, q, q_tgt, v, w, b, log_pi, r


@settings(max_examples=25, deadline=None)
@given(network_outputs(), st.floats(0.3, 3.0), st.floats(0.0, 1.0))
def test_deep_losses_equal_the_checked_objectives(outputs, alpha, gamma):
    lengths, q, q_tgt, v, w, b, log_pi, r = outputs
    B, H, m = q.shape
    avail = (np.arange(H)[None, :] < lengths[:, None])[:, :, None, None] * np.ones((1, 1, m, 2), dtype=bool)
    valid, last = step_masks(avail)
    out = {"q_taken": _t(q), "q_target_taken": _t(q_tgt), "v": _t(v), "w": _t(w), "b": _t(b), "log_pi_taken": _t(log_pi)}
    terms = omiga_losses(out, _t(r), torch.as_tensor(valid), torch.as_tensor(last), OMIGAConfig(alpha=alpha, gamma=gamma))
    wv, vv = w[:, :H][valid], v[:, :H][valid]
    np.testing.assert_allclose(
        float(terms["value"]), omiga_np.local_value_loss(q_tgt[valid][..., None], vv, wv, alpha).mean(), atol=LOSS_ATOL
    )
    v_next = np.where(last, 0.0, omapl_np.linear_mix(v[:, 1:], w[:, 1:], b[:, 1:]))
    td = omapl_np.linear_mix(q, w[:, :H], b[:, :H]) - (r + gamma * v_next)
    np.testing.assert_allclose(float(terms["q"]), np.mean(td[valid] ** 2), atol=LOSS_ATOL)
    if np.max(wv * (q_tgt[valid] - vv) / alpha) < 10.0:  # below the cap on the policy weights
        expected = omiga_np.local_policy_objective(log_pi[valid], q_tgt[valid], vv, wv, alpha)
        np.testing.assert_allclose(float(terms["policy"]), expected, atol=LOSS_ATOL, rtol=LOSS_RTOL)


def test_value_loss_descent_reaches_the_closed_form():
    """Minimising Proposition 4.4's objective over samples of one observation gives
    ``V* = (alpha/w) log mean exp(w Q/alpha)``."""
    q = torch.tensor([[0.3, -1.2, 2.0, 0.7]], dtype=torch.float64)
    w, alpha = torch.tensor([1.7], dtype=torch.float64), 0.8
    v = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([v], lr=1.0, max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        opt.zero_grad()
        loss = omiga_np.local_value_loss(q, v, w, alpha).sum()
        loss.backward()
        return loss

    opt.step(closure)
    expected = omiga_np.local_value_closed_form(q.numpy(), w.numpy(), alpha)
    np.testing.assert_allclose(v.detach().numpy(), expected, atol=MINIMISER_ATOL)


def test_training_is_deterministic_and_lowers_the_q_loss(dataset, tmp_path):
    a = train_omiga(dataset, TINY, tmp_path / "a", seed=2, progress=False)
    b = train_omiga(dataset, TINY, tmp_path / "b", seed=2, progress=False)
    assert a["history"] == b["history"] and a["rewards"] == "dataset"
    q = np.array([h["q"] for h in a["history"]])
    assert q[-10:].mean() < q[:10].mean()


def test_reward_function_that_reproduces_the_rewards_gives_the_same_run(dataset, tmp_path):
    """The synthetic dataset pays 1 per agent choosing action 0 on a real step."""

    def reward_fn(obs, actions):
        return (actions == 0).float()

    a = train_omiga(dataset, {**TINY, "steps": 15}, tmp_path / "a", seed=5, progress=False)
    b = train_omiga(dataset, {**TINY, "steps": 15}, tmp_path / "b", seed=5, progress=False, reward_fn=reward_fn)
    assert b["rewards"] == "reward_fn" and a["history"] == b["history"]
    with pytest.raises(ValueError, match="reward_fn"):
        train_omiga(
            dataset,
            {**TINY, "steps": 2},
            tmp_path / "c",
            seed=5,
            progress=False,
            reward_fn=lambda obs, actions: torch.zeros(actions.shape[:2]),
        )


def test_killed_run_resumes_exactly(dataset, tmp_path, monkeypatch):
    whole = train_omiga(dataset, TINY, tmp_path / "whole", seed=1, progress=False)
    original = TrainingState.maybe_save

    def killed(self):
        saved = original(self)
        if saved and self.step == 30:
            raise KeyboardInterrupt
        return saved

    with monkeypatch.context() as mp:
        mp.setattr(TrainingState, "maybe_save", killed)
        with pytest.raises(KeyboardInterrupt):
            train_omiga(dataset, TINY, tmp_path / "resumed", seed=1, progress=False)
    resumed = train_omiga(dataset, TINY, tmp_path / "resumed", seed=1, progress=False)
    assert resumed["history"] == whole["history"]


def test_greedy_evaluation_on_mpe(tmp_path):
    env = MPEBatch("simple_spread_v3", 8, horizon=5)
    path = tmp_path / "spread.h5"
    with DatasetWriter(path, env.spec.dataset_spec()) as writer:
        writer.append(env.rollout(UniformRandomPolicy(0), 0, source="uniform"))
    metrics = train_omiga(path, {**TINY, "steps": 5, "eval_episodes": 8}, tmp_path / "run", progress=False, evaluate=True)
    again = evaluate_omiga(tmp_path / "run" / "model.pt", n_episodes=8)
    assert again == metrics["eval"] and again["episodes"] == 8 and "win_rate" not in again
    # simple_spread rewards are negative distances and collision penalties.
    assert np.isfinite(again["return_mean"]) and again["return_mean"] < 0


def test_trains_on_a_marlhf_reward_model(dataset, tmp_path):
    from marlcov.deep.marlhf.reward_model import RewardNet, TrainedRewardModel

    torch.manual_seed(0)
    model = TrainedRewardModel(RewardNet(4, 3, 2, hidden=8, layers=2), mean=0.0, var=1.0, meta={})
    metrics = train_omiga(dataset, {**TINY, "steps": 4}, tmp_path / "rm", seed=0, progress=False, reward_fn=model.standardised)
    assert metrics["rewards"] == "standardised" and metrics["steps"] == 4
    assert all(np.isfinite(v) for h in metrics["history"] for v in h.values())


def test_config_from_a_json_file(dataset, tmp_path):
    import json

    from marlcov.deep.config_model import config_values

    path = tmp_path / "omiga.json"
    path.write_text(json.dumps(config_values(OMIGAConfig(**{**TINY, "steps": 3}))))
    metrics = train_omiga(dataset, path, tmp_path / "run", progress=False)
    assert metrics["steps"] == 3
