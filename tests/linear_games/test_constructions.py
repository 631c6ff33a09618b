import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marlcov.linear_games.constructions import TABLE4_M1, TABLE4_M2, table4_equilibria, table4_games, theorem3_dataset
from marlcov.proofs_checks.marlhf import table4_gap_sum_symbolic, table4_policy
from marlcov.theory.coverage import coverage_measures
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import nash_gap

probabilities = st.floats(0.0, 1.0)


def test_table4_arrays_are_the_printed_tables():
    m1, m2 = table4_games()
    # player 1 is b (the printed rows), player 0 is a (the printed columns)
    np.testing.assert_array_equal(m1.rewards[0, 1, 0].T, TABLE4_M1)
    np.testing.assert_array_equal(m2.rewards[0, 1, 0].T, TABLE4_M2)
    np.testing.assert_array_equal(m1.rewards[0, 0, 0] + m1.rewards[0, 1, 0], np.ones((2, 2)))
    np.testing.assert_array_equal(TABLE4_M1, [[0.5, 1.0], [0.0, 0.5]])
    np.testing.assert_array_equal(TABLE4_M2, [[0.5, 0.0], [1.0, 0.5]])


def test_stated_equilibria_have_zero_gap_and_the_other_games_does_not():
    m1, m2 = table4_games()
    eq1, eq2 = table4_equilibria()
    assert nash_gap(m1, eq1).total <= VALUE_ATOL
    assert nash_gap(m2, eq2).total <= VALUE_ATOL
    assert nash_gap(m1, eq2).total == pytest.approx(1.0)
    assert nash_gap(m2, eq1).total == pytest.approx(1.0)


@given(probabilities, probabilities)
def test_table4_gap_identity_for_every_product_policy(p, q):
    m1, m2 = table4_games()
    pi = table4_policy(p, q)
    assert nash_gap(m1, pi).total + nash_gap(m2, pi).total == pytest.approx(1.0, abs=1e-12)


def test_table4_gap_identity_symbolically():
    assert table4_gap_sum_symbolic() == 1


def test_theorem3_dataset_covers_only_the_two_equilibria():
    m1, _ = table4_games()
    ds = theorem3_dataset(m1, 500, seed=0)
    joint = {tuple(a) for a in ds.actions.reshape(-1, 2)}
    assert joint == {(0, 0), (1, 1)}
    # equal rewards on the covered pairs: labels are fair coins in both games
    assert abs((ds.prefs == 1).mean() - 0.5) < 0.05


def test_theorem3_single_coverage_tends_to_one_over_root_two():
    m1, _ = table4_games()
    eq1, _ = table4_equilibria()
    values = [coverage_measures(m1, theorem3_dataset(m1, n, seed=1), eq1).single for n in (10, 1000, 100000)]
    assert values[0] > values[1] > values[2] > 1 / np.sqrt(2)
    assert values[2] == pytest.approx(1 / np.sqrt(2), abs=1e-2)
