"""Simulated preference labels for offline datasets (MARLHF paper, section 6 and appendix B.1).

Each agent i labels a pair of trajectories ``(tau, tau')`` by the Bradley-Terry model over
normalised returns with a steepness factor ``kappa``:

    P(y_i = +1 | tau, tau') = sigma(kappa * (z_i(tau) - z_i(tau'))),

``R_i`` the true undiscounted return, ``sigma`` the logistic function (section 3's model;
``theory.preferences``), and ``z_i`` one of (``normalisation``):

* ``"min-max"`` (default, the paper's public code): ``z_i = (R_i - min_D R_i) / (max_D R_i - min_D R_i)``,
  so a difference lies in [-1, 1];
* ``"standardised"`` (the paper's text, "standardized returns"): ``z_i = (R_i - mean_D R_i) / std_D R_i``.

Minimum, maximum, mean and std are taken over the dataset's trajectories per agent. The paper uses
``kappa = 5`` (Table 5, "Prediction Steepness") and 10 pairs per trajectory (B.1). Min-max labels
are noisier: a difference of the whole range has probability sigma(5) = 0.993, and typical
differences a fraction of it, where standardised ones span several std.
"""

from __future__ import annotations

import numpy as np

from marlcov.theory.preferences import bradley_terry_probability

from .hdf5 import DEFAULT_READ_BATCH, DatasetReader
from .schema import PreferencePairs

DEFAULT_STEEPNESS = 5.0
DEFAULT_PAIRS_PER_TRAJECTORY = 10
#: An agent whose returns have a standard deviation below this is indifferent between all
#: trajectories (standardised returns 0, label probability 1/2) instead of dividing by ~0.
STD_FLOOR = 1e-8
NORMALISATIONS = ("min-max", "standardised")
DEFAULT_NORMALISATION = "min-max"
LABEL_MODELS = {"min-max": "bradley-terry/min-max-returns", "standardised": "bradley-terry/standardised-returns"}
#: The label model of the standardised normalisation (the name kept from earlier pairs files).
LABEL_MODEL = LABEL_MODELS["standardised"]


def _checked_returns(returns: np.ndarray) -> np.ndarray:
    R = np.asarray(returns, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 1:
        raise ValueError(f"returns: expected shape [N, n_agents] with N >= 1, got {list(R.shape)}")
    if not np.all(np.isfinite(R)):
        raise ValueError("returns: expected finite values")
    return R


def standardised_returns(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, std)``: returns ``[N, m]`` standardised per agent over the N trajectories
    (population std); an agent with ``std < STD_FLOOR`` gets ``z = 0``."""
    R = _checked_returns(returns)
    mean = R.mean(axis=0)
    std = R.std(axis=0)
    flat = std < STD_FLOOR
    z = np.where(flat, 0.0, (R - mean) / np.where(flat, 1.0, std))
    return z, mean, std


def min_max_returns(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, low, high)``: returns ``[N, m]`` mapped per agent onto [0, 1] by their minimum and
    maximum over the N trajectories; an agent whose range is below ``STD_FLOOR`` gets ``z = 0``."""
    R = _checked_returns(returns)
    low, high = R.min(axis=0), R.max(axis=0)
    span = high - low
    flat = span < STD_FLOOR
    z = np.where(flat, 0.0, (R - low) / np.where(flat, 1.0, span))
    return z, low, high


def normalised_returns(returns: np.ndarray, normalisation: str = DEFAULT_NORMALISATION) -> tuple[np.ndarray, dict[str, list[float]]]:
    """``(z, stats)``: the returns normalised by ``normalisation`` (module docstring) and the
    per-agent statistics it used (kept in the pairs' attributes)."""
    if normalisation == "min-max":
        z, low, high = min_max_returns(returns)
        return z, {"return_min": low.tolist(), "return_max": high.tolist()}
    if normalisation == "standardised":
        z, mean, std = standardised_returns(returns)
        return z, {"return_mean": mean.tolist(), "return_std": std.tolist()}
    raise ValueError(f"normalisation: expected one of {list(NORMALISATIONS)}, got {normalisation!r}")


def sample_pairs(
    n_trajectories: int, pairs_per_trajectory: int = DEFAULT_PAIRS_PER_TRAJECTORY, seed: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(first, second)`` of ``P = pairs_per_trajectory * N`` pairs: every trajectory is the
    first member of exactly ``pairs_per_trajectory`` pairs (in random order), its partner is
    uniform over the other ``N - 1`` trajectories."""
    N, k = int(n_trajectories), int(pairs_per_trajectory)
    if N < 2:
        raise ValueError(f"n_trajectories: expected at least 2 trajectories to pair, got {N}")
    if k < 1:
        raise ValueError(f"pairs_per_trajectory: expected a positive integer, got {pairs_per_trajectory!r}")
    rng = np.random.default_rng(seed)
    first = rng.permutation(np.repeat(np.arange(N, dtype=np.int64), k))
    second = (first + rng.integers(1, N, size=first.shape[0])) % N
    return first, second


def preference_probabilities(z: np.ndarray, first: np.ndarray, second: np.ndarray, steepness: float = DEFAULT_STEEPNESS) -> np.ndarray:
    """``P(y_i = +1) = sigma(kappa (z_i[first] - z_i[second]))``, shape ``[P, m]``."""
    if not np.isfinite(steepness) or steepness < 0:
        raise ValueError(f"steepness: expected a finite non-negative number, got {steepness!r}")
    return bradley_terry_probability(z[first], z[second], steepness)


def label_pairs(
    returns: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    steepness: float = DEFAULT_STEEPNESS,
    seed: int | np.random.Generator | None = None,
    normalisation: str = DEFAULT_NORMALISATION,
) -> PreferencePairs:
    """One Bernoulli label per agent and pair, drawn with ``preference_probabilities`` on the
    ``returns [N, m]`` normalised by ``normalisation``."""
    z, stats = normalised_returns(returns, normalisation)
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    N = z.shape[0]
    for name, idx in (("first", first), ("second", second)):
        if idx.size and (idx.min() < 0 or idx.max() >= N):
            raise ValueError(f"{name}: expected trajectory indices in [0, {N - 1}]")
    probs = preference_probabilities(z, first, second, steepness)
    u = np.random.default_rng(seed).random(probs.shape)
    labels = np.where(u < probs, 1, -1).astype(np.int8)
    attrs = {"model": LABEL_MODELS[normalisation], "steepness": float(steepness), **stats}
    if isinstance(seed, (int, np.integer)):
        attrs["seed"] = int(seed)
    return PreferencePairs(first, second, labels, probs, attrs)


def label_dataset(
    dataset: DatasetReader,
    pairs_per_trajectory: int = DEFAULT_PAIRS_PER_TRAJECTORY,
    steepness: float = DEFAULT_STEEPNESS,
    seed: int = 0,
    batch_size: int = DEFAULT_READ_BATCH,
    normalisation: str = DEFAULT_NORMALISATION,
) -> PreferencePairs:
    """Sample pairs over ``dataset`` and label them; the true returns are read in batches."""
    pair_seed, label_seed = np.random.SeedSequence(seed).spawn(2)
    first, second = sample_pairs(len(dataset), pairs_per_trajectory, np.random.default_rng(pair_seed))
    pairs = label_pairs(dataset.returns(batch_size), first, second, steepness, np.random.default_rng(label_seed), normalisation)
    pairs.attrs.update(seed=int(seed), pairs_per_trajectory=int(pairs_per_trajectory))
    return pairs
