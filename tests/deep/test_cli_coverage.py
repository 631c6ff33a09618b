import json

import numpy as np
import pytest

from marlcov.cli import main
from tests.deep.synthetic import write_random_dataset

pytestmark = pytest.mark.deep


def test_marlcov_coverage_on_an_hdf5_dataset(tmp_path, capsys):
    path = tmp_path / "data.h5"
    write_random_dataset(path)
    code = main(["coverage", str(path), "--bootstrap", "5", "--feature-dim", "8", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(doc) >= {"lambda", "single", "unilateral", "uniform", "worst_deviator", "per_agent"}
    assert doc["single"] <= doc["unilateral"] + 1e-9 <= doc["uniform"] + 2e-9
    ident = doc["identifiable"]
    assert set(ident) >= {"single", "unilateral", "uniform", "worst_deviator", "rank_rule", "constant_directions"}
    assert ident["single"] <= ident["unilateral"] + 1e-9 <= ident["uniform"] + 2e-9
    assert ident["worst_deviator"]["value"] == ident["unilateral"]
    code = main(["coverage", str(path), "--bootstrap", "5", "--feature-dim", "8"])
    table = capsys.readouterr().out
    assert code == 0 and "unilateral (max)" in table
    assert "d = 8" in table and "{" not in table  # the feature map in words, not a Python dict


def test_finite_game_needs_its_dataset(tmp_path, capsys):
    from marlcov.theory.games import random_markov_game
    from marlcov.theory.io import save_game

    save_game(random_markov_game(1, (2, 2), 1, 0), tmp_path / "g.json")
    assert main(["coverage", str(tmp_path / "g.json")]) == 2
    assert "DATA" in capsys.readouterr().err


def test_bad_hdf5_input_exits_2_with_one_line_naming_the_file(tmp_path, capsys):
    """No pairs in the file, a missing dataset or pairs file, a file that is not HDF5, a broken
    padding layout: status 2 and one line on stderr, no traceback."""
    import h5py

    bare = write_random_dataset(tmp_path / "bare.h5", N=6, H=2, with_pairs=False)
    text = tmp_path / "text.h5"
    text.write_text("not HDF5")
    hole = write_random_dataset(tmp_path / "hole.h5", N=6, H=3)
    with h5py.File(hole, "r+") as f:
        f["avail"][2, 0] = False
    for argv, names in (
        ([str(bare)], [str(bare), "pairs"]),
        ([str(tmp_path / "missing.h5")], ["missing.h5", "not found"]),
        ([str(hole), "--pairs-file", str(tmp_path / "nopairs.h5")], ["nopairs.h5", "not found"]),
        ([str(text)], [str(text), "HDF5"]),
        ([str(hole)], [str(hole), "avail", "trajectory 2"]),
        ([str(hole), "--bootstrap", "-1"], ["bootstrap"]),
    ):
        code = main(["coverage", *argv, "--feature-dim", "8", "--json"])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("marlcov coverage: error: "), err
        assert all(name in lines[0] for name in names), (names, lines[0])


def test_padded_dataset_through_the_command(tmp_path, capsys):
    lengths = np.array([1, 2, 3, 4, 4, 3, 2, 1, 4, 4])
    path = write_random_dataset(tmp_path / "padded.h5", N=10, H=4, lengths=lengths, horizon=9)
    code = main(["coverage", str(path), "--bootstrap", "3", "--feature-dim", "8", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert all(np.isfinite(doc[k]) for k in ("single", "unilateral", "uniform"))
    assert doc["counts"]["transitions"] == lengths.sum() and doc["dataset"]["longest_episode"] == 4


def test_pairs_file_beside_the_dataset_is_the_default(tmp_path, capsys):
    """``marlcov deep label DATA.h5`` writes DATA.pairs.h5: ``marlcov coverage DATA.h5`` reads it."""
    from marlcov.deep.data import DatasetReader, write_pairs_file
    from marlcov.deep.data.preferences import label_dataset

    path = write_random_dataset(tmp_path / "data.h5", N=8, H=2, with_pairs=False)
    with DatasetReader(path) as reader:
        write_pairs_file(tmp_path / "data.pairs.h5", label_dataset(reader, 2, seed=0), reader)
    code = main(["coverage", str(path), "--bootstrap", "0", "--feature-dim", "8", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["dataset"]["pairs"] == 16 and doc["dataset"]["pairs_file"] == str(tmp_path / "data.pairs.h5")


def test_finite_coverage_json_carries_the_identifiable_measures(tmp_path, capsys):
    """Table 4's M1 with Theorem 3's single-policy data: the paper's unilateral coverage and the
    identifiable one, from the command line, equal the library's. The pairs compare (a1, b1) with
    (a2, b2) only (x = e0 - e3, k times), so a deviation z = e2 - e0 has the identifiable width
    ``||z||^2 = 1.5 + 1 / (2 (1 + 2k))`` (lambda = 1): never below sqrt(1.5), whatever the data."""
    from marlcov.linear_games.constructions import table4_equilibria, table4_games, theorem3_dataset
    from marlcov.theory.identifiable import identifiable_report
    from marlcov.theory.io import save_dataset, save_game, save_policy

    game, eq = table4_games()[0], table4_equilibria()[0]
    data = theorem3_dataset(game, 500, 0)
    save_game(game, tmp_path / "g.json")
    save_dataset(data, tmp_path / "d.npz")
    save_policy(eq, tmp_path / "p.json")
    code = main(["coverage", str(tmp_path / "g.json"), str(tmp_path / "d.npz"), "--policy", str(tmp_path / "p.json"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    want = identifiable_report(game, data, eq)
    ident = doc["identifiable"]
    assert doc["unilateral"] == pytest.approx(want["paper"].unilateral)
    assert ident["unilateral"] == pytest.approx(want["identifiable"].unilateral)
    assert ident["worst_deviator"] == {"player": want["identifiable"].worst_player, "value": ident["unilateral"]}
    assert ident["reward_term"]["single"] == pytest.approx(0.0, abs=1e-12)
    k = int(np.sum(np.any(data.actions[:, 0] != data.actions[:, 1], axis=(1, 2))))
    assert ident["reward_term"]["unilateral"] == pytest.approx(np.sqrt(1.5 + 0.5 / (1 + 2 * k)), rel=1e-9)


def test_sbsm_json_carries_the_certificate_and_refuses_an_unenumerable_class(tmp_path, capsys):
    from marlcov.linear_games.constructions import table4_games, theorem3_dataset
    from marlcov.theory.games import random_linear_markov_game
    from marlcov.theory.io import save_dataset, save_game
    from marlcov.theory.policies import random_policy
    from marlcov.theory.preferences import sample_preference_dataset

    game = table4_games()[1]
    save_game(game, tmp_path / "g.json")
    save_dataset(theorem3_dataset(game, 300, 0), tmp_path / "d.npz")
    code = main(["sbsm", str(tmp_path / "g.json"), str(tmp_path / "d.npz"), "--policy-class", "mixed", "--no-clip", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["identifiable_bound"] >= doc["nash_gap"] - 1e-9
    assert doc["identifiable_certificate"]["probability"] == pytest.approx(1 - 0.1)
    big = random_linear_markov_game(4, (2, 2), 3, 3, seed=1)  # (2^9)^2 = 262,144 policies over the relevant slots
    save_game(big, tmp_path / "big.json")
    save_dataset(sample_preference_dataset(big, random_policy(big, 2), 30, seed=0), tmp_path / "big.npz")
    code = main(["sbsm", str(tmp_path / "big.json"), str(tmp_path / "big.npz"), "--policy-class", "deterministic", "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--policy-class mixed" in err[0] and "big.json" in err[0]
