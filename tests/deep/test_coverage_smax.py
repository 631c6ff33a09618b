"""``marlcov coverage`` on a SMAX dataset, whose episodes end early and are padded to the horizon
(``deep.envs.smax``): finite measures through the library and the command, padded steps counted
nowhere, and more padding appended changing nothing.

One 16-episode dataset of 3m (B = 8, horizon 100: the shape of tests/deep/test_collect_smax.py,
so a process running both compiles the map once) is collected per module."""

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.deep, pytest.mark.slow]

from marlcov.cli import main  # noqa: E402
from marlcov.deep.common import step_masks  # noqa: E402
from marlcov.deep.data import DatasetReader, DatasetSpec, DatasetWriter, TrajectoryBatch, write_pairs_file  # noqa: E402
from marlcov.deep.data.hdf5 import read_pairs  # noqa: E402
from marlcov.deep.data.preferences import label_dataset  # noqa: E402
from marlcov.deep.diagnostics import diagnose  # noqa: E402
from marlcov.deep.envs.smax import STOP_ACTION, SMAXBatch  # noqa: E402
from marlcov.deep.envs.smax_behaviours import FocusFirePolicy  # noqa: E402
from marlcov.deep.pipeline import collect_smax_dataset, pairs_path_for  # noqa: E402
from tests.deep.coverage_fixtures import PAD_RTOL, measures  # noqa: E402
from tests.deep.synthetic import smax_padded  # noqa: E402

B = 8
EPISODES = 16
#: Small settings: the point is the padded layout, not the precision of the estimates.
OPTIONS = {"bootstrap": 4, "groups": 4, "bootstrap_anchors": 8, "feature_dim": 8, "seed": 1}


@pytest.fixture(scope="module")
def smax(tmp_path_factory):
    """``(dataset path, pairs path, lengths [N])`` of a labelled diversified 3m dataset."""
    root = tmp_path_factory.mktemp("smax_coverage")
    path = root / "3m.h5"
    collect_smax_dataset("3m", "diversified", EPISODES, path, seed=0, batch_size=B)
    pairs_path = pairs_path_for(path)
    with DatasetReader(path) as reader:
        write_pairs_file(pairs_path, label_dataset(reader, 4, seed=0), reader)
        valid, _ = step_masks(reader.read_fields(slice(None), ["avail"])["avail"])
    return path, pairs_path, valid.sum(axis=1)


def test_the_dataset_is_padded(smax):
    _, _, lengths = smax
    assert lengths.min() >= 1 and lengths.max() < 100


def test_diagnostic_on_padded_smax_episodes(smax):
    path, pairs_path, lengths = smax
    out = diagnose(path, pairs_path=pairs_path, **OPTIONS)
    assert all(np.isfinite(out[k]) for k in ("single", "unilateral", "uniform"))
    assert out["single"] <= out["unilateral"] + 1e-12 <= out["uniform"] + 2e-12
    assert out["counts"]["transitions"] == out["dataset"]["real_steps"] == lengths.sum()
    assert out["dataset"]["padded_trajectories"] == EPISODES and out["dataset"]["longest_episode"] == lengths.max()
    assert np.all(np.isfinite(measures(out)))


def test_diagnostic_anchored_on_the_scripted_expert(smax):
    path, pairs_path, _ = smax
    expert = FocusFirePolicy(SMAXBatch("3m", B).env)
    out = diagnose(path, expert, pairs_path=pairs_path, **OPTIONS)
    assert out["reference"]["anchors"] == "dataset states" and out["reference"]["trajectories"] == EPISODES
    assert all(np.isfinite(out[k]) for k in ("single", "unilateral", "uniform"))
    assert all(np.isfinite(a["unilateral"]) for a in out["per_agent"])


def test_more_padding_changes_nothing(smax, tmp_path):
    """The same episodes rewritten with 20 more padding steps (horizon 120)."""
    path, pairs_path, lengths = smax
    with DatasetReader(path) as reader:
        spec, d, pairs = reader.spec, reader.read_fields(slice(None)), read_pairs(pairs_path, reader)
    H = spec.horizon + 20
    longer = smax_padded(d, lengths, H, stop=STOP_ACTION)
    spec_long = DatasetSpec(
        spec.env_name, {**spec.env_config, "horizon": H}, spec.agent_names, spec.obs_dim, spec.state_dim, spec.n_actions, H
    )
    other = tmp_path / "3m_long.h5"
    with DatasetWriter(other, spec_long) as w:
        w.append(
            TrajectoryBatch(
                longer["obs"],
                longer["state"],
                longer["actions"],
                longer["avail"],
                longer["rewards"],
                d["seed"],
                d["source"],
                d["agent_policy"],
            )
        )
        w.write_pairs(pairs)
    np.testing.assert_allclose(
        measures(diagnose(other, **OPTIONS)), measures(diagnose(path, pairs_path=pairs_path, **OPTIONS)), rtol=PAD_RTOL, atol=PAD_RTOL
    )


def test_command_on_the_smax_dataset(smax, capsys):
    path, pairs_path, lengths = smax
    argv = ["coverage", str(path), "--bootstrap", "3", "--feature-dim", "8"]
    assert main([*argv, "--pairs-file", str(pairs_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(np.isfinite(doc[k]) for k in ("single", "unilateral", "uniform"))
    assert doc["counts"]["transitions"] == lengths.sum()
    # DATA.pairs.h5 beside the dataset is found without --pairs-file.
    assert main(argv) == 0
    assert "unilateral (max)" in capsys.readouterr().out
