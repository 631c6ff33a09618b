import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marlcov.cli import main
from marlcov.linear_games.solve import solve_one_shot
from marlcov.theory.games import GameError, MarkovGame, random_markov_game
from marlcov.theory.io import load_game, save_game
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import nash_gap
from tests.strategies import markov_games


def one_shot(A, B):
    """A one-state, one-step game; payoffs are scaled into [0, 1] (a positive affine map keeps equilibria)."""
    A, B = np.asarray(A, float), np.asarray(B, float)
    lo, hi = min(A.min(), B.min()), max(A.max(), B.max())
    scale = (hi - lo) or 1.0
    R = np.stack([(A - lo) / scale, (B - lo) / scale])[None, :, None]
    return MarkovGame(np.ones((1, 1, *A.shape, 1)), R)


def as_policy(x, y):
    return (np.asarray(x)[None, None], np.asarray(y)[None, None])


def test_von_stengel_3x2_via_the_command_line(tmp_path, capsys):
    # von Stengel, "Equilibrium computation for two-player games in strategic and extensive form"
    A = [[3, 3], [2, 5], [0, 6]]
    B = [[3, 2], [2, 6], [3, 1]]
    save_game(one_shot(A, B), tmp_path / "g.json")
    assert main(["solve", str(tmp_path / "g.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["zero_sum"] is False and doc["value"] is None
    found = sorted((tuple(np.round(e["strategies"][0], 9)), tuple(np.round(e["strategies"][1], 9))) for e in doc["equilibria"])
    expected = sorted(
        [
            ((1.0, 0.0, 0.0), (1.0, 0.0)),
            ((0.8, 0.2, 0.0), (round(2 / 3, 9), round(1 / 3, 9))),
            ((0.0, round(1 / 3, 9), round(2 / 3, 9)), (round(1 / 3, 9), round(2 / 3, 9))),
        ]
    )
    assert found == expected


def test_matching_pennies_value(tmp_path, capsys):
    A = np.array([[1.0, 0.0], [0.0, 1.0]])
    save_game(one_shot(A, 1 - A), tmp_path / "g.npz")
    assert main(["solve", str(tmp_path / "g.npz"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["zero_sum"] is True
    assert doc["value"] == pytest.approx(0.5)
    np.testing.assert_allclose(doc["equilibria"][0]["strategies"][0], [0.5, 0.5], atol=1e-9)


@given(st.tuples(st.integers(2, 4), st.integers(2, 4)).flatmap(lambda sizes: markov_games(action_sizes=sizes, n_states=1, horizon=1)))
def test_every_returned_equilibrium_has_zero_markov_nash_gap(g):
    doc = solve_one_shot(g)
    assert len(doc["equilibria"]) >= 1
    for eq in doc["equilibria"]:
        assert nash_gap(g, as_policy(*eq["strategies"])).total <= 1e-8


def test_solve_refuses_markov_games(tmp_path):
    with pytest.raises(GameError, match="horizon"):
        solve_one_shot(random_markov_game(1, (2, 2), 2, 0))
    with pytest.raises(GameError, match="n_players"):
        solve_one_shot(random_markov_game(1, (2, 2, 2), 1, 0))


def test_solve_accepts_payoffs_outside_the_unit_interval(tmp_path):
    # von Stengel's 3 x 2 game (payoffs up to 6): matrix games have arbitrary payoffs
    A = np.array([[3, 3], [2, 5], [0, 6]], float)
    B = np.array([[3, 2], [2, 6], [3, 1]], float)
    R = np.stack([A, B])[None, :, None]
    P = np.ones((1, 1, 3, 2, 1))
    path = tmp_path / "big.json"
    save_game(MarkovGame(P, R, bounded_rewards=False), path)
    with pytest.raises(GameError, match=r"rewards: expected values in \[0, 1\]"):
        load_game(path)  # the MARLHF reward assumption still holds by default
    doc = solve_one_shot(load_game(path, bounded_rewards=False))
    assert doc["complete"] and len(doc["equilibria"]) == 3
    np.testing.assert_allclose(sorted(e["payoffs"][0] for e in doc["equilibria"]), [3, 3, 4], atol=1e-9)


def test_solve_markov_game_writes_a_policy_with_zero_nash_gap(tmp_path, capsys):
    game_path, pol_path = tmp_path / "g.json", tmp_path / "pi.json"
    save_game(random_markov_game(3, (2, 3), 3, seed=11), game_path)
    assert main(["solve", str(game_path), "--policy-out", str(pol_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stage_games"] == 9 and doc["nash_gap"] <= VALUE_ATOL
    # the written file, read back and checked by the independent nash-gap command
    assert main(["nash-gap", str(game_path), str(pol_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nash_gap"] <= VALUE_ATOL


def test_solve_policy_out_refused_for_a_matrix_game(tmp_path, capsys):
    path = tmp_path / "m.json"
    save_game(random_markov_game(1, (2, 2), 1, seed=0), path)
    assert main(["solve", str(path), "--policy-out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--policy-out" in err[0]
    assert not (tmp_path / "p.json").exists()


def test_solve_json_reports_the_flags_of_a_degenerate_game(tmp_path, capsys):
    # von Stengel's degenerate 3 x 2 game: a continuum of equilibria through (1, 0, 0)
    A = np.array([[3, 3], [2, 5], [0, 6]], float)
    B = np.array([[3, 3], [2, 6], [3, 1]], float)
    path = tmp_path / "degenerate.json"
    save_game(MarkovGame(np.ones((1, 1, 3, 2, 1)), np.stack([A, B])[None, :, None], bounded_rewards=False), path)
    assert main(["solve", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["degenerate"] and doc["exact"] and not doc["complete"]
    assert len(doc["equilibria"]) == 3 and doc["exploitability"] is None
