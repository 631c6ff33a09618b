import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.linear_games.constructions import table4_equilibria, table4_games, theorem3_dataset
from marlcov.linear_games.coverage_datasets import unilateral_dataset
from marlcov.linear_games.estimation import reward_confidence
from marlcov.linear_games.sbsm import (
    MAX_ENUMERATED_POLICIES,
    bimatrix_equilibrium,
    deterministic_class_size,
    game_spec,
    local_search,
    one_step_exact_search,
    one_step_minimum,
    one_step_surrogate,
    optimistic_best_responses,
    pessimistic_values,
    regression_model,
    sbsm,
    sbsm_json,
    surrogate_objective,
    theorem4_bound,
)
from marlcov.linear_games.sbsm_experiments import table4_experiment, two_player_markov_equilibrium
from marlcov.theory.coverage import transition_covariances
from marlcov.theory.games import GameError, MarkovGame, random_linear_markov_game, random_markov_game
from marlcov.theory.policies import random_policy, uniform_policy
from marlcov.theory.preferences import sample_preference_dataset
from marlcov.theory.values import best_response, evaluate_policy, nash_gap
from tests.strategies import float_arrays, linear_markov_games, markov_games, preference_datasets
from tests.theory.brute_force import all_deterministic_policies

TOL = 1e-9


def _simplex_lattice(n, k):
    """All points of the n-simplex with coordinates in {0, 1/k, ..., 1}."""
    pts = [c for c in itertools.product(range(k + 1), repeat=n - 1) if sum(c) <= k]
    return np.array([[*c, k - sum(c)] for c in pts], dtype=float) / k


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(2, 2), (3, 3), (2, 3)]).flatmap(lambda shape: st.tuples(*[float_arrays(shape, -1.0, 2.0)] * 3)))
def test_exact_one_step_minimum_agrees_with_a_fine_grid(bounds):
    low, high0, high1 = bounds
    A0, A1 = shape = low.shape
    best = one_step_minimum(low, high0, high1)
    k = 80 if max(shape) == 2 else 30
    xs, ys = _simplex_lattice(A0, k), _simplex_lattice(A1, k)
    grid = one_step_surrogate(xs, ys, low, high0, high1)
    # The exact minimum is attained at its (x, y) and lies below every grid value ...
    assert one_step_surrogate(best.x, best.y, low, high0, high1)[0, 0] == pytest.approx(best.value, abs=1e-12)
    assert best.value <= grid.min() + TOL
    # ... and within the grid's resolution of the grid minimum (Lipschitz in l1, every point is
    # within l1 distance A/k of the lattice).
    lip_x = np.abs(high1).max() + np.abs(low).max()
    lip_y = np.abs(high0).max() + np.abs(low).max()
    assert grid.min() - best.value <= lip_x * A0 / k + lip_y * A1 / k


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([(2, 2), (3, 3)]).flatmap(lambda shape: markov_games(action_sizes=shape, n_states=1, horizon=1)))
def test_bimatrix_equilibrium_has_zero_nash_gap(game):
    x, y = bimatrix_equilibrium(game.rewards[0, 0, 0], game.rewards[0, 1, 0])
    assert nash_gap(game, (x[None, None], y[None, None])).total <= 1e-9


def _one_step_instance(seed, actions=(2, 2), n=60, dim=3):
    game = random_linear_markov_game(1, actions, 1, dim, seed=seed)
    data = sample_preference_dataset(game, random_policy(game, seed), n, seed)
    return _one_step_surrogate(game, data)


def _one_step_surrogate(game, data):
    spec = game_spec(game)
    conf = reward_confidence(spec.features, data, c_r=0.3, method="ridge")
    return game, spec, data, surrogate_objective(spec, data, conf, c_p=0.2, clip=False)


