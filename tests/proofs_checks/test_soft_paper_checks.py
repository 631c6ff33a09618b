"""OMIGA, MAMQL and score-decomposition checks: the verdicts they give, what their key figures
say, and the mathematics of their helpers as hypothesis properties (drawn objects)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.proofs_checks.mamql import implied_expert_rewards, iq_objective_of_critic
from marlcov.proofs_checks.mamql_concavity import critic_problem, fd_hessian
from marlcov.proofs_checks.registry import CheckContext, all_checks, run_check
from marlcov.proofs_checks.score_decomposition import kl_regularised_optimum
from marlcov.proofs_checks.tolerances import CLARABEL_TIGHT_ATOL, HESSIAN_FD_ATOL, HESSIAN_FD_STEP

#: Verdicts of ``marlcov verify`` for these papers (seed 0); a change is a change of finding.
EXPECTED = {
    "omiga.prop4_4": "holds",
    "omiga.factorisation": "holds",
    "mamql.marginal_soft_bellman": "holds",
    "mamql.qre_fixed_point": "holds",
    "mamql.reward_recovery": "holds",
    "mamql.concavity": "erratum",
    "score.sequential_identity": "holds",
    "score.coordination_game": "holds",
    "score.denoising_score": "holds",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify_soft")
    checks = all_checks()
    return {cid: run_check(checks[cid], CheckContext(quick=True, seed=0, out_dir=out)) for cid in EXPECTED}


def test_verdicts(results):
    assert {cid: r.status for cid, r in results.items()} == EXPECTED, {cid: r.error for cid, r in results.items() if r.error}


def test_qre_check_names_the_equilibrium_it_checks(results):
    """The soft (entropy-regularised) QRE is checked; the plain-value agent QRE coincides in one step, not beyond."""
    ev = results["mamql.qre_fixed_point"].verdict.evidence
    assert ev["plain_value_agent_qre_vs_soft_qre_one_step_or_one_state"] <= 1e-9
    assert ev["multi_step_multi_state_games"] > 0
    assert ev["plain_value_agent_qre_vs_soft_qre_multi_step_min"] > 1e-6


def test_mamql_concavity_erratum_evidence(results):
    v = results["mamql.concavity"].verdict
    ev = v.evidence
    assert ev["max_hessian_eigenvalue_inside_region"] <= HESSIAN_FD_ATOL < ev["max_hessian_eigenvalue_outside_region"]
    assert ev["witness_chord_second_difference"] > 0
    assert "1/(2c)" in v.corrected
    assert v.figures and set(v.captions) == set(v.figures)


def test_coordination_game_uses_independent_optima(results):
    ev = results["score.coordination_game"].verdict.evidence
    assert ev["max_abs_cvxpy_minus_package_kl_policy"] <= CLARABEL_TIGHT_ATOL
    assert ev["min_miscoordination_product_kl_optimum"] > 0 == ev["max_miscoordination_sequential_target"]


@given(arrays(np.float64, (4, 4), elements=st.floats(-2, 2)), arrays(np.float64, 4, elements=st.floats(-2, 2)))
def test_fd_hessian_of_a_quadratic(a, x):
    sym = a + a.T
    f = lambda y: 0.5 * y @ sym @ y  # noqa: E731
    # exact for a quadratic up to the rounding of f (at most a few eps times the sum of the
    # magnitudes of its terms), amplified by 1 / h^2
    scale = 1.0 + (np.abs(x) + 1.0) @ np.abs(sym) @ (np.abs(x) + 1.0)
    rounding = 8 * np.finfo(float).eps * scale / HESSIAN_FD_STEP**2
    np.testing.assert_allclose(fd_hessian(f, x), sym, rtol=0, atol=rounding)


PROBLEM = critic_problem(np.random.default_rng(3), horizon=2)


@given(arrays(np.float64, PROBLEM["shape"], elements=st.floats(-1.0, 1.0)), st.floats(0.05, 1.0), st.floats(0.5, 3.0))
def test_iq_criterion_is_concave_where_phi_is_non_decreasing(q, c, lam):
    """Corrected claim: at any critic with every expert x <= 1/(2c) the Hessian has no positive eigenvalue."""
    states, actions, probs = PROBLEM["states"], PROBLEM["actions"], PROBLEM["probs"]
    assume(np.max(implied_expert_rewards(q, lam, states, actions)) <= 1.0 / (2.0 * c))
    hess = fd_hessian(lambda y: iq_objective_of_critic(y.reshape(q.shape), lam, states, actions, probs, reg_coef=c), q.ravel())
    assert np.linalg.eigvalsh(hess)[-1] <= HESSIAN_FD_ATOL


@given(
    arrays(np.float64, (2, 3), elements=st.floats(-2, 2)),
    arrays(np.float64, (2, 3), elements=st.floats(0.0, 1.0)),
    st.floats(0.2, 2.0),
)
def test_cvxpy_kl_optimum_is_the_gibbs_policy(payoff, ref, alpha):
    """argmax E_pi[r] - alpha KL(pi || ref) by cvxpy equals ref exp(r/alpha)/Z (zero where ref is)."""
    assume(ref.sum() > 0.1)
    ref = ref / ref.sum()
    gibbs = ref * np.exp((payoff - payoff.max()) / alpha)
    np.testing.assert_allclose(kl_regularised_optimum(payoff, ref, alpha), gibbs / gibbs.sum(), atol=CLARABEL_TIGHT_ATOL)
