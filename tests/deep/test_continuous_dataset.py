"""Continuous actions in the one dataset schema, and files of the retired continuous format
``marlcov.deep-dataset-continuous/1`` read in place."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.deep.data.external import continuous_config, continuous_trajectories, open_dataset
from marlcov.deep.data.hdf5 import DatasetReader, DatasetWriter
from marlcov.deep.data.legacy_continuous import LEGACY_CONTINUOUS_FORMAT, LegacyContinuousReader
from marlcov.deep.data.schema import DatasetSpec, TrajectoryBatch
from marlcov.theory.games import GameError

AGENTS = ("agent_0", "agent_1")


def continuous_spec(horizon: int, action_dim: int) -> DatasetSpec:
    return DatasetSpec("simple_spread_v3", {"horizon": horizon, **continuous_config(action_dim)}, AGENTS, 4, 3, 1, horizon)


def drawn_batch(draw, spec: DatasetSpec, n: int) -> TrajectoryBatch:
    H, m, d = spec.horizon, spec.n_agents, spec.action_dim
    floats = st.floats(-1.0, 1.0, width=32)

    def array(shape):
        return np.asarray(draw(st.lists(floats, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))), np.float32).reshape(shape)

    sources = np.asarray(draw(st.lists(st.sampled_from(["expert", "random"]), min_size=n, max_size=n)))
    return TrajectoryBatch(
        array((n, H + 1, m, spec.obs_dim)),
        array((n, H + 1, spec.state_dim)),
        array((n, H, m, d)),
        np.ones((n, H, m, 1), bool),
        array((n, H, m)),
        np.arange(n) + 7,
        sources,
    )


@st.composite
def continuous_batches(draw):
    spec = continuous_spec(draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return spec, drawn_batch(draw, spec, draw(st.integers(1, 4)))


def write_legacy(path, spec: DatasetSpec, batch: TrajectoryBatch) -> None:
    """A file as ``write_continuous_dataset`` wrote it before the schema held continuous actions."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = LEGACY_CONTINUOUS_FORMAT
        f.attrs["env_name"] = spec.env_name
        config = {k: v for k, v in spec.env_config.items() if k != "action_dim"}
        f.attrs["env_config"] = json.dumps(config, sort_keys=True)
        f.attrs["agent_names"] = json.dumps(list(spec.agent_names))
        for key in ("obs_dim", "state_dim", "action_dim", "horizon"):
            f.attrs[key] = int(getattr(spec, key))
        for name in ("obs", "state", "actions", "rewards"):
            f.create_dataset(name, data=getattr(batch, name).astype(np.float32), compression="gzip")
        f.create_dataset("seed", data=batch.seed.astype(np.int64))
        for name in ("source", "agent_policy"):
            f.create_dataset(name, data=getattr(batch, name).astype("S"))


