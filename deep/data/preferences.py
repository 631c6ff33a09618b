"""Simulated preference labels for offline datasets (MARLHF paper, section 6 and appendix B.1).

Each agent i labels a pair of trajectories ``(tau, tau')`` by the Bradley-Terry model over
*standardised* returns with a steepness factor ``kappa``:

    z_i(tau) = (R_i(tau) - mean_D R_i) / std_D R_i,
    P(y_i = +1 | tau, tau') = sigma(kappa * (z_i(tau) - z_i(tau'))),

``R_i`` the true undiscounted return, ``mean_D``/``std_D`` taken over the dataset's trajectories
per agent, ``sigma`` the logistic function (section 3's model; ``theory.preferences``). The paper
uses ``kappa = 5`` (Table 5, "Prediction Steepness") and 10 pairs per trajectory (B.1).
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
LABEL_MODEL = "bradley-terry/standardised-returns"


def standardised_returns(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, std)``: returns ``[N, m]`` standardised per agent over the N trajectories
    (population std); an agent with ``std < STD_FLOOR`` gets ``z = 0``."""
    R = np.asarray(returns, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 1:
        raise ValueError(f"returns: expected shape [N, n_agents] with N >= 1, got {list(R.shape)}")
    if not np.all(np.isfinite(R)):
        raise ValueError("returns: expected finite values")
    mean = R.mean(axis=0)
    std = R.std(axis=0)
    flat = std < STD_FLOOR
    z = np.where(flat, 0.0, (R - mean) / np.where(flat, 1.0, std))
    return z, mean, std


def sample_pairs(n_trajectories: int, pairs_per_trajectory: int = DEFAULT_PAIRS_PER_TRAJECTORY, seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
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
) -> PreferencePairs:
    """One Bernoulli label per agent and pair, drawn with ``preference_probabilities`` on the
    standardised ``returns [N, m]``."""
    z, mean, std = standardised_returns(returns)
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    N = z.shape[0]
    for name, idx in (("first", first), ("second", second)):
        if idx.size and (idx.min() < 0 or idx.max() >= N):
            raise ValueError(f"{name}: expected trajectory indices in [0, {N - 1}]")
    probs = preference_probabilities(z, first, second, steepness)
    u = np.random.default_rng(seed).random(probs.shape)
    labels = np.where(u < probs, 1, -1).astype(np.int8)
    attrs = {"model": LABEL_MODEL, "steepness": float(steepness), "return_mean": mean.tolist(), "return_std": std.tolist()}
    if isinstance(seed, (int, np.integer)):
        attrs["seed"] = int(seed)
    return PreferencePairs(first, second, labels, probs, attrs)


def label_dataset(
    dataset: DatasetReader,
    pairs_per_trajectory: int = DEFAULT_PAIRS_PER_TRAJECTORY,
    steepness: float = DEFAULT_STEEPNESS,
    seed: int = 0,
    batch_size: int = DEFAULT_READ_BATCH,
) -> PreferencePairs:
    """Sample pairs over ``dataset`` and label them; the true returns are read in batches."""
    pair_seed, label_seed = np.random.SeedSequence(seed).spawn(2)
    first, second = sample_pairs(len(dataset), pairs_per_trajectory, np.random.default_rng(pair_seed))
    pairs = label_pairs(dataset.returns(batch_size), first, second, steepness, np.random.default_rng(label_seed))
    pairs.attrs.update(seed=int(seed), pairs_per_trajectory=int(pairs_per_trajectory))
    return pairs
