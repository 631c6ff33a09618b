"""Streaming HDF5 storage of offline trajectories and preference pairs (layout: ``schema.py``).

``DatasetWriter`` appends batches of trajectories to resizable, chunked, compressed datasets of
a temporary file beside the target and renames it onto the target only when closed without
error, so a killed or failed writer never leaves a partial file at the final path.
``DatasetReader`` reads slices or index sets in batches without loading the file. Preference
pairs go into the dataset file (``DatasetWriter.write_pairs``) or into a separate pairs file
(``write_pairs_file``), written atomically in the same way and tied to its dataset by uuid.

Length: about 500 lines: the writer, the reader and the pairs files of one format, with the
checks of every field, kept together so the format is defined and enforced in one place (its
layout is ``schema.py``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from marlcov.theory.games import GameError
from marlcov.theory.progress import task
from marlcov.theory.safe_read import MEMORY_BUDGET_BYTES, short_repr

from .schema import (
    DEEP_DATASET_FORMAT,
    DEEP_PAIRS_FORMAT,
    FORMAT_ATTR,
    PAIRS_GROUP,
    TRAJECTORY_FIELDS,
    DatasetSpec,
    PreferencePairs,
    TrajectoryBatch,
    int_attr,
    json_attr,
    str_attr,
)

#: Format string of the continuous-action files read in place by ``legacy_continuous``.
LEGACY_CONTINUOUS_FORMAT = "marlcov.deep-dataset-continuous/1"
DEFAULT_CHUNK_TRAJECTORIES = 64
DEFAULT_COMPRESSION = "gzip"
DEFAULT_COMPRESSION_LEVEL = 4
DEFAULT_READ_BATCH = 1024
#: The largest trajectory (all its fields) a reader accepts: a batch of them must fit in memory.
MAX_TRAJECTORY_BYTES = 64 * 2**20
#: Trajectories whose tags are checked per read when a dataset is opened.
TAG_CHECK_BLOCK = 2**20


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _open_hdf5(path: Path) -> h5py.File:
    """``path`` opened read-only; GameError naming the file when it is missing or not HDF5."""
    if not path.exists():
        raise GameError(f"{path}: no such file")
    if not path.is_file():
        raise GameError(f"{path}: is a directory; expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise GameError(f"{path}: cannot be read as HDF5 ({short_repr(' '.join(str(exc).split()), 80)})") from None


def _check_format(f: h5py.File, expected: Sequence[str], path: Path) -> str:
    if FORMAT_ATTR not in f.attrs:
        raise GameError(f"{path}: attribute '{FORMAT_ATTR}' is missing; expected one of {list(expected)}")
    value = f.attrs[FORMAT_ATTR]
    value = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    if value not in expected:
        hint = ""
        if value == LEGACY_CONTINUOUS_FORMAT:
            hint = " (a continuous-action file of the retired format: open it with marlcov.deep.data.external.open_dataset)"
        raise GameError(f"{path}: attribute '{FORMAT_ATTR}' is {short_repr(value)}; this reader knows {list(expected)}{hint}")
    return value


def _hdf5_name(group: h5py.Group, name: str) -> str:
    return f"{group.name.strip('/')}/{name}".lstrip("/")


def _dataset(group: h5py.Group, name: str, where: str) -> h5py.Dataset:
    if name not in group:
        raise GameError(f"{where}: {_hdf5_name(group, name)}: dataset is missing")
    ds = group[name]
    if not isinstance(ds, h5py.Dataset):
        raise GameError(f"{where}: {_hdf5_name(group, name)}: is a group; expected a dataset")
    return ds


def _check_dtype(ds: h5py.Dataset, expected: np.dtype, where: str) -> None:
    name = ds.name.lstrip("/")
    kind = ds.dtype.kind
    ok = {"f": kind == "f", "i": kind in "iu", "u": kind in "iu", "b": kind == "b" or (kind in "iu" and ds.dtype.itemsize == 1)}
    if not ok.get(expected.kind, False):
        want = {"f": "floating point", "i": "integer", "u": "integer", "b": "boolean"}[expected.kind]
        raise GameError(f"{where}: {name}: expected {want} values, got dtype {short_repr(str(ds.dtype))}")


def _check_trajectory_datasets(f: h5py.File, spec: DatasetSpec, n: int, where: str) -> None:
    """Every trajectory dataset exists with the spec's dtype kind and shape ``[n, ...]``, and
    one trajectory of all of them fits ``MAX_TRAJECTORY_BYTES``."""
    row_bytes = 0
    for name, (dtype, shape) in spec.field_layout().items():
        ds = _dataset(f, name, where)
        _check_dtype(ds, dtype, where)
        if ds.shape != (n, *shape):
            expected = [n, *shape]
            raise GameError(
                f"{where}: {name}: expected shape {short_repr(expected)} (n_trajectories, "
                f"horizon, agent_names, obs_dim, state_dim, n_actions of the attributes), got {short_repr(list(ds.shape))}"
            )
        row_bytes += int(np.prod(shape, dtype=np.int64)) * ds.dtype.itemsize
    if row_bytes > MAX_TRAJECTORY_BYTES:
        raise GameError(
            f"{where}: one trajectory takes {row_bytes / 2**20:.3g} MiB (obs_dim, state_dim, horizon), "
            f"over the reader's limit of {MAX_TRAJECTORY_BYTES // 2**20} MiB"
        )


def _write_pairs_group(f: h5py.File, pairs: PreferencePairs, n_trajectories: int, n_agents: int, compression: str | None) -> None:
    if pairs.n_agents != n_agents:
        raise ValueError(f"labels: expected {n_agents} labels per pair (one per agent), got {pairs.n_agents}")
    for name, idx in (("first", pairs.first), ("second", pairs.second)):
        if len(idx) and (idx.min() < 0 or idx.max() >= n_trajectories):
            raise ValueError(f"{name}: expected trajectory indices in [0, {n_trajectories - 1}]")
    if PAIRS_GROUP in f:
        del f[PAIRS_GROUP]
    g = f.create_group(PAIRS_GROUP)
    opts = {"compression": compression} if compression and len(pairs) else {}
    g.create_dataset("first", data=pairs.first, **opts)
    g.create_dataset("second", data=pairs.second, **opts)
    g.create_dataset("labels", data=pairs.labels, **opts)
    if pairs.probs is not None:
        g.create_dataset("probs", data=pairs.probs, **opts)
    for key, value in pairs.attrs.items():
        g.attrs[key] = value if isinstance(value, (str, int, float, np.integer, np.floating)) else json.dumps(value)


def _read_pairs_group(g: h5py.Group, where: str, n_trajectories: int | None = None) -> PreferencePairs:
    """The pairs of group ``g``, checked: index and label datasets present, integer, of one
    length ``P`` (labels ``[P, m]`` in {+1, -1}, probs in [0, 1]) and indices in range."""
    arrays, budget = {}, MEMORY_BUDGET_BYTES
    for name, kind, ndim in (("first", "i", 1), ("second", "i", 1), ("labels", "i", 2), ("probs", "f", 2)):
        if name == "probs" and name not in g:
            continue
        ds = _dataset(g, name, where)
        _check_dtype(ds, np.dtype(kind), where)
        field = _hdf5_name(g, name)
        if ds.ndim != ndim:
            raise GameError(f"{where}: {field}: expected {ndim} axes, got shape {short_repr(list(ds.shape))}")
        nbytes = ds.size * ds.dtype.itemsize
        if nbytes > budget:
            raise GameError(
                f"{where}: {field}: takes {nbytes / 2**30:.3g} GiB, over what is left of the reader's budget of "
                f"{MEMORY_BUDGET_BYTES / 2**30:.3g} GiB"
            )
        budget -= nbytes
        arrays[name] = ds[()]
    P = len(arrays["first"])
    for name in ("second", "labels", "probs"):
        if name in arrays and len(arrays[name]) != P:
            raise GameError(f"{where}: {_hdf5_name(g, name)}: expected {P} rows (one per pair, as first), got {len(arrays[name])}")
    if n_trajectories is not None:
        for name in ("first", "second"):
            idx = arrays[name]
            if idx.size and (idx.min() < 0 or idx.max() >= n_trajectories):
                raise GameError(
                    f"{where}: {_hdf5_name(g, name)}: expected trajectory indices in [0, {n_trajectories - 1}], "
                    f"found {int(idx.min())}..{int(idx.max())}"
                )
    if not np.all(np.isin(arrays["labels"], (-1, 1))):
        raise GameError(f"{where}: {_hdf5_name(g, 'labels')}: expected values in {{+1, -1}}")
    if "probs" in arrays and not np.all((arrays["probs"] >= 0) & (arrays["probs"] <= 1)):
        raise GameError(f"{where}: {_hdf5_name(g, 'probs')}: expected probabilities in [0, 1]")
    attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()}
    try:
        return PreferencePairs(arrays["first"], arrays["second"], arrays["labels"], arrays.get("probs"), attrs)
    except ValueError as exc:
        raise GameError(f"{where}: {g.name.strip('/')}/{exc}") from None


class DatasetWriter:
    """Write trajectories of one ``DatasetSpec`` to ``path`` in appended batches.

    Args:
        path: final file path; it appears only when ``close`` succeeds.
        spec: sizes and environment of every trajectory.
        chunk_trajectories: trajectories per HDF5 chunk.
        compression: h5py filter name (``"gzip"``, ``"lzf"``) or None.
        overwrite: replace an existing file at ``path`` on close (else FileExistsError now).

    Use as a context manager: leaving the block by an exception discards everything.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        spec: DatasetSpec,
        *,
        chunk_trajectories: int = DEFAULT_CHUNK_TRAJECTORIES,
        compression: str | None = DEFAULT_COMPRESSION,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: exists; pass overwrite=True to replace it")
        if chunk_trajectories < 1:
            raise ValueError(f"chunk_trajectories: expected a positive integer, got {chunk_trajectories!r}")
        self.spec = spec
        self.uuid = uuid.uuid4().hex
        self._compression = compression
        self._tmp = _temporary_path(self.path)
        self._file: h5py.File | None = h5py.File(self._tmp, "w")
        f = self._file
        f.attrs[FORMAT_ATTR] = DEEP_DATASET_FORMAT
        for key, value in spec.to_attrs().items():
            f.attrs[key] = value
        f.attrs["uuid"] = self.uuid
        f.attrs["n_trajectories"] = 0
        opts = {}
        if compression == "gzip":
            opts = {"compression": "gzip", "compression_opts": DEFAULT_COMPRESSION_LEVEL, "shuffle": True}
        elif compression is not None:
            opts = {"compression": compression, "shuffle": True}
        for name, (dtype, shape) in spec.field_layout().items():
            f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(chunk_trajectories, *shape), **opts)
        self._source_names: list[str] = []
        self._policy_names: list[str] = []
        self.n_trajectories = 0

    def _tag_ids(self, tags: np.ndarray, table: list[str]) -> np.ndarray:
        names, inverse = np.unique(tags, return_inverse=True)
        ids = np.empty(len(names), dtype=np.int64)
        for k, name in enumerate(names):
            if name not in table:
                table.append(str(name))
            ids[k] = table.index(name)
        return ids[inverse].reshape(tags.shape)

    def append(self, batch: TrajectoryBatch) -> None:
        """Append the complete trajectories of ``batch`` (validated against the spec)."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        batch.validate(self.spec)
        B = len(batch)
        if B == 0:
            return
        f, start = self._file, self.n_trajectories
        values = {
            "obs": batch.obs,
            "state": batch.state,
            "actions": batch.actions,
            "avail": batch.avail,
            "rewards": batch.rewards,
            "seed": batch.seed,
            "source": self._tag_ids(batch.source, self._source_names),
            "agent_policy": self._tag_ids(batch.agent_policy, self._policy_names),
        }
        for name in TRAJECTORY_FIELDS:
            ds = f[name]
            ds.resize(start + B, axis=0)
            ds[start : start + B] = np.asarray(values[name], dtype=ds.dtype)
        self.n_trajectories = start + B
        f.attrs["n_trajectories"] = self.n_trajectories
        f.attrs["source_names"] = json.dumps(self._source_names)
        f.attrs["policy_names"] = json.dumps(self._policy_names)

    def write_pairs(self, pairs: PreferencePairs) -> None:
        """Store preference pairs over the trajectories appended so far (replacing earlier ones)."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        _write_pairs_group(self._file, pairs, self.n_trajectories, self.spec.n_agents, self._compression)

    def set_json_attribute(self, name: str, value: Any) -> None:
        """Record ``value`` as JSON text in the file attribute ``name`` (metadata the readers keep
        but do not interpret, e.g. ``skill_order``). ValueError for an attribute the format
        itself defines."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        reserved = {FORMAT_ATTR, "uuid", "n_trajectories", "source_names", "policy_names", *self.spec.to_attrs()}
        if name in reserved:
            raise ValueError(f"{self.path}: attribute {name!r} is part of the dataset format; expected another name")
        self._file.attrs[name] = json.dumps(value)

    def close(self) -> Path:
        """Finalise: flush, close and atomically rename onto ``path``. Returns ``path``."""
        if self._file is None:
            return self.path
        f = self._file
        f.attrs["source_names"] = json.dumps(self._source_names)
        f.attrs["policy_names"] = json.dumps(self._policy_names)
        f.flush()
        f.close()
        self._file = None
        _commit(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard everything written: close and delete the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class DatasetReader:
    """Read a dataset file written by ``DatasetWriter`` without loading it whole.

    Raises ValueError when the file's ``format`` attribute is missing or unknown.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = _open_hdf5(self.path)
        where = str(self.path)
        try:
            _check_format(self._file, [DEEP_DATASET_FORMAT], self.path)
            attrs = self._file.attrs
            self.spec = DatasetSpec.from_attrs(attrs, where)
            self.uuid = str_attr(attrs, "uuid", where)
            self.n_trajectories = int_attr(attrs, "n_trajectories", where)
            self.source_names = self._names(attrs, "source_names")
            self.policy_names = self._names(attrs, "policy_names")
            _check_trajectory_datasets(self._file, self.spec, self.n_trajectories, where)
            for start in range(0, self.n_trajectories, TAG_CHECK_BLOCK):
                rows = slice(start, min(start + TAG_CHECK_BLOCK, self.n_trajectories))
                for name in ("source", "agent_policy"):
                    self._decode(name, self._file[name][rows], rows)
        except Exception:
            self._file.close()
            raise

    def _names(self, attrs, key: str) -> np.ndarray:
        if key not in attrs:
            return np.asarray([], dtype=str)
        names = json_attr(attrs, key, list, str(self.path), "a JSON list of tag names")
        if not all(isinstance(n, str) for n in names):
            raise GameError(f"{self.path}: attribute {key!r}: expected a JSON list of strings, got {short_repr(names)}")
        return np.asarray(names, dtype=str)

    def __len__(self) -> int:
        return self.n_trajectories

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _decode(self, name: str, values: np.ndarray, rows) -> np.ndarray:
        """Tags as strings; every other field checked for values the schema cannot hold (a
        NaN observation, an action outside ``[0, n_actions)``), naming the trajectory."""
        names = {"source": (self.source_names, "source_names"), "agent_policy": (self.policy_names, "policy_names")}
        if name in names:
            table, attr = names[name]
            if not values.size:
                return values.astype(str)
            bad = (values < 0) | (values >= len(table))
            if bad.any():
                self._refuse(name, rows, bad, f"expected indices into attribute {attr!r} (0..{len(table) - 1})")
            return table[values]
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values)
            if bad.any():
                self._refuse(name, rows, bad, "expected finite numbers, found NaN or infinity")
        elif name == "actions":
            bad = (values < 0) | (values >= self.spec.n_actions)
            if bad.any():
                self._refuse(name, rows, bad, f"expected values in [0, {self.spec.n_actions - 1}] (n_actions)")
        return values

    def _refuse(self, name: str, rows, bad: np.ndarray, what: str) -> None:
        first = int(np.argwhere(bad.reshape(len(bad), -1).any(axis=1))[0, 0])
        row = rows.start + first if isinstance(rows, slice) else int(np.asarray(rows)[first])
        raise GameError(f"{self.path}: {name}, trajectory {row}: {what}")

    def read_fields(self, index, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of ``fields`` (default: all) for ``index``: a slice, or integer indices in any
        order (read sorted, then put back in the requested order). Tags come back as strings."""
        fields = list(TRAJECTORY_FIELDS if fields is None else fields)
        unknown = [name for name in fields if name not in TRAJECTORY_FIELDS]
        if unknown:
            raise ValueError(f"fields: unknown {unknown}; expected names from {list(TRAJECTORY_FIELDS)}")
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n_trajectories)
            rows = slice(start, stop, step) if step == 1 else np.arange(start, stop, step)
            return {name: self._decode(name, self._file[name][index], rows) for name in fields}
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_trajectories):
            raise ValueError(f"index: expected trajectory indices in [0, {self.n_trajectories - 1}]")
        unique, inverse = np.unique(idx, return_inverse=True)
        out = {}
        for name in fields:
            ds = self._file[name]
            block = ds[unique] if unique.size else np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
            out[name] = self._decode(name, block[inverse], idx)
        return out

    def read(self, index) -> TrajectoryBatch:
        """The trajectories at ``index`` (slice or integer indices) as a ``TrajectoryBatch``."""
        d = self.read_fields(index)
        return TrajectoryBatch(d["obs"], d["state"], d["actions"], d["avail"], d["rewards"], d["seed"], d["source"], d["agent_policy"])

    def iter_batches(
        self,
        batch_size: int = DEFAULT_READ_BATCH,
        *,
        fields: Sequence[str] | None = None,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield ``(indices, arrays)`` over all trajectories, ``batch_size`` at a time: in file
        order (contiguous reads), or in a seeded random order with ``shuffle``. Each pass is a
        ``theory.progress`` task (what is read, batches done, time left), shown by the command line."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        N = self.n_trajectories
        order = np.random.default_rng(seed).permutation(N) if shuffle else None
        what = ", ".join(TRAJECTORY_FIELDS if fields is None else fields)
        with task(f"reading {what} of {self.path.name}", total=-(-N // batch_size)) as progress:
            for start in range(0, N, batch_size):
                stop = min(start + batch_size, N)
                if order is None:
                    yield np.arange(start, stop), self.read_fields(slice(start, stop), fields)
                else:
                    idx = order[start:stop]
                    yield idx, self.read_fields(idx, fields)
                progress.advance()

    def returns(self, batch_size: int = DEFAULT_READ_BATCH) -> np.ndarray:
        """True return of every trajectory and agent, ``[N, m]`` float64, read in batches."""
        out = np.empty((self.n_trajectories, self.spec.n_agents), dtype=np.float64)
        for idx, d in self.iter_batches(batch_size, fields=["rewards"]):
            out[idx] = d["rewards"].astype(np.float64).sum(axis=1)
        return out

    def has_pairs(self) -> bool:
        return PAIRS_GROUP in self._file

    def pairs(self) -> PreferencePairs:
        """The preference pairs stored in this dataset file."""
        if PAIRS_GROUP not in self._file:
            raise GameError(f"{self.path}: no group '{PAIRS_GROUP}'; label the dataset first or read a pairs file with read_pairs")
        return _read_pairs_group(self._file[PAIRS_GROUP], str(self.path), self.n_trajectories)


def write_pairs_file(path: str | os.PathLike, pairs: PreferencePairs, dataset: DatasetReader, *, overwrite: bool = False) -> Path:
    """Write ``pairs`` over ``dataset``'s trajectories to a separate pairs file, atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    tmp = _temporary_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs[FORMAT_ATTR] = DEEP_PAIRS_FORMAT
            f.attrs["dataset_uuid"] = dataset.uuid
            f.attrs["dataset_path"] = str(dataset.path)
            _write_pairs_group(f, pairs, dataset.n_trajectories, dataset.spec.n_agents, DEFAULT_COMPRESSION)
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_pairs(path: str | os.PathLike, dataset: DatasetReader | None = None) -> PreferencePairs:
    """Preference pairs from a pairs file or a dataset file. With ``dataset`` given, the pairs
    must belong to it, whatever kind of file holds them: a pairs file's ``dataset_uuid``, or a
    dataset file's ``uuid``, must be ``dataset.uuid``, and every index must be a trajectory of it."""
    path = Path(path)
    with _open_hdf5(path) as f:
        fmt = _check_format(f, [DEEP_PAIRS_FORMAT, DEEP_DATASET_FORMAT], path)
        if dataset is not None:
            key = "dataset_uuid" if fmt == DEEP_PAIRS_FORMAT else "uuid"
            owner = str_attr(f.attrs, key, str(path))
            if owner != dataset.uuid:
                raise GameError(
                    f"{path}: attribute {key!r} is {short_repr(owner)}, but {dataset.path} has uuid "
                    f"{dataset.uuid!r}: these pairs belong to another dataset"
                )
        if PAIRS_GROUP not in f:
            raise GameError(f"{path}: no group '{PAIRS_GROUP}'")
        n = None if dataset is None else dataset.n_trajectories
        pairs = _read_pairs_group(f[PAIRS_GROUP], str(path), n)
    if dataset is not None and pairs.n_agents != dataset.spec.n_agents:
        raise GameError(
            f"{path}: {PAIRS_GROUP}/labels: expected {dataset.spec.n_agents} labels per pair "
            f"(the agents of {dataset.path}), got {pairs.n_agents}"
        )
    return pairs
