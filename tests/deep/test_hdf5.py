"""HDF5 dataset layer: chunked round trip, tags, pairs, format checks, atomic finalisation."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from marlcov.deep.data.hdf5 import DatasetReader, DatasetWriter, read_pairs, write_pairs_file
from marlcov.deep.data.schema import DEEP_DATASET_FORMAT, PreferencePairs, TrajectoryBatch
from tests.deep.synthetic import SPEC, random_batch

pytestmark = pytest.mark.deep

REPO = Path(__file__).resolve().parents[2]


def concat(batches):
    return TrajectoryBatch(
        *(
            np.concatenate([getattr(b, f) for b in batches])
            for f in ("obs", "state", "actions", "avail", "rewards", "seed", "source", "agent_policy")
        )
    )


def assert_same(a: TrajectoryBatch, b: TrajectoryBatch) -> None:
    for f in ("obs", "state", "actions", "avail", "rewards", "seed", "source", "agent_policy"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


@pytest.fixture
def written(tmp_path):
    batches = [
        random_batch(5, 0, "expert"),
        random_batch(7, 1, "unilateral", agent_policy=["expert", "rookie-1"]),
        random_batch(4, 2, ["trivial", "expert", "trivial", "rookie"]),
    ]
    path = tmp_path / "data.h5"
    with DatasetWriter(path, SPEC, chunk_trajectories=4) as w:
        for b in batches:
            w.append(b)
    return path, concat(batches)


def test_round_trip_in_batches(written):
    path, expected = written
    with DatasetReader(path) as r:
        assert len(r) == 16 and r.spec == SPEC
        parts = [r.read(idx) for idx, _ in r.iter_batches(batch_size=6)]
        assert [len(p) for p in parts] == [6, 6, 4]
        assert_same(concat(parts), expected)
        seen = []
        for idx, d in r.iter_batches(batch_size=5, shuffle=True, seed=3):
            np.testing.assert_array_equal(d["obs"], expected.obs[idx])
            np.testing.assert_array_equal(d["source"], expected.source[idx])
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(16))
        index = [9, 2, 2, 15, 0]
        assert_same(r.read(index), expected.take(index))
        np.testing.assert_allclose(r.returns(batch_size=3), expected.returns(), rtol=1e-6)
        assert list(expected.agent_policy[5]) == ["expert", "rookie-1"]


def test_layout_is_chunked_compressed_and_resizable(written):
    path, _ = written
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == DEEP_DATASET_FORMAT
        assert f["obs"].chunks[0] == 4 and f["obs"].compression == "gzip"
        assert f["obs"].maxshape[0] is None
        assert f["obs"].shape == (16, 4, 2, 4) and f["actions"].dtype == np.int16


@pytest.mark.parametrize("value", ["marlcov.deep-dataset/99", "something-else"])
def test_reader_rejects_unknown_format(written, value):
    path, _ = written
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = value
    with pytest.raises(ValueError, match="attribute 'format'") as info:
        DatasetReader(path)
    assert value in str(info.value)


def test_reader_rejects_missing_format(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        del f.attrs["format"]
    with pytest.raises(ValueError, match="attribute 'format' is missing"):
        DatasetReader(path)


def test_killed_writer_leaves_no_file_at_final_path(tmp_path):
    final = tmp_path / "killed.h5"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
from tests.deep.synthetic import SPEC, random_batch
from marlcov.deep.data.hdf5 import DatasetWriter
w = DatasetWriter({str(final)!r}, SPEC, chunk_trajectories=2)
w.append(random_batch(6, 0))
w.append(random_batch(3, 1))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".killed.h5.tmp-")]


def test_failed_writer_cleans_up(tmp_path):
    path = tmp_path / "failed.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(path, SPEC) as w:
            w.append(random_batch(3, 0))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing_file_and_bad_batches(written, tmp_path):
    path, _ = written
    with pytest.raises(FileExistsError):
        DatasetWriter(path, SPEC)
    w = DatasetWriter(tmp_path / "bad.h5", SPEC)
    bad = random_batch(2, 0)
    bad.obs = bad.obs[:, :-1]
    with pytest.raises(ValueError, match="obs: expected shape"):
        w.append(bad)
    bad = random_batch(2, 0)
    bad.actions = bad.actions + SPEC.n_actions
    with pytest.raises(ValueError, match="actions: expected values"):
        w.append(bad)
    with pytest.raises(ValueError, match="agent_policy"):
        w.append(random_batch(2, 0, agent_policy=["x", "y", "z"]))
    w.abort()
    assert not (tmp_path / "bad.h5").exists()


def test_writer_records_json_metadata_but_not_over_the_format(tmp_path):
    order = {"order": ["trivial", "rookie", "expert"], "holds": True}
    with DatasetWriter(tmp_path / "d.h5", SPEC) as w:
        w.append(random_batch(2, 0))
        w.set_json_attribute("skill_order", order)
        for name in ("format", "uuid", "n_trajectories", "env_name", "source_names"):
            with pytest.raises(ValueError, match=f"d.h5: attribute '{name}' is part of the dataset format"):
                w.set_json_attribute(name, 1)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert json.loads(f.attrs["skill_order"]) == order
    with DatasetReader(tmp_path / "d.h5") as reader:
        assert len(reader) == 2
    with pytest.raises(RuntimeError, match="closed"):
        w.set_json_attribute("skill_order", order)


def test_pairs_in_file_and_in_a_separate_file(tmp_path):
    pairs = PreferencePairs([0, 1, 2], [3, 0, 1], [[1, -1], [-1, -1], [1, 1]], probs=np.full((3, 2), 0.5), attrs={"steepness": 5.0})
    path = tmp_path / "with_pairs.h5"
    with DatasetWriter(path, SPEC) as w:
        w.append(random_batch(4, 0))
        with pytest.raises(ValueError, match="second: expected trajectory indices"):
            w.write_pairs(PreferencePairs([0], [4], [[1, 1]]))
        w.write_pairs(pairs)
    with DatasetReader(path) as r:
        got = r.pairs()
        np.testing.assert_array_equal(got.labels, pairs.labels)
        np.testing.assert_array_equal(got.second, pairs.second)
        assert got.attrs["steepness"] == 5.0
        sidecar = write_pairs_file(tmp_path / "labels.h5", pairs, r)
        np.testing.assert_array_equal(read_pairs(sidecar, r).first, pairs.first)
    other = tmp_path / "other.h5"
    with DatasetWriter(other, SPEC) as w:
        w.append(random_batch(4, 1))
    with DatasetReader(other) as r2:
        with pytest.raises(ValueError, match="dataset_uuid"):
            read_pairs(sidecar, r2)
        with pytest.raises(ValueError, match="no group 'pairs'"):
            r2.pairs()


def test_mpe_rollouts_round_trip(tmp_path):
    import torch

    from marlcov.deep.envs.mpe import MPEBatch, UniformRandomPolicy

    env = MPEBatch("simple_spread_v3", 3)
    spec = env.spec.dataset_spec()
    a = env.rollout(UniformRandomPolicy(0), seeds=0, source="trivial")
    b = env.rollout(lambda o, av, t: torch.zeros(o.shape[:2], dtype=torch.long), seeds=[10, 11, 12], source="noop")
    with DatasetWriter(tmp_path / "spread.h5", spec, chunk_trajectories=2) as w:
        w.append(a)
        w.append(b)
    with DatasetReader(tmp_path / "spread.h5") as r:
        assert r.spec.env_config["horizon"] == 25
        assert_same(r.read(slice(0, 6)), concat([a, b]))


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("marlcov.deep.data", "DATASET_FORMAT", "DEEP_DATASET_FORMAT"),
        ("marlcov.deep.data.schema", "DATASET_FORMAT", "DEEP_DATASET_FORMAT"),
        ("marlcov.deep.data.schema", "PAIRS_FORMAT", "DEEP_PAIRS_FORMAT"),
        ("marlcov.deep.marlhf", "POLICY_FORMAT", "CHECKPOINT_FORMAT"),
        ("marlcov.deep.algos", "MODEL_FORMAT", "CHECKPOINT_FORMAT"),
    ],
)
def test_renamed_format_constants_name_their_successor(module, old, new):
    """The deep constants that shared a name with theory.io's formats are refused naming the new one."""
    import importlib

    with pytest.raises(AttributeError, match=new):
        getattr(importlib.import_module(module), old)
