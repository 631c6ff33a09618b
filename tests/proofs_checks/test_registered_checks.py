"""The registered checks of O-MAPL, OMIGA, MAMQL and score decomposition: they run, are
deterministic for a seed and write the figures they list. Their verdicts are pinned by the README's
errata list (test_registry_rules), their counterexamples by each paper's own test module."""

import json

import pytest

from marlcov.proofs_checks.registry import CheckContext, run_check, select

PREFIXES = ("omapl", "omiga", "mamql", "score")


@pytest.fixture(scope="module", params=PREFIXES)
def results(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"verify_{request.param}")
    return {c.id: run_check(c, CheckContext(quick=True, seed=0, out_dir=out)) for c in select([request.param])}, out


def test_checks_run_without_error(results):
    res, _ = results
    assert res, "no checks registered"
    for cid, r in res.items():
        assert r.error is None, f"{cid}: {r.error}"
        json.dumps(r.verdict.evidence)


def test_figures_exist(results):
    res, out = results
    for r in res.values():
        for name in r.verdict.figures:
            assert (out / name).is_file()


def test_deterministic_for_seed(results):
    res, _ = results
    for r in res.values():
        again = run_check(r.check, CheckContext(quick=True, seed=0))
        assert again.verdict.verdict == r.verdict.verdict
        assert again.verdict.summary == r.verdict.summary
