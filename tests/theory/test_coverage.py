import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marlcov.theory.coverage import (
    bonus_terms,
    coverage_measures,
    dataset_bonus,
    policy_uncertainty,
    reward_covariance,
    transition_covariances,
)
from marlcov.theory.games import GameError, random_linear_markov_game, random_markov_game
from marlcov.theory.policies import random_policy, replace_player
from marlcov.theory.preferences import sample_preference_dataset
from marlcov.theory.tolerances import VALUE_ATOL
from tests.strategies import floats, linear_markov_games, preference_datasets, product_policies

from .brute_force import all_deterministic_policies, expected_return


def loop_covariances(game, ds, lam):
    """Sigma_r and Sigma_p written out pair by pair, step by step (the paper's sums)."""
    psi = game.features
    H, d = psi.shape[0], psi.shape[-1]
    sigma_r = lam * np.eye(H * d)
    sigma_p = np.stack([lam * np.eye(d)] * H)
    for n in range(ds.n_pairs):
        feats = []
        for k in range(2):
            lifted = np.zeros(H * d)
            for h in range(H):
                v = psi[(h, ds.states[n, k, h], *ds.actions[n, k, h])]
                lifted[h * d : (h + 1) * d] += v
                sigma_p[h] += np.outer(v, v)
            feats.append(lifted)
        diff = feats[0] - feats[1]
        sigma_r += np.outer(diff, diff)
    return sigma_r, sigma_p


@st.composite
def linear_games_and_data(draw, action_sizes, n_states, max_pairs, max_dim=4, step_dependent=False):
    game = draw(linear_markov_games(action_sizes=action_sizes, max_states=n_states, max_dim=max_dim, step_dependent=step_dependent))
    return game, draw(preference_datasets(game, max_pairs=max_pairs))


@given(linear_games_and_data((2, 2), 3, 30), floats(0.1, 5.0))
def test_covariances_match_the_printed_sums(drawn, lam):
    g, ds = drawn
    loop_r, loop_p = loop_covariances(g, ds, lam)
    np.testing.assert_allclose(reward_covariance(g.features, ds, lam), loop_r, atol=1e-12)
    np.testing.assert_allclose(transition_covariances(g.features, ds, lam), loop_p, atol=1e-12)


@given(linear_games_and_data((2, 3), 2, 20))
def test_bonus_matches_explicit_inverses(drawn):
    g, ds = drawn
    H, d = g.horizon, g.features.shape[-1]
    sr, sp = loop_covariances(g, ds, 1.0)
    terms = bonus_terms(g.features, reward_covariance(g.features, ds), transition_covariances(g.features, ds))
    inv_r = np.linalg.inv(sr)
    for idx in np.ndindex(g.features.shape[:-1]):
        h = idx[0]
        v = g.features[idx]
        lifted = np.zeros(H * d)
        lifted[h * d : (h + 1) * d] = v
        assert terms.reward[idx] == pytest.approx(np.sqrt(lifted @ inv_r @ lifted), rel=1e-10, abs=1e-13)
        assert terms.transition[idx] == pytest.approx(np.sqrt(v @ np.linalg.inv(sp[h]) @ v), rel=1e-10, abs=1e-13)


@st.composite
def game_data_policy(draw, max_pairs=25):
    """A linear game of 1-3 players with 2 actions each, a dataset of it and a product policy
    (deterministic or not)."""
    g = draw(linear_markov_games(action_sizes=(2,) * draw(st.integers(1, 3)), max_states=2, max_dim=4, step_dependent=False))
    ds = draw(preference_datasets(g, max_pairs=max_pairs))
    return g, ds, draw(product_policies(g, deterministic=draw(st.booleans())))


@given(game_data_policy())
def test_single_le_unilateral_le_uniform(gdp):
    g, ds, pi = gdp
    cov = coverage_measures(g, ds, pi)
    assert cov.single <= cov.unilateral + VALUE_ATOL
    assert cov.unilateral <= cov.uniform + VALUE_ATOL
    assert cov.unilateral == pytest.approx(cov.per_player.max())


@given(game_data_policy(max_pairs=10))
def test_unilateral_coverage_is_the_maximum_over_all_deviations(gdp):
    g, ds, pi = gdp
    cov = coverage_measures(g, ds, pi)
    bonus = dataset_bonus(g, ds).total()
    brute = max(
        expected_return(g, replace_player(pi, i, dev), bonus) for i in range(g.n_players) for dev in all_deterministic_policies(g, i)
    )
    assert cov.unilateral == pytest.approx(brute, abs=1e-12)
    returned = policy_uncertainty(g, bonus, replace_player(pi, cov.worst_player, cov.worst_deviation))
    assert returned == pytest.approx(cov.unilateral, abs=1e-12)
    assert cov.single == pytest.approx(expected_return(g, pi, bonus), abs=1e-12)


@given(game_data_policy(), st.data())
def test_coverage_never_increases_when_data_is_added(gdp, data):
    g, ds, pi = gdp
    more = ds + data.draw(preference_datasets(g, min_pairs=1, max_pairs=20))
    before, after = coverage_measures(g, ds, pi), coverage_measures(g, more, pi)
    assert after.single <= before.single + VALUE_ATOL
    assert after.unilateral <= before.unilateral + VALUE_ATOL
    assert after.uniform <= before.uniform + VALUE_ATOL


def test_empty_dataset_gives_the_prior_bonus():
    g = random_linear_markov_game(2, (2, 2), 2, 3, seed=0)
    ds = sample_preference_dataset(g, random_policy(g, 1), 0, 2)
    terms = dataset_bonus(g, ds, lam=4.0)
    norms = np.linalg.norm(g.features, axis=-1)
    np.testing.assert_allclose(terms.reward, norms / 2, rtol=1e-12)
    np.testing.assert_allclose(terms.transition, norms / 2, rtol=1e-12)


def test_tabular_game_uses_one_hot_features():
    g = random_markov_game(2, (2, 2), 2, seed=0)
    ds = sample_preference_dataset(g, random_policy(g, 1), 30, 2)
    pi = random_policy(g, 3)
    a = coverage_measures(g, ds, pi)
    b = coverage_measures(g.with_one_hot_features(), ds, pi)
    assert a.unilateral == pytest.approx(b.unilateral, abs=1e-12)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_lambda_must_be_positive(lam):
    g = random_linear_markov_game(2, (2, 2), 2, 3, seed=0)
    ds = sample_preference_dataset(g, random_policy(g, 1), 3, 2)
    with pytest.raises(GameError, match="lambda"):
        coverage_measures(g, ds, random_policy(g, 1), lam=lam)


def test_dataset_that_does_not_fit_the_game_is_refused():
    g = random_linear_markov_game(2, (2, 2), 2, 3, seed=0)
    other = random_linear_markov_game(2, (2, 2), 3, 3, seed=0)
    ds = sample_preference_dataset(other, random_policy(other, 1), 3, 2)
    with pytest.raises(GameError, match="horizon"):
        coverage_measures(g, ds, random_policy(g, 1))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "x", None])
def test_every_lambda_is_checked_by_one_function(bad):
    """theory's coverage, the streaming covariances, the ridge forms, SBSM's regression and the
    HDF5 diagnostic all check lambda with ``ridge_forms.checked_lambda`` (one message, one type)."""
    from marlcov.theory.games import GameError
    from marlcov.theory.ridge_forms import checked_lambda

    with pytest.raises(GameError, match="lambda: expected a positive number"):
        checked_lambda(bad)
    assert checked_lambda(np.float32(0.5)) == 0.5 and type(checked_lambda(2)) is float
