"""Checks before the passes, and pass 1: the covariances streamed from the HDF5 file in blocks of trajectories."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.dataset_coverage import (
    ACCUMULATOR_MEMORY_BYTES,
    CovarianceAccumulator,
)
from marlcov.theory.ridge_forms import checked_lambda

from ..data.hdf5 import DatasetReader
from ..features import FeatureMap
from .defaults import DEFAULT_BLOCK, PAIR_BATCH
from .reference_policy import _policy_actions, _step_masks


# ----------------------------------------------------------------------------- HDF5 diagnostic
def _fields_needed(fmap: FeatureMap, extra: Sequence[str]) -> list[str]:
    return sorted(set(fmap.fields) | set(extra))


def _check_hdf5_options(*, lam, bootstrap, groups, bootstrap_anchors, reference_fraction, count_resolution, block, episodes) -> None:
    """ValueError naming the first option out of its range; run before anything is read."""

    def integer(name, value, low):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")

    checked_lambda(lam)
    integer("bootstrap", bootstrap, 0)
    integer("groups", groups, 0)
    integer("bootstrap_anchors", bootstrap_anchors, 0)
    integer("block", block, 1)
    integer("episodes", episodes, 1)
    if not (isinstance(reference_fraction, (int, float, np.number)) and 0 < reference_fraction <= 1):
        raise ValueError(f"reference_fraction: expected a value in (0, 1], got {reference_fraction!r}")
    if not (isinstance(count_resolution, (int, float, np.number)) and np.isfinite(count_resolution) and count_resolution > 0):
        raise ValueError(f"count_resolution: expected a positive number, got {count_resolution!r}")


def read_episode_lengths(reader: DatasetReader, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Real steps of every trajectory, ``[N]`` int64 (its padding follows them), from ``avail``
    and ``actions`` read batch by batch, nothing else: ValueError naming the file, the field and
    the trajectory when a padded step comes before a real one, an agent has no available action
    at a real step, or an action lies outside ``[0, n_actions)`` (padded steps included: the
    feature maps are evaluated on whole trajectories)."""
    nA = reader.spec.n_actions
    lengths = np.zeros(len(reader), dtype=np.int64)
    for idx, d in reader.iter_batches(block, fields=["avail", "actions"]):
        lengths[idx] = _step_masks(d["avail"], f"{reader.path}: avail", idx).sum(axis=1)
        acts = d["actions"]
        if acts.size and (acts.min() < 0 or acts.max() >= nA):
            n = int(idx[np.flatnonzero(((acts < 0) | (acts >= nA)).any(axis=(1, 2)))[0]])
            raise ValueError(
                f"{reader.path}: actions: expected values in [0, {nA - 1}], trajectory {n} has {acts[n - idx[0]].min()}.."
                f"{acts[n - idx[0]].max()}"
            )
    return lengths


def _open_hdf5(opener, path, *args):
    """``opener(path, *args)``; h5py's OSError for a file that is not HDF5 (which does not name
    the file) as a ValueError that does."""
    try:
        return opener(path, *args)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read as HDF5 ({' '.join(str(exc).split())})") from exc


def _check_pairs(pairs, n_trajectories: int, n_agents: int, where) -> None:
    """ValueError naming the file and field of pairs that do not fit the dataset."""
    if len(pairs) == 0:
        raise ValueError(f"{where}: pairs: the preference pairs are empty")
    for name, idx in (("first", pairs.first), ("second", pairs.second)):
        if idx.min() < 0 or idx.max() >= n_trajectories:
            raise ValueError(f"{where}: pairs/{name}: expected trajectory indices in [0, {n_trajectories - 1}]")
    if pairs.n_agents != n_agents:
        raise ValueError(f"{where}: pairs/labels: expected {n_agents} labels per pair (one per agent), got {pairs.n_agents}")


def _probe(reader: DatasetReader, fmap: FeatureMap, policy) -> None:
    """The feature map, and the reference policy when there is one, on the first trajectory, so
    that one that does not fit the dataset fails before the streaming passes."""
    spec, H = reader.spec, reader.spec.horizon
    n_file = getattr(fmap, "n_trajectories", None)
    if n_file is not None and n_file < len(reader):
        raise ValueError(f"features: the feature file has {n_file} trajectories, the dataset {reader.path} has {len(reader)}")
    d = reader.read_fields(slice(0, 1), _fields_needed(fmap, ["actions", "avail", "obs", "state"]))
    valid = _step_masks(d["avail"][:, :H], f"{reader.path}: avail", np.arange(1))
    x = np.asarray(fmap(d, d["actions"][:, :H].astype(np.int64), np.arange(1)))
    if x.shape != (1, H, fmap.dim):
        raise ValueError(f"features: expected [B, H, d] = [1, {H}, {fmap.dim}] for one trajectory of {reader.path}, got {list(x.shape)}")
    if not np.all(np.isfinite(x[valid])):
        raise ValueError(f"features: not finite on trajectory 0 of {reader.path}")
    if policy is None or not valid[0, 0]:
        return
    # On a copy: a stochastic policy's generator must give the same draws as without the probe.
    try:
        trial = copy.deepcopy(policy)
    except Exception:  # noqa: BLE001 -- a policy that cannot be copied is simply not probed
        return
    try:
        a = _policy_actions(trial, d["obs"][:, :1], d["avail"][:, :1])
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        # torch reports a policy built for other observation sizes as a RuntimeError.
        why = " ".join(str(exc).split())
        raise ValueError(f"policy: fails on the first step of {reader.path}: {type(exc).__name__}: {why}") from exc
    if a.shape != (1, 1, spec.n_agents) or a.min() < 0 or a.max() >= spec.n_actions:
        raise ValueError(
            f"policy: expected one action in [0, {spec.n_actions - 1}] per agent ({spec.n_agents}) on "
            f"{reader.path}, got {a.reshape(-1).tolist()}"
        )


