import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.constructions import table4_equilibria, table4_games, theorem3_dataset
from marlcov.linear_games.coverage_datasets import (
    combined,
    mixture_coverage_dataset,
    single_policy_dataset,
    uniform_dataset,
    unilateral_dataset,
    unilateral_deviations,
)
from marlcov.theory.coverage import coverage_measures
from marlcov.theory.games import GameError, random_linear_markov_game
from marlcov.theory.identifiable import identifiable_measures
from marlcov.theory.policies import deterministic_policy, uniform_policy
from tests.strategies import linear_markov_games


def _pure_equilibrium_game():
    m1, _ = table4_games()
    return m1, table4_equilibria()[0]


def test_single_policy_data_follows_the_policy_only():
    game, eq = _pure_equilibrium_game()
    cov = single_policy_dataset(game, eq, 200, seed=0)
    assert cov.kind == "single" and cov.dataset.n_pairs == 200
    np.testing.assert_array_equal(cov.dataset.actions, 0)  # (a_1, b_1) is action 0 for both players


def test_unilateral_deviations_change_one_player_each():
    game = random_linear_markov_game(2, (2, 3), 2, 3, seed=0)
    eq = deterministic_policy(game, [np.zeros((2, 2), int), np.ones((2, 2), int)])
    devs = unilateral_deviations(game, eq)
    assert len(devs) == (2 + 1) + (3 + 1)
    for dev in devs:
        changed = [i for i in range(2) if not np.array_equal(dev[i], eq[i])]
        assert len(changed) <= 1


def test_unilateral_data_covers_every_pure_deviation_of_table4():
    game, eq = _pure_equilibrium_game()
    cov = unilateral_dataset(game, eq, 400, seed=1)
    seen = {tuple(a) for a in cov.dataset.actions.reshape(-1, 2)}
    assert {(0, 0), (1, 0), (0, 1)} <= seen


@settings(max_examples=5, deadline=None)
@given(
    linear_markov_games(action_sizes=(2, 2), max_states=2, max_horizon=2, min_dim=3, max_dim=3, step_dependent=False),
    st.integers(0, 10_000),
)
def test_reported_coverage_is_the_coverage_of_the_dataset_and_is_ordered(game, seed):
    # seed: the dataset builders' own sampling seed (an input of the functions under test).
    eq = uniform_policy(game)
    for cov in (single_policy_dataset(game, eq, 50, seed), unilateral_dataset(game, eq, 50, seed), uniform_dataset(game, eq, 50, seed)):
        direct = coverage_measures(game, cov.dataset, eq)
        assert cov.coverage.single == pytest.approx(direct.single)
        assert cov.coverage.unilateral == pytest.approx(direct.unilateral)
        # Definition 1: U(pi*) <= max_i max_pi_i U(pi_i, pi*_-i) <= max_pi U(pi).
        assert cov.coverage.single <= cov.coverage.unilateral + 1e-9
        assert cov.coverage.unilateral <= cov.coverage.uniform + 1e-9
        assert cov.summary()["pairs"] == 50
        ident = identifiable_measures(game, cov.dataset, eq)
        assert cov.identifiable.unilateral == pytest.approx(ident.unilateral)
        assert cov.summary()["identifiable"]["single"] == pytest.approx(ident.single)


def test_unilateral_data_has_better_unilateral_coverage_than_single_policy_data_on_table4():
    game, eq = _pure_equilibrium_game()
    single = combined(game, eq, [theorem3_dataset(game, 2000, 0)])
    uni = combined(game, eq, [theorem3_dataset(game, 1000, 0), unilateral_dataset(game, eq, 1000, 1).dataset])
    assert uni.dataset.n_pairs == single.dataset.n_pairs
    assert uni.coverage.unilateral < single.coverage.unilateral - 0.3
    # The identifiable reward term separates them by far more: the paper's keeps its offset floor.
    assert uni.identifiable.unilateral < 0.5 * single.identifiable.unilateral


def test_mixture_weights_and_errors():
    game, eq = _pure_equilibrium_game()
    cov = mixture_coverage_dataset(game, eq, [eq, uniform_policy(game)], [3, 1], 40, seed=2)
    np.testing.assert_allclose(cov.weights, [0.75, 0.25])
    with pytest.raises(GameError, match="policies"):
        mixture_coverage_dataset(game, eq, [], [], 10)
    with pytest.raises(ValueError, match="equilibrium_weight"):
        unilateral_dataset(game, eq, 10, equilibrium_weight=1.5)
    with pytest.raises(GameError, match="parts"):
        combined(game, eq, [])
