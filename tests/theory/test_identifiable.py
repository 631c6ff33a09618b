"""Identifiable coverage (theory.identifiable) and the ridge Gram forms it rests on (theory.ridge_forms)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.theory.coverage import (
    bonus_terms,
    coverage_measures,
    game_features,
    measures_from_bonus,
    reward_covariance,
    reward_gram,
    reward_widths,
    transition_covariances,
)
from marlcov.theory.games import MarkovGame, random_markov_game
from marlcov.theory.identifiable import (
    both_measures,
    identifiable_basis,
    identifiable_measures,
    identifiable_report,
    policy_reference,
    restricted_covariance,
)
from marlcov.theory.policies import deterministic_policy, random_policy
from marlcov.theory.preferences import PreferenceDataset, sample_preference_dataset
from marlcov.theory.ridge_forms import RidgeGram, prefers_woodbury
from marlcov.theory.tolerances import VALUE_ATOL
from tests.strategies import float_arrays, floats, linear_markov_games, preference_datasets, product_policies

#: The Woodbury and dense forms of the same quadratic form: both backward stable, and the
#: Woodbury subtraction loses at most eps (1 + ||E||^2 / lambda) relatively (ridge_forms).
FORM_RTOL = 1e-9
#: A width is the square root of a quadratic form: where the form is zero (features that differ by
#: nothing identifiable), its float64 rounding (~1e-14 with shifted features of size ~10) comes out
#: as a width of up to ~1e-7, not 0; measures sum a few such widths.
ZERO_WIDTH_ATOL = 1e-6

finite = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)


@st.composite
def linear_instances(draw):
    """A linear Markov game of two players, a product policy and a preference dataset of it."""
    actions = (draw(st.integers(1, 3)), draw(st.integers(2, 3)))
    game = draw(
        linear_markov_games(action_sizes=actions, max_states=3, max_horizon=3, min_dim=2, max_dim=5, step_dependent=draw(st.booleans()))
    )
    return game, draw(product_policies(game)), draw(preference_datasets(game, min_pairs=1, max_pairs=25))


def shifted(game: MarkovGame, u: np.ndarray) -> MarkovGame:
    """The same game with ``u_h`` added to every feature of step h."""
    return MarkovGame(game.transitions, game.rewards, game.initial_state, game.features + u[:, None, None, None, :])


def reward_term_measures(game, data, policy, reference=None):
    """Coverage of the reward term alone (``c_p = 0``): the paper's (``reference`` None) or the identifiable one."""
    features = game_features(game)
    widths = reward_widths(features, reward_gram(features, data), reference)
    return measures_from_bonus(game, widths, policy)


# ------------------------------------------------------------------ ridge Gram forms


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 12), st.integers(1, 3), st.integers(1, 4), floats(0.1, 5.0), st.data())
def test_woodbury_and_dense_forms_agree(r, H, d, lam, data):
    rows = data.draw(float_arrays((r, H * d), -3.0, 3.0))
    queries, offset = data.draw(float_arrays((7, d), -3.0, 3.0)), data.draw(float_arrays(d, -3.0, 3.0))
    wood = RidgeGram(lam, d, rows=rows)
    dense = RidgeGram.from_gram(lam, rows.T @ rows, d)
    inverse = np.linalg.inv(lam * np.eye(H * d) + rows.T @ rows)
    for h in range(H):
        block = inverse[h * d : (h + 1) * d, h * d : (h + 1) * d]
        z = queries - offset
        want = np.einsum("kd,de,ke->k", z, block, z)
        np.testing.assert_allclose(wood.block_forms(h, queries, offset), want, rtol=FORM_RTOL, atol=FORM_RTOL / lam)
        np.testing.assert_allclose(dense.block_forms(h, queries, offset), want, rtol=FORM_RTOL, atol=FORM_RTOL / lam)
    np.testing.assert_allclose(
        wood.log_det_ratio(), np.linalg.slogdet(np.eye(H * d) + rows.T @ rows / lam)[1], rtol=FORM_RTOL, atol=FORM_RTOL
    )
    np.testing.assert_allclose(dense.log_det_ratio(), wood.log_det_ratio(), rtol=FORM_RTOL, atol=FORM_RTOL)
    rhs = data.draw(float_arrays((H * d, 3), -3.0, 3.0))
    want_solve = inverse @ rhs
    for gram in (wood, dense):
        np.testing.assert_allclose(gram.solve(rhs), want_solve, rtol=FORM_RTOL, atol=FORM_RTOL / lam)


def test_the_cheaper_form_is_chosen_by_size():
    assert prefers_woodbury(10, 50_000) and not prefers_woodbury(50_000, 10)
    assert RidgeGram.from_rows(1.0, np.ones((3, 40)), 4).woodbury
    assert not RidgeGram.from_rows(1.0, np.ones((400, 8)), 4).woodbury


