import json

import numpy as np
import pytest

from marlcov.cli import main
from marlcov.linear_games.constructions import table4_equilibria, table4_games
from marlcov.theory.coverage import coverage_measures
from marlcov.theory.games import random_linear_markov_game
from marlcov.theory.io import load_dataset, save_dataset, save_game, save_policy
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset
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


def test_verify_only_merges_into_the_report_of_the_folder(tmp_path, capsys):
    rep = tmp_path / "rep"
    assert run(capsys, "verify", "--only", "marlhf.theorem3", "--out", rep, "--json")[0] == 0
    code, out, _ = run(capsys, "verify", "--only", "omapl.reward_q_bijection", "--out", rep, "--json")
    assert code == 0 and [c["id"] for c in json.loads(out)["checks"]] == ["omapl.reward_q_bijection"]
    on_disk = json.loads((rep / "verify.json").read_text())
    assert [c["id"] for c in on_disk["checks"]] == ["marlhf.theorem3", "omapl.reward_q_bijection"]
    markdown = (rep / "verify.md").read_text()
    assert "marlhf.theorem3" in markdown and "omapl.reward_q_bijection" in markdown


def test_verify_only_refuses_a_report_of_other_settings_before_running(tmp_path, capsys):
    rep = tmp_path / "rep"
    assert run(capsys, "verify", "--only", "marlhf.theorem3", "--out", rep, "--json")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in rep.iterdir()}
    code, out, err = run(capsys, "verify", "--full", "--only", "marlhf.theorem3", "--out", rep)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "settings" in err
    assert {p.name: p.stat().st_mtime_ns for p in rep.iterdir()} == before


def test_verify_unknown_id(tmp_path, capsys):
    code, _, err = run(capsys, "verify", "--only", "nope.x", "--out", tmp_path)
    assert code == 2 and "nope.x" in err


def test_sbsm_json_on_table4_with_unilateral_data(tmp_path, capsys):
    from marlcov.linear_games.constructions import theorem3_dataset
    from marlcov.linear_games.coverage_datasets import unilateral_dataset
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


