"""The registered checks of omiga: they run, are deterministic for a seed, and give the computed verdicts."""

import json

import pytest

from proofs_checks.registry import CheckContext, run_check, select

PREFIX = "omiga" if "omiga" != "score_decomposition" else "score"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    return {c.id: run_check(c, CheckContext(quick=True, seed=0, out_dir=out)) for c in select([PREFIX])}, out


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
    again = {c.id: run_check(c, CheckContext(quick=True, seed=0)) for c in select([PREFIX])}
    for cid, r in res.items():
        assert again[cid].verdict.verdict == r.verdict.verdict
        assert again[cid].verdict.summary == r.verdict.summary


def test_expected_verdicts(results):
    res, _ = results
    for cid, r in res.items():
        assert r.status == "holds", cid
