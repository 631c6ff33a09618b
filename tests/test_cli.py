import json

import numpy as np
import pytest

from marlcov.linear_games.constructions import table4_equilibria, table4_games
from marlcov.cli import main
from marlcov.theory.coverage import coverage_measures
from marlcov.theory.games import random_linear_markov_game
from marlcov.theory.io import load_dataset, save_game, save_policy
from marlcov.theory.policies import random_policy
from marlcov.theory.values import nash_gap


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    g = random_linear_markov_game(3, (2, 2, 2), 3, 4, seed=5)
    pi = random_policy(g, 6)
    save_game(g, tmp_path / "game.json")
    save_policy(pi, tmp_path / "pi.json")
    return g, pi, tmp_path


def test_nash_gap_json(files, capsys):
    g, pi, d = files
    code, out, _ = run(capsys, "nash-gap", d / "game.json", d / "pi.json", "--json")
    assert code == 0
    doc = json.loads(out)
    exact = nash_gap(g, pi)
    assert doc["nash_gap"] == pytest.approx(exact.total, abs=1e-12)
    np.testing.assert_allclose(doc["per_player"], exact.per_player, atol=1e-12)


def test_sample_then_coverage(files, capsys):
    g, pi, d = files
    code, out, _ = run(capsys, "sample", d / "game.json", d / "pi.json", "--pairs", 40, "--seed", 3, "--out", d / "data.npz", "--json")
    assert code == 0 and json.loads(out) == {"path": str(d / "data.npz"), "pairs": 40}
    code, out, _ = run(capsys, "coverage", d / "game.json", d / "data.npz", "--policy", d / "pi.json", "--lambda", 2, "--json")
    assert code == 0
    doc = json.loads(out)
    exact = coverage_measures(g, load_dataset(d / "data.npz"), pi, lam=2.0)
    assert doc["lambda"] == 2.0
    for key in ("single", "unilateral", "uniform"):
        assert doc[key] == pytest.approx(getattr(exact, key), abs=1e-12)
    assert doc["worst_deviator"] == {"player": exact.worst_player, "value": pytest.approx(exact.unilateral)}


def test_human_output_is_a_table(files, capsys):
    _, _, d = files
    code, out, _ = run(capsys, "nash-gap", d / "game.json", d / "pi.json")
    assert code == 0 and "Nash gap" in out and "V^dagger" in out


def test_bad_input_exits_2_with_one_line_naming_the_field(files, capsys):
    _, _, d = files
    (d / "bad.json").write_text(json.dumps({"format": "marlcov.policy/1", "probs": [[[[1.0]]]]}))
    code, out, err = run(capsys, "nash-gap", d / "game.json", d / "bad.json", "--json")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "bad.json" in err and "probs" in err


def test_missing_policy_for_coverage(files, capsys):
    _, _, d = files
    run(capsys, "sample", d / "game.json", d / "pi.json", "--pairs", 5, "--out", d / "data.npz")
    code, _, err = run(capsys, "coverage", d / "game.json", d / "data.npz")
    assert code == 2 and "--policy" in err


def test_nash_gap_of_table4_equilibrium_is_zero(tmp_path, capsys):
    m1, _ = table4_games()
    save_game(m1, tmp_path / "m1.npz")
    save_policy(table4_equilibria()[0], tmp_path / "eq.npz")
    code, out, _ = run(capsys, "nash-gap", tmp_path / "m1.npz", tmp_path / "eq.npz", "--json")
    assert code == 0 and json.loads(out)["nash_gap"] == pytest.approx(0.0, abs=1e-12)


def test_verify_writes_report(tmp_path, capsys):
    code, out, _ = run(capsys, "verify", "--only", "marlhf.theorem3", "--out", tmp_path / "rep", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [c["id"] for c in doc["checks"]] == ["marlhf.theorem3"]
    c = doc["checks"][0]
    assert set(c) >= {"id", "paper", "claim", "verdict", "evidence", "seconds"}
    assert c["verdict"] == "holds"
    assert json.loads((tmp_path / "rep" / "verify.json").read_text())["checks"][0]["id"] == "marlhf.theorem3"
    assert "marlhf.theorem3" in (tmp_path / "rep" / "verify.md").read_text()


def test_verify_unknown_id(tmp_path, capsys):
    code, _, err = run(capsys, "verify", "--only", "nope.x", "--out", tmp_path)
    assert code == 2 and "nope.x" in err


def test_sbsm_json_on_table4_with_unilateral_data(tmp_path, capsys):
    from marlcov.linear_games.coverage_datasets import unilateral_dataset
    from marlcov.linear_games.constructions import theorem3_dataset
    from marlcov.theory.io import save_dataset

    m1, _ = table4_games()
    eq1 = table4_equilibria()[0]
    data = theorem3_dataset(m1, 500, 0) + unilateral_dataset(m1, eq1, 500, 1).dataset
    save_game(m1, tmp_path / "m1.json")
    save_policy(eq1, tmp_path / "eq.json")
    save_dataset(data, tmp_path / "d.npz")
    base = ["sbsm", tmp_path / "m1.json", tmp_path / "d.npz", "--json", "--policy-class", "mixed"]
    code, out, _ = run(capsys, *base, "--no-clip", "--equilibrium", tmp_path / "eq.json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) >= {"surrogate", "exact", "lower_bound", "nash_gap", "bound", "policy"}
    assert doc["exact"] is True
    assert doc["policy"]["format"] == "marlcov.policy/1"
    pi = tuple(np.asarray(p) for p in doc["policy"]["probs"])
    assert doc["nash_gap"] == pytest.approx(nash_gap(m1, pi).total, abs=1e-12)
    assert doc["nash_gap"] <= 1e-6
    assert doc["bound"] is not None and doc["nash_gap"] <= doc["bound"]
    code, out, _ = run(capsys, *base)
    assert code == 0 and json.loads(out)["bound"] is None


def test_sbsm_rejects_bad_delta(tmp_path, capsys):
    m1, _ = table4_games()
    save_game(m1, tmp_path / "m1.json")
    code, _, err = run(capsys, "sbsm", tmp_path / "m1.json", tmp_path / "none.npz", "--delta", "1.5")
    assert code == 2 and "--delta" in err


def test_deep_command_is_registered_without_importing_torch():
    """``marlcov verify`` must run without the deep extra: building the parser (which
    registers ``marlcov deep``) may not import torch or JAX."""
    import subprocess
    import sys

    code = (
        "import sys; from marlcov.cli import build_parser; p = build_parser(); "
        "a = p.parse_args(['deep', 'label', 'x.h5']); "
        "print(a.deep_command, 'torch' in sys.modules, 'jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["label", "False", "False"]


def test_deep_command_missing_file_exits_2(tmp_path, capsys):
    assert main(["deep", "label", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert "missing.h5" in err
