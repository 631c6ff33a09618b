"""Bootstrap weights and summaries, and the plug-in measures on anchor trajectories
(``PlugInAccumulator``; definitions in the module docstring of ``theory.dataset_coverage``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .streaming_covariance import _step_mask

#: Bootstrap intervals are central percentile intervals of this probability.
BOOTSTRAP_LEVEL = 0.95


# ----------------------------------------------------------------------------- bootstrap weights
def poisson_weights(n: int, n_replicates: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Poisson(1) bootstrap weights ``[n_replicates, n]``: each unit's multiplicity in a replicate."""
    return np.random.default_rng(seed).poisson(1.0, size=(int(n_replicates), int(n))).astype(np.float64)


def multinomial_weights(n: int, n_replicates: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Classical bootstrap weights ``[n_replicates, n]``: counts of ``n`` draws with replacement."""
    if n < 1:
        raise ValueError(f"n: expected at least one unit to resample, got {n}")
    return np.random.default_rng(seed).multinomial(int(n), np.full(int(n), 1.0 / n), size=int(n_replicates)).astype(np.float64)


def bootstrap_summary(point: float, replicates, level: float = BOOTSTRAP_LEVEL) -> dict:
    """``{point, mean, std, low, high, replicates}``: percentile interval of probability ``level``."""
    reps = np.asarray(replicates, dtype=np.float64).ravel()
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return {"point": float(point), "mean": None, "std": None, "low": None, "high": None, "replicates": 0}
    tail = 50.0 * (1.0 - level)
    return {
        "point": float(point),
        "mean": float(reps.mean()),
        "std": float(reps.std(ddof=1)) if reps.size > 1 else 0.0,
        "low": float(np.percentile(reps, tail)),
        "high": float(np.percentile(reps, 100.0 - tail)),
        "replicates": int(reps.size),
    }


# ----------------------------------------------------------------------------- plug-in measures
@dataclass(frozen=True)
class PlugInMeasures:
    """Anchor-state estimates (module docstring); ``nan`` where nothing was accumulated.

    Attributes:
        single: ``mean sum_h bonus_h(s_h, a*_h)``.
        unilateral: per agent, ``mean sum_h max_{a_i} bonus_h(s_h, (a_i, a*_{-i,h}))``, ``[m]``.
        uniform_deviation: per agent, the same with the mean over available ``a_i``, ``[m]``.
        uniform: ``mean sum_h max_a bonus_h(s_h, a)``.
        weight: total anchor weight behind the means.
    """

    single: float
    unilateral: np.ndarray
    uniform_deviation: np.ndarray
    uniform: float
    weight: float


def _sum_real_steps(x: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``[B, H] -> [B]``: the sum over the real steps (all steps when ``valid`` is None)."""
    return (x if valid is None else np.where(valid, x, 0.0)).sum(axis=1)


class PlugInAccumulator:
    """Weighted means over anchor trajectories of the plug-in measures, batch by batch."""

    def __init__(self, n_agents: int) -> None:
        self.n_agents = int(n_agents)
        self._single = self._weight = 0.0
        self._uni = np.zeros(self.n_agents)
        self._udev = np.zeros(self.n_agents)
        self._uniform = self._uniform_weight = 0.0

    def add(
        self, reference, deviations: Sequence | None = None, available: Sequence | None = None, joint=None, weights=None, valid=None
    ) -> None:
        """Add ``B`` anchor trajectories.

        Args:
            reference: ``[B, H]`` bonus at the anchors' joint actions.
            deviations: per agent i, ``[B, H, A_i]`` bonus with agent i's action replaced by each
                of its actions and the others' kept; None to skip the unilateral measures.
            available: per agent, ``[B, H, A_i]`` bool availability (default: all available);
                every real step needs at least one available action per agent.
            joint: ``[B, H, K]`` bonus at all K joint actions (None: uniform not accumulated here).
            weights: ``[B]`` anchor weights (default 1).
            valid: ``[B, H]`` bool, True at real steps (default: all). The bonus of a padded
                step is 0 whatever the arrays hold there (module docstring).
        """
        ref = np.asarray(reference, dtype=np.float64)
        B = ref.shape[0]
        w = np.ones(B) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (B,):
            raise ValueError(f"weights: expected [B] = [{B}], got {list(w.shape)}")
        v = _step_mask(valid, ref.shape, "valid")
        # Everything is computed before anything is added, so a batch refused leaves no trace.
        uni, udev = np.zeros(self.n_agents), np.zeros(self.n_agents)
        if deviations is not None:
            if len(deviations) != self.n_agents:
                raise ValueError(f"deviations: expected one array per agent ({self.n_agents}), got {len(deviations)}")
            for i, dev in enumerate(deviations):
                dev = np.asarray(dev, dtype=np.float64)
                mask = np.ones(dev.shape, dtype=bool) if available is None else np.asarray(available[i], dtype=bool)
                if mask.shape != dev.shape:
                    raise ValueError(f"available[{i}]: expected shape {list(dev.shape)}, got {list(mask.shape)}")
                n_avail = mask.sum(axis=-1)
                if not np.all(n_avail > 0 if v is None else (n_avail > 0) | ~v):
                    raise ValueError(f"available[{i}]: every real step needs at least one available action")
                worst = np.where(mask, dev, -np.inf).max(axis=-1)
                # A padded step may have no available action: its -inf and 0/0 are masked out.
                mean = np.where(mask, dev, 0.0).sum(axis=-1) / np.maximum(n_avail, 1)
                uni[i] = float(w @ _sum_real_steps(worst, v))
                udev[i] = float(w @ _sum_real_steps(mean, v))
        uniform = None if joint is None else self._uniform_terms(joint, w, v, None)
        self._single += float(w @ _sum_real_steps(ref, v))
        self._weight += float(w.sum())
        if deviations is not None:
            self._uni += uni
            self._udev += udev
        if uniform is not None:
            self._uniform += uniform[0]
            self._uniform_weight += uniform[1]

    def add_uniform(self, joint, weights=None, valid=None, available=None) -> None:
        """Add ``[B, H, K]`` joint-action bonuses to the uniform measure only (``weights`` and
        ``valid`` as in ``add``); ``available`` ``[B, H, K]`` bool marks the available joint
        actions (default: all), at least one at every real step."""
        total, weight = self._uniform_terms(joint, weights, valid, available)
        self._uniform += total
        self._uniform_weight += weight

    @staticmethod
    def _uniform_terms(joint, weights, valid, available) -> tuple[float, float]:
        """``(sum_b w_b sum_h max_a joint[b, h, a], sum_b w_b)`` over available ``a`` and real ``h``."""
        j = np.asarray(joint, dtype=np.float64)
        w = np.ones(j.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        v = _step_mask(valid, j.shape[:2], "valid")
        if available is not None:
            mask = np.asarray(available, dtype=bool)
            if mask.shape != j.shape:
                raise ValueError(f"available: expected shape {list(j.shape)}, got {list(mask.shape)}")
            some = mask.any(axis=-1)
            if not np.all(some if v is None else some | ~v):
                raise ValueError("available: every real step needs at least one available joint action")
            j = np.where(mask, j, -np.inf)
        return float(w @ _sum_real_steps(j.max(axis=-1), v)), float(w.sum())

    def result(self) -> PlugInMeasures:
        def mean(total, weight):
            return total / weight if weight > 0 else np.nan

        return PlugInMeasures(
            float(mean(self._single, self._weight)),
            np.array([mean(v, self._weight) for v in self._uni]),
            np.array([mean(v, self._weight) for v in self._udev]),
            float(mean(self._uniform, self._uniform_weight)),
            float(self._weight),
        )
