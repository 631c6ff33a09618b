"""Nash equilibria of games of three and more players (pygambit's solvers, checked here)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.cli import main
from marlcov.linear_games import markov_equilibria, n_player
from marlcov.linear_games.n_player import n_player_equilibrium
from marlcov.theory.games import GameError, MarkovGame, random_markov_game
from marlcov.theory.io import save_game
from marlcov.theory.tolerances import PROB_ATOL, VALUE_ATOL

needs_gambit = pytest.mark.skipif(not n_player.has_gambit(), reason="pygambit (the gambit extra) is not installed")


def gains_by_definition(U: np.ndarray, strategies) -> np.ndarray:
    """``max_a u_i(a, x_-i) - u_i(x)`` by summing over every joint action (no tensor algebra)."""
    m = len(strategies)
    sizes = U.shape[1:]
    gains = np.zeros(m)
    for i in range(m):
        dev = np.zeros(sizes[i])
        for joint in itertools.product(*map(range, sizes)):
            weight = np.prod([strategies[j][joint[j]] for j in range(m) if j != i])
            dev[joint[i]] += weight * U[(i, *joint)]
        gains[i] = dev.max() - dev @ strategies[i]
    return gains


def table(outcomes, sizes) -> np.ndarray:
    """``U[i, a]`` from an .nfg outcome list, the first player's action varying fastest."""
    U = np.zeros((len(sizes), *sizes))
    for k, joint in enumerate(itertools.product(*map(range, reversed(sizes)))):
        U[(slice(None), *reversed(joint))] = outcomes[k]
    return U


# Nau, Gomez Canovas and Hansen (2004), "On the geometry of Nash equilibria and correlated
# equilibria", IJGT 32, section 4 (also gambit's catalog, journals/ijgt/nau2004/sec4.nfg): a
# 2x2x2 game whose unique Nash equilibrium is in irrational strategies.
NAU_SEC4 = table(
    [(3, 0, 2), (0, 1, 0), (0, 2, 0), (1, 0, 0), (1, 0, 0), (0, 3, 0), (0, 1, 0), (2, 0, 3)],
    (2, 2, 2),
)


def test_nau_2004_unique_irrational_equilibrium():
    # the indifference conditions of the three players, with p = P(Top), q = P(Left),
    # r = P(1): q (1 + 2r) = (1 - q)(2 - r), (1 - p)(3 - 2r) = p (1 + r), 2pq = 3(1 - p)(1 - q),
    # give 2r^2 + 23r - 9 = 0
    r = (np.sqrt(601.0) - 23.0) / 4.0
    q = (2.0 - r) / (3.0 + r)
    p = (3.0 - 2.0 * r) / (4.0 - r)
    assert gains_by_definition(NAU_SEC4, ([p, 1 - p], [q, 1 - q], [r, 1 - r])).max() <= 1e-14
    pytest.importorskip("pygambit")
    eq = n_player_equilibrium(NAU_SEC4)
    np.testing.assert_allclose(np.concatenate(eq.strategies), [p, 1 - p, q, 1 - q, r, 1 - r], atol=PROB_ATOL)
    np.testing.assert_allclose(eq.payoffs, [q * (1 + 2 * r), p * (1 + r), 2 * p * q], atol=VALUE_ATOL)


@needs_gambit
def test_jordan_1993_matching_game_has_the_uniform_equilibrium():
    # Jordan (1993), GEB 5: player 1 wants to match player 2, player 2 to match player 3,
    # player 3 to mismatch player 1; the unique equilibrium is uniform
    U = np.zeros((3, 2, 2, 2))
    for a in itertools.product(range(2), repeat=3):
        U[(slice(None), *a)] = (a[0] == a[1], a[1] == a[2], a[2] != a[0])
    eq = n_player_equilibrium(U)
    np.testing.assert_allclose(np.concatenate(eq.strategies), 0.5, atol=PROB_ATOL)


@st.composite
def payoff_tensors(draw, players):
    sizes = tuple(draw(st.integers(1, 3 if players == 3 else 2)) for _ in range(players))
    n = players * int(np.prod(sizes))
    # small integers make ties (degenerate games); floats make generic ones
    entry = st.integers(-2, 2).map(float) if draw(st.booleans()) else st.floats(-5.0, 5.0)
    return np.array(draw(st.lists(entry, min_size=n, max_size=n))).reshape(players, *sizes)


@needs_gambit
@settings(max_examples=40, deadline=None)
@given(st.sampled_from([3, 4]).flatmap(payoff_tensors))
def test_equilibrium_has_no_profitable_deviation(U):
    eq = n_player_equilibrium(U)
    for x, a in zip(eq.strategies, U.shape[1:]):
        assert x.shape == (a,) and (x >= 0).all()
        assert abs(x.sum() - 1.0) <= PROB_ATOL
    span = np.ptp(U.reshape(U.shape[0], -1), axis=1)
    assert (gains_by_definition(U, eq.strategies) <= VALUE_ATOL * np.maximum(span, 1.0)).all()
    payoffs = np.zeros(U.shape[0])
    for a in itertools.product(*map(range, U.shape[1:])):
        payoffs += np.prod([x[k] for x, k in zip(eq.strategies, a)]) * U[(slice(None), *a)]
    np.testing.assert_allclose(eq.payoffs, payoffs, atol=VALUE_ATOL)


def test_malformed_payoff_tensor_refused():
    with pytest.raises(ValueError, match=r"U: expected shape \(m, A_1, ..., A_m\)"):
        n_player_equilibrium(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="finite"):
        n_player_equilibrium(np.full((3, 2, 2, 2), np.nan))


def test_without_pygambit_the_extra_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(n_player, "has_gambit", lambda: False)
    monkeypatch.setattr(markov_equilibria, "has_gambit", lambda: False)
    with pytest.raises(ImportError, match=r"marlcov\[gambit\]"):
        n_player_equilibrium(NAU_SEC4)
    game = random_markov_game(2, (2, 2, 2), 2, seed=0)
    with pytest.raises(GameError, match=r"n_players: .*marlcov\[gambit\]"):
        markov_equilibria.markov_equilibrium(game)
    path = tmp_path / "g3.json"
    save_game(game, path)
    assert main(["solve", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gambit" in err[0]


@needs_gambit
def test_cli_solves_a_three_player_markov_game(tmp_path, capsys):
    game_path, pol_path = tmp_path / "g3.json", tmp_path / "pi.json"
    save_game(random_markov_game(3, (2, 3, 2), 3, seed=7), game_path)
    assert main(["solve", str(game_path), "--policy-out", str(pol_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stage_games"] == 9 and doc["nash_gap"] <= VALUE_ATOL and "enumpoly" in doc["selection"]
    # the written policy, read back and checked by the independent nash-gap command
    assert main(["nash-gap", str(game_path), str(pol_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nash_gap"] <= VALUE_ATOL


@needs_gambit
def test_one_state_one_step_three_player_game_is_its_stage_game():
    P = np.ones((1, 1, 2, 2, 2, 1))
    eq = markov_equilibria.markov_equilibrium(MarkovGame(P, NAU_SEC4[None, :, None] / 3.0))
    assert eq.stage_games == 1 and eq.nash_gap <= VALUE_ATOL
    assert gains_by_definition(NAU_SEC4, [pi[0, 0] for pi in eq.policy]).max() <= VALUE_ATOL