@st.composite
def one_step_linear_games_and_data(draw):
    """A one-state, one-step linear game of 2 x 2 or 3 x 3 actions and d = 3, with 60 pairs."""
    actions = draw(st.sampled_from([(2, 2), (3, 3)]))
    game = draw(linear_markov_games(action_sizes=actions, max_states=1, max_horizon=1, min_dim=3, max_dim=3))
    return game, draw(preference_datasets(game, min_pairs=60, max_pairs=60))


@settings(max_examples=6, deadline=None)
@given(one_step_linear_games_and_data(), st.integers(0, 2**31 - 1))
def test_local_method_is_never_below_the_exact_minimum(drawn, restart_seed):
    # restart_seed seeds the local method's own random restarts (an input of the method, not of the instance).
    _, spec, _, objective = _one_step_surrogate(*drawn)
    exact = one_step_exact_search(objective, spec)
    local = local_search(objective, spec, n_restarts=3, seed=restart_seed)
    assert exact.exact and not local.exact
    assert objective(exact.policy) == pytest.approx(exact.value, abs=1e-12)
    assert local.value >= exact.value - TOL


def test_exact_search_agrees_with_the_full_surrogate_on_a_grid():
    _, spec, _, objective = _one_step_instance(5)
    exact = one_step_exact_search(objective, spec)
    grid = np.linspace(0, 1, 41)
    values = [objective((np.array([[[p, 1 - p]]]), np.array([[[q, 1 - q]]]))) for p in grid for q in grid]
    assert exact.value <= min(values) + TOL


def _tabular_instance(seed, n=400, horizon=2):
    game = random_markov_game(2, (2, 2), horizon, seed=seed).with_one_hot_features()
    data = sample_preference_dataset(game, uniform_policy(game), n, seed)
    return game, data


def _count_model(game, data, lam):
    """Counts n(h,s,a) and n(h,s,a,s') over both trajectories, by explicit loops."""
    H, S = game.horizon, game.n_states
    n_sa = np.zeros((H, S, 2, 2))
    n_sas = np.zeros((H, S, 2, 2, S))
    for pair in range(data.n_pairs):
        for t in range(2):
            for h in range(H):
                s, (a0, a1), s2 = data.states[pair, t, h], data.actions[pair, t, h], data.states[pair, t, h + 1]
                n_sa[h, s, a0, a1] += 1
                n_sas[h, s, a0, a1, s2] += 1
    return n_sa, n_sas


@pytest.mark.parametrize("clip", [False, True])
def test_algorithms_2_and_3_with_one_hot_features_are_shrunk_count_models(clip):
    # One-hot ridge regression: Q(s,a) = [n_sa r + sum_s' n_sas' V(s')] / (n_sa + lam), width 1/sqrt(n_sa + lam).
    game, data = _tabular_instance(0)
    lam, c_p = 1.5, 0.3
    H = game.horizon
    model = regression_model(game_spec(game), data, lam)
    rng = np.random.default_rng(1)
    r = rng.uniform(-0.5, 1.5, size=game.rewards.shape)
    policy = random_policy(game, 2)
    low = pessimistic_values(model, model.reward_weights(r), policy, c_p, clip)
    high = optimistic_best_responses(model, model.reward_weights(r), policy, c_p, clip)
    n_sa, n_sas = _count_model(game, data, lam)
    width = 1 / np.sqrt(n_sa + lam)
    np.testing.assert_allclose(model.width_table(), width, atol=1e-12)
    V_low = np.zeros((2, game.n_states))
    V_high = np.zeros((2, game.n_states))
    for h in range(H - 1, -1, -1):
        new_low, new_high = np.empty_like(V_low), np.empty_like(V_high)
        for i in range(2):
            q_low = (n_sa[h] * r[h, i] + n_sas[h] @ V_low[i]) / (n_sa[h] + lam) - c_p * width[h]
            q_high = (n_sa[h] * r[h, i] + n_sas[h] @ V_high[i]) / (n_sa[h] + lam) + c_p * width[h]
            if clip:
                q_low, q_high = np.maximum(q_low, 0.0), np.minimum(q_high, H)
            np.testing.assert_allclose(low.Q[h, i], q_low, atol=1e-10)
            np.testing.assert_allclose(high.Q[h, i], q_high, atol=1e-10)
            new_low[i] = np.einsum("sab,sa,sb->s", q_low, policy[0][h], policy[1][h])
            marg = np.einsum("sab,sb->sa", q_high, policy[1][h]) if i == 0 else np.einsum("sab,sa->sb", q_high, policy[0][h])
            new_high[i] = marg.max(axis=1)
        V_low, V_high = new_low, new_high
        np.testing.assert_allclose(low.V[h], V_low, atol=1e-10)
        np.testing.assert_allclose(high.V[h], V_high, atol=1e-10)


