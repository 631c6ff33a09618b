import json

import numpy as np
import pytest

from marlcov.theory.games import GameError, random_linear_markov_game, random_markov_game
from marlcov.theory.io import (
    load_dataset,
    load_game,
    load_policy,
    save_dataset,
    save_game,
    save_policy,
)
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_game_round_trip(tmp_path, suffix):
    g = random_linear_markov_game(3, (2, 3), 2, 4, seed=1, name="g")
    path = tmp_path / f"game{suffix}"
    save_game(g, path)
    back = load_game(path)
    np.testing.assert_array_equal(back.transitions, g.transitions)
    np.testing.assert_array_equal(back.rewards, g.rewards)
    np.testing.assert_array_equal(back.features, g.features)
    np.testing.assert_array_equal(back.theta, g.theta)
    assert back.name == "g" and back.initial_state == g.initial_state


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_policy_round_trip(tmp_path, suffix):
    g = random_markov_game(2, (2, 3), 2, seed=1)
    pi = random_policy(g, 2)
    save_policy(pi, tmp_path / f"pi{suffix}")
    back = load_policy(tmp_path / f"pi{suffix}", g)
    for a, b in zip(pi, back):
        np.testing.assert_array_equal(a, b)


def test_dataset_round_trip(tmp_path):
    g = random_markov_game(2, (2, 3), 2, seed=1)
    ds = sample_preference_dataset(g, random_policy(g, 2), 10, 3)
    save_dataset(ds, tmp_path / "d.npz")
    back = load_dataset(tmp_path / "d.npz", g)
    np.testing.assert_array_equal(back.prefs, ds.prefs)
    np.testing.assert_array_equal(back.actions, ds.actions)


def write_game_json(path, **changes):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    save_game(g, path)
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(format="marlcov.game/2"), "'format' is 'marlcov.game/2'"),
        (dict(format=None), "'format' is missing"),
        (dict(n_states=3), "'transitions': expected shape"),
        (dict(action_sizes=[2, 2, 2]), "'action_sizes'"),
        (dict(horizon="1"), "'horizon': expected an integer"),
        (dict(rewards=None), "'rewards' is missing"),
        (dict(rewards=[[[[1.0, 2.0], [0.0, 0.0]]]]), "rewards"),
        (dict(initial_state=5), "initial_state"),
    ],
)
def test_bad_game_files_name_file_and_field(tmp_path, changes, message):
    path = tmp_path / "game.json"
    write_game_json(path, **changes)
    with pytest.raises(GameError) as err:
        load_game(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unreadable_files_are_refused(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(GameError, match="cannot be read"):
        load_game(tmp_path / "x.json")
    with pytest.raises(GameError, match="no such file"):
        load_game(tmp_path / "missing.json")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(GameError, match="suffix"):
        load_game(tmp_path / "x.txt")


def test_policy_off_the_simplex_is_refused(tmp_path):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    path = tmp_path / "pi.json"
    path.write_text(json.dumps({"format": "marlcov.policy/1", "probs": [[[[0.5, 0.6], [0.5, 0.5]]], [[[0.5, 0.5], [0.5, 0.5]]]]}))
    with pytest.raises(GameError, match=r"probs\[0\].*sums to"):
        load_policy(path, g)


def test_dataset_with_wrong_format_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", format="other", states=np.zeros((1, 2, 2), int))
    with pytest.raises(GameError, match="format"):
        load_dataset(tmp_path / "d.npz")


def test_writes_are_atomic(tmp_path, monkeypatch):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    path = tmp_path / "game.npz"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        save_game(g, path)
    assert list(tmp_path.iterdir()) == []
