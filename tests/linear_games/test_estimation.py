import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from marlcov.linear_games.estimation import (
    bradley_terry_mle_constrained,
    bradley_terry_mle_ridge,
    confidence_radius,
    one_hot_features,
    reward_confidence,
    reward_mle,
    trajectory_feature_differences,
)
from marlcov.theory.coverage import reward_covariance
from marlcov.theory.games import random_linear_markov_game
from marlcov.theory.policies import uniform_policy
from marlcov.theory.preferences import sample_preference_dataset
from tests.strategies import float_arrays, linear_markov_games, preference_datasets

#: Both MLEs minimise the same NLL to within this fraction of its value (Clarabel's duality-gap
#: tolerance is 1e-8, L-BFGS's gradient tolerance far below): agreement is measured in the NLL and
#: in the Fisher norm it implies, ||Delta||_H <= sqrt(2 gap), not coordinate by coordinate, which
#: the conditioning of the data would make a matter of chance.
NLL_RTOL = 1e-8
#: A point this fraction beyond the radius is outside, far above ``NORM_RTOL`` (the rounding of the norm).
OUTSIDE_FRACTION = 1e-6


def _logistic_data(seed, n=400, dim=3, scale=0.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    theta = rng.normal(size=dim) * scale
    y = np.where(rng.random(n) < expit(x @ theta), 1, -1)
    return x, y


# A seeded sample of the logistic model: the MLE exists (the constraint is inactive) for data that
# are not separable, which 400 labels drawn from the model are; drawn labels may be separable.
@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_constrained_and_ridge_mle_agree_when_constraint_is_inactive(seed):
    x, y = _logistic_data(seed)
    constrained = bradley_terry_mle_constrained(x, y, horizon=1, radius=100.0)
    ridge = bradley_terry_mle_ridge(x, y, ridge=0.0)
    assert np.linalg.norm(constrained) < 100.0 - 1.0

    def nll(theta):
        return float(np.sum(np.logaddexp(0.0, -y * (x @ theta))))

    gap = NLL_RTOL * nll(ridge)
    assert abs(nll(constrained) - nll(ridge)) <= gap
    z = x @ ridge
    fisher = (x * (expit(z) * expit(-z))[:, None]).T @ x
    delta = constrained - ridge
    assert np.sqrt(delta @ fisher @ delta) <= 2.0 * np.sqrt(2.0 * gap)


def test_ridge_mle_is_stationary_for_its_objective():
    x, y = _logistic_data(3)
    ridge = 0.7
    theta = bradley_terry_mle_ridge(x, y, ridge)
    z = y * (x @ theta)
    grad = -(x * y[:, None]).T @ expit(-z) + ridge * theta
    assert np.max(np.abs(grad)) < 1e-6


def test_constrained_mle_respects_the_per_step_ball_on_separable_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = np.where(x @ np.array([3.0, -2.0, 1.0, 0.5]) > 0, 1, -1)  # separable: the MLE runs to the ball
    theta = bradley_terry_mle_constrained(x, y, horizon=2, radius=1.5)
    norms = np.linalg.norm(theta.reshape(2, 2), axis=1)
    assert np.all(norms <= 1.5 + 1e-6)
    assert np.max(norms) > 1.5 - 1e-3


def test_confidence_radius_is_the_printed_formula():
    d, H, n, delta, lam = 4, 3, 250, 0.05, 2.0
    expected = 1.5 * np.sqrt((d * H + np.log(1 / delta)) / (lam**2 * n) + d)
    assert confidence_radius(d, H, n, delta, lam, constant=1.5) == pytest.approx(expected, rel=1e-14)
    with pytest.raises(ValueError, match="delta"):
        confidence_radius(d, H, n, 1.5)


def _game_and_data(seed, n=300, horizon=2):
    game = random_linear_markov_game(2, (2, 2), horizon, 3, seed=seed)
    data = sample_preference_dataset(game, uniform_policy(game), n, seed)
    return game, data


@st.composite
def games_and_data(draw, max_pairs=60):
    """A linear game of 2 x 2 actions, 1-2 states and steps and d = 3, with up to ``max_pairs`` pairs."""
    game = draw(linear_markov_games(action_sizes=(2, 2), max_states=2, max_horizon=2, min_dim=3, max_dim=3, step_dependent=False))
    return game, draw(preference_datasets(game, min_pairs=1, max_pairs=max_pairs))


@settings(max_examples=4, deadline=None)
@given(games_and_data(), st.data())
def test_closed_form_optimistic_and_pessimistic_rewards_match_cvxpy_over_the_ellipsoid(drawn, entries):
    game, data = drawn
    conf = reward_confidence(game.features, data, c_r=0.8, method="ridge")
    H, d = game.horizon, game.feature_dim
    L = np.linalg.cholesky(conf.sigma_r)
    for _ in range(3):
        h, s, a0, a1, i = (entries.draw(st.integers(0, k - 1)) for k in (H, game.n_states, 2, 2, 2))
        lift = np.zeros(H * d)
        lift[h * d : (h + 1) * d] = game.features[h, s, a0, a1]
        theta = cp.Variable(H * d)
        centre = conf.theta_hat[:, i].ravel()
        ball = [cp.norm(L.T @ (theta - centre)) <= conf.radius]
        top = cp.Problem(cp.Maximize(lift @ theta), ball)
        bottom = cp.Problem(cp.Minimize(lift @ theta), ball)
        top.solve(solver=cp.CLARABEL)
        bottom.solve(solver=cp.CLARABEL)
        assert conf.r_bar[h, i, s, a0, a1] == pytest.approx(top.value, abs=1e-6)
        assert conf.r_under[h, i, s, a0, a1] == pytest.approx(bottom.value, abs=1e-6)


@settings(max_examples=5, deadline=None)
@given(games_and_data(), st.data())
def test_every_parameter_in_the_confidence_set_has_rewards_between_r_under_and_r_bar(drawn, points):
    game, data = drawn
    conf = reward_confidence(game.features, data, c_r=1.3, method="ridge")
    L = np.linalg.cholesky(conf.sigma_r)
    H, m, d = conf.theta_hat.shape
    for _ in range(5):
        # A point of each player's unit ball (boundary included): a direction (not zero) times a length in [0, 1].
        u = points.draw(float_arrays((m, H * d), -1.0, 1.0).filter(lambda x: np.all(np.linalg.norm(x, axis=1) > 0.1)))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        outside = np.linalg.solve(L.T, (conf.radius * (1.0 + OUTSIDE_FRACTION) * u).T).T
        assert not np.any(conf.contains(conf.theta_hat + outside.reshape(m, H, d).transpose(1, 0, 2)))
        u *= points.draw(float_arrays((m, 1), 0.0, 1.0))
        offset = np.linalg.solve(L.T, (conf.radius * u).T).T  # ||offset_i||_{Sigma_r} <= C_r
        theta = conf.theta_hat + offset.reshape(m, H, d).transpose(1, 0, 2)
        assert np.all(conf.contains(theta))
        rewards = np.einsum("h...d,hid->hi...", game.features, theta)
        assert np.all(conf.r_under <= rewards + 1e-10)
        assert np.all(rewards <= conf.r_bar + 1e-10)


def test_confidence_set_contains_its_centre_and_sigma_r_is_the_coverage_one():
    game, data = _game_and_data(1)
    conf = reward_confidence(game.features, data, method="ridge")
    np.testing.assert_allclose(conf.distance(conf.theta_hat), 0.0, atol=1e-12)
    np.testing.assert_allclose(conf.sigma_r, reward_covariance(game.features, data, 1.0))


@settings(max_examples=5, deadline=None)
@given(games_and_data())
def test_reward_width_never_falls_below_the_gauge_floor_for_simplex_features(drawn):
    # <psi, 1> = 1 for simplex features, so 1_h / sqrt(d) is a unit null direction of the data:
    # ||psibar_h||_{Sigma_r^-1} >= <psibar_h, g> / ||g||_{Sigma_r} = 1 / sqrt(d lambda).
    game, data = drawn
    lam = 0.5
    conf = reward_confidence(game.features, data, lam=lam, method="ridge")
    assert np.all(conf.width >= 1 / np.sqrt(game.feature_dim * lam) - 1e-9)


def test_one_hot_features_and_differences():
    psi = one_hot_features(2, (2, 3), 2)
    assert psi.shape == (2, 2, 2, 3, 12)
    np.testing.assert_array_equal(psi.reshape(2, 12, 12)[0], np.eye(12))
    game, data = _game_and_data(0, n=5)
    x = trajectory_feature_differences(game.features, data)
    first = sum(game.features[h, data.states[0, 0, h], *data.actions[0, 0, h]] for h in range(game.horizon))
    second = sum(game.features[h, data.states[0, 1, h], *data.actions[0, 1, h]] for h in range(game.horizon))
    np.testing.assert_allclose(x[0].reshape(game.horizon, -1).sum(0), first - second)


def test_reward_mle_recovers_differences_with_many_pairs():
    game, data = _game_and_data(2, n=20_000, horizon=1)
    theta = reward_mle(game.features, data, method="constrained")
    s1 = game.initial_state
    est = np.einsum("...d,id->i...", game.features[0, s1], theta[0])
    true = game.rewards[0, :, s1]

    # Only s_1 is visited at h = 0, and only differences are identified: compare centred rewards there.
    def centred(r):
        return r - r.mean(axis=(1, 2), keepdims=True)

    assert np.max(np.abs(centred(est) - centred(true))) < 0.1


def test_bad_method_is_rejected():
    game, data = _game_and_data(0, n=5)
    with pytest.raises(ValueError, match="method"):
        reward_mle(game.features, data, method="bayes")