@pytest.mark.slow
def test_algorithm_2_without_bonus_approximates_the_true_value_with_plenty_of_data():
    game, data = _tabular_instance(3, n=40_000)
    model = regression_model(game_spec(game), data)
    policy = uniform_policy(game)
    est = pessimistic_values(model, model.reward_weights(game.rewards), policy, c_p=0.0, clip=False)
    true = evaluate_policy(game.transitions, game.rewards, policy)
    s1 = game.initial_state
    np.testing.assert_allclose(est.V[0, :, s1], true.V[0, :, s1], atol=0.03)
    br_est = optimistic_best_responses(model, model.reward_weights(game.rewards), policy, c_p=0.0, clip=False)
    for i in range(2):
        br = best_response(game.transitions, game.rewards[:, i], policy, i)
        assert br_est.V[0, i, s1] == pytest.approx(br.values[0, s1], abs=0.03)


def test_transition_covariances_match_the_coverage_module():
    game = random_linear_markov_game(3, (2, 3), 3, 4, seed=4)
    data = sample_preference_dataset(game, uniform_policy(game), 80, 4)
    model = regression_model(game_spec(game), data, 0.7)
    np.testing.assert_allclose(model.sigma_p, transition_covariances(game.features, data, 0.7), atol=1e-10)


def test_sbsm_does_not_depend_on_true_rewards_or_transitions():
    game = random_linear_markov_game(2, (2, 2), 2, 3, seed=7)
    data = sample_preference_dataset(game, uniform_policy(game), 120, 7)
    other = random_markov_game(2, (2, 2), 2, seed=99)
    perturbed = MarkovGame(other.transitions, other.rewards, game.initial_state, game.features)
    for kwargs in ({"policy_class": "deterministic"}, {"policy_class": "mixed", "n_restarts": 2, "clip": False}):
        a, b = sbsm(game, data, mle="ridge", **kwargs), sbsm(perturbed, data, mle="ridge", **kwargs)
        assert a.surrogate == b.surrogate
        for p, q in zip(a.policy, b.policy):
            np.testing.assert_array_equal(p, q)


def test_deterministic_enumeration_is_the_minimum_over_every_deterministic_policy():
    game = random_linear_markov_game(2, (2, 2), 2, 3, seed=11)
    data = sample_preference_dataset(game, uniform_policy(game), 100, 11)
    result = sbsm(game, data, mle="ridge", clip=False, c_r=0.5, c_p=0.5)
    assert result.exact and result.method == "enumeration"
    assert deterministic_class_size(game_spec(game)) == 64
    brute = min(result.objective((p0, p1)) for p0 in all_deterministic_policies(game, 0) for p1 in all_deterministic_policies(game, 1))
    assert result.surrogate == pytest.approx(brute, abs=1e-12)


