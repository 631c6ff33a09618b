"""O-MAPL checks: the verdicts they give (the findings), the figures behind each key number, and
the mathematics of their helpers as hypothesis properties (drawn tables, not only seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from marlcov.proofs_checks.instances import LocalTables, PreferenceInstance, preference_objective
from marlcov.proofs_checks.omapl_extraction import best_product_policy, local_grid, product_table, product_wbc_objective
from marlcov.proofs_checks.omapl_local_values import eta_over_delta, extreme_v_value, prop4_5_rhs
from marlcov.proofs_checks.registry import CheckContext, all_checks, run_check
from marlcov.proofs_checks.tolerances import SECOND_DIFF_TOL
from marlcov.theory.objectives import omapl

#: Verdicts of ``marlcov verify`` for O-MAPL (seed 0); a change is a change of finding.
EXPECTED = {
    "omapl.reward_q_bijection": "holds",
    "omapl.prop4_1": "erratum",
    "omapl.prop4_2": "holds",
    "omapl.theorem4_3": "holds",
    "omapl.theorem4_3_any_mixer": "holds",
    "omapl.theorem4_4": "holds",
    "omapl.prop4_5": "erratum",
}

finite = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
positive = st.floats(0.3, 2.0, allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify_omapl")
    checks = all_checks()
    return {cid: run_check(checks[cid], CheckContext(quick=True, seed=0, out_dir=out)) for cid in EXPECTED}, out


def test_verdicts(results):
    res, _ = results
    assert {cid: r.status for cid, r in res.items()} == EXPECTED, {cid: r.error for cid, r in res.items() if r.error}


def test_prop4_1_erratum_is_separate_not_joint_concavity(results):
    v = results[0]["omapl.prop4_1"].verdict
    ev = v.evidence
    assert all(ev["separately_curved"].values())
    assert ev["L_max_second_difference"]["qw"] > SECOND_DIFF_TOL
    assert ev["symbolic"]["max_eigenvalue_qw"] > 0 >= ev["symbolic"]["max_eigenvalue_q"]
    assert "bilinear" in v.corrected and "concave in q" in v.printed


def test_any_mixer_separates_the_restricted_and_the_unrestricted_optimum(results):
    ev = results[0]["omapl.theorem4_3_any_mixer"].verdict.evidence
    gaps = ev["max_objective_gap_best_minus_product_of_local_optima"]
    kl = ev["max_kl_policy_1_to_product"]
    assert max(gaps.values()) <= 1e-6
    assert kl["linear"] <= 1e-8 < 1e-3 <= kl["two_layer"]


def test_any_mixer_figure_has_a_caption(results):
    res, out = results
    v = res["omapl.theorem4_3_any_mixer"].verdict
    assert v.figures and set(v.captions) == set(v.figures)
    assert all((out / name).is_file() for name in v.figures)


def test_prop4_5_evidence(results):
    ev = results[0]["omapl.prop4_5"].verdict.evidence
    assert ev["max_abs_rhs_of_11_minus_v_i"] <= 1e-9
    assert ev["max_rel_change_of_eta_over_delta_when_other_agents_change"] <= 1e-9
    assert ev["extreme_v_two_minimisers_abs_difference_in_J"] <= 1e-9 < ev["extreme_v_two_minimisers_max_abs_difference_in_v_i"]


@st.composite
def local_value_problems(draw):
    n = draw(st.integers(2, 3))
    A = draw(st.integers(2, 3))
    K = draw(st.integers(1, 3))
    table = arrays(np.float64, (K, A), elements=finite)
    mu = [draw(arrays(np.float64, (K, A), elements=st.floats(0.05, 1.0))) for _ in range(n)]
    return {
        "q": [draw(table) for _ in range(n)],
        "v": [draw(arrays(np.float64, K, elements=finite)) for _ in range(n)],
        "wq": [draw(arrays(np.float64, K, elements=positive)) for _ in range(n)],
        "wv": [draw(arrays(np.float64, K, elements=positive)) for _ in range(n)],
        "bq": draw(arrays(np.float64, K, elements=finite)),
        "bv": draw(arrays(np.float64, K, elements=finite)),
        "mu": [m / m.sum(axis=1, keepdims=True) for m in mu],
        "beta": draw(positive),
    }


@given(local_value_problems(), st.data())
def test_eta_over_delta_is_agent_i_own_normaliser(p, data):
    """(10) as printed: eta cancels, eta/Delta = exp(w^v v_i/beta) / sum mu_i exp(w^q q_i/beta), so (11) is v_i = v_i."""
    i = data.draw(st.integers(0, len(p["q"]) - 1))
    own = np.exp(p["wv"][i] * p["v"][i] / p["beta"]) / np.sum(p["mu"][i] * np.exp(p["wq"][i][:, None] * p["q"][i] / p["beta"]), axis=1)
    np.testing.assert_allclose(eta_over_delta(p, i), own, rtol=1e-10)
    np.testing.assert_allclose(prop4_5_rhs(p, i), p["v"][i], rtol=1e-10, atol=1e-10)


@given(local_value_problems())
def test_extreme_v_loss_is_minimal_at_the_log_sum_exp(p):
    """J's minimiser fixes M[v] = beta log E_mu exp(M[q]/beta): moving v off it raises J, moving along sum w^v d = 0 does not."""
    n = len(p["q"])
    base = [
        p["beta"] / p["wv"][i] * np.log(np.sum(p["mu"][i] * np.exp(p["wq"][i][:, None] * p["q"][i] / p["beta"]), axis=1)) for i in range(n)
    ]
    base = [b + (p["bq"] - p["bv"]) / (n * p["wv"][i]) for i, b in enumerate(base)]
    at_min = extreme_v_value(p, base)
    assert extreme_v_value(p, [b + 0.1 for b in base]) > at_min
    d = [np.ones_like(base[0]) / p["wv"][0], -np.ones_like(base[0]) / p["wv"][1]] + [np.zeros_like(base[0])] * (n - 2)
    assert extreme_v_value(p, [b + di for b, di in zip(base, d)]) == pytest.approx(at_min, abs=1e-12)


