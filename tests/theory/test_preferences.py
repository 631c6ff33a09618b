import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from marlcov.theory.games import GameError, random_markov_game
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import (
    PreferenceDataset,
    bradley_terry_probability,
    label_pairs,
    mixture_dataset,
    sample_preference_dataset,
    sample_trajectories,
    trajectory_returns,
)

from .brute_force import trajectory_distribution

#: Significance level of the goodness-of-fit tests below (fixed seeds, so deterministic).
ALPHA = 1e-4


def test_bradley_terry_is_the_sigmoid_of_the_return_difference():
    assert bradley_terry_probability(1.0, 1.0) == pytest.approx(0.5)
    assert bradley_terry_probability(2.0, 0.0) == pytest.approx(np.exp(2) / (np.exp(2) + 1))
    assert bradley_terry_probability(0.3, 0.8, steepness=5.0) == pytest.approx(1 / (1 + np.exp(2.5)))


@given(st.floats(-5, 5), st.floats(-5, 5), st.floats(0.1, 10))
def test_bradley_terry_probabilities_of_both_orders_sum_to_one(a, b, k):
    assert bradley_terry_probability(a, b, k) + bradley_terry_probability(b, a, k) == pytest.approx(1.0)


def test_trajectory_distribution_matches_exact_enumeration():
    g = random_markov_game(2, (2, 2), 2, seed=4)
    pi = random_policy(g, 5)
    exact = {}
    for p, s, a in trajectory_distribution(g, pi):
        exact[(tuple(s), tuple(a.ravel()))] = p
    n = 40000
    tr = sample_trajectories(g, pi, n, seed=6)
    keys = list(exact)
    index = {k: j for j, k in enumerate(keys)}
    counts = np.zeros(len(keys))
    for s, a in zip(tr.states, tr.actions):
        counts[index[(tuple(s), tuple(a.ravel()))]] += 1
    assert counts.sum() == n
    expected = np.array([exact[k] for k in keys]) * n
    assert stats.chisquare(counts, expected).pvalue > ALPHA


def test_labels_follow_bradley_terry():
    g = random_markov_game(1, (2, 2), 1, seed=0)
    n = 20000
    states = np.zeros((n, 2, 2), dtype=int)
    actions = np.zeros((n, 2, 1, 2), dtype=int)
    actions[:, 0, 0] = [1, 0]
    ds = label_pairs(g, states, actions, seed=1, steepness=3.0)
    for i in range(2):
        p = bradley_terry_probability(g.rewards[0, i, 0, 1, 0], g.rewards[0, i, 0, 0, 0], 3.0)
        k = int((ds.prefs[:, i] == 1).sum())
        assert stats.binomtest(k, n, p).pvalue > ALPHA


def test_trajectory_returns_sum_rewards_along_the_path():
    g = random_markov_game(3, (2, 3), 3, seed=2)
    tr = sample_trajectories(g, random_policy(g, 3), 5, seed=4)
    ret = trajectory_returns(g.rewards, tr.states, tr.actions)
    for n in range(5):
        for i in range(2):
            manual = sum(g.rewards[(h, i, tr.states[n, h], *tr.actions[n, h])] for h in range(3))
            assert ret[n, i] == pytest.approx(manual)


def test_sampling_is_reproducible_and_shaped():
    g = random_markov_game(3, (2, 3), 4, seed=2)
    pi = random_policy(g, 3)
    a = sample_preference_dataset(g, pi, 17, seed=9)
    b = sample_preference_dataset(g, pi, 17, seed=9)
    np.testing.assert_array_equal(a.prefs, b.prefs)
    assert a.states.shape == (17, 2, 5) and a.actions.shape == (17, 2, 4, 2) and a.prefs.shape == (17, 2)
    a.check_against(g)


def test_mixture_dataset_uses_only_the_given_policies():
    g = random_markov_game(2, (3, 3), 1, seed=0)
    only_zero = random_policy(g, 0, deterministic=True)
    ds = mixture_dataset(g, [only_zero], [1.0], 50, seed=0)
    chosen = np.argmax(only_zero[0][0, g.initial_state])
    assert np.all(ds.actions[:, :, 0, 0] == chosen)


@pytest.mark.parametrize(
    "states, actions, prefs, field",
    [
        (np.zeros((2, 2, 3)), np.zeros((2, 2, 2, 1), int), np.ones((2, 1), int), "states"),
        (np.zeros((2, 3, 3), int), np.zeros((2, 2, 2, 1), int), np.ones((2, 1), int), "states"),
        (np.zeros((2, 2, 3), int), np.zeros((2, 2, 1, 1), int), np.ones((2, 1), int), "actions"),
        (np.zeros((2, 2, 3), int), np.zeros((2, 2, 2, 1), int), np.zeros((2, 1), int), "prefs"),
    ],
)
def test_malformed_datasets_are_refused(states, actions, prefs, field):
    with pytest.raises(GameError, match=field):
        PreferenceDataset(states, actions, prefs)
