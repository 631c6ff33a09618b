"""``marlcov deep compare``: one table from several algorithms on one dataset and the same
seeds, through local processes and Ray (same numbers), resumption, input errors, table format.
Tiny networks and budgets: seconds per cell."""

import argparse
import json
import re
import sys

import numpy as np
import pytest
import torch

from marlcov.cli.deep import add_deep_parser
from marlcov.deep.compare import (
    comparison_markdown,
    comparison_rows,
    load_compare_config,
    parse_algos,
    run_compare,
    summary,
    trainer_configs,
)
from marlcov.deep.data.hdf5 import DatasetWriter
from marlcov.deep.envs.mpe import MPEBatch, UniformRandomPolicy
from marlcov.deep.pipeline import label_dataset_file, pairs_path_for
from marlcov.theory.games import GameError

pytestmark = pytest.mark.deep

B = 8
TINY = {
    "evaluate": {"episodes": B, "batch_size": B},
    "omapl": {"steps": 6, "hidden": 16, "mixer_hidden": 8, "batch_pairs": 4, "checkpoint_every": 3},
    "omiga": {"steps": 6, "hidden": 16, "mixer_hidden": 8, "batch_trajectories": 4, "checkpoint_every": 3},
    "mamql": {"updates": 3, "hidden": 16, "layers": 2, "batch_size": 4},
    "score_decomposition": {
        "diffusion_updates": 2,
        "updates": 3,
        "hidden": 16,
        "layers": 2,
        "denoiser_hidden": 16,
        "denoiser_layers": 2,
        "batch_size": 16,
    },
    "reward_model": {"hidden": 16, "layers": 2, "epochs": 1, "batch_size": 16, "progress": False},
    "reference": {"hidden": 16, "layers": 2, "epochs": 1, "batch_size": 8, "progress": False},
    "offline_vdn": {"hidden": 16, "layers": 2, "updates": 4, "batch_size": 4, "target_update": 2, "progress": False},
}
#: Same seeds, one torch thread, CPU: the numbers agree across backends up to float printing.
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 simple_spread_v3 episodes: 8 of a uniform policy tagged expert (MAMQL's
    demonstrations), 8 tagged trivial; preference pairs in DATA.pairs.h5 beside it."""
    path = tmp_path_factory.mktemp("compare") / "spread.h5"
    env = MPEBatch("simple_spread_v3", B)
    m = env.spec.n_agents
    with DatasetWriter(path, env.spec.dataset_spec()) as writer:
        writer.append(env.rollout(UniformRandomPolicy(1), 0, source="expert", agent_policy=["expert"] * m))
        writer.append(env.rollout(UniformRandomPolicy(2), B, source="trivial", agent_policy=["trivial"] * m))
    label_dataset_file(path, pairs_path_for(path), pairs_per_trajectory=2, seed=0)
    return path


@pytest.fixture(scope="module")
def continuous_dataset(tmp_path_factory):
    from marlcov.deep.envs.mpe_continuous import collect_continuous_dataset

    path = tmp_path_factory.mktemp("continuous") / "spread_continuous.h5"
    return collect_continuous_dataset(path, 4, 4, batch_size=4)


def marlcov(argv):
    parser = argparse.ArgumentParser(prog="marlcov")
    add_deep_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    try:
        return args.func(args)
    except GameError as exc:
        print(exc, file=sys.stderr)
        return 2


def per_seed(result):
    return {v: [(r["seed"], r["return_per_agent"]) for r in row["per_seed"]] for v, row in result["rows"].items()}


def numbers_of(markdown):
    """The table's rows without the wall-time column."""
    return [line.rsplit("|", 2)[0] for line in markdown.splitlines() if line.startswith("| ")]


# ----------------------------------------------------------------------------- backends
@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    res = run_compare(dataset, "omapl,omiga", seeds=2, env="spread", config=TINY, out_dir=out, workers=2, threads=1)
    return out, res