@st.composite
def wbc_tables(draw):
    n = draw(st.integers(2, 3))
    A = draw(st.integers(2, 3))
    c = draw(arrays(np.float64, (2,) + (A,) * n, elements=st.floats(0.01, 1.0)))
    return c / c.sum(axis=tuple(range(1, n + 1)), keepdims=True), n


@given(wbc_tables(), st.data())
def test_best_product_policy_beats_every_drawn_product_policy(table, data):
    """The L-BFGS optimum over product policies is at least the global WBC value of any drawn product policy,
    and it equals the value at the product of the per-agent maximisers (the normalised marginals of c)."""
    c, n = table
    _, best = best_product_policy(c, n)
    logits = [data.draw(arrays(np.float64, (2, c.shape[1 + i]), elements=finite)) for i in range(n)]
    assert best >= product_wbc_objective(logits, c) - 1e-12
    marginals = [np.sum(c, axis=tuple(1 + j for j in range(n) if j != i)) for i in range(n)]
    assert best == pytest.approx(float(np.sum(c * np.log(product_table(marginals)))), abs=1e-9)


@given(
    arrays(np.float64, (2, 3), elements=finite),
    arrays(np.float64, (2, 2), elements=finite),
    arrays(np.float64, 2, elements=positive),
    positive,
)
def test_linear_mixing_makes_the_wbc_target_a_product(q1, q2, w, beta):
    """With linear mixing and a uniform product behaviour, mu exp(Q_tot/beta) normalised is the product of its marginals."""
    q_tot = omapl.linear_mix(local_grid([q1[:1], q2[:1]]), w, 0.0)
    p = np.exp(q_tot / beta - np.max(q_tot / beta))
    p /= p.sum()
    np.testing.assert_allclose(p, product_table([p.sum(axis=2), p.sum(axis=1)]), rtol=1e-10, atol=1e-15)


@given(arrays(np.float64, (2, 3, 2), elements=finite), arrays(np.float64, (2, 3, 2), elements=finite), positive, st.floats(0.05, 0.5))
def test_preference_objective_is_concave_in_q_for_fixed_weights(q, d, w_scale, t):
    """Corrected Proposition 4.1: with the mixing weights fixed, L's midpoint second difference along any q-direction is <= 0."""
    rng = np.random.default_rng(0)
    inst = PreferenceInstance(
        rng.integers(0, 3, size=(3, 2, 3)),
        rng.integers(0, 2, size=(3, 2, 2, 2)),
        np.array([0.9, 0.2, 0.6]),
        rng.integers(0, 3, size=6),
        rng.integers(0, 2, size=(6, 2)),
        3,
        2,
        2,
    )
    tab = LocalTables(q, np.zeros((2, 3)), np.full((3, 2), w_scale), np.zeros(3))
    norm = float(np.linalg.norm(d)) or 1.0

    def at(s):
        return preference_objective(inst, LocalTables(q + s * d / norm, tab.v, tab.w, tab.b))

    assert at(t) + at(-t) - 2.0 * at(0.0) <= SECOND_DIFF_TOL


def test_prop4_2_counterexample_file_reproduces(tmp_path):
    """The saved counterexample, read back on its own, still breaks concavity (of L) or convexity (of J)."""
    import json

    from marlcov.proofs_checks.instances import extreme_v_objective, mixer_from_params

    result = run_check(all_checks()["omapl.prop4_2"], CheckContext(quick=True, seed=0, out_dir=tmp_path))
    ce = json.loads((tmp_path / result.verdict.evidence["counterexample_file"]).read_text())
    d = ce["instance"]
    point = {k: np.array(ce["point"][k]) for k in ("q", "v", "w", "b")}
    inst = PreferenceInstance(
        np.array(d["states"]),
        np.array(d["actions"]),
        np.array(d["labels"]),
        np.array(d["j_states"]),
        np.array(d["j_actions"]),
        point["v"].shape[1],
        point["q"].shape[2],
        point["q"].shape[0],
        d["gamma"],
        d["beta"],
        d["reg_coef"],
    )
    mixer = mixer_from_params(ce["mixer"])
    f = preference_objective if ce["objective"].startswith("L") else extreme_v_objective
    direction = {k: np.array(v) for k, v in ce["direction"].items()}

    def at(s):
        return f(inst, LocalTables(**{k: x + s * direction.get(k, 0.0) for k, x in point.items()}), mixer)

    second = at(ce["step"]) + at(-ce["step"]) - 2.0 * at(0.0)
    assert second > SECOND_DIFF_TOL if ce["objective"].startswith("L") else second < -SECOND_DIFF_TOL