def test_tabular_game_with_few_pairs_matches_the_dense_path():
    """A one-hot game with Hd far above N takes the Woodbury path; the dense printed sums agree."""
    game = random_markov_game(20, (3, 3), 3, seed=4)
    policy = random_policy(game, 5)
    data = sample_preference_dataset(game, policy, 6, 6)
    features = game_features(game)
    assert reward_gram(features, data).woodbury
    dense = bonus_terms(features, reward_covariance(features, data), transition_covariances(features, data))
    got = coverage_measures(game, data, policy)
    want = measures_from_bonus(game, dense.total(), policy)
    for name in ("single", "unilateral", "uniform"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=FORM_RTOL)


# ------------------------------------------------------------------ the restricted covariance


@settings(max_examples=25, deadline=None)
@given(linear_instances(), float_arrays((15, 15), -1.0, 1.0))
def test_restricted_norm_is_the_full_norm_on_the_identifiable_subspace(instance, square):
    """``||Q^T z||_{Sigma_V^-1} = ||z||_{Sigma_r^-1}`` for z in V, for any orthonormal basis Q of V."""
    game, policy, data = instance
    features = game.features
    H, d = features.shape[0], features.shape[-1]
    c = policy_reference(game, policy)
    gram = reward_gram(features, data)
    basis = identifiable_basis(features)
    k = basis.shape[1]
    rotation = np.linalg.qr(square[:k, :k])[0] if k else np.eye(0)  # Householder QR: orthogonal for any square
    got = reward_widths(features, gram, c).reshape(H, -1)
    for q in (basis, basis @ rotation):
        sigma_v = restricted_covariance(gram, q)
        for h in range(H):
            z = np.zeros((features[h].reshape(-1, d).shape[0], H * d))
            z[:, h * d : (h + 1) * d] = features[h].reshape(-1, d) - c[h]
            coords = z @ q
            np.testing.assert_allclose(coords @ q.T, z, atol=1e-9)  # z lies in V
            want = np.einsum("kq,qk->k", coords, np.linalg.solve(sigma_v, coords.T)) if q.shape[1] else np.zeros(len(z))
            np.testing.assert_allclose(got[h] ** 2, want, rtol=FORM_RTOL, atol=FORM_RTOL)


@settings(max_examples=25, deadline=None)
@given(linear_instances(), st.floats(0.1, 5.0))
def test_the_paper_reward_term_never_falls_below_the_offset_floor(instance, lam):
    """``||psibar_h||^2_{Sigma_r^-1} >= ||P_perp psi_h||^2 / lambda``: Sigma_r is lambda I on V^perp, whatever the data."""
    game, _, data = instance
    features = game.features
    H, d = features.shape[0], features.shape[-1]
    basis = identifiable_basis(features)
    widths = reward_widths(features, reward_gram(features, data, lam)).reshape(H, -1)
    for h in range(H):
        q = basis[h * d : (h + 1) * d]
        table = features[h].reshape(-1, d)
        perp = table - (table @ q) @ q.T
        floor = np.einsum("kd,kd->k", perp, perp) / lam
        assert np.all(widths[h] ** 2 >= floor * (1 - FORM_RTOL) - FORM_RTOL)


@settings(max_examples=25, deadline=None)
@given(linear_instances(), arrays(np.float64, (3, 5), elements=finite))
def test_identifiable_reward_term_is_invariant_to_adding_a_vector_to_every_feature_of_a_step(instance, u_all):
    game, policy, data = instance
    H, d = game.features.shape[0], game.features.shape[-1]
    u = u_all[:H, :d]
    moved = shifted(game, u)
    before = reward_term_measures(game, data, policy, policy_reference(game, policy))
    after = reward_term_measures(moved, data, policy, policy_reference(moved, policy))
    for name in ("single", "unilateral", "uniform"):
        assert getattr(after, name) == pytest.approx(getattr(before, name), rel=FORM_RTOL, abs=ZERO_WIDTH_ATOL)


def test_the_paper_measure_is_not_invariant_to_a_step_offset():
    """One-hot features of a one-step 2 x 2 game shifted by t * 1: the paper's reward term moves."""
    game = one_hot_matrix_game()
    data = deviation_pairs(1, 50)
    policy = deterministic_policy(game, [np.zeros((1, 1), int), np.zeros((1, 1), int)])
    moved = shifted(game, np.full((1, 4), 3.0))
    assert reward_term_measures(moved, data, policy).single > 5 * reward_term_measures(game, data, policy).single
    ident = [reward_term_measures(g, data, policy, policy_reference(g, policy)).unilateral for g in (game, moved)]
    assert ident[1] == pytest.approx(ident[0], rel=FORM_RTOL)


# ------------------------------------------------------------------ closed forms on a 2 x 2 game


def one_hot_matrix_game() -> MarkovGame:
    """One state, one step, 2 x 2 actions, ``psi(a, b) = e_{2a + b}`` (Table 4's features)."""
    rewards = np.full((1, 2, 1, 2, 2), 0.5)
    return MarkovGame(np.ones((1, 1, 2, 2, 1)), rewards, 0, np.eye(4).reshape(1, 2, 2, 4), rewards.reshape(1, 2, 4))