@pytest.mark.slow
def test_local_processes_write_table_json_and_curves(local_run):
    out, res = local_run
    assert {"omapl", "omiga"} == set(res["rows"])
    for row in res["rows"].values():
        assert row["seeds"] == [0, 1] and row["return_per_agent"]["n"] == 2
        assert all(r["return_per_agent"] < 0 for r in row["per_seed"])  # spread: negative distances
    saved = json.loads((out / "compare.json").read_text())
    assert per_seed(saved) == per_seed(res)
    assert len(saved["curves"]["omapl"]) == 2 and len(saved["curves"]["omapl"][0]["value"]) == TINY["omapl"]["steps"]
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "cells" / "omiga" / "seed1" / "model.pt").exists()


@pytest.mark.slow
def test_ray_gives_the_table_of_local_processes(local_run, dataset, tmp_path, ray_local):
    out, local = local_run
    res = run_compare(dataset, "omapl,omiga", seeds=2, env="spread", config=TINY, out_dir=tmp_path, ray_address="local", threads=1)
    for v in local["rows"]:
        got, want = per_seed(res)[v], per_seed(local)[v]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [r for _, r in got] == pytest.approx([r for _, r in want], abs=TOLERANCE)
    assert numbers_of((tmp_path / "compare.md").read_text()) == numbers_of((out / "compare.md").read_text())


# ----------------------------------------------------------------------------- resumption, the other algorithms
def test_existing_cell_result_is_not_recomputed(dataset, tmp_path):
    """A run killed after one cell finished: that cell's result is read back, the others run."""
    cell = tmp_path / "cells" / "omiga" / "seed0"
    cell.mkdir(parents=True)
    sentinel = {
        "variant": "omiga",
        "seed": 0,
        "return_per_agent": 123.0,
        "return_std": 0.0,
        "episodes": B,
        "seconds": 1.0,
        "curve": {"metric": "loss", "update": [1.0], "value": [0.5]},
        "train": {},
    }
    (cell / "result.json").write_text(json.dumps(sentinel))
    res = run_compare(dataset, "omiga", seeds=2, config=TINY, out_dir=tmp_path, workers=1)
    assert per_seed(res)["omiga"][0] == (0, 123.0)
    assert not (cell / "model.pt").exists() and (tmp_path / "cells" / "omiga" / "seed1" / "model.pt").exists()


def test_cell_without_result_resumes_from_its_checkpoint(dataset, tmp_path):
    first = run_compare(dataset, "omapl", seeds=1, config=TINY, out_dir=tmp_path, workers=1)
    cell = tmp_path / "cells" / "omapl" / "seed0"
    (cell / "result.json").unlink()
    again = run_compare(dataset, "omapl", seeds=1, config=TINY, out_dir=tmp_path, workers=1)
    assert per_seed(again) == per_seed(first)
    assert len(again["curves"]["omapl"][0]["value"]) == TINY["omapl"]["steps"]


def test_marlhf_omiga_on_predicted_rewards_and_mamql_through_the_cli(dataset, tmp_path, capsys):
    argv = [
        "deep",
        "compare",
        "--env",
        "simple_spread_v3",
        "--dataset",
        dataset,
        "--algos",
        "marlhf,omiga,mamql",
        "--omiga-reward",
        "both",
        "--seeds",
        "1",
        "--workers",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path,
        "--quiet",
        "--json",
    ]
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    assert marlcov(argv + ["--config", config]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["rows"]) == ["marlhf", "omiga", "omiga-predicted", "mamql"]
    assert out["reward_models"][0]["seed"] == 0
    # MARLHF's VDN and OMIGA on predicted rewards use the reward model of the same seed
    rm = tmp_path / "cells" / "reward-model" / "seed0" / "reward_model.pt"
    vdn = json.loads((tmp_path / "cells" / "marlhf" / "seed0" / "vdn" / "config.json").read_text())
    assert vdn["reward_model"] == str(rm.resolve())
    state = torch.load(tmp_path / "cells" / "omiga-predicted" / "seed0" / "train_state.pt", weights_only=True)
    assert str(rm.resolve()) in json.loads(state["config"])["rewards"]
    md = (tmp_path / "compare.md").read_text()
    assert "MARLHF" in md and "OMIGA (r_phi rewards)" in md and "MAMQL" in md