def assert_same_trajectories(a: TrajectoryBatch, b: TrajectoryBatch) -> None:
    for name in ("obs", "state", "actions", "avail", "rewards", "seed", "source", "agent_policy"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and np.array_equal(x, y), name


@settings(max_examples=15, deadline=None)
@given(continuous_batches())
def test_continuous_actions_round_trip_through_the_schema(tmp_path_factory, drawn):
    spec, batch = drawn
    path = tmp_path_factory.mktemp("c") / "c.h5"
    with DatasetWriter(path, spec) as writer:
        writer.append(batch)
    with DatasetReader(path) as reader:
        assert reader.spec == spec and reader.spec.continuous and reader.spec.action_dim == spec.action_dim
        back = reader.read(slice(None))
        assert back.actions.dtype == np.float32 and back.avail.shape == (len(batch), spec.horizon, 2, 1)
    assert_same_trajectories(back, batch)
    with open_dataset(path) as reader:
        assert isinstance(reader, DatasetReader)


@settings(max_examples=15, deadline=None)
@given(continuous_batches())
def test_a_retired_continuous_file_reads_as_the_schema(tmp_path_factory, drawn):
    """The old layout (string tags, no avail, no uuid) comes back as the schema writes it."""
    spec, batch = drawn
    folder = tmp_path_factory.mktemp("legacy")
    write_legacy(folder / "old.h5", spec, batch)
    with open_dataset(folder / "old.h5") as reader:
        assert isinstance(reader, LegacyContinuousReader)
        assert reader.spec == spec and len(reader) == len(batch)
        back = reader.read(slice(None))
        order = np.arange(len(batch))[::-1]
        assert_same_trajectories(reader.read(order), batch.take(order))
        np.testing.assert_allclose(reader.returns(), batch.returns(), rtol=1e-12)
        uuid = reader.uuid
    assert_same_trajectories(back, batch)
    with open_dataset(folder / "old.h5") as again:
        assert again.uuid == uuid
    loaded_spec, whole = continuous_trajectories(folder / "old.h5")
    assert loaded_spec == spec
    assert_same_trajectories(whole, batch)


def test_compare_describes_new_and_retired_continuous_files_alike(tmp_path):
    from marlcov.deep.compare import dataset_description

    spec = continuous_spec(2, 3)
    batch = TrajectoryBatch(
        np.zeros((2, 3, 2, 4), np.float32),
        np.zeros((2, 3, 3), np.float32),
        np.zeros((2, 2, 2, 3), np.float32),
        np.ones((2, 2, 2, 1), bool),
        np.zeros((2, 2, 2), np.float32),
        [0, 1],
    )
    write_legacy(tmp_path / "old.h5", spec, batch)
    with DatasetWriter(tmp_path / "new.h5", spec) as writer:
        writer.append(batch)
    for name in ("old.h5", "new.h5"):
        d = dataset_description(tmp_path / name)
        assert (d["action_space"], d["action_dim"], d["n_trajectories"], d["horizon"], d["pairs"]) == ("continuous", 3, 2, 2, None)


def test_the_native_reader_names_open_dataset_for_a_retired_file(tmp_path):
    spec = continuous_spec(2, 2)
    batch = TrajectoryBatch(
        np.zeros((1, 3, 2, 4), np.float32),
        np.zeros((1, 3, 3), np.float32),
        np.zeros((1, 2, 2, 2), np.float32),
        np.ones((1, 2, 2, 1), bool),
        np.zeros((1, 2, 2), np.float32),
        [0],
    )
    write_legacy(tmp_path / "old.h5", spec, batch)
    with pytest.raises(GameError, match="open_dataset"):
        DatasetReader(tmp_path / "old.h5")


def test_bad_continuous_input_is_refused_naming_the_field(tmp_path):
    spec = continuous_spec(2, 2)
    nan = np.zeros((1, 2, 2, 2), np.float32)
    nan[0, 1, 0, 1] = np.nan
    bad = TrajectoryBatch(
        np.zeros((1, 3, 2, 4), np.float32), np.zeros((1, 3, 3), np.float32), nan, np.ones((1, 2, 2, 1), bool), np.zeros((1, 2, 2)), [0]
    )
    with pytest.raises(ValueError, match="actions: expected finite"), DatasetWriter(tmp_path / "x.h5", spec) as writer:
        writer.append(bad)
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(GameError, match="action_dim"):
        DatasetSpec.from_attrs({**spec.to_attrs(), "env_config": json.dumps({"actions": "continuous"})}, "f.h5")


def test_discrete_trainers_refuse_continuous_actions(tmp_path):
    import torch

    from marlcov.deep.algos import load_offline_data

    spec = continuous_spec(2, 2)
    batch = TrajectoryBatch(
        np.zeros((2, 3, 2, 4), np.float32),
        np.zeros((2, 3, 3), np.float32),
        np.full((2, 2, 2, 2), 0.5, np.float32),
        np.ones((2, 2, 2, 1), bool),
        np.zeros((2, 2, 2), np.float32),
        [0, 1],
    )
    with DatasetWriter(tmp_path / "c.h5", spec) as writer:
        writer.append(batch)
    with pytest.raises(ValueError, match="continuous actions"):
        load_offline_data(tmp_path / "c.h5", torch.device("cpu"))
