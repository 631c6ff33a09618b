"""The reference trajectories without a policy: a Bradley-Terry ranking of the data's trajectories."""

from __future__ import annotations

import numpy as np

from .defaults import BT_ITERATIONS, BT_PRIOR, BT_TOLERANCE


# ----------------------------------------------------------------------------- preference ranking
def bradley_terry_scores(
    first, second, labels, n_trajectories: int, prior: float = BT_PRIOR, iterations: int = BT_ITERATIONS, tol: float = BT_TOLERANCE
) -> np.ndarray:
    """Centred Bradley-Terry log-strengths ``theta[n, i]`` fitted to the labels of each agent.

    ``P(agent i prefers n over n') = p_n / (p_n + p_n')``, ``p = exp(theta)``; the minorise-
    maximise update ``p_n <- W_n / sum_{games of n} 1 / (p_n + p_opponent)`` (Hunter, 2004) with
    ``prior`` virtual wins and losses of every trajectory against an opponent of strength 1.
    """
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    y = np.asarray(labels)
    N = int(n_trajectories)
    P, m = y.shape
    if prior <= 0:
        raise ValueError(f"prior: expected a positive number of virtual games, got {prior}")
    win_first = (y > 0).astype(np.float64)
    wins = np.stack([np.bincount(first, win_first[:, i], N) + np.bincount(second, 1.0 - win_first[:, i], N) for i in range(m)], axis=1)
    wins += prior
    p = np.ones((N, m))
    for _ in range(iterations):
        inv = 1.0 / (p[first] + p[second])
        denom = np.stack([np.bincount(first, inv[:, i], N) + np.bincount(second, inv[:, i], N) for i in range(m)], axis=1)
        denom += 2.0 * prior / (p + 1.0)
        new = wins / denom
        new /= np.exp(np.log(new).mean(axis=0))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean(axis=0)


def reference_trajectories(scores: np.ndarray, in_pairs: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (sorted) of the top ``fraction`` of the trajectories that occur in pairs, by the mean
    over agents of the standardised scores ``[N, m]``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"reference_fraction: expected a value in (0, 1], got {fraction}")
    s = scores[in_pairs]
    std = s.std(axis=0)
    agg = ((s - s.mean(axis=0)) / np.where(std > 0, std, 1.0)).mean(axis=1)
    k = max(1, int(round(fraction * len(agg))))
    top = np.argsort(-agg, kind="stable")[:k]
    return np.sort(np.flatnonzero(in_pairs)[top])
