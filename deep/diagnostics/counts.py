"""Count keys of discretised states and actions (OG-MARL's dataset analysis)."""

from __future__ import annotations

import numpy as np

from .defaults import _HASH_SEED


# ----------------------------------------------------------------------------- count keys
class _Hasher:
    """64-bit keys of discretised vectors (with an optional integer code), collisions ~ n^2 / 2^64."""

    def __init__(self, width: int, resolution: float) -> None:
        rng = np.random.default_rng(_HASH_SEED)
        self.mult = rng.integers(1, 2**63, size=width + 1, dtype=np.uint64) | np.uint64(1)
        self.resolution = float(resolution)

    def __call__(self, x: np.ndarray, code: np.ndarray | None = None) -> np.ndarray:
        q = np.floor(np.asarray(x, dtype=np.float64) / self.resolution).astype(np.int64).view(np.uint64)
        with np.errstate(over="ignore"):
            h = (q * self.mult[: q.shape[-1]]).sum(axis=-1, dtype=np.uint64)
            if code is not None:
                h = h + np.asarray(code, dtype=np.int64).view(np.uint64) * self.mult[-1]
            h ^= h >> np.uint64(31)
            h *= np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        return h
