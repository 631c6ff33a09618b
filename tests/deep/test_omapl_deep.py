"""O-MAPL in torch: its losses against hand-computed values and against the numpy evaluation of
the same ``theory.objectives`` functions that ``marlcov verify`` checks; a tiny training run
that lowers the loss, is deterministic for a seed and resumes exactly after a kill."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.deep

from marlcov.deep.algos import step_masks  # noqa: E402
from marlcov.deep.algos.omapl import OMAPLConfig, omapl_losses, train_omapl  # noqa: E402
from marlcov.deep.checkpoints import load_checkpoint  # noqa: E402
from marlcov.deep.common import TrainingState  # noqa: E402
from marlcov.theory.objectives import omapl as omapl_np  # noqa: E402
from marlcov.theory.objectives import omiga as omiga_np  # noqa: E402
from tests.deep.loss_tolerances import LOSS_ATOL, LOSS_RTOL  # noqa: E402
from tests.deep.synthetic import write_action_zero_reward_dataset  # noqa: E402
from tests.strategies import float_arrays, int_arrays  # noqa: E402

TINY = {"steps": 60, "hidden": 16, "mixer_hidden": 8, "batch_pairs": 8, "lr": 3e-3, "checkpoint_every": 10}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_action_zero_reward_dataset(tmp_path_factory.mktemp("omapl") / "data.h5")


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_losses_on_a_hand_computed_pair():
    """One pair, H = 2, one agent, w = 1, b = 0: traj 1 lasts 2 steps, traj 2 lasts 1."""
    gamma, beta, c = 0.5, 1.0, 0.5
    out = {
        "q_taken": _t([[[1.0], [2.0]], [[0.5], [0.0]]]),
        "v": _t([[[0.5], [0.3], [0.7]], [[0.2], [0.1], [0.4]]]),
        "w": torch.ones(2, 3, 1, dtype=torch.float64),
        "b": torch.zeros(2, 3, dtype=torch.float64),
        "log_pi_taken": _t([[[-0.1], [-0.2]], [[-0.3], [-9.0]]]),
    }
    valid = torch.tensor([[True, True], [True, False]])
    last = torch.tensor([[False, True], [True, False]])
    cfg = OMAPLConfig(gamma=gamma, beta=beta, reg_coef=c)
    terms = omapl_losses(out, valid, last, _t([1.0]), cfg)
    # R1 = (1 - 0.5 * 0.3, 2 - 0) = (0.85, 2); R2 = (0.5 - 0, padded 0).
    r = [0.85, 2.0, 0.5, 0.0]
    phi = sum(x - x * x / 2 for x in r) / 4
    expected_l = math.log(1 / (1 + math.exp(-(2.85 - 0.5)))) + c * phi
    assert float(terms["preference"]) == pytest.approx(expected_l, abs=1e-12)
    z = [1.0 - 0.5, 2.0 - 0.3, 0.5 - 0.2]
    assert float(terms["extreme_v"]) == pytest.approx(sum(math.exp(x) - x - 1 for x in z) / 3, abs=1e-12)
    assert float(terms["wbc"]) == pytest.approx(sum(math.exp(x) * lp for x, lp in zip(z, [-0.1, -0.2, -0.3])) / 3, abs=1e-12)
    assert float(terms["loss"]) == pytest.approx(-expected_l + float(terms["extreme_v"]) - float(terms["wbc"]), abs=1e-12)


def test_gradients_reach_the_documented_networks():
    g = torch.Generator().manual_seed(0)
    out = {
        k: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        for k, shape in (("q_taken", (2, 3, 2)), ("v", (2, 4, 2)), ("w", (2, 4, 2)), ("b", (2, 4)), ("log_pi_taken", (2, 3, 2)))
    }
    valid, last = torch.ones(2, 3, dtype=torch.bool), torch.tensor([[False, False, True]] * 2)
    terms = omapl_losses(out, valid, last, _t([0.7]), OMAPLConfig())
    grad = torch.autograd.grad(terms["preference"], [out["v"], out["q_taken"]], allow_unused=True)
    assert grad[0] is None and grad[1].abs().sum() > 0
    grad = torch.autograd.grad(terms["extreme_v"], [out["q_taken"], out["w"], out["v"]], allow_unused=True)
    assert grad[0] is None and grad[1] is None and grad[2].abs().sum() > 0


@st.composite
def pair_batches(draw):
    """``P`` pairs of episodes (lengths 1..H) and their network outputs: ``Q`` and ``V`` in [-3, 3],
    mixing weights in [0, 3], biases in [-3, 3], log-probabilities in [-3, 0], labels in [0, 1]."""
    P, H, m = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    lengths = draw(int_arrays(2 * P, 1, H))
    q, v = draw(float_arrays((2 * P, H, m), -3.0, 3.0)), draw(float_arrays((2 * P, H + 1, m), -3.0, 3.0))
    w, b = draw(float_arrays((2 * P, H + 1, m), 0.0, 3.0)), draw(float_arrays((2 * P, H + 1), -3.0, 3.0))
    return lengths, q, v, w, b, draw(float_arrays((2 * P, H, m), -3.0, 0.0)), draw(float_arrays(P, 0.0, 1.0))


@settings(max_examples=25, deadline=None)
@given(pair_batches(), st.sampled_from(["global", "local"]), st.floats(0.3, 3.0), st.floats(0.0, 1.0))
def test_deep_losses_equal_the_checked_objectives(batch, value_form, beta, gamma):
    lengths, q, v, w, b, log_pi, y = batch
    P, (H, m) = len(y), q.shape[1:]
    avail = (np.arange(H)[None, :] < lengths[:, None])[:, :, None, None] * np.ones((1, 1, m, 2), dtype=bool)
    valid, last = step_masks(avail)
    cfg = OMAPLConfig(beta=beta, gamma=gamma, value_form=value_form)
    out = {"q_taken": _t(q), "v": _t(v), "w": _t(w), "b": _t(b), "log_pi_taken": _t(log_pi)}
    terms = omapl_losses(out, torch.as_tensor(valid), torch.as_tensor(last), _t(y), cfg)
    # The same objectives evaluated in numpy on the same network outputs.
    q_tot = omapl_np.linear_mix(q, w[:, :H], b[:, :H])
    v_next = np.where(last, 0.0, omapl_np.linear_mix(v[:, 1:], w[:, 1:], b[:, 1:]))
    r = np.where(valid, omapl_np.implied_rewards(q_tot, v_next, gamma), 0.0)
    np.testing.assert_allclose(float(terms["preference"]), omapl_np.preference_objective(r[:P], r[P:], y, cfg.reg_coef), atol=LOSS_ATOL)
    v_tot = omapl_np.linear_mix(v[:, :H], w[:, :H], b[:, :H])
    if value_form == "global":
        expected_v = omapl_np.extreme_v_loss(q_tot[valid], v_tot[valid], beta)
        exponent = (q_tot[valid] - v_tot[valid]) / beta
        expected_pi = omapl_np.wbc_objective(log_pi[valid], q_tot[valid][:, None], v_tot[valid][:, None], beta)
    else:
        expected_v = omiga_np.local_value_loss(q[valid][..., None], v[:, :H][valid], w[:, :H][valid], beta).mean()
        exponent = w[:, :H][valid] * (q[valid] - v[:, :H][valid]) / beta
        expected_pi = omiga_np.local_policy_objective(log_pi[valid], q[valid], v[:, :H][valid], w[:, :H][valid], beta)
    np.testing.assert_allclose(float(terms["extreme_v"]), expected_v, atol=LOSS_ATOL)
    if np.max(exponent) < 10.0:  # below the cap on the behaviour-cloning weights
        np.testing.assert_allclose(float(terms["wbc"]), expected_pi, atol=LOSS_ATOL, rtol=LOSS_RTOL)


def test_training_lowers_the_loss_and_is_deterministic(dataset, tmp_path):
    a = train_omapl(dataset, TINY, tmp_path / "a", seed=3, progress=False)
    b = train_omapl(dataset, TINY, tmp_path / "b", seed=3, progress=False)
    assert a["history"] == b["history"]
    losses = np.array([h["loss"] for h in a["history"]])
    assert losses[-10:].mean() < losses[:10].mean()
    assert all(np.isfinite(h[k]) for h in a["history"] for k in h)
    c = train_omapl(dataset, {**TINY, "steps": 12, "value_form": "local"}, tmp_path / "c", seed=3, progress=False)
    assert c["steps"] == 12 and (tmp_path / "c" / "model.pt").exists() and (tmp_path / "c" / "metrics.json").exists()


def test_killed_run_resumes_exactly(dataset, tmp_path, monkeypatch):
    whole = train_omapl(dataset, TINY, tmp_path / "whole", seed=1, progress=False)
    original = TrainingState.maybe_save

    def killed(self):
        saved = original(self)
        if saved and self.step == 20:
            raise KeyboardInterrupt
        return saved

    with monkeypatch.context() as mp:
        mp.setattr(TrainingState, "maybe_save", killed)
        with pytest.raises(KeyboardInterrupt):
            train_omapl(dataset, TINY, tmp_path / "resumed", seed=1, progress=False)
    resumed = train_omapl(dataset, TINY, tmp_path / "resumed", seed=1, progress=False)
    assert resumed["history"] == whole["history"]
    a = load_checkpoint(tmp_path / "whole" / "model.pt").state_dicts["policy"]
    b = load_checkpoint(tmp_path / "resumed" / "model.pt").state_dicts["policy"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unavailable_dataset_actions_are_rejected(tmp_path):
    import h5py

    path = write_action_zero_reward_dataset(tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:
        avail = f["avail"][()]
        avail[0, 0, 0] = False
        avail[0, 0, 0, 1] = True
        f["avail"][...] = avail
        actions = f["actions"][()]
        actions[0, 0, 0] = 0
        f["actions"][...] = actions
    with pytest.raises(ValueError, match="actions: trajectory 0, step 0, agent 0"):
        train_omapl(path, TINY, tmp_path / "run", progress=False)


def test_bad_config_is_rejected(dataset, tmp_path):
    with pytest.raises(ValueError, match="value_form"):
        train_omapl(dataset, {"value_form": "mixed"}, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown field"):
        train_omapl(dataset, {"temperature": 1.0}, tmp_path / "x", progress=False)
