"""O-MAPL objectives: hand-computed values on tiny inputs and the convexity propositions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.proofs_checks.instances import (
    LocalTables,
    PreferenceInstance,
    extreme_v_objective,
    preference_objective,
    random_preference_instance,
    random_tables,
)
from marlcov.proofs_checks.omapl_numerics import GROUPS, random_direction, second_difference
from marlcov.proofs_checks.tolerances import SECOND_DIFF_TOL
from marlcov.theory.objectives import omapl
from tests.strategies import float_arrays, floats, int_arrays


def test_linear_mix_hand_value():
    assert omapl.linear_mix(np.array([1.0, 2.0]), np.array([0.5, 3.0]), 1.0) == pytest.approx(7.5)


def test_two_layer_mix_hand_value():
    # hidden = [1*1 + 1, 1*2 - 3] = [2, -1]; elu = [2, e^-1 - 1]; out = 1*2 + 2*(e^-1 - 1) + 0.5
    out = omapl.two_layer_mix(np.array([1.0]), np.array([[1.0, 2.0]]), np.array([1.0, -3.0]), np.array([1.0, 2.0]), 0.5)
    assert out == pytest.approx(2.0 + 2.0 * (math.exp(-1) - 1) + 0.5)


def test_preference_likelihood_hand_value():
    r1, r2 = np.array([[1.0, 0.5]]), np.array([[0.0, 0.0]])
    expected = 0.75 * math.log(1 / (1 + math.exp(-1.5))) + 0.25 * math.log(1 / (1 + math.exp(1.5)))
    assert omapl.preference_log_likelihood(r1, r2, np.array([0.75])) == pytest.approx(expected)


def test_chi2_and_objective_hand_value():
    r1, r2 = np.array([[2.0]]), np.array([[0.0]])
    phi = ((2.0 - 2.0) + 0.0) / 2  # phi(2) = 0, phi(0) = 0
    assert omapl.chi2_regulariser(np.array([2.0, 0.0])) == pytest.approx(phi)
    assert omapl.preference_objective(r1, r2, np.array([1.0]), 0.5) == pytest.approx(math.log(1 / (1 + math.exp(-2.0))))


def test_extreme_v_minimiser_is_log_mean_exp():
    q = np.array([0.0, 1.0, 3.0])
    mu = np.array([0.2, 0.3, 0.5])
    beta = 0.7
    v_star = beta * math.log(np.sum(mu * np.exp(q / beta)))
    base = omapl.extreme_v_loss(q, np.full(3, v_star), beta, weights=mu)
    for dv in (-0.1, 0.1, 1e-3, -1e-3):
        assert omapl.extreme_v_loss(q, np.full(3, v_star + dv), beta, weights=mu) > base


def test_implied_rewards():
    assert omapl.implied_rewards(np.array([2.0]), np.array([1.0]), 0.9)[0] == pytest.approx(1.1)


def test_wbc_local_policy_is_normalised_marginal():
    rng = np.random.default_rng(3)
    mu = [rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(2))]
    q = [rng.normal(size=3), rng.normal(size=2)]
    v, w = rng.normal(size=2), np.array([0.7, 1.3])
    pi0 = omapl.wbc_local_policy(mu, q, v, w, 0.2, -0.4, 0.8, 0)
    expected = mu[0] * np.exp(w[0] * q[0] / 0.8)
    np.testing.assert_allclose(pi0, expected / expected.sum(), atol=1e-12)


def test_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    r1, r2, y = np.array([[0.3, -1.0]]), np.array([[0.1, 0.2]]), np.array([0.4])
    a = omapl.preference_objective(r1, r2, y)
    b = omapl.preference_objective(torch.tensor(r1), torch.tensor(r2), torch.tensor(y))
    assert float(b) == pytest.approx(float(a), abs=1e-12)


@st.composite
def preference_instances(draw, n=2, S=3, A=2, N=4, T=2):
    """Pairs of trajectories with soft labels and Extreme-V samples (as ``random_preference_instance``), drawn."""
    return PreferenceInstance(
        states=draw(int_arrays((N, 2, T + 1), 0, S - 1)),
        actions=draw(int_arrays((N, 2, T, n), 0, A - 1)),
        labels=draw(float_arrays(N, 0.0, 1.0)),
        j_states=draw(int_arrays(3 * N, 0, S - 1)),
        j_actions=draw(int_arrays((3 * N, n), 0, A - 1)),
        n_states=S,
        n_actions=A,
        n_agents=n,
        gamma=draw(floats(0.5, 1.0)),
        beta=draw(floats(0.5, 2.0)),
    )


@st.composite
def instances_and_tables(draw):
    """An instance, local tables ``q, v`` in [-3, 3], mixing weights in [0.5, 1.5] and biases in [-3, 3]."""
    inst = draw(preference_instances())
    n, S, A = inst.n_agents, inst.n_states, inst.n_actions
    tab = LocalTables(
        draw(float_arrays((n, S, A), -3.0, 3.0)),
        draw(float_arrays((n, S), -3.0, 3.0)),
        draw(float_arrays((S, n), 0.5, 1.5)),
        draw(float_arrays(S, -3.0, 3.0)),
    )
    return inst, tab


def unit_directions(tab, names):
    """Unit directions in the variables ``names`` of ``tab`` (zero elsewhere)."""
    parts = st.tuples(*(float_arrays(getattr(tab, k).shape, -1.0, 1.0) for k in names))
    norm = lambda x: np.sqrt(sum(float(np.sum(p * p)) for p in x))  # noqa: E731
    return parts.filter(lambda x: norm(x) > 0.1).map(lambda x: {k: p / norm(x) for k, p in zip(names, x)})


@settings(max_examples=15, deadline=None)
@given(instances_and_tables(), st.data())
def test_prop4_1_concave_in_q_convex_in_v_for_fixed_weights(drawn, data):
    inst, tab = drawn
    for _ in range(3):
        d = data.draw(unit_directions(tab, GROUPS["qv"]))
        t = data.draw(floats(0.05, 2.0))
        assert second_difference(lambda x: preference_objective(inst, x), tab, GROUPS["qv"], d, t) <= SECOND_DIFF_TOL
        assert second_difference(lambda x: extreme_v_objective(inst, x), tab, GROUPS["qv"], d, t) >= -SECOND_DIFF_TOL


def test_prop4_1_not_jointly_concave_in_q_and_w():
    rng = np.random.default_rng(0)
    worst = -np.inf
    for _ in range(20):
        inst = random_preference_instance(rng)
        tab = random_tables(rng, inst)
        d = random_direction(rng, tab, GROUPS["qw"])
        worst = max(worst, second_difference(lambda x: preference_objective(inst, x), tab, GROUPS["qw"], d, 0.4))
    assert worst > 1e-4