def test_list_class_and_errors():
    game = random_linear_markov_game(1, (2, 2), 2, 3, seed=1)
    data = sample_preference_dataset(game, uniform_policy(game), 30, 1)
    candidates = [uniform_policy(game), random_policy(game, 3)]
    result = sbsm(game, data, mle="ridge", policy_class=candidates)
    assert result.policy_class == "list" and result.exact
    assert result.surrogate == pytest.approx(min(result.objective(p) for p in candidates))
    with pytest.raises(ValueError, match="policy_class"):
        sbsm(game, data, mle="ridge", policy_class="bayesian")
    with pytest.raises(GameError, match="policy_class\\[0\\]"):
        sbsm(game, data, mle="ridge", policy_class=[(np.ones((2, 1, 3)) / 3, np.ones((2, 1, 2)) / 2)])
    big = random_linear_markov_game(5, (4, 4), 5, 3, seed=1)
    assert deterministic_class_size(game_spec(big)) > MAX_ENUMERATED_POLICIES
    with pytest.raises(ValueError, match="deterministic class"):
        sbsm(big, sample_preference_dataset(big, uniform_policy(big), 5, 0), mle="ridge")


def test_table4_single_policy_data_leaves_a_half_nash_gap_and_unilateral_data_removes_it():
    outcome = table4_experiment(n_pairs=500, unilateral_ns=(300, 3000))
    assert outcome.same_output
    assert sum(outcome.single_gaps) == pytest.approx(1.0, abs=1e-12)
    assert outcome.single_max_gap >= 0.5
    assert max(outcome.unilateral_gaps[0][-1], outcome.unilateral_gaps[1][-1]) <= 1e-9


def test_printed_constants_and_clips_make_the_one_step_surrogate_constant():
    # C_r >= sqrt(d) and ||psibar||_{Sigma_r^-1} >= 1/sqrt(d) (one-hot features): r_under <= r_hat - 1,
    # r_bar >= r_hat + 1, so Algorithm 2 clips every Q to 0 and Algorithm 3 every Q to H = 1.
    m1, _ = table4_games()
    data = theorem3_dataset(m1, 2000, 0) + unilateral_dataset(m1, table4_equilibria()[0], 2000, 1).dataset
    result = sbsm(m1, data, policy_class="mixed")
    assert result.surrogate == pytest.approx(2.0, abs=1e-12)
    for p in np.linspace(0, 1, 5):
        pol = (np.array([[[p, 1 - p]]]), np.array([[[1 - p, p]]]))
        assert result.objective(pol) == pytest.approx(2.0, abs=1e-12)


def test_theorem4_bound_relations_and_json():
    m1, _ = table4_games()
    eq = table4_equilibria()[0]
    data = theorem3_dataset(m1, 400, 0) + unilateral_dataset(m1, eq, 400, 1).dataset
    result = sbsm(m1, data, policy_class="mixed", clip=False)
    bound = theorem4_bound(m1, result, eq)
    assert bound.printed == pytest.approx(4 * bound.per_player.max())
    assert bound.at_equilibrium <= bound.per_player.min() + TOL  # pi* is one of the deviations
    assert bound.summed <= m1.n_players * bound.printed + TOL
    out = sbsm_json(m1, data, equilibrium=eq, policy_class="mixed", clip=False)
    assert set(out) >= {"surrogate", "exact", "lower_bound", "nash_gap", "bound", "policy"}
    assert out["policy"]["format"] == "marlcov.policy/1"
    assert out["nash_gap"] == pytest.approx(nash_gap(m1, result.policy).total)
    assert out["exact"] is True and out["lower_bound"] == pytest.approx(out["surrogate"])
    assert out["nash_gap"] <= out["bound"]
    assert sbsm_json(m1, data, policy_class="mixed")["bound"] is None
    with pytest.raises(GameError, match="equilibrium"):
        sbsm_json(m1, data, equilibrium=table4_equilibria()[1], policy_class="mixed")


@settings(max_examples=5, deadline=None)
@given(markov_games(action_sizes=(2, 3), n_states=2, horizon=3))
def test_markov_perfect_equilibrium_has_zero_nash_gap(game):
    assert nash_gap(game, two_player_markov_equilibrium(game)).total <= 1e-9
