"""Streaming HDF5 storage of offline trajectories and preference pairs (layout: ``schema.py``).

``DatasetWriter`` appends batches of trajectories to resizable, chunked, compressed datasets of
a temporary file beside the target and renames it onto the target only when closed without
error, so a killed or failed writer never leaves a partial file at the final path.
``DatasetReader`` reads slices or index sets in batches without loading the file. Preference
pairs go into the dataset file (``DatasetWriter.write_pairs``) or into a separate pairs file
(``write_pairs_file``), written atomically in the same way and tied to its dataset by uuid.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from .schema import (
    DATASET_FORMAT,
    FORMAT_ATTR,
    PAIRS_FORMAT,
    PAIRS_GROUP,
    TRAJECTORY_FIELDS,
    DatasetSpec,
    PreferencePairs,
    TrajectoryBatch,
)

DEFAULT_CHUNK_TRAJECTORIES = 64
DEFAULT_COMPRESSION = "gzip"
DEFAULT_COMPRESSION_LEVEL = 4
DEFAULT_READ_BATCH = 1024


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _check_format(f: h5py.File, expected: Sequence[str], path: Path) -> str:
    if FORMAT_ATTR not in f.attrs:
        raise ValueError(f"{path}: attribute '{FORMAT_ATTR}' is missing; expected one of {list(expected)}")
    value = f.attrs[FORMAT_ATTR]
    value = value.decode() if isinstance(value, bytes) else str(value)
    if value not in expected:
        raise ValueError(f"{path}: attribute '{FORMAT_ATTR}' is {value!r}; this reader knows {list(expected)}")
    return value


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


def _read_pairs_group(g: h5py.Group) -> PreferencePairs:
    attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()}
    probs = g["probs"][()] if "probs" in g else None
    return PreferencePairs(g["first"][()], g["second"][()], g["labels"][()], probs, attrs)


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
        f.attrs[FORMAT_ATTR] = DATASET_FORMAT
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
            f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(chunk_trajectories, *shape), **opts)
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
            "obs": batch.obs, "state": batch.state, "actions": batch.actions, "avail": batch.avail,
            "rewards": batch.rewards, "seed": batch.seed,
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

    def __enter__(self) -> "DatasetWriter":
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
        self._file = h5py.File(self.path, "r")
        try:
            _check_format(self._file, [DATASET_FORMAT], self.path)
            attrs = self._file.attrs
            self.spec = DatasetSpec.from_attrs(attrs, str(self.path))
            self.uuid = str(attrs["uuid"])
            self.n_trajectories = int(attrs["n_trajectories"])
            self.source_names = np.asarray(json.loads(attrs.get("source_names", "[]")), dtype=str)
            self.policy_names = np.asarray(json.loads(attrs.get("policy_names", "[]")), dtype=str)
            missing = [name for name in TRAJECTORY_FIELDS if name not in self._file]
            if missing:
                raise ValueError(f"{self.path}: missing dataset(s) {missing}")
        except Exception:
            self._file.close()
            raise

    def __len__(self) -> int:
        return self.n_trajectories

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DatasetReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _decode(self, name: str, values: np.ndarray) -> np.ndarray:
        if name == "source":
            return self.source_names[values] if values.size else values.astype(str)
        if name == "agent_policy":
            return self.policy_names[values] if values.size else values.astype(str)
        return values

    def read_fields(self, index, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of ``fields`` (default: all) for ``index``: a slice, or integer indices in any
        order (read sorted, then put back in the requested order). Tags come back as strings."""
        fields = list(TRAJECTORY_FIELDS if fields is None else fields)
        unknown = [name for name in fields if name not in TRAJECTORY_FIELDS]
        if unknown:
            raise ValueError(f"fields: unknown {unknown}; expected names from {list(TRAJECTORY_FIELDS)}")
        if isinstance(index, slice):
            return {name: self._decode(name, self._file[name][index]) for name in fields}
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_trajectories):
            raise ValueError(f"index: expected trajectory indices in [0, {self.n_trajectories - 1}]")
        unique, inverse = np.unique(idx, return_inverse=True)
        out = {}
        for name in fields:
            ds = self._file[name]
            block = ds[unique] if unique.size else np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
            out[name] = self._decode(name, block[inverse])
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
        order (contiguous reads), or in a seeded random order with ``shuffle``."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        N = self.n_trajectories
        if shuffle:
            order = np.random.default_rng(seed).permutation(N)
            for start in range(0, N, batch_size):
                idx = order[start : start + batch_size]
                yield idx, self.read_fields(idx, fields)
        else:
            for start in range(0, N, batch_size):
                stop = min(start + batch_size, N)
                yield np.arange(start, stop), self.read_fields(slice(start, stop), fields)

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
            raise ValueError(f"{self.path}: no group '{PAIRS_GROUP}'; label the dataset first or read a pairs file with read_pairs")
        return _read_pairs_group(self._file[PAIRS_GROUP])


def write_pairs_file(path: str | os.PathLike, pairs: PreferencePairs, dataset: DatasetReader, *, overwrite: bool = False) -> Path:
    """Write ``pairs`` over ``dataset``'s trajectories to a separate pairs file, atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    tmp = _temporary_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs[FORMAT_ATTR] = PAIRS_FORMAT
            f.attrs["dataset_uuid"] = dataset.uuid
            f.attrs["dataset_path"] = str(dataset.path)
            _write_pairs_group(f, pairs, dataset.n_trajectories, dataset.spec.n_agents, DEFAULT_COMPRESSION)
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_pairs(path: str | os.PathLike, dataset: DatasetReader | None = None) -> PreferencePairs:
    """Preference pairs from a pairs file or a dataset file; with ``dataset`` given, a pairs
    file must have been written for that dataset (same uuid)."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        fmt = _check_format(f, [PAIRS_FORMAT, DATASET_FORMAT], path)
        if fmt == PAIRS_FORMAT and dataset is not None and str(f.attrs["dataset_uuid"]) != dataset.uuid:
            raise ValueError(f"{path}: attribute 'dataset_uuid' is {str(f.attrs['dataset_uuid'])!r}, but {dataset.path} has uuid {dataset.uuid!r}")
        if PAIRS_GROUP not in f:
            raise ValueError(f"{path}: no group '{PAIRS_GROUP}'")
        return _read_pairs_group(f[PAIRS_GROUP])
