"""MARLHF objectives (1)-(4): hand-computed values, their invariances, and numpy = torch."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.theory.objectives import marlhf

ATOL = 1e-10
small = st.floats(-5, 5, allow_nan=False, width=64)


@st.composite
def pair_batches(draw):
    """Two batches of per-step rewards ``[P, H, m]``, labels ``[P, m]`` and padded step masks."""
    P, H, m = draw(st.integers(1, 4)), draw(st.integers(2, 5)), draw(st.integers(1, 3))
    r1 = draw(arrays(np.float64, (P, H, m), elements=small))
    r2 = draw(arrays(np.float64, (P, H, m), elements=small))
    y = draw(arrays(np.float64, (P, m), elements=st.sampled_from([-1.0, 1.0])))
    len1 = draw(arrays(np.int64, (P,), elements=st.integers(1, H)))
    len2 = draw(arrays(np.int64, (P,), elements=st.integers(1, H)))
    v1 = np.arange(H)[None, :] < len1[:, None]
    v2 = np.arange(H)[None, :] < len2[:, None]
    return r1, r2, y, v1, v2


def test_reward_loss_against_hand_computation():
    # One pair, two agents, three steps; the second trajectory has two real steps.
    r1 = np.array([[[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]])
    r2 = np.array([[[0.5, 1.0], [0.5, 2.0], [9.0, 9.0]]])
    y = np.array([[1.0, -1.0]])
    v1 = np.array([[True, True, True]])
    v2 = np.array([[True, True, False]])
    # R(tau1) = (3, 4), R(tau2) = (1, 3): margins y (R1 - R2) = (2, -1).
    nll = math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))
    # tau1: (1,1)^2 + (-2,2)^2 = 2 + 8; tau2: (0,1)^2 = 1, the step to the padding does not count.
    mse = (10.0 + 1.0) / 2
    alpha, var = 0.5, 4.0
    got = marlhf.reward_loss(r1, r2, y, alpha, var, v1, v2)
    assert got.nll == pytest.approx(nll, abs=ATOL)
    assert got.mse == pytest.approx(mse, abs=ATOL)
    assert got.total == pytest.approx(nll + alpha / var * mse, abs=ATOL)
    with pytest.raises(ValueError, match="valid_first, valid_second"):
        marlhf.reward_loss(r1, r2, y, alpha, var, v1, None)


@settings(max_examples=30, deadline=None)
@given(batch=pair_batches(), alpha=st.floats(0, 10), var=st.floats(1e-3, 10))
def test_numpy_and_torch_compute_the_same_loss(batch, alpha, var):
    torch = pytest.importorskip("torch")
    r1, r2, y, v1, v2 = batch
    a = marlhf.reward_loss(r1, r2, y, alpha, var, v1, v2)
    b = marlhf.reward_loss(*(torch.as_tensor(x) for x in (r1, r2, y)), alpha, var, torch.as_tensor(v1), torch.as_tensor(v2))
    for x, t in zip(a, b):
        assert float(t) == pytest.approx(float(x), rel=1e-12, abs=1e-12)
    both = np.concatenate([r1, r2])
    valid = np.concatenate([v1, v2])
    assert float(marlhf.reward_variance(torch.as_tensor(both), torch.as_tensor(valid))) == pytest.approx(
        float(marlhf.reward_variance(both, valid)), rel=1e-12, abs=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(batch=pair_batches(), scale=st.floats(0.1, 10), alpha=st.floats(0.1, 10))
def test_normalised_regulariser_ignores_the_scale_of_the_rewards(batch, scale, alpha):
    r1, r2, y, v1, v2 = batch
    both, valid = np.concatenate([r1, r2]), np.concatenate([v1, v2])
    var = marlhf.reward_variance(both, valid)
    if var < 1e-6:
        return
    a = marlhf.reward_loss(r1, r2, y, alpha, var, v1, v2)
    b = marlhf.reward_loss(scale * r1, scale * r2, y, alpha, scale**2 * var, v1, v2)
    assert b.total - b.nll == pytest.approx(a.total - a.nll, rel=1e-9, abs=1e-9)
    assert a.nll >= 0.0 and a.mse >= 0.0


@settings(max_examples=30, deadline=None)
@given(r=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 5), st.integers(1, 3)), elements=small), c=small)
def test_constant_along_time_has_zero_mse_and_variance_matches_numpy(r, c):
    assert marlhf.temporal_mse(np.full_like(r, c)) == pytest.approx(0.0, abs=ATOL)
    assert marlhf.reward_variance(r) == pytest.approx(r.var(), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(r=arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 4), st.integers(1, 3)), elements=small))
def test_standardised_rewards_have_mean_zero_and_variance_one(r):
    var = float(r.var())
    if var < 1e-6:
        return
    z = marlhf.standardised_rewards(r, float(r.mean()), var)
    assert z.mean() == pytest.approx(0.0, abs=1e-9)
    assert z.var() == pytest.approx(1.0, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    p=arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 3)), elements=st.floats(1e-6, 1.0)),
    n=st.integers(1, 9),
    beta=st.floats(0, 100),
)
def test_kl_terms_are_the_clipped_log_ratio_to_uniform(p, n, beta):
    n_avail = np.full(p.shape, n)
    raw = beta * (np.log(p) + np.log(n))
    np.testing.assert_allclose(marlhf.kl_reward_terms(np.log(p), n_avail, beta, None), raw, rtol=1e-12, atol=1e-12)
    clipped = marlhf.kl_reward_terms(np.log(p), n_avail, beta)
    lo, hi = marlhf.KL_CLIP
    assert np.all(clipped >= lo) and np.all(clipped <= hi)
    inside = (raw > lo) & (raw < hi)
    np.testing.assert_allclose(clipped[inside], raw[inside], rtol=1e-12, atol=1e-12)
    # The reference equal to the uniform 1/|A| earns nothing.
    np.testing.assert_allclose(marlhf.kl_reward_terms(np.full(p.shape, -np.log(n)), n_avail, beta), 0.0, atol=1e-9)


def test_kl_clip_bounds_are_the_official_ones_and_checked():
    assert marlhf.KL_CLIP == (-10.0, 1.0)
    with pytest.raises(ValueError, match="clip"):
        marlhf.kl_reward_terms(np.zeros(2), np.ones(2), 1.0, (1.0, -1.0))


def test_team_reward_sums_agents_on_real_steps():
    terms = np.arange(12.0).reshape(1, 4, 3)
    valid = np.array([[True, True, True, False]])
    np.testing.assert_allclose(marlhf.team_reward(terms, valid), [[3.0, 12.0, 21.0, 0.0]])
