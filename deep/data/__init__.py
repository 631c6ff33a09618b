"""Offline datasets of deep/: the HDF5 schema, streaming writer and reader, preference labels.
Needs numpy and h5py only (no torch, no jax)."""

from . import schema
from .hdf5 import DatasetReader, DatasetWriter, read_pairs, write_pairs_file
from .preferences import label_dataset, label_pairs, preference_probabilities, sample_pairs, standardised_returns
from .schema import DEEP_DATASET_FORMAT, DEEP_PAIRS_FORMAT, RENAMED, DatasetSpec, PreferencePairs, TrajectoryBatch

__all__ = [
    "DEEP_DATASET_FORMAT",
    "DEEP_PAIRS_FORMAT",
    "DatasetReader",
    "DatasetSpec",
    "DatasetWriter",
    "PreferencePairs",
    "TrajectoryBatch",
    "label_dataset",
    "label_pairs",
    "preference_probabilities",
    "read_pairs",
    "sample_pairs",
    "standardised_returns",
    "write_pairs_file",
]


def __getattr__(name: str):
    if name in RENAMED:
        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
