import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from marlcov.proofs_checks.marlhf import theorem3_single_coverage_limit
from marlcov.proofs_checks.marlhf_sec5 import per_step_design, regularised_reward_fit
from marlcov.proofs_checks.registry import CheckContext, Verdict, run_check, select
from marlcov.theory.games import random_markov_game
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset

seeds = st.integers(0, 2**31 - 1)


@given(seeds, st.integers(2, 4), st.integers(1, 40))
def test_moving_reward_between_steps_leaves_every_comparison_unchanged(seed, H, n):
    g = random_markov_game(2, (2, 2), H, seed)
    ds = sample_preference_dataset(g, random_policy(g, seed), n, seed)
    X, y, D = per_step_design(g, ds)
    d = X.shape[1] // H
    for h in range(H - 1):
        v = np.zeros(H * d)
        v[h * d : (h + 1) * d], v[(h + 1) * d : (h + 2) * d] = 1.0, -1.0
        assert np.abs(X @ v).max() == 0.0
        assert np.abs(D @ v).max() > 0  # ... but the per-step rewards, and their smoothness, change


def test_mse_term_is_non_increasing_in_alpha():
    g = random_markov_game(2, (2,), 3, 1)
    ds = sample_preference_dataset(g, random_policy(g, 2), 150, 3)
    X, y, D = per_step_design(g, ds)
    mse = [np.sum((D @ regularised_reward_fit(X, y, D, a)) ** 2) for a in (1e-3, 1e-1, 10.0)]
    assert mse[0] >= mse[1] - 1e-6 and mse[1] >= mse[2] - 1e-6


@given(st.floats(0.05, 20.0))
def test_theorem3_limit_is_one_over_sqrt_two_lambda(lam):
    limit = theorem3_single_coverage_limit()
    assert float(limit.subs(sp.Symbol("lambda", positive=True), lam)) == pytest.approx(1 / np.sqrt(2 * lam), rel=1e-12)


def test_every_registered_check_runs_and_returns_a_valid_verdict(tmp_path):
    for chk in select(["marlhf"]):
        result = run_check(chk, CheckContext(quick=True, seed=0, out_dir=tmp_path))
        assert result.error is None, result.error
        assert isinstance(result.verdict, Verdict)
        for fig in result.verdict.figures:
            assert (tmp_path / fig).stat().st_size > 0


def test_verdicts_are_validated():
    with pytest.raises(ValueError, match="erratum"):
        Verdict("erratum", "x")
    with pytest.raises(ValueError, match="counterexample"):
        Verdict("refuted", "x")
    with pytest.raises(ValueError, match="verdict"):
        Verdict("maybe", "x")


def test_marlhf_checks_are_deterministic_for_a_seed():
    for chk in select(["marlhf"]):
        a = run_check(chk, CheckContext(quick=True, seed=3))
        b = run_check(chk, CheckContext(quick=True, seed=3))
        assert a.verdict.verdict == b.verdict.verdict
        assert a.verdict.evidence == b.verdict.evidence, chk.id


def test_markdown_table_escapes_pipes_in_cells():
    from marlcov.proofs_checks.report import markdown

    doc = {
        "settings": {"quick": True, "seed": 0, "python": "3"},
        "checks": [
            {
                "id": "a.b",
                "paper": "P",
                "claim": "c",
                "verdict": "holds",
                "summary": "max |x| = 0",
                "seconds": 0.1,
                "kind": "exact",
                "evidence": {},
            }
        ],
    }
    row = [line for line in markdown(doc).splitlines() if line.startswith("| `a.b`")][0]
    assert row.count(" | ") == 4 and "\\|x\\|" in row
