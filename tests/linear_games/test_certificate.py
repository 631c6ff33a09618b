"""The certified Nash-gap bound on the identifiable confidence set (linear_games.certificate)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from marlcov.linear_games.certificate import (
    RIDGE_FRACTION,
    coverage_bound,
    game_confidence,
    logistic_curvature,
    nash_gap_certificate,
)
from marlcov.linear_games.constructions import table4_equilibria, table4_games, theorem3_dataset
from marlcov.linear_games.coverage_datasets import unilateral_dataset
from marlcov.linear_games.sbsm import sbsm_json
from marlcov.theory.coverage import pair_differences
from marlcov.theory.games import random_linear_markov_game
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import nash_gap
from tests.strategies import float_arrays, linear_markov_games, product_policies

seeds = st.integers(0, 2**31 - 1)

#: The ridge MLE is solved to a gradient of this size or less (the radius adds what remains).
GRADIENT_ATOL = 1e-6


@st.composite
def instances(draw):
    """A drawn linear game, a dataset sampled from it and a drawn product policy. The dataset stays
    a seeded sample: the certificate's event (the true theta in the confidence set) has probability
    1 - delta only for labels drawn from the game's Bradley-Terry model, and drawn labels would
    leave the tests off the event, claiming nothing."""
    actions = (draw(st.integers(2, 3)), draw(st.integers(2, 3)))
    game = draw(linear_markov_games(action_sizes=actions, max_states=2, max_horizon=2, min_dim=2, max_dim=4, step_dependent=False))
    behaviour = draw(product_policies(game))
    data = sample_preference_dataset(game, behaviour, draw(st.integers(5, 200)), draw(seeds))
    return game, data, draw(product_policies(game, deterministic=draw(st.booleans())))


def gauge_rewards(game, reference):
    """``r^c = <psi_h - c_h, theta_{h,i}>``: the true rewards less a constant per step and player."""
    shift = np.einsum("hd,hid->hi", reference, game.theta)
    return game.rewards - shift.reshape(*shift.shape, *([1] * (game.rewards.ndim - 2)))


@settings(max_examples=25, deadline=None)
@given(instances())
def test_on_the_event_the_rewards_lie_between_the_bounds_and_the_certificate_bounds_the_gap(instance):
    game, data, policy = instance
    conf = game_confidence(game, data)
    inside = conf.contains(game.theta, game.features)
    if not inside.all():
        return  # off the event (probability at most delta): nothing is claimed
    r = gauge_rewards(game, conf.reference)
    assert np.all(conf.r_under <= r + VALUE_ATOL) and np.all(r <= conf.r_bar + VALUE_ATOL)
    gap = nash_gap(game, policy).total
    cert = nash_gap_certificate(game, conf, policy).value
    assert gap <= cert + VALUE_ATOL
    # cert(pi) <= Gap(pi) + sum_i 2 C_i [U(pi) + max_{pi_i} U(pi_i, pi_-i)]
    assert cert <= gap + coverage_bound(game, conf, policy) + VALUE_ATOL


@settings(max_examples=20, deadline=None)
@given(instances())
def test_the_mle_solves_its_first_order_condition_and_the_constants_are_as_stated(instance):
    game, data, _ = instance
    conf = game_confidence(game, data, delta=0.05)
    t = conf.terms
    x = pair_differences(game.features, data)
    for i in range(game.n_players):
        theta = conf.theta_hat[:, i].ravel()
        b = 0.5 * (1.0 + data.prefs[:, i])
        grad = x.T @ (expit(x @ theta) - b) + RIDGE_FRACTION * t.lam * theta
        assert np.linalg.norm(grad) <= GRADIENT_ATOL
        assert t.residual[i] == pytest.approx(np.linalg.norm(grad) / np.sqrt(t.lam), abs=GRADIENT_ATOL)
        assert t.margin[i] >= game.horizon and t.margin[i] >= np.max(np.abs(x @ theta)) - VALUE_ATOL
    assert t.noise == pytest.approx(0.5 * np.sqrt(2 * np.log(game.n_players / 0.05) + t.log_det))
    assert t.log_det == pytest.approx(np.linalg.slogdet(np.eye(x.shape[1]) + x.T @ x / t.lam)[1], rel=1e-9, abs=1e-9)
    assert t.bias == pytest.approx(np.sqrt(t.lam) * np.sqrt(game.horizon * game.features.shape[-1]) / 4)


def test_logistic_curvature_is_the_smallest_slope_on_the_interval():
    z = np.linspace(-3.0, 3.0, 601)
    slopes = expit(z) * (1 - expit(z))
    assert logistic_curvature(3.0) == pytest.approx(slopes.min())
    assert logistic_curvature(0.0) == pytest.approx(0.25)


def test_sbsm_json_reports_a_certificate_above_the_true_gap_on_table4():
    """Table 4 with Theorem 3's data plus unilateral pairs: the certificate of the output bounds its gap."""
    game, eq = table4_games()[0], table4_equilibria()[0]
    data = theorem3_dataset(game, 400, 1) + unilateral_dataset(game, eq, 400, 2).dataset
    out = sbsm_json(game, data, equilibrium=eq, policy_class="mixed", clip=False, reward_set="identifiable")
    assert out["reward_set"] == "identifiable"
    assert out["identifiable_bound"] >= out["nash_gap"] - VALUE_ATOL
    assert out["identifiable_certificate"]["probability"] == pytest.approx(0.9)
    assert out["identifiable_certificate"]["coverage_bound"] > 0


@pytest.mark.slow
def test_the_certificate_is_sound_in_at_least_one_minus_delta_of_random_runs():
    """Over 40 random games and datasets: Gap(pi) <= cert(pi) in at least 1 - delta of runs."""
    delta, hits, runs = 0.2, 0, 40
    for k in range(runs):
        rng = np.random.default_rng([17, k])
        game = random_linear_markov_game(1, (3, 3), 1, 4, seed=rng)
        data = sample_preference_dataset(game, random_policy(game, rng), 300, rng)
        policy = random_policy(game, rng)
        cert = nash_gap_certificate(game, game_confidence(game, data, delta=delta), policy).value
        hits += nash_gap(game, policy).total <= cert + VALUE_ATOL
    assert hits >= (1 - delta) * runs


@settings(max_examples=20, deadline=None)
@given(instances(), st.data())
def test_the_certificate_is_valid_for_every_reference_point(instance, data_draws):
    """Any affine combination of a step's feature rows as the reference: on the event (which does
    not depend on the reference), the gauge-fixed rewards lie between the bounds."""
    game, data, policy = instance
    H, d = game.features.shape[0], game.features.shape[-1]
    table = game.features.reshape(H, -1, d)
    noise = data_draws.draw(float_arrays(table.shape[:2], -3.0, 3.0))
    weights = 1.0 / table.shape[1] + noise - noise.mean(axis=1, keepdims=True)  # affine: sums to one, signs free
    reference = np.einsum("hk,hkd->hd", weights, table)
    conf = game_confidence(game, data, reference=reference)
    if not conf.contains(game.theta, game.features).all():
        return  # off the event (probability at most delta): nothing is claimed
    r = gauge_rewards(game, reference)
    tol = VALUE_ATOL * (1 + np.abs(r).max())
    assert np.all(conf.r_under <= r + tol) and np.all(r <= conf.r_bar + tol)
    assert nash_gap(game, policy).total <= nash_gap_certificate(game, conf, policy).value + tol