def pair_groups(n_pairs: int, groups: int) -> np.ndarray:
    """Group of each pair in file order: ``G`` contiguous runs of (almost) equal length."""
    return (np.arange(n_pairs) * groups) // n_pairs if groups else np.zeros(n_pairs, dtype=np.int64)


def accumulate_pairs(
    reader: DatasetReader,
    pairs,
    fmap: FeatureMap,
    lam: float = DEFAULT_LAMBDA,
    groups: int = 0,
    block: int = DEFAULT_BLOCK,
    memory_bytes: int = ACCUMULATOR_MEMORY_BYTES,
    horizon: int | None = None,
) -> tuple[CovarianceAccumulator, np.ndarray]:
    """``Sigma_r`` and ``Sigma_p`` of the preference pairs of an HDF5 dataset, streaming.

    Trajectories are read in contiguous blocks of ``block``; a pair whose members lie in blocks
    ``(b, b')`` (oriented so that ``b <= b'``: ``Sigma_r`` does not change when the two members
    swap) is added while blocks b and b' are in memory, so each block's features are computed
    once per partner block and never for the whole file at once. ``Sigma_p`` is added once per
    trajectory with its multiplicity (the number of pairs it belongs to), which is the sum over
    pairs of both members' outer products. Slot ``g`` of the accumulator holds the pairs of
    group ``g`` (``pair_groups``). Padded steps (``avail`` all False) have feature 0: they add
    nothing to ``Sigma_r`` and ``Sigma_p[h]`` sums over the trajectories running at h.
    ``horizon`` (default: the dataset's H) keeps the first steps only, for datasets whose
    episodes all end earlier (``read_episode_lengths``): the steps after it are padding, with
    feature 0, whose blocks of ``Sigma_r`` and ``Sigma_p`` would be ``lambda I`` with no
    coupling to the others, so dropping them leaves the bonus of every real step unchanged
    (ValueError when a trajectory has a real step after ``horizon``). Returns the accumulator
    (of that horizon) and the multiplicities ``[N]``.
    """
    N, P = len(reader), len(pairs)
    H = reader.spec.horizon if horizon is None else int(horizon)
    if not 1 <= H <= reader.spec.horizon:
        raise ValueError(f"horizon: expected a step count in [1, {reader.spec.horizon}], got {horizon!r}")
    if block < 1:
        raise ValueError(f"block: expected a positive integer, got {block!r}")
    acc = CovarianceAccumulator(H, fmap.dim, groups, lam, memory_bytes)
    group = pair_groups(P, groups)
    f_idx, s_idx = pairs.first.copy(), pairs.second.copy()
    swap = f_idx // block > s_idx // block
    f_idx[swap], s_idx[swap] = s_idx[swap], f_idx[swap]
    member = np.concatenate([f_idx, s_idx])
    member_group = np.concatenate([group, group])
    multiplicity = np.bincount(member, minlength=N).astype(np.float64)
    group_mult = (
        np.stack([np.bincount(member[member_group == g], minlength=N) for g in range(groups)]).astype(np.float64) if groups else None
    )
    bf, bs = f_idx // block, s_idx // block
    order = np.lexsort((s_idx, bs, f_idx, bf))
    needed = _fields_needed(fmap, ["actions", "avail"])
    n_blocks = -(-N // block)

    def block_features(b):
        """Features ``[B, H, d]`` and real steps ``[B, H]`` of block b."""
        sl = slice(b * block, min((b + 1) * block, N))
        index = np.arange(sl.start, sl.stop)
        d = reader.read_fields(sl, needed)
        valid = _step_masks(d["avail"], f"{reader.path}: avail", index)
        if valid[:, H:].any():
            n = int(index[np.flatnonzero(valid[:, H:].any(axis=1))[0]])
            raise ValueError(f"horizon: trajectory {n} of {reader.path} has real steps after step {H - 1}")
        return fmap(d, d["actions"][:, :H], index), valid[:, :H]

    starts = np.searchsorted(bf[order], np.arange(n_blocks + 1))
    for bi in range(n_blocks):
        lo = bi * block
        if multiplicity[lo : lo + block].sum() == 0:
            continue
        F_i, V_i = block_features(bi)
        acc.update_transitions(
            F_i, multiplicity[lo : lo + block], None if group_mult is None else group_mult[:, lo : lo + block], valid=V_i
        )
        rows = order[starts[bi] : starts[bi + 1]]
        for bj in np.unique(bs[rows]):
            sel = rows[bs[rows] == bj]
            F_j, V_j = (F_i, V_i) if bj == bi else block_features(bj)
            for c in range(0, sel.size, PAIR_BATCH):
                chunk = sel[c : c + PAIR_BATCH]
                w = (group[chunk][None, :] == np.arange(groups)[:, None]).astype(np.float64) if groups else None
                first, second = f_idx[chunk] - lo, s_idx[chunk] - bj * block
                acc.update(F_i[first], F_j[second], w, transitions=False, valid_first=V_i[first], valid_second=V_j[second])
    return acc, multiplicity
