"""marlcov.deep.coverage_study: joins of coverage records with table2.json and the rank correlations."""

import json

import numpy as np
import pytest
from scipy import stats

from marlcov.cli import main as cli_main
from marlcov.deep.coverage_study import MEASURES, correlate, rank_correlations, run_study
from marlcov.deep.pipeline import MIXES, label_dataset_file
from tests.deep.synthetic import write_random_dataset

pytestmark = pytest.mark.deep

SEEDS = (0, 1, 2)
#: Hand-made test returns and reward MSEs per (mix, seed).
RETURNS = {
    "diversified": [-22.0, -21.5, -23.0],
    "mix-unilateral": [-20.0, -20.5, -21.0],
    "mix-expert": [-21.0, -20.0, -22.5],
    "pure-expert": [-24.0, -23.5, -25.0],
}
MSES = {
    "diversified": [0.3, 0.25, 0.35],
    "mix-unilateral": [0.5, 0.55, 0.6],
    "mix-expert": [0.45, 0.5, 0.4],
    "pure-expert": [0.7, 0.65, 0.8],
}


def make_run(root):
    """A tiny reproduce run directory: four mix datasets with pairs files and a table2.json."""
    env_dir = root / "simple_spread_v3"
    (env_dir / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, mix in enumerate(MIXES):
        N, H, m, nA = 24, 3, 2, 3
        actions = rng.integers(0, nA if mix != "pure-expert" else 1, size=(N, H, m))
        path = write_random_dataset(env_dir / "data" / f"{mix}.h5", N=N, H=H, m=m, nA=nA, seed=k, actions=actions)
        label_dataset_file(path, pairs_per_trajectory=3, seed=k)
    rows = {
        mix: {"records": [{"seed": s, "return_per_agent": RETURNS[mix][j], "mse": MSES[mix][j]} for j, s in enumerate(SEEDS)]}
        for mix in MIXES
    }
    (env_dir / "table2.json").write_text(json.dumps({"table": "table2", "env": "simple_spread_v3", "seeds": len(SEEDS), "rows": rows}))
    return root


def test_rank_correlations_are_scipys():
    x = [3.0, 1.0, 2.0, 5.0, 4.0, 4.0]
    y = [0.1, 0.5, 0.2, -1.0, 0.0, 0.3]
    got = rank_correlations(x, y)
    assert got["n"] == 6 and got["distinct_x"] == 5
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert got["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert got["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert got["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert rank_correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["spearman"] is None
    with pytest.raises(ValueError, match="same length"):
        rank_correlations([1.0, 2.0], [1.0])


def test_correlate_over_points_and_over_means():
    points = [
        {"run": "r", "mix": mix, "seed": s, "single": float(i), "return": RETURNS[mix][j], "mse": MSES[mix][j]}
        for i, mix in enumerate(MIXES)
        for j, s in enumerate(SEEDS)
    ]
    got = correlate(points, ["single"], ["return", "mse"])
    x = [p["single"] for p in points]
    for t, table in (("return", RETURNS), ("mse", MSES)):
        y = [v for mix in MIXES for v in table[mix]]
        assert got["single"][t]["by_point"]["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert got["single"][t]["by_point"]["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
        means = [np.mean(table[mix]) for mix in MIXES]
        assert got["single"][t]["by_mix"]["n"] == 4
        assert got["single"][t]["by_mix"]["spearman"] == pytest.approx(stats.spearmanr(range(4), means).statistic)
        assert got["single"][t]["by_mix"]["kendall"] == pytest.approx(stats.kendalltau(range(4), means).statistic)


def test_study_joins_table2_with_the_coverage_records(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "study"
    opts = dict(bootstrap=4, bootstrap_anchors=8, episodes=4, feature_dim=8, seed=0)
    result = run_study([run], out, **opts)
    doc = json.loads((out / "coverage_study.json").read_text())
    assert doc == json.loads(json.dumps(result))
    assert (out / "coverage_study.md").read_text().startswith("# Coverage measures")
    env = doc["envs"]["simple_spread_v3"]
    records = {mix: json.loads((out / "run" / "simple_spread_v3" / f"coverage_{mix}.json").read_text()) for mix in MIXES}
    assert len(env["points"]) == len(MIXES) * len(SEEDS)
    for p in env["points"]:
        j = SEEDS.index(p["seed"])
        assert p["return"] == RETURNS[p["mix"]][j] and p["mse"] == MSES[p["mix"]][j]
        for k in MEASURES:
            assert p[k] == records[p["mix"]]["measures"][k]["value"]
    for k in MEASURES:
        x = [records[mix]["measures"][k]["value"] for mix in MIXES for _ in SEEDS]
        y = [v for mix in MIXES for v in RETURNS[mix]]
        c = env["correlations"][k]["return"]["by_point"]
        assert c["n"] == 12
        if np.unique(x).size > 1:
            assert c["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
            assert c["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
        rk = env["runs"]["run"]["ranking"][k]
        vals = [records[mix]["measures"][k]["value"] for mix in rk["best_to_worst"]]
        assert vals == sorted(vals, reverse=MEASURES[k][1] == "higher")
    single = [records[mix]["measures"]["single"] for mix in MIXES]
    assert all(s["interval"] is not None and s["interval"][0] <= s["interval"][1] for s in single)
    assert all(r["measures"]["unilateral"]["value"] >= r["measures"]["single"]["value"] - 1e-9 for r in records.values())

    logs = []
    run_study([run], out, **opts, log=logs.append)
    assert sum(line.startswith("[skip] coverage") for line in logs) == len(MIXES)
    with pytest.raises(ValueError, match="settings"):
        run_study([run], out, **{**opts, "bootstrap": 5})


def test_bad_runs_directory_is_an_error(tmp_path, capsys):
    assert cli_main(["deep", "study", "--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "--runs" in capsys.readouterr().err
    assert cli_main(["deep", "study", "--runs", str(tmp_path), "--out", str(tmp_path / "o"), "--bootstrap", "-1"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


def test_the_reference_policy_may_be_a_pipeline_checkpoint(tmp_path):
    """``expert.pt`` of the behaviour policies (deep.marlhf.vdn format) loads as its greedy policy."""
    import torch

    from marlcov.deep.diagnostics import load_policy
    from marlcov.deep.marlhf.vdn import AgentQNet, GreedyPolicy, save_policy

    torch.manual_seed(0)
    net = AgentQNet(obs_dim=2, n_actions=3, n_agents=2, hidden=8, layers=2)
    save_policy(tmp_path / "expert.pt", net, "toy", {}, {"level": "expert"})
    pol = load_policy(tmp_path / "expert.pt")
    assert isinstance(pol, GreedyPolicy)
    obs, avail = torch.randn(5, 2, 2), torch.ones(5, 2, 3, dtype=torch.bool)
    assert torch.equal(pol(obs, avail, 0), net(obs).argmax(dim=-1))


def test_a_measure_missing_from_some_records_leaves_those_points_out():
    """A cache written before the identifiable measures existed holds no value for them."""
    points = [
        {
            "run": "r",
            "mix": mix,
            "seed": s,
            "single": float(i),
            "identifiable_single": None if i == 0 else float(-i),
            "return": RETURNS[mix][j],
            "mse": MSES[mix][j],
        }
        for i, mix in enumerate(MIXES)
        for j, s in enumerate(SEEDS)
    ]
    got = correlate(points, ["single", "identifiable_single"], ["return"])
    assert got["single"]["return"]["by_point"]["n"] == len(MIXES) * len(SEEDS)
    assert got["identifiable_single"]["return"]["by_point"]["n"] == (len(MIXES) - 1) * len(SEEDS)
    assert got["identifiable_single"]["return"]["by_mix"]["n"] == len(MIXES) - 1