def deviation_pairs(copies: int, extra: int = 0) -> PreferenceDataset:
    """``copies`` pairs (a*, deviation) for each of the two unilateral deviations of ``a* = (0, 0)``,
    then ``extra`` pairs (a*, a*)."""
    joint = [((0, 0), (1, 0))] * copies + [((0, 0), (0, 1))] * copies + [((0, 0), (0, 0))] * extra
    actions = np.array(joint, dtype=np.int64)[:, :, None, :]
    n = len(joint)
    return PreferenceDataset(np.zeros((n, 2, 2), dtype=np.int64), actions, np.ones((n, 2), dtype=np.int64))


@pytest.mark.parametrize("k", [1, 10, 1000, 100_000])
@pytest.mark.parametrize("lam", [0.5, 1.0, 4.0])
def test_identifiable_width_of_a_covered_deviation_has_the_closed_form(k, lam):
    """With x1 = e0 - e2, x2 = e0 - e1 each seen k times, the deviation e2 has
    ``||e2 - e0||^2_{Sigma_r^-1} = (3 / (lam + 3k) + 1 / (lam + k)) / 2`` (eigenvalues 3, 1 of the Gram
    [[2, 1], [1, 2]]): it falls like 1/k, so identifiable unilateral coverage like k^{-1/2}. The
    paper's ``||e2||^2`` never falls below ``1 / (d lam)`` (the offset direction 1/2 (1, 1, 1, 1))."""
    game = one_hot_matrix_game()
    data = deviation_pairs(k)
    features = game_features(game)
    gram = reward_gram(features, data, lam)
    ident = reward_widths(features, gram, np.eye(4)[:1])[0, 0]
    want = 0.5 * (3.0 / (lam + 3 * k) + 1.0 / (lam + k))
    assert ident[1, 0] ** 2 == pytest.approx(want, rel=FORM_RTOL)
    assert ident[0, 0] == 0.0
    paper = reward_widths(features, gram)[0, 0]
    assert np.all(paper**2 >= 1.0 / (4 * lam) - VALUE_ATOL)


def test_single_policy_data_leaves_identifiable_unilateral_coverage_bounded_away_from_zero():
    """Pairs (a*, a*) only: the deviations are never compared, their width stays sqrt(2 / lam)."""
    game = one_hot_matrix_game()
    policy = deterministic_policy(game, [np.zeros((1, 1), int), np.zeros((1, 1), int)])
    for n in (10, 10_000):
        cov = reward_term_measures(game, deviation_pairs(0, n), policy, policy_reference(game, policy))
        assert cov.single == 0.0
        assert cov.unilateral == pytest.approx(np.sqrt(2.0), rel=FORM_RTOL)


def test_the_measures_depend_on_the_reference_point():
    """The issue's claim that the measures are free of the reference point does not hold: the
    mean of pi* and a joint action never compared give different single coverage of the same data."""
    game = one_hot_matrix_game()
    policy = (np.array([[[0.5, 0.5]]]), np.array([[[1.0, 0.0]]]))
    data = deviation_pairs(5)
    at_mean = reward_term_measures(game, data, policy, policy_reference(game, policy))
    at_action = reward_term_measures(game, data, policy, np.eye(4)[3:])
    assert abs(at_mean.single - at_action.single) > 0.1


@settings(max_examples=15, deadline=None)
@given(linear_instances())
def test_both_measures_share_the_pass_and_equal_the_separate_ones(instance):
    game, policy, data = instance
    paper, ident = both_measures(game, data, policy)
    want_paper, want_ident = coverage_measures(game, data, policy), identifiable_measures(game, data, policy)
    for name in ("single", "unilateral", "uniform"):
        assert getattr(paper, name) == pytest.approx(getattr(want_paper, name), rel=FORM_RTOL)
        assert getattr(ident, name) == pytest.approx(getattr(want_ident, name), rel=FORM_RTOL)
    assert ident.single <= ident.unilateral + VALUE_ATOL <= ident.uniform + 2 * VALUE_ATOL


@settings(max_examples=10, deadline=None)
@given(linear_instances(), arrays(np.float64, (3, 5), elements=finite))
def test_the_report_reward_term_is_invariant_and_below_the_full_identifiable_measure(instance, u_all):
    game, policy, data = instance
    H, d = game.features.shape[0], game.features.shape[-1]
    report = identifiable_report(game, data, policy)
    moved = identifiable_report(shifted(game, u_all[:H, :d]), data, policy)
    for name in ("single", "unilateral", "uniform"):
        term = getattr(report["identifiable_reward_term"], name)
        assert getattr(moved["identifiable_reward_term"], name) == pytest.approx(term, rel=FORM_RTOL, abs=ZERO_WIDTH_ATOL)
        assert term <= getattr(report["identifiable"], name) + VALUE_ATOL
