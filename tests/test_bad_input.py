"""Every reader, fed malformed files drawn by hypothesis, through the command line: status 2,
one line on stderr (at most ``MAX_LINE`` characters) naming the file and the field, nothing on
stdout, no output file, and memory bounded (arrays declared huge are refused from headers)."""

import contextlib
import io
import json
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marlcov.cli import main
from marlcov.theory.games import random_linear_markov_game
from marlcov.theory.io import game_to_dict, save_dataset, save_game, save_policy
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset

MAX_LINE = 300
#: Peak of Python-tracked allocations while refusing a file that declares huge arrays.
MAX_PEAK_BYTES = 64 * 2**20

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_refused(result, path, fields=()):
    """Status 2, nothing on stdout, one short line naming ``path`` and one of ``fields``."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2, err
    assert out == ""
    assert len(lines) == 1 and len(lines[0]) <= MAX_LINE, err
    assert lines[0].startswith("marlcov ") and str(path) in lines[0], lines[0]
    if fields:
        assert any(f in lines[0] or repr(f)[1:-1] in lines[0] for f in fields), (fields, lines[0])
    assert "Traceback" not in err and "allow_pickle" not in err
    return lines[0]


# ------------------------------------------------------------------------------ finite files
GAME = random_linear_markov_game(3, (2, 2), 2, 4, seed=5)
POLICY = random_policy(GAME, 6)
DATA = sample_preference_dataset(GAME, POLICY, 6, seed=1)

#: A shape error names the array; the sizes it was checked against are named in the message.
RELATED = {
    "n_players": ("rewards", "action_sizes"),
    "n_states": ("transitions",),
    "horizon": ("transitions",),
    "action_sizes": ("transitions",),
    "features": ("theta",),
}

not_real = st.one_of(
    st.text(min_size=1, max_size=5),
    st.booleans(),
    st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=3),
    st.lists(st.booleans(), min_size=1, max_size=3),
    st.just(None),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
not_integer = st.one_of(not_real, st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer()))


def game_json():
    return json.loads(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in game_to_dict(GAME).items()}))


@st.composite
def broken_games(draw):
    """A game mapping with one field deleted, added, or replaced by a value it cannot hold."""
    data = game_json()
    kind = draw(st.sampled_from(["delete", "unknown", "integer", "array", "array-shape", "nan"]))
    if kind == "delete":
        field = draw(
            st.sampled_from(["format", "n_players", "n_states", "action_sizes", "horizon", "initial_state", "transitions", "rewards"])
        )
        del data[field]
    elif kind == "unknown":
        field = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in data))
        data[field] = draw(st.integers())
    elif kind == "integer":
        field = draw(st.sampled_from(["n_players", "n_states", "horizon", "initial_state"]))
        data[field] = draw(st.one_of(not_integer, st.integers(-5, 40).filter(lambda v, f=field: v != data[f])))
    elif kind == "array":
        field = draw(st.sampled_from(["transitions", "rewards", "features", "theta", "action_sizes"]))
        data[field] = draw(not_real)
    elif kind == "array-shape":
        field = draw(st.sampled_from(["transitions", "rewards", "theta"]))
        shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4).filter(lambda s, f=field: s != list(np.shape(data[f]))))
        data[field] = np.full(shape, 0.5).tolist()
    else:
        field = draw(st.sampled_from(["transitions", "rewards", "features"]))
        arr = np.asarray(data[field], dtype=float)
        arr.reshape(-1)[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        data[field] = arr.tolist()
    return field, data


def write_json_with_nonfinite(path, data):
    path.write_text(json.dumps(data, allow_nan=True))


@FUZZ
@given(broken_games(), st.booleans())
def test_malformed_games_are_refused(case, as_npz):
    field, data = case
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_policy(POLICY, d / "pi.json")
        if as_npz:
            path = d / "game.npz"
            try:
                np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
            except (ValueError, TypeError):
                return  # not representable as NPZ arrays (ragged, None): covered as JSON
        else:
            path = d / "game.json"
            write_json_with_nonfinite(path, data)
        result = run_cli("nash-gap", path, d / "pi.json", "--json")
        assert_refused(result, path, (field, *RELATED.get(field, ()), "unknown field"))


@st.composite
def broken_policies(draw):
    probs = [p.copy() for p in POLICY]
    kind = draw(st.sampled_from(["shape", "simplex", "nan", "strings", "players", "unknown-npz-key"]))
    i = draw(st.integers(0, len(probs) - 1))
    if kind == "shape":
        shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4).filter(lambda s: tuple(s) != probs[i].shape))
        probs[i] = np.full(shape, 1.0 / shape[-1])
    elif kind == "simplex":
        probs[i] = probs[i] * draw(st.floats(1.01, 3.0))
    elif kind == "nan":
        probs[i] = probs[i].copy()
        probs[i].reshape(-1)[0] = np.nan
    elif kind == "strings":
        probs[i] = probs[i].astype(str)
    elif kind == "players":
        probs = [probs[0]] * draw(st.integers(0, 4).filter(lambda n: n != len(probs)))
    return kind, probs


@FUZZ
@given(broken_policies(), st.booleans())
def test_malformed_policies_are_refused(case, as_npz):
    kind, probs = case
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_game(GAME, d / "game.json")
        if as_npz or kind == "unknown-npz-key":
            path = d / "pi.npz"
            extra = {"probs_x": probs[0]} if kind == "unknown-npz-key" else {}
            np.savez(path, format="marlcov.policy/1", **{f"probs_{k}": p for k, p in enumerate(probs)}, **extra)
        else:
            path = d / "pi.json"
            path.write_text(json.dumps({"format": "marlcov.policy/1", "probs": [p.tolist() for p in probs]}))
        result = run_cli("nash-gap", d / "game.json", path, "--json")
        assert_refused(result, path, ("probs",))


@st.composite
def broken_datasets(draw):
    arrays = {"format": "marlcov.prefs/1", "states": DATA.states, "actions": DATA.actions, "prefs": DATA.prefs}
    field = draw(st.sampled_from(["states", "actions", "prefs"]))
    kind = draw(st.sampled_from(["float", "range", "shape", "missing", "complex", "unknown"]))
    if kind == "float":
        arrays[field] = arrays[field] + draw(st.floats(0.1, 0.9))
    elif kind == "range":
        arrays[field] = arrays[field] + draw(st.sampled_from([-100, 100]))
    elif kind == "shape":
        arrays[field] = arrays[field].reshape(-1)[: draw(st.integers(0, arrays[field].size - 1))]
    elif kind == "missing":
        del arrays[field]
    elif kind == "complex":
        arrays[field] = arrays[field] + 1j
    else:
        field = draw(st.sampled_from(["labels", "probs", "x"]))
        arrays[field] = np.zeros(3)
    return field, arrays


@FUZZ
@given(broken_datasets())
def test_malformed_preference_datasets_are_refused(case):
    field, arrays = case
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_game(GAME, d / "game.json")
        save_policy(POLICY, d / "pi.json")
        np.savez(d / "data.npz", **arrays)
        result = run_cli("coverage", d / "game.json", d / "data.npz", "--policy", d / "pi.json", "--json")
        assert_refused(result, d / "data.npz", (field, "actions", "states"))


@FUZZ
@given(st.sampled_from(["game.npz", "pi.npz", "data.npz", "game.json", "pi.json"]), st.floats(0.0, 0.999))
def test_truncated_files_are_refused(name, fraction):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_game(GAME, d / "game.npz")
        save_game(GAME, d / "game.json")
        save_policy(POLICY, d / "pi.npz")
        save_policy(POLICY, d / "pi.json")
        save_dataset(DATA, d / "data.npz")
        path = d / name
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * fraction)])
        game = d / (name if name.startswith("game") else "game.npz")
        policy = d / (name if name.startswith("pi") else "pi.npz")
        result = run_cli("coverage", game, d / "data.npz", "--policy", policy, "--json")
        assert_refused(result, path)


def test_pickled_and_huge_npz_arrays_are_refused_from_their_headers(tmp_path):
    save_game(GAME, tmp_path / "game.json")
    np.savez(tmp_path / "pickled.npz", format="marlcov.policy/1", probs=np.array([object()], dtype=object))
    assert_refused(run_cli("nash-gap", tmp_path / "game.json", tmp_path / "pickled.npz"), tmp_path / "pickled.npz", ("probs",))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**16, 2**16, 2**8)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("format.npy", _npy(np.asarray("marlcov.policy/1")))
        zf.writestr("probs_0.npy", header.getvalue())
    tracemalloc.start()
    line = assert_refused(run_cli("nash-gap", tmp_path / "game.json", tmp_path / "huge.npz"), tmp_path / "huge.npz", ("probs_0",))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "GiB" in line and peak < MAX_PEAK_BYTES


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_deeply_nested_json_is_refused(tmp_path):
    path = tmp_path / "game.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    assert_refused(run_cli("solve", path, "--json"), path, ("nested",))


# ------------------------------------------------------------------------------ HDF5 files
# (marked deep: the coverage of an HDF5 dataset needs torch)
@pytest.fixture(scope="module")
def hdf5_dataset(tmp_path_factory):
    from marlcov.deep.data import DatasetSpec, DatasetWriter, TrajectoryBatch
    from marlcov.deep.data.preferences import label_pairs, sample_pairs

    path = tmp_path_factory.mktemp("h5") / "base.h5"
    N, H, m, nA = 6, 2, 2, 3
    rng = np.random.default_rng(0)
    spec = DatasetSpec("toy", {"horizon": H}, ("a0", "a1"), 2, 3, nA, H)
    with DatasetWriter(path, spec) as w:
        w.append(
            TrajectoryBatch(
                rng.normal(size=(N, H + 1, m, 2)).astype(np.float32),
                rng.normal(size=(N, H + 1, 3)).astype(np.float32),
                rng.integers(0, nA, (N, H, m)).astype(np.int16),
                np.ones((N, H, m, nA), bool),
                rng.random((N, H, m)).astype(np.float32),
                np.arange(N),
                "mix",
            )
        )
        f, s = sample_pairs(N, 2, 0)
        w.write_pairs(label_pairs(rng.random((N, m)), f, s, seed=1))
    return path


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


H5_TAMPERS = {
    "string actions": ("actions", lambda f: _replace(f, "actions", np.full(f["actions"].shape, "x", dtype="S1"))),
    "float actions": ("actions", lambda f: _replace(f, "actions", f["actions"][()] + 0.5)),
    "actions out of range": ("actions", lambda f: f["actions"].__setitem__((0, 0, 0), 7)),
    "agent_names not a list": ("agent_names", lambda f: f.attrs.__setitem__("agent_names", "5")),
    "env_config not JSON": ("env_config", lambda f: f.attrs.__setitem__("env_config", "{oops")),
    "source_names of numbers": ("source_names", lambda f: f.attrs.__setitem__("source_names", "[1, 2]")),
    "obs_dim a string": ("obs_dim", lambda f: f.attrs.__setitem__("obs_dim", "two")),
    "n_trajectories negative": ("n_trajectories", lambda f: f.attrs.__setitem__("n_trajectories", -1)),
    "no uuid": ("uuid", lambda f: f.attrs.__delitem__("uuid")),
    "obs of another trajectory count": ("obs", lambda f: _replace(f, "obs", f["obs"][:-1])),
    "obs of another obs_dim": ("obs", lambda f: _replace(f, "obs", np.zeros((*f["obs"].shape[:-1], 5), np.float32))),
    "NaN observation": ("obs", lambda f: f["obs"].__setitem__((1, 0, 0, 0), np.nan)),
    "infinite state": ("state", lambda f: f["state"].__setitem__((2, 1, 0), np.inf)),
    "pairs without second": ("pairs/second", lambda f: f["pairs"].__delitem__("second")),
    "labels of zeros": ("pairs/labels", lambda f: f["pairs/labels"].__setitem__(slice(None), 0)),
    "first out of range": ("pairs/first", lambda f: f["pairs/first"].__setitem__(0, 99)),
    "source tag out of range": ("source", lambda f: f["source"].__setitem__(0, 9)),
    "format unknown": ("format", lambda f: f.attrs.__setitem__("format", "marlcov.deep-dataset/9")),
    "missing rewards": ("rewards", lambda f: f.__delitem__("rewards")),
}


@pytest.mark.deep
@settings(max_examples=len(H5_TAMPERS), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(H5_TAMPERS)))
def test_malformed_hdf5_datasets_are_refused(hdf5_dataset, name):
    field, tamper = H5_TAMPERS[name]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.h5"
        path.write_bytes(hdf5_dataset.read_bytes())
        with h5py.File(path, "r+") as f:
            tamper(f)
        result = run_cli("coverage", path, "--bootstrap", "0", "--feature-dim", "4", "--json", "--out", Path(d) / "plots")
        assert_refused(result, path, (field,))
        assert not (Path(d) / "plots").exists()


def _huge_pairs(f):
    del f["pairs/first"]
    f["pairs"].create_dataset("first", shape=(2**34,), dtype=np.int64, chunks=(2**16,))


def _huge_observations(f):
    """obs_dim = 10^7 in the attributes and an unallocated (fill-value) obs dataset to match."""
    shape = f["obs"].shape
    del f["obs"]
    f.attrs["obs_dim"] = 10**7
    f.create_dataset("obs", shape=(*shape[:-1], 10**7), dtype=np.float32, chunks=(1, 1, 1, 2**16))


@pytest.mark.deep
@pytest.mark.parametrize("tamper, field", [(_huge_pairs, "pairs/first"), (_huge_observations, "obs_dim")])
def test_hdf5_declaring_huge_arrays_is_refused_without_allocating(tmp_path, hdf5_dataset, tamper, field):
    path = tmp_path / "huge.h5"
    path.write_bytes(hdf5_dataset.read_bytes())
    with h5py.File(path, "r+") as f:
        tamper(f)
    tracemalloc.start()
    assert_refused(run_cli("coverage", path, "--bootstrap", "0", "--feature-dim", "4", "--json"), path, (field,))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES


@pytest.mark.deep
def test_pairs_of_another_dataset_are_refused_whatever_file_holds_them(tmp_path, hdf5_dataset):
    """The worst silent wrong answer: a --pairs-file naming another dataset's file."""
    from marlcov.deep.data import DatasetReader, read_pairs, write_pairs_file

    ours, theirs = tmp_path / "ours.h5", tmp_path / "theirs.h5"
    ours.write_bytes(hdf5_dataset.read_bytes())
    theirs.write_bytes(hdf5_dataset.read_bytes())
    with h5py.File(theirs, "r+") as f:
        f.attrs["uuid"] = "another"
    with DatasetReader(theirs) as reader:
        write_pairs_file(tmp_path / "theirs.pairs.h5", read_pairs(theirs), reader)
    for pairs_file in (theirs, tmp_path / "theirs.pairs.h5"):
        result = run_cli("coverage", ours, "--pairs-file", pairs_file, "--bootstrap", "0", "--feature-dim", "4", "--json")
        assert_refused(result, pairs_file, ("uuid",))


