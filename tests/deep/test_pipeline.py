"""The reproduce chain of the MARLHF pipeline and the ``marlcov deep`` command line, with tiny
configs (Table 1 mixes, Table 2 and 3 runs, resumption after removing a stage's output)."""

import argparse
import json
import re
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.cli.deep import add_deep_parser
from marlcov.deep.data.hdf5 import DatasetReader, read_pairs
from marlcov.deep.marlhf.evaluate import evaluate_policy, reward_metrics
from marlcov.deep.marlhf.reward_model import load_reward_model
from marlcov.deep.pipeline import (
    MIXES,
    SOURCES,
    load_pipeline_config,
    mix_counts,
    pairs_path_for,
    proportional_counts,
    stage_configs,
    write_table_markdown,
)
from marlcov.theory.games import GameError
from tests.deep.tiny import TINY_PIPELINE, B  # noqa: E402

pytestmark = pytest.mark.deep

ENV = "simple_spread_v3"
TINY = TINY_PIPELINE
NUMBER = r"-?\d+\.\d+"


def marlcov(argv):
    """Run ``marlcov deep ...`` as the top-level CLI does: parse, call ``func``, map GameError to 2."""
    parser = argparse.ArgumentParser(prog="marlcov")
    add_deep_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GameError:
        return 2


