"""The registered checks of omapl: they run, are deterministic for a seed, and give the computed verdicts."""

import json

import pytest

from proofs_checks.registry import CheckContext, run_check, select

PREFIX = "omapl" if "omapl" != "score_decomposition" else "score"


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
    assert res["omapl.reward_q_bijection"].status == "holds"
    assert res["omapl.prop4_1"].status == "erratum"
    assert res["omapl.prop4_2"].status == "holds"
    assert res["omapl.theorem4_3"].status == "holds"
    assert res["omapl.theorem4_4"].status == "holds"


def test_prop4_2_counterexample_reproduces(results):
    import numpy as np

    from proofs_checks.omapl import PreferenceInstance, LocalTables, _mixer_from_params, preference_objective, extreme_v_objective

    _, out = results
    ce = json.loads((out / "omapl_prop4_2_counterexample.json").read_text())
    inst_d = ce["instance"]
    inst = PreferenceInstance(
        np.array(inst_d["states"]), np.array(inst_d["actions"]), np.array(inst_d["labels"]), np.array(inst_d["j_states"]),
        np.array(inst_d["j_actions"]), 0, 0, len(ce["point"]["q"]), inst_d["gamma"], inst_d["beta"], inst_d["reg_coef"],
    )
    point = LocalTables(*(np.array(ce["point"][k]) for k in ("q", "v", "w", "b")))
    mixer = _mixer_from_params(ce["mixer"])
    f = preference_objective if ce["objective"].startswith("L") else extreme_v_objective
    t, d = ce["step"], {k: np.array(v) for k, v in ce["direction"].items()}

    def shifted(s):
        fields = {k: getattr(point, k) + (s * d[k] if k in d else 0) for k in ("q", "v", "w", "b")}
        return f(inst, LocalTables(**fields), mixer)

    second = shifted(t) + shifted(-t) - 2 * shifted(0.0)
    assert (second > 1e-10) if ce["objective"].startswith("L") else (second < -1e-10)
