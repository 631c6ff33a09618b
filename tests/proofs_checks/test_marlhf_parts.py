"""The objects the MARLHF checks are built on, tested against independent computations: the
identifiable widths, the bound's floor, the KL-regularised optimum, the parsed tables, the radii."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from marlcov.linear_games.constructions import table4_equilibria, table4_games
from marlcov.proofs_checks import marlhf_table_text
from marlcov.proofs_checks.marlhf_bounds import anchored_game, theorem4_printed_bound, unidentified_floor
from marlcov.proofs_checks.marlhf_lemmas import logistic_curvature, zhu_radius
from marlcov.proofs_checks.marlhf_sec5 import kl_regularised_optimum, quotient_distance
from marlcov.proofs_checks.marlhf_tables import beta_by_task, caption_beta_by_task, parse_cell, parse_table, table2
from marlcov.proofs_checks.tolerances import CLARABEL_DEFAULT_ATOL
from marlcov.theory.coverage import reward_gram, reward_widths
from marlcov.theory.games import random_linear_markov_game, random_markov_game
from marlcov.theory.identifiable import identifiable_basis, policy_reference
from marlcov.theory.policies import random_policy, uniform_policy
from marlcov.theory.preferences import sample_preference_dataset

PAPER = Path(os.environ.get("MARLCOV_PAPERS", Path(__file__).resolve().parents[3] / "shared" / "papers")) / "marlhf-coverage.md"
seeds = st.integers(0, 2**31 - 1)


@given(seeds, st.integers(1, 3), hnp.arrays(np.float64, 4, elements=st.floats(-2, 2)))
def test_identifiable_widths_ignore_a_vector_added_to_every_feature(seed, H, shift):
    game = random_linear_markov_game(2, (2, 2), H, 4, seed=seed, step_dependent_features=True)
    data = sample_preference_dataset(game, uniform_policy(game), 30, seed)
    shifted = game.features + shift  # the same vector added to every feature of every step
    pi = random_policy(game, seed)
    w = reward_widths(game.features, reward_gram(game.features, data), policy_reference(game, pi, game.features))
    w_shift = reward_widths(shifted, reward_gram(shifted, data), policy_reference(game, pi, shifted))
    np.testing.assert_allclose(w, w_shift, rtol=1e-7, atol=1e-9)


@given(seeds)
def test_identifiable_basis_is_orthonormal_and_holds_every_feature_difference(seed):
    game = random_linear_markov_game(2, (2, 3), 2, 5, seed=seed)
    q = identifiable_basis(game.features)
    np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-10)
    flat = game.features[0].reshape(-1, 5)
    diffs = np.zeros((flat.shape[0] - 1, 10))
    diffs[:, :5] = flat[1:] - flat[0]
    np.testing.assert_allclose(q @ (q.T @ diffs.T), diffs.T, atol=1e-10)


@given(st.integers(1, 4), st.floats(0.1, 3.0), st.floats(0.2, 5.0))
def test_floor_of_one_hot_features_is_4_c_h_over_sqrt_lambda(H, c, lam):
    game = random_markov_game(1, (2, 2), H, 0).with_one_hot_features()
    assert unidentified_floor(game.features, c, lam) == pytest.approx(4 * c * H / np.sqrt(lam), rel=1e-9)


@given(seeds, st.sampled_from([10, 100, 1000]))
def test_printed_bound_never_falls_below_its_floor(seed, n):
    m1, _ = table4_games()
    eq1, _ = table4_equilibria()
    data = sample_preference_dataset(m1, uniform_policy(m1), n, seed)
    assert theorem4_printed_bound(m1, data, eq1, 1.0) >= unidentified_floor(m1.features, 1.0) - 1e-9


def test_anchored_game_has_no_constant_in_the_feature_span():
    game = anchored_game(3)
    flat = game.features.reshape(-1, game.features.shape[-1])
    # the all-ones reward is not <psi, g> for any g: least squares leaves a residual
    g = np.linalg.lstsq(flat, np.ones(flat.shape[0]), rcond=None)[0]
    assert np.abs(flat @ g - 1).max() > 0.1
    assert unidentified_floor(game.features, 1.0) == 0.0


@given(seeds, st.integers(2, 6), st.floats(0.2, 8.0))
def test_kl_regularised_optimum_matches_the_gibbs_closed_form(seed, A, beta):
    rng = np.random.default_rng(seed)
    ref, reward = rng.dirichlet(np.ones(A)), rng.uniform(0, 1, A)
    pi = kl_regularised_optimum(reward, ref, beta)
    gibbs = ref * np.exp(reward / beta)
    np.testing.assert_allclose(pi, gibbs / gibbs.sum(), atol=CLARABEL_DEFAULT_ATOL)


@given(hnp.arrays(np.float64, 6, elements=st.floats(-5, 5)), hnp.arrays(np.float64, 6, elements=st.floats(-5, 5)))
def test_quotient_distance_ignores_the_common_null_space(a, z):
    null = np.linalg.qr(np.arange(12.0).reshape(6, 2) ** 0.5)[0]
    assert quotient_distance(a + null @ z[:2], a, null) <= 1e-9


def test_table_cells_and_betas_parse_as_printed():
    assert parse_cell("<b><math>-20.98 \\\\pm 0.56</math></b>".replace("\\\\", "\\")) == (-20.98, 0.56)
    assert parse_cell("0.350") == (0.35, None)
    with pytest.raises(ValueError, match="cell"):
        parse_cell("n/a")
    assert beta_by_task(marlhf_table_text.SECTION53_BETA) == {"spread": 1.0, "reference": 1.0, "tag": 3.0}
    assert caption_beta_by_task(marlhf_table_text.TABLE3_CAPTION) == {"spread": 1.0, "reference": 1.0, "tag": 10.0}
    t = table2()
    assert t["mean"][0, 0] == pytest.approx(-21.63) and t["std"][3, 1] == pytest.approx(0.75)
    header, rows = parse_table(marlhf_table_text.TABLE7)
    assert len(header) == 8 and rows["Tag-v3"][1][0] == pytest.approx(0.431)


@pytest.mark.skipif(not PAPER.is_file(), reason="paper text not found")
def test_table_excerpts_are_verbatim_from_the_paper():
    text = " ".join(PAPER.read_text(encoding="utf-8").split())
    for excerpt in marlhf_table_text.EXCERPTS:
        assert " ".join(excerpt.split()) in text


@given(st.floats(0.1, 3.0), st.floats(0.5, 4.0))
def test_zhu_radius_exceeds_the_printed_lemma5_radius_when_lambda_is_one(norm, bound):
    from marlcov.proofs_checks.marlhf_lemmas import lemma5_printed_radius

    gamma = logistic_curvature(norm, bound)
    assert 0 < gamma <= 0.25
    assert zhu_radius(8, 0.1, 1.0, bound, gamma) >= lemma5_printed_radius(8, 0.1, 1.0, bound)


@given(seeds, st.integers(1, 3))
def test_policy_reference_is_the_visited_feature_on_deterministic_play(seed, H):
    """A deterministic policy on deterministic dynamics: the mean feature is the visited feature."""
    game = random_markov_game(2, (2, 2), H, seed).with_one_hot_features()
    transitions = np.zeros_like(game.transitions)
    transitions[..., 1] = 1.0  # always move to state 1
    from marlcov.theory.games import MarkovGame
    from marlcov.theory.policies import deterministic_policy

    det = MarkovGame(transitions, game.rewards, 0, game.features)
    pi = deterministic_policy(det, [np.zeros((H, 2), dtype=int), np.ones((H, 2), dtype=int)])
    means = policy_reference(det, pi, det.features)
    for h in range(H):
        np.testing.assert_allclose(means[h], det.features[h, 0 if h == 0 else 1, 0, 1])


@pytest.mark.slow
@given(seeds)
def test_theorem4_bound_holds_and_the_proof_gives_at_most_m_times_it(seed):
    from marlcov.linear_games.sbsm import sbsm, theorem4_bound
    from marlcov.linear_games.sbsm_experiments import two_player_markov_equilibrium
    from marlcov.proofs_checks.marlhf_bounds import THEOREM4_CONSTANT
    from marlcov.theory.values import nash_gap

    game = anchored_game(seed)
    eq = two_player_markov_equilibrium(game)
    data = sample_preference_dataset(game, uniform_policy(game), 20_000, seed)
    result = sbsm(game, data, clip=False, constant=THEOREM4_CONSTANT, policy_class="mixed", seed=0)
    bound = theorem4_bound(game, result, eq)
    if np.all(result.confidence.contains(game.theta)):
        assert nash_gap(game, result.policy).total <= bound.printed + 1e-9
    assert bound.summed <= game.n_players * bound.printed + 1e-9


@given(st.integers(0, 40))
def test_lemma3_value_error_is_within_the_bonus_sum_whenever_theta_is_in_the_set(k):
    from marlcov.linear_games.sbsm import pessimistic_values
    from marlcov.proofs_checks.marlhf_lemmas import lemma_instance
    from marlcov.theory.values import evaluate_policy

    game, result = lemma_instance(0, k)
    if not np.all(result.confidence.contains(game.theta)):
        return
    obj, policy, s1 = result.objective, uniform_policy(game), game.initial_state
    low = pessimistic_values(obj.model, obj.weights_under, policy, obj.c_p, False).V[0, :, s1]
    true_v = evaluate_policy(game.transitions, game.rewards, policy).V[0, :, s1]
    rhs = evaluate_policy(game.transitions, 2.0 * result.bonus()[:, None], policy).V[0, 0, s1]
    assert np.all(low <= true_v + 1e-9) and np.all(true_v - low <= rhs + 1e-9)


@given(st.lists(st.tuples(st.decimals(-99, 99, places=2), st.decimals(0, 9, places=2), st.booleans()), min_size=1, max_size=6))
def test_table_rows_parse_back_to_the_printed_numbers(cells):
    header = "\t" + "\t".join(f"c{j}" for j in range(len(cells)))
    row = "Row\t" + "\t".join((f"<b><math>{m} \\pm {s}</math></b>" if bold else f"${m} \\pm {s}$") for m, s, bold in cells)
    names, rows = parse_table(header + "\n" + row)
    assert names == [f"c{j}" for j in range(len(cells))]
    assert rows["Row"] == [(float(m), float(s)) for m, s, _ in cells]