@pytest.mark.deep
@FUZZ
@given(st.binary(max_size=300))
def test_garbage_files_given_as_hdf5_or_checkpoints_are_refused(garbage):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.h5"
        path.write_bytes(garbage)
        assert_refused(run_cli("coverage", path, "--bootstrap", "0", "--json"), path, ("HDF5",))


@pytest.mark.deep
@pytest.mark.parametrize("garbage", [b"garbage\n", bytes(range(256)), b"PK\x03\x04" + b"\0" * 40])
def test_garbage_policy_checkpoints_are_refused(tmp_path, garbage):
    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(garbage)
    path = _tiny_dataset(tmp_path / "data.h5")
    assert_refused(run_cli("coverage", path, "--policy", ckpt, "--bootstrap", "0", "--feature-dim", "4", "--json"), ckpt)


@pytest.mark.deep
@pytest.mark.parametrize("garbage", [b"garbage\n", bytes(range(256))])
def test_garbage_checkpoints_to_evaluate_are_refused(tmp_path, garbage):
    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(garbage)
    assert_refused(run_cli("deep", "evaluate", ckpt, "--json"), ckpt)


def _tiny_dataset(path):
    from marlcov.deep.data import DatasetSpec, DatasetWriter, TrajectoryBatch
    from marlcov.deep.data.preferences import label_pairs, sample_pairs

    N, H, m, nA = 4, 1, 2, 2
    rng = np.random.default_rng(0)
    spec = DatasetSpec("toy", {}, ("a0", "a1"), 1, 1, nA, H)
    with DatasetWriter(path, spec) as w:
        w.append(
            TrajectoryBatch(
                np.zeros((N, H + 1, m, 1), np.float32),
                np.zeros((N, H + 1, 1), np.float32),
                rng.integers(0, nA, (N, H, m)).astype(np.int16),
                np.ones((N, H, m, nA), bool),
                np.zeros((N, H, m), np.float32),
                np.arange(N),
                "mix",
            )
        )
        w.write_pairs(label_pairs(rng.random((N, m)), *sample_pairs(N, 1, 0), seed=1))
    return path