def stage_files(root):
    """Every stage output under a run directory, with its modification time."""
    return {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".pt", ".h5", ".json") and not p.name.startswith("table")
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Table 2 on spread with the tiny config, then its last stage of one mix deleted and the
    run repeated."""
    root = tmp_path_factory.mktemp("reproduce")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = root / "out"
    argv = [
        "deep",
        "reproduce",
        "table2",
        "--env",
        "spread",
        "--seeds",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--config",
        str(config),
        "--threads",
        "1",
        "--quiet",
        "--json",
    ]
    assert marlcov(argv) == 0
    first = json.loads((out / ENV / "table2.json").read_text())
    before = stage_files(out)
    last = out / ENV / "runs" / "pure-expert" / "seed0" / "vdn_beta1"
    first_eval = json.loads((last / "eval.json").read_text())
    shutil.rmtree(last)
    assert marlcov(argv) == 0
    second = json.loads((out / ENV / "table2.json").read_text())
    return {
        "out": out,
        "config": config,
        "first": first,
        "second": second,
        "before": before,
        "after": stage_files(out),
        "deleted": last,
        "first_eval": first_eval,
    }


# ----------------------------------------------------------------------------- Table 1 mixes
@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 10_000), mix=st.sampled_from(sorted(MIXES)))
def test_mix_counts_follow_the_ratios_of_table_1(n, mix):
    counts = mix_counts(mix, n)
    w = np.array(MIXES[mix], dtype=float)
    share = n * w / w.sum()
    got = np.array([counts[s] for s in SOURCES])
    assert got.sum() == n
    assert np.all(np.abs(got - share) < 1.0)
    assert np.all(got[w == 0] == 0)
    if n % 4 == 0:
        assert np.array_equal(got, (n // 4) * w.astype(int))


def test_table_1_ratios_over_expert_unilateral_rookie_trivial():
    assert SOURCES == ("expert", "unilateral", "rookie", "trivial")
    assert MIXES == {"diversified": (1, 1, 1, 1), "mix-unilateral": (2, 1, 0, 1), "mix-expert": (3, 0, 0, 1), "pure-expert": (4, 0, 0, 0)}
    assert list(proportional_counts(7, [1, 1, 1])) == [3, 2, 2]
    with pytest.raises(ValueError, match="--mix"):
        mix_counts("half-expert", 8)


def test_collected_mix_has_exact_source_counts_and_tags(run, tmp_path):
    policies = run["out"] / ENV / "policies"
    data = tmp_path / "d.h5"
    assert (
        marlcov(
            [
                "deep",
                "collect",
                "--env",
                "spread",
                "--mix",
                "diversified",
                "--trajectories",
                "24",
                "--policies",
                str(policies),
                "--out",
                str(data),
                "--batch-size",
                str(B),
                "--config",
                str(run["config"]),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    with DatasetReader(data) as reader:
        d = reader.read_fields(slice(None), ["source", "agent_policy", "seed"])
        returns = reader.returns().mean(axis=1)
    with h5py.File(data, "r") as f:
        order = json.loads(f.attrs["skill_order"])
    # Table 1's order is recorded in the dataset, from the returns it holds.
    for source in ("expert", "unilateral", "rookie", "trivial"):
        assert order["mean_return_per_source"][source] == pytest.approx(returns[d["source"] == source].mean(), abs=1e-6)
    means = [order["mean_return_per_source"][s] for s in ("expert", "unilateral", "rookie", "trivial")]
    assert order["holds"] == all(a > b for a, b in zip(means, means[1:]))
    assert order["behaviour_policies"]["order"] == "expert > rookie > trivial"
    sources, counts = np.unique(d["source"], return_counts=True)
    assert dict(zip(sources, counts)) == {"expert": 6, "unilateral": 6, "rookie": 6, "trivial": 6}
    tags = d["agent_policy"]
    for source in ("expert", "rookie", "trivial"):
        assert np.all(tags[d["source"] == source] == source)
    uni = tags[d["source"] == "unilateral"]
    assert np.all((uni == "rookie").sum(axis=1) == 1) and np.all((uni == "expert").sum(axis=1) == 2)
    assert list((uni == "rookie").sum(axis=0)) == [2, 2, 2]  # the deviator cycles evenly over the agents
    assert len(np.unique(d["seed"])) == 24


def test_label_writes_one_label_per_agent_and_pair(run, tmp_path):
    data = run["out"] / ENV / "data" / "diversified.h5"
    pairs_file = tmp_path / "p.h5"
    assert marlcov(["deep", "label", str(data), "--pairs-per-trajectory", "3", "--steepness", "5", "--out", str(pairs_file), "--json"]) == 0
    with DatasetReader(data) as reader:
        pairs = read_pairs(pairs_file, reader)
        N = len(reader)
    assert len(pairs) == 3 * N and pairs.labels.shape == (3 * N, 3)
    assert np.array_equal(np.bincount(pairs.first, minlength=N), np.full(N, 3))
    assert pairs.attrs["steepness"] == 5.0
    assert pairs.attrs["model"] == "bradley-terry/min-max-returns"  # the paper's code by default
    z_file = tmp_path / "z.h5"
    assert marlcov(["deep", "label", str(data), "--normalisation", "standardised", "--out", str(z_file), "--json"]) == 0
    with DatasetReader(data) as reader:
        assert read_pairs(z_file, reader).attrs["model"] == "bradley-terry/standardised-returns"


def test_ablate_refuses_an_unknown_variant(tmp_path, capsys):
    assert marlcov(["deep", "ablate", "--env", "spread", "--variants", "official", "gamma-0.5", "--out", str(tmp_path)]) == 2


# ----------------------------------------------------------------------------- Table 2 end to end
def test_reproduce_table2_writes_a_markdown_table_with_real_numbers(run):
    out = run["out"]
    md = (out / "table2.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "Dataset" not in line}
    assert set(rows) == {"Diversified", "Mix-Unilateral", "Mix-Expert", "Pure-Expert"}
    assert "Spread-v3 Return" in md and "Spread-v3 MSE" in md
    for mix, label in (("diversified", "Diversified"), ("pure-expert", "Pure-Expert")):
        cells = re.findall(NUMBER, rows[label])
        record = run["second"]["rows"][mix]["records"][0]
        assert float(cells[0]) == pytest.approx(record["return_per_agent"], abs=0.006)
        assert float(cells[1]) == pytest.approx(record["mse"], abs=0.006)
    assert (out / ENV / "plots" / "table2_diversified.png").stat().st_size > 0


def test_table2_numbers_come_from_evaluation_of_the_trained_policy(run):
    """The table's return is the true test return of the saved policy, and its MSE that of the
    saved reward model on the dataset: recomputing both gives the same numbers."""
    record = run["second"]["rows"]["diversified"]["records"][0]
    res = evaluate_policy(record["policy"], ENV, n_episodes=B, seed=0, batch_size=B, progress=False)
    assert res["return_per_agent"] == pytest.approx(record["return_per_agent"], rel=1e-9)
    data = run["out"] / ENV / "data" / "diversified.h5"
    assert reward_metrics(load_reward_model(record["reward_model"]), data)["mse"] == pytest.approx(record["mse"], rel=1e-9)
    assert record["return_per_agent"] < 0  # spread rewards are negative distances
    with DatasetReader(data) as reader:
        assert len(reader) == TINY["collect"]["trajectories"]
    assert len(read_pairs(pairs_path_for(data))) == 2 * TINY["collect"]["trajectories"]


def test_resumed_run_recomputes_only_the_deleted_stage(run):
    before, after = run["before"], run["after"]
    deleted = run["deleted"]
    assert set(before) == set(after)
    changed = {p for p in after if after[p] != before[p]}
    assert changed and all(deleted in p.parents for p in changed)
    assert run["first"]["ran"][0] == "behaviour policies" and len(run["first"]["ran"]) > 20
    assert run["second"]["ran"] == ["offline VDN pure-expert seed 0 vdn_beta1", "evaluate pure-expert seed 0 vdn_beta1"]
    # retrained from the same seed on one thread: the same policy and the same test return
    again = json.loads((deleted / "eval.json").read_text())
    assert again["return_per_agent"] == pytest.approx(run["first_eval"]["return_per_agent"], rel=1e-12)


def test_reproduce_table3_reuses_the_table2_runs(run):
    out = run["out"]
    before = stage_files(out)
    assert (
        marlcov(
            [
                "deep",
                "reproduce",
                "table3",
                "--env",
                "spread",
                "--out",
                str(out),
                "--config",
                str(run["config"]),
                "--device",
                "cpu",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads((out / ENV / "table3.json").read_text())
    # beta = 1 is the standard run of Table 2's Diversified row: nothing new for it
    assert res["columns"]["beta=1"]["records"][0]["policy"] == run["second"]["rows"]["diversified"]["records"][0]["policy"]
    assert all(p in stage_files(out) and stage_files(out)[p] == t for p, t in before.items())
    assert set(res["ran"]) == {
        "offline VDN diversified seed 0 vdn_beta0",
        "evaluate diversified seed 0 vdn_beta0",
        "reward model diversified seed 0 alpha 0",
        "offline VDN diversified seed 0 vdn_beta1_alpha0",
        "evaluate diversified seed 0 vdn_beta1_alpha0",
        "plot table3_alpha.png",
    }
    assert res["columns"]["alpha=0"]["records"][0]["alpha"] == 0.0
    md = (out / "table3.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Environment") and "β" in line)
    assert [c.strip() for c in header.split("|")[2:-1]] == ["β = 0", "β = 1", "α = 0"]
    row = next(line for line in md.splitlines() if line.startswith("| Spread-v3") and len(re.findall(NUMBER, line)) == 3)
    assert [float(x) for x in re.findall(NUMBER, row)] == pytest.approx(
        [res["columns"][c]["return"]["mean"] for c in ("beta=0", "beta=1", "alpha=0")], abs=0.006
    )


# ----------------------------------------------------------------------------- tables, configs, errors
def test_markdown_cells_are_mean_and_sample_std_over_seeds(tmp_path):
    values = [-21.0, -22.5, -20.25]
    rows = {
        mix: {
            "return": {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "n": 3, "values": values},
            "mse": {"mean": 0.5, "std": 0.0, "n": 3, "values": [0.5] * 3},
        }
        for mix in MIXES
    }
    (tmp_path / ENV).mkdir()
    (tmp_path / ENV / "table2.json").write_text(json.dumps({"rows": rows, "seeds": 3}))
    md = write_table_markdown(tmp_path, "table2").read_text()
    assert f"| Diversified | {np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} | 0.50 ± 0.00 |" in md


def test_paper_config_holds_the_values_of_table_5():
    cfg = load_pipeline_config("paper")
    assert cfg["collect"]["trajectories"] == 38400
    assert cfg["label"] == {"pairs_per_trajectory": 10, "steepness": 5.0, "normalisation": "min-max"}
    for env in ("simple_spread_v3", "simple_tag_v3", "simple_reference_v3"):
        c = stage_configs(cfg, env)
        rm, ref, vdn = c["reward_model"], c["reference"], c["offline_vdn"]
        assert (rm.layers, rm.epochs, rm.lr, rm.batch_size, rm.alpha) == (4, 100, 1e-3, 256, 1.0)
        assert (ref.epochs, ref.lr, ref.batch_size) == (100, 1e-3, 128)
        assert (vdn.lr, vdn.batch_size) == (1e-3, 64)
        # The paper's public code: gamma 0.9, double Q, target copied every 3 updates, KL clipped to [-10, 1].
        assert (vdn.gamma, vdn.double_q, vdn.target_update, vdn.kl_clip) == (0.9, True, 3, (-10.0, 1.0))
        assert rm.labels == "redrawn"
        assert rm.variance == "none"  # alpha > 0 with the variance division collapses r_phi (reward_model.py)
    tag, spread, reference = (stage_configs(cfg, e) for e in ("simple_tag_v3", "simple_spread_v3", "simple_reference_v3"))
    assert (tag["reward_model"].model, tag["reward_model"].hidden, tag["offline_vdn"].updates, tag["offline_vdn"].beta) == (
        "gru",
        64,
        10**6,
        10.0,
    )
    assert (spread["reward_model"].model, spread["reward_model"].hidden, spread["offline_vdn"].updates, spread["offline_vdn"].beta) == (
        "mlp",
        128,
        10**4,
        1.0,
    )
    assert (reference["reward_model"].hidden, reference["offline_vdn"].beta) == (64, 1.0)


def test_small_config_validates_for_every_environment():
    cfg = load_pipeline_config("small")
    for env in ("simple_spread_v3", "simple_tag_v3", "simple_reference_v3"):
        c = stage_configs(cfg, env)
        assert c["reward_model"].alpha == 0 or c["reward_model"].variance == "none"


def test_bad_input_names_the_option(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"reward_model": {"hiden": 3}}))
    with pytest.raises(ValueError, match="reward_model.*hiden"):
        stage_configs(load_pipeline_config("small", bad), ENV)
    with pytest.raises(ValueError, match="unknown section"):
        load_pipeline_config("small", {"rewards": {}})
    assert marlcov(["deep", "reproduce", "table2", "--env", "spread", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert marlcov(["deep", "reproduce", "table2", "--env", "spread", "--seeds", "0", "--out", str(tmp_path / "o")]) == 2
    assert (
        marlcov(["deep", "collect", "--env", "pong", "--mix", "diversified", "--policies", str(tmp_path), "--out", str(tmp_path / "x.h5")])
        == 2
    )
    assert (
        marlcov(
            ["deep", "collect", "--env", "spread", "--mix", "diversified", "--policies", str(tmp_path), "--out", str(tmp_path / "x.h5")]
        )
        == 2
    )
    assert marlcov(["deep", "label", str(tmp_path / "missing.h5")]) == 2
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.h5").exists()


def test_missing_deep_extra_is_reported_with_the_install_command(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ModuleNotFoundError
    parser = argparse.ArgumentParser(prog="marlcov")
    add_deep_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deep", "train-experts", "--env", "spread", "--threads", "2"])
    with pytest.raises(GameError, match=r"deep extra.*pip install 'marlcov\[deep\]'"):
        args.func(args)


def test_a_stage_made_under_other_defaults_is_refused_not_reused(run, tmp_path):
    """A run directory from before a default changed (here: no double_q, standardised labels)
    is refused with the directory and the field named, instead of being mixed into the run."""
    from marlcov.deep.pipeline import Reproduction

    out = tmp_path / "old"
    shutil.copytree(run["out"], out)
    rep = Reproduction(ENV, load_pipeline_config("small", TINY), out, "cpu")
    stage = out / ENV / "runs" / "diversified" / "seed0" / "vdn_beta1"
    saved = json.loads((stage / "config.json").read_text())
    del saved["config"]["double_q"]
    (stage / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"vdn_beta1: this stage was made with another config \(double_q: '\(absent\)' there, True now\)"):
        rep.evaluated_policy("diversified", 0)
    with h5py.File(out / ENV / "data" / "diversified.pairs.h5", "r+") as f:
        f["pairs"].attrs["model"] = "bradley-terry/standardised-returns"
    with pytest.raises(ValueError, match="standardised-returns.*label.normalisation 'min-max'"):
        Reproduction(ENV, load_pipeline_config("small", TINY), out, "cpu").dataset("diversified")


def test_the_prey_of_section_env_reaches_every_stage_of_tag(tmp_path):
    """``env.prey: marlhf:PATH`` is played by the behaviour policies' training, recorded in the
    dataset (so learners and evaluations rebuild the same environment) and refused elsewhere."""
    pytest.importorskip("flax")
    from marlcov.deep.data.hdf5 import DatasetReader
    from marlcov.deep.envs import spec_env_kwargs
    from marlcov.deep.pipeline import Reproduction
    from tests.deep.prey_params import write_prey_file

    spec = f"marlhf:{write_prey_file(tmp_path / 'prey.msgpack')}"
    config = load_pipeline_config("small", {**TINY, "env": {"prey": spec}})
    rep = Reproduction("tag", config, tmp_path / "out", "cpu")
    assert rep.env_options["prey_policy"] == spec
    path = rep.dataset("pure-expert")
    assert json.loads((tmp_path / "out" / "simple_tag_v3" / "policies" / "config.json").read_text())["prey_policy"] == spec
    with DatasetReader(path) as reader:
        assert reader.spec.env_config["prey_policy"] == spec
        assert spec_env_kwargs(reader.spec)["prey_policy"] == spec
    uniform = Reproduction("tag", load_pipeline_config("small", TINY), tmp_path / "uniform", "cpu")
    assert "prey_policy" not in uniform.env_options
    with pytest.raises(ValueError, match="only simple_tag_v3 has a prey"):
        Reproduction("spread", config, tmp_path / "spread", "cpu")
    with pytest.raises(ValueError, match=r"config section 'env': prey: expected 'uniform' or 'marlhf:PATH'"):
        Reproduction("tag", load_pipeline_config("small", {"env": {"prey": "scripted"}}), tmp_path / "bad", "cpu")
