import io
import json
import os
import stat

import numpy as np
import pytest

from marlcov.theory.games import GameError, random_linear_markov_game, random_markov_game
from marlcov.theory.io import (
    atomic_write_bytes,
    atomic_write_many,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    load_dataset,
    load_game,
    load_policy,
    merge_verify_checks,
    save_dataset,
    save_figure,
    save_game,
    save_policy,
    write_json,
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


# ------------------------------------------------------------------ atomic writes and file modes
def _umask_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_written_files_get_the_mode_of_ordinary_new_files(tmp_path):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    save_game(g, tmp_path / "g.json")
    save_game(g, tmp_path / "g.npz")
    atomic_write_text(tmp_path / "t.md", "x\n")
    (tmp_path / "plain.txt").write_text("x")
    for name in ("g.json", "g.npz", "t.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == _umask_mode() == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)


def test_save_figure_is_atomic_and_readable(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "f.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_IMODE(path.stat().st_mode) == _umask_mode()

    def broken(*a, **k):
        raise RuntimeError("killed while drawing")

    fig.savefig = broken
    with pytest.raises(RuntimeError):
        save_figure(fig, tmp_path / "g.png")
    plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_a_group_of_files_is_renamed_only_when_all_are_written(tmp_path):
    atomic_write_many({tmp_path / "a.json": lambda fh: fh.write("old a"), tmp_path / "b.md": lambda fh: fh.write("old b")})

    def fails(fh):
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_many({tmp_path / "a.json": lambda fh: fh.write("new a"), tmp_path / "b.md": fails})
    assert (tmp_path / "a.json").read_text() == "old a" and (tmp_path / "b.md").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md"]


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".r.json.{int(dead.stdout)}.abc123.tmp"
    stale.write_text("half")
    live = tmp_path / f".r.json.{os.getpid()}.def456.tmp"
    live.write_text("being written")
    write_json(tmp_path / "r.json", {"a": 1})
    assert not stale.exists() and live.exists()
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}


# ------------------------------------------------------------------ output paths
@pytest.mark.parametrize(
    "name, message", [("", "empty string"), ("d", "is a directory"), ("f/x.npz", "which is a file"), ("x.json", "expected .npz")]
)
def test_unusable_output_files_are_refused_before_any_work(tmp_path, name, message):
    (tmp_path / "d.npz").mkdir()
    (tmp_path / "f").write_text("a file")
    target = "" if name == "" else tmp_path / (name + ".npz" if name == "d" else name)
    with pytest.raises(GameError, match=message):
        check_output_file(target, [".npz"], "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "f"]


@pytest.mark.parametrize("name, message", [("", "empty string"), ("f", "is a file"), ("f/sub", "which is a file")])
def test_unusable_output_directories_are_refused(tmp_path, name, message):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(GameError, match=message) as err:
        check_output_dir("" if name == "" else tmp_path / name, "--out")
    assert str(err.value).startswith("--out: ")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


# ------------------------------------------------------------------ verify reports
def _check(i, figure=1.0):
    return {"id": i, "verdict": "holds", "figure": figure}


def test_partial_verify_runs_merge_into_a_full_report(tmp_path):
    report = tmp_path / "verify.json"
    settings = {"quick": True, "seed": 0}
    assert merge_verify_checks(report, [_check("a")], settings) == [_check("a")]
    write_json(report, {"settings": {**settings, "python": "3"}, "checks": [_check("a"), _check("b"), _check("c")]})
    merged = merge_verify_checks(report, [_check("b", 2.0), _check("d")], settings)
    assert merged == [_check("a"), _check("b", 2.0), _check("c"), _check("d")]


@pytest.mark.parametrize(
    "content, message",
    [
        ({"settings": {"quick": False, "seed": 0}, "checks": []}, "settings"),
        ({"settings": {"quick": True, "seed": 0}, "checks": "x"}, "checks"),
    ],
)
def test_partial_verify_runs_refuse_a_report_they_cannot_merge_into(tmp_path, content, message):
    write_json(tmp_path / "verify.json", content)
    with pytest.raises(GameError, match=message):
        merge_verify_checks(tmp_path / "verify.json", [_check("a")], {"quick": True, "seed": 0})


# ------------------------------------------------------------------ strict readers
def _game_json(tmp_path, **changes):
    path = tmp_path / "game.json"
    write_game_json(path, **changes)
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(transitions=json.dumps([[[[[0.5, 0.5]] * 2] * 2] * 2])), "'transitions': expected real numbers, found strings"),
        (dict(rewards=[[[[True, False], [False, True]]] * 2]), "'rewards': expected real numbers, found booleans"),
        (dict(extra=1), "unknown field(s) ['extra']"),
        (dict(action_sizes=list(range(10_000))), "'action_sizes'"),
        (dict(n_players=0), "'n_players': expected an integer >= 1"),
        (dict(name=[1]), "'name': expected a string"),
    ],
)
def test_game_fields_of_the_wrong_kind_are_refused_not_converted(tmp_path, changes, message):
    path = _game_json(tmp_path, **changes)
    with pytest.raises(GameError) as err:
        load_game(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert len(str(err.value)) < 300


def test_complex_and_pickled_npz_arrays_are_refused(tmp_path):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    base = {
        "format": "marlcov.game/1",
        "n_players": 2,
        "n_states": 2,
        "action_sizes": [2, 2],
        "horizon": 1,
        "initial_state": 0,
        "transitions": g.transitions,
        "rewards": g.rewards,
    }
    np.savez(tmp_path / "c.npz", **{**base, "rewards": g.rewards + 0j})
    with pytest.raises(GameError, match="'rewards': expected real numbers, found complex numbers"):
        load_game(tmp_path / "c.npz")
    np.savez(tmp_path / "p.npz", **{**base, "rewards": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(GameError, match="pickled") as err:
        load_game(tmp_path / "p.npz")
    assert "allow_pickle" not in str(err.value)


def test_truncated_npz_and_deep_json_are_refused(tmp_path):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    save_game(g, tmp_path / "g.npz")
    data = (tmp_path / "g.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GameError, match="cannot be read as NPZ"):
        load_game(tmp_path / "t.npz")
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(GameError, match="nested too deeply"):
        load_game(tmp_path / "deep.json")


def test_npz_headers_declaring_more_than_the_budget_are_refused_before_allocation(tmp_path):
    import tracemalloc
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**20, 2**20)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("transitions.npy", header.getvalue() + b"\0" * 64)
    tracemalloc.start()
    with pytest.raises(GameError, match="'transitions' declares") as err:
        load_game(tmp_path / "huge.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**24 and "budget" in str(err.value)


def test_policy_npz_with_an_unknown_array_is_refused(tmp_path):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    pi = random_policy(g, 1)
    np.savez(tmp_path / "pi.npz", format="marlcov.policy/1", probs_0=pi[0], probs_1=pi[1], probs_x=pi[1])
    with pytest.raises(GameError, match=r"unknown field\(s\) \['probs_x'\]"):
        load_policy(tmp_path / "pi.npz", g)
    np.savez(tmp_path / "one.npz", format="marlcov.policy/1", probs_0=pi[0])
    with pytest.raises(GameError, match="'probs_1' is missing"):
        load_policy(tmp_path / "one.npz", g)


def test_dataset_with_float_actions_is_refused(tmp_path):
    g = random_markov_game(2, (2, 2), 1, seed=0)
    ds = sample_preference_dataset(g, random_policy(g, 2), 4, 3)
    np.savez(tmp_path / "d.npz", format="marlcov.prefs/1", states=ds.states, actions=ds.actions + 0.5, prefs=ds.prefs)
    with pytest.raises(GameError, match="'actions': expected an integer array, found real numbers"):
        load_dataset(tmp_path / "d.npz", g)


def test_a_writer_killed_mid_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    script = (
        "import sys, time\n"
        "from marlcov.theory.io import atomic_save\n"
        "def slow(fh):\n"
        "    fh.write(b'half a figure'); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"atomic_save({str(target)!r}, slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == b"old"
    stale = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".plot.png.")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_json_over_the_size_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    from marlcov.theory import safe_read

    monkeypatch.setattr(safe_read, "MAX_JSON_BYTES", 1000)
    (tmp_path / "g.json").write_text("[]," * 400)
    with pytest.raises(GameError, match="over the reader's limit"):
        load_game(tmp_path / "g.json")


def test_npz_arrays_share_one_memory_budget(tmp_path, monkeypatch):
    from marlcov.theory import safe_read

    g = random_markov_game(2, (2, 2), 1, seed=0)
    save_game(g, tmp_path / "g.npz")
    monkeypatch.setattr(safe_read, "MEMORY_BUDGET_BYTES", g.transitions.nbytes + g.rewards.nbytes + 1000)
    assert load_game(tmp_path / "g.npz").n_states == 2
    monkeypatch.setattr(safe_read, "MEMORY_BUDGET_BYTES", g.transitions.nbytes + g.rewards.nbytes - 8)
    with pytest.raises(GameError, match="over what is left of the reader's budget"):
        load_game(tmp_path / "g.npz")