# ------------------------------------------------------------------ the first hour of a user
def one_line_error(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 300, err
    assert "Traceback" not in err
    return lines[0]


def test_version(capsys):
    from marlcov import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"marlcov {__version__}"


def _options(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name != "deep":
                    yield from _options(sub)
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield parser.prog, action


def test_every_option_and_argument_has_help_text():
    from marlcov.cli import build_parser

    missing = [f"{prog} {action.dest}" for prog, action in _options(build_parser()) if not (action.help or "").strip()]
    assert missing == []


def test_help_points_to_the_formats_document(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "docs/formats.md" in out


@pytest.mark.parametrize(
    "argv, option",
    [
        (["sample", "{g}", "{p}", "--pairs", "5", "--seed", "-1", "--out", "{d}/x.npz"], "--seed"),
        (["sample", "{g}", "{p}", "--pairs", "1e9", "--out", "{d}/x.npz"], "--pairs"),
        (["sample", "{g}", "{p}", "--pairs", "1000000000", "--out", "{d}/x.npz"], "--pairs"),
        (["sample", "{g}", "{p}", "--pairs", "5", "--out", "{d}/x.json"], "--out"),
        (["sample", "{g}", "{p}", "--pairs", "5", "--out", ""], "--out"),
        (["sample", "{g}", "{p}", "--pairs", "5", "--out", "{d}"], "--out"),
        (["sample", "{g}", "{p}", "--pairs", "5", "--out", "{g}/x.npz"], "--out"),
        (["sample", "{g}", "{p}", "--pairs", "5", "--steepness", "nan", "--out", "{d}/x.npz"], "--steepness"),
        (["sbsm", "{g}", "{d}/data.npz", "--seed", "-1"], "--seed"),
        (["sbsm", "{g}", "{d}/data.npz", "--delta", "1.5"], "--delta"),
        (["verify", "--seed", "-1", "--out", "{d}/rep"], "--seed"),
        (["verify", "--only", "marlhf.theorem3", "--out", "{g}"], "--out"),
        (["verify", "--only", "marlhf.theorem3", "--out", ""], "--out"),
        (["coverage", "{g}", "{d}/data.npz", "--policy", "{p}", "--bootstrap", "-7"], "--bootstrap"),
        (["coverage", "{g}", "{d}/data.npz", "--policy", "{p}", "--bootstrap", "7"], "--bootstrap"),
        (["coverage", "{g}", "{d}/data.npz", "--policy", "{p}", "--features", "random-obs"], "--features"),
        (["coverage", "{g}", "{d}/data.npz", "--policy", "{p}", "--out", "{d}/plots"], "--out"),
        (["coverage", "{d}/x.h5", "{d}/data.npz"], "DATA"),
        (["solve", "{g}", "--policy-out", "{d}/pi.txt"], "--policy-out"),
        (["nash-gap", "{g}"], "policy"),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(files, capsys, argv, option):
    g, pi, d = files
    save_dataset(sample_preference_dataset(g, pi, 5, seed=0), d / "data.npz")
    before = sorted(p.name for p in d.iterdir())
    subst = {"{g}": str(d / "game.json"), "{p}": str(d / "pi.json"), "{d}": str(d)}
    argv = [a.replace("{g}", subst["{g}"]).replace("{p}", subst["{p}"]).replace("{d}", subst["{d}"]) for a in argv]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2 and out == ""
    line = one_line_error(err)
    command = argv[0] if argv[0] != "no-such-command" else ""
    assert line.startswith(f"marlcov {command}".strip() + ": error: ") and option in line, line
    assert sorted(p.name for p in d.iterdir()) == before


def test_interrupt_prints_one_line_and_exits_130(files, capsys, monkeypatch):
    import marlcov.theory.values as values

    _, _, d = files

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(values, "nash_gap", interrupted)
    code, out, err = run(capsys, "nash-gap", d / "game.json", d / "pi.json")
    assert code == 130 and out == ""
    assert one_line_error(err) == "marlcov nash-gap: interrupted"


def test_progress_is_drawn_only_when_asked_under_json(files, capsys, monkeypatch):
    import marlcov.theory.values as values
    from marlcov.theory import progress

    _, _, d = files
    seen = []
    real = values.nash_gap

    def watched(*a, **k):
        seen.append(progress._listener.get() is not None)
        return real(*a, **k)

    monkeypatch.setattr(values, "nash_gap", watched)
    base = ["nash-gap", d / "game.json", d / "pi.json"]
    for extra in ([], ["--json"], ["--json", "--progress"]):
        assert run(capsys, *base, *extra)[0] == 0
    assert seen == [True, False, True]


def test_progress_lines_on_a_log_say_what_how_far_and_the_time_left(monkeypatch):
    import io

    from marlcov.cli import _common
    from marlcov.theory.progress import listening, task

    monkeypatch.setattr(_common, "LOG_QUIET_SECONDS", 0.0)
    log = io.StringIO()
    with listening(_common.StderrProgress("marlcov coverage", log)), task("bootstrap replicates", 4) as t:
        t.advance()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("marlcov coverage: bootstrap replicates: 1/4 running after") and "s left" in lines[0]
    assert lines[-1].startswith("marlcov coverage: bootstrap replicates: 1/4 done after")


def test_json_runs_are_quiet_on_stderr(files, capsys):
    _, _, d = files
    code, _, err = run(capsys, "nash-gap", d / "game.json", d / "pi.json", "--json")
    assert code == 0 and err == ""


@pytest.mark.parametrize("n_states, expected", [(2, "deterministic"), (7, "mixed")])
def test_sbsm_policy_class_is_chosen_by_size(tmp_path, capsys, n_states, expected):
    """H = 2, two players of 2 actions: 4^(1 + S) deterministic policies differ where the
    surrogate can see it, 64 for S = 2 (under the enumeration limit of 50,000) and 65,536 for
    S = 7 (over it)."""
    g = random_linear_markov_game(n_states, (2, 2), 2, 3, seed=1)
    save_game(g, tmp_path / "g.json")
    save_dataset(sample_preference_dataset(g, random_policy(g, 2), 30, seed=0), tmp_path / "d.npz")
    code, out, err = run(capsys, "sbsm", tmp_path / "g.json", tmp_path / "d.npz", "--no-clip", "--json")
    assert code == 0, err
    assert json.loads(out)["policy_class"] == expected


def _tour_block():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return readme.split("## A tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


def _tour_lines():
    """The tour's lines that need no deep extra."""
    return [line for line in _tour_block() if "marlcov deep" not in line and ".h5" not in line]


def test_the_tour_makes_every_file_before_it_uses_it():
    import re

    made, used_before_made = set(), []
    for line in _tour_block():
        code = line.split("#", 1)[0]
        made.update(re.findall(r"""['"]([\w.]+\.(?:json|npz))['"]""", code))
        words = code.split()
        if words[:1] != ["marlcov"]:
            continue
        for prev, word in zip(words, words[1:]):
            if re.fullmatch(r"[\w.]+\.(json|npz|h5)", word):
                if prev == "--out":
                    made.add(word)
                elif word not in made:
                    used_before_made.append(word)
        if words[1:3] == ["deep", "label"]:
            made.add(words[3].replace(".h5", ".pairs.h5"))
    assert used_before_made == []
    assert "smax.h5" in made


@pytest.mark.slow
def test_the_tours_finite_game_lines_run_as_written(tmp_path):
    import os
    import subprocess
    import sys

    script = "set -euo pipefail\n" + "\n".join(_tour_lines()) + "\n"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"game.json", "pi.json", "data.npz", "m1.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "Traceback" not in done.stderr


def test_the_traceback_behind_a_one_line_error_on_request(files, capsys, monkeypatch):
    from marlcov.theory.games import GameError

    _, _, d = files
    (d / "bad.json").write_text("{}")
    monkeypatch.setenv("MARLCOV_TRACEBACK", "1")
    with pytest.raises(GameError, match="format"):
        main(["nash-gap", str(d / "game.json"), str(d / "bad.json")])


def test_sample_draws_many_pairs_in_chunks_with_progress(files, capsys, monkeypatch):
    import marlcov.cli as cli
    from marlcov.cli import finite

    g, pi, d = files
    code, _, _ = run(capsys, "sample", d / "game.json", d / "pi.json", "--pairs", 7, "--seed", 4, "--out", d / "one.npz")
    direct = sample_preference_dataset(g, pi, 7, seed=4)
    assert code == 0 and np.array_equal(load_dataset(d / "one.npz").actions, direct.actions)
    monkeypatch.setattr(finite, "SAMPLE_CHUNK_PAIRS", 7)
    events = []

    class Recorder:
        def start(self, t):
            events.append(("start", t.total))

        def update(self, t):
            events.append(("update", t.done))

        def finish(self, t):
            events.append(("finish", t.done))

        def close(self):
            events.append(("close",))

    monkeypatch.setattr(cli, "StderrProgress", lambda name: Recorder())
    code, _, _ = run(
        capsys, "sample", d / "game.json", d / "pi.json", "--pairs", 20, "--seed", 4, "--out", d / "many.npz", "--json", "--progress"
    )
    ds = load_dataset(d / "many.npz", g)
    assert code == 0 and ds.n_pairs == 20
    chunks = ds.actions[:7], ds.actions[7:14], ds.actions[14:]
    assert not np.array_equal(chunks[0], chunks[1]) and np.array_equal(chunks[0], direct.actions)
    assert events == [("start", 20), ("update", 7), ("update", 14), ("update", 20), ("finish", 20), ("close",)]
