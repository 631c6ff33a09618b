import json

import pytest

from marlcov.cli import main

from .test_diagnostics import write_dataset

pytestmark = pytest.mark.deep


def test_marlcov_coverage_on_an_hdf5_dataset(tmp_path, capsys):
    path = tmp_path / "data.h5"
    write_dataset(path)
    code = main(["coverage", str(path), "--bootstrap", "5", "--feature-dim", "8", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(doc) >= {"lambda", "single", "unilateral", "uniform", "worst_deviator", "per_agent"}
    assert doc["single"] <= doc["unilateral"] + 1e-9 <= doc["uniform"] + 2e-9
    code = main(["coverage", str(path), "--bootstrap", "5", "--feature-dim", "8"])
    assert code == 0 and "unilateral (max)" in capsys.readouterr().out


def test_finite_game_needs_its_dataset(tmp_path, capsys):
    from theory.games import random_markov_game
    from theory.io import save_game

    save_game(random_markov_game(1, (2, 2), 1, 0), tmp_path / "g.json")
    assert main(["coverage", str(tmp_path / "g.json")]) == 2
    assert "DATA" in capsys.readouterr().err