def test_score_decomposition_on_a_continuous_dataset(continuous_dataset, tmp_path):
    res = run_compare(continuous_dataset, "score-decomposition", seeds=1, env="spread", config=TINY, out_dir=tmp_path, workers=1)
    row = res["rows"]["score-decomposition"]
    assert row["per_seed"][0]["episodes"] == B and np.isfinite(row["return_per_agent"]["mean"])
    assert res["dataset"]["action_space"] == "continuous"


# ----------------------------------------------------------------------------- errors
def test_bad_input_exits_2_naming_the_option(dataset, continuous_dataset, tmp_path, capsys):
    base = ["deep", "compare", "--seeds", "1", "--out", tmp_path / "o", "--workers", "1"]
    cases = [
        (["--env", "spread", "--dataset", dataset, "--algos", "omapl,dqn"], r"--algos: unknown algorithm\(s\) \['dqn'\]"),
        (["--env", "spread", "--dataset", tmp_path / "missing.h5", "--algos", "omapl"], r"--dataset: .*missing\.h5 not found"),
        (
            ["--env", "spread", "--dataset", dataset, "--algos", "omapl,score-decomposition"],
            r"--algos: score-decomposition need\(s\) a continuous-action dataset.*discrete actions \(n_actions = 5\)",
        ),
        (
            ["--env", "spread", "--dataset", continuous_dataset, "--algos", "omiga"],
            r"--algos: omiga need\(s\) a discrete-action dataset.*continuous actions \(action_dim = 2\)",
        ),
        (["--env", "3m", "--dataset", dataset, "--algos", "omapl"], r"--env: .* holds simple_spread_v3 trajectories, not smax_3m"),
        (["--env", "pong", "--dataset", dataset, "--algos", "omapl"], r"--env: expected"),
        (["--env", "spread", "--dataset", dataset, "--algos", "omapl", "--workers", "0"], r"--workers"),
    ]
    for extra, message in cases:
        assert marlcov(base + extra) == 2, extra
        assert re.search(message, capsys.readouterr().err), message
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="config section 'omapl'.*stepz"):
        trainer_configs(load_compare_config("small", {"omapl": {"stepz": 3}}), "simple_spread_v3")
    with pytest.raises(ValueError, match="unknown section"):
        load_compare_config("small", {"dqn": {}})


def test_a_dataset_without_pairs_is_rejected_for_preference_learners(tmp_path):
    path = tmp_path / "nopairs.h5"
    env = MPEBatch("simple_spread_v3", B)
    with DatasetWriter(path, env.spec.dataset_spec()) as writer:
        writer.append(env.rollout(UniformRandomPolicy(1), 0, source="trivial"))
    with pytest.raises(ValueError, match="no preference pairs.*omapl"):
        run_compare(path, "omapl", seeds=1, config=TINY, out_dir=tmp_path / "o")


# ----------------------------------------------------------------------------- table
def test_table_cells_are_mean_and_sample_std_over_seeds_and_smax_is_labelled():
    returns, wins = [1.0, 1.5, 2.0], [0.25, 0.5, 0.75]
    results = [
        {"variant": "omapl", "seed": k, "return_per_agent": r, "return_std": 0.0, "win_rate": w, "episodes": 10, "seconds": 60.0}
        for k, (r, w) in enumerate(zip(returns, wins))
    ]
    rows = comparison_rows(results, ["omapl"])
    assert rows["omapl"]["return_per_agent"] == summary(returns) and summary(returns)["std"] == pytest.approx(np.std(returns, ddof=1))
    result = {
        "env": "smax_3m",
        "rows": rows,
        "scale": "small",
        "seeds": [0, 1, 2],
        "evaluate": {"episodes": 10},
        "dataset": {"path": "/d/3m.h5", "n_trajectories": 4, "action_space": "discrete"},
    }
    md = comparison_markdown(result)
    assert "smax_3m (SMAX, not SMAC)" in md and "not comparable to published SMAC tables" in md
    assert "| Algorithm | Trains on | Win rate | Return per agent | Wall time per seed (s) |" in md
    assert f"| O-MAPL | preference pairs | 0.500 ± {np.std(wins, ddof=1):.3f} | 1.500 ± 0.500 | 60 ± 0 |" in md
    assert parse_algos("omiga, omapl,omiga") == ["omiga", "omapl"]
