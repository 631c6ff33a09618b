"""Table 1's dataset mixes: the behaviour sources, their ratios, exact counts, the behaviour
checkpoints they are played from, and the check of Table 1's skill order."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Behaviour sources of Table 1, in the order of the mix ratios.
SOURCES = ("expert", "unilateral", "rookie", "trivial")
#: Table 1: trajectories of each source (Expert : Unilateral : Rookie : Trivial).
MIXES: dict[str, tuple[int, int, int, int]] = {
    "diversified": (1, 1, 1, 1),
    "mix-unilateral": (2, 1, 0, 1),
    "mix-expert": (3, 0, 0, 1),
    "pure-expert": (4, 0, 0, 0),
}
MIX_LABELS = {"diversified": "Diversified", "mix-unilateral": "Mix-Unilateral", "mix-expert": "Mix-Expert", "pure-expert": "Pure-Expert"}


def proportional_counts(total: int, weights: Sequence[float]) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights`` (largest remainder,
    ties to the earlier entry): exact whenever ``total * w / sum(w)`` are integers."""
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.ndim != 1 or w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights: expected non-negative weights with a positive sum and total >= 0, got {list(w)}, {total}")
    share = total * w / w.sum()
    counts = np.floor(share + 1e-9).astype(np.int64)
    remainder = share - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def mix_counts(mix: str, n_trajectories: int) -> dict[str, int]:
    """Trajectories of each source of Table 1 in a dataset of ``n_trajectories``."""
    if mix not in MIXES:
        raise ValueError(f"--mix: expected one of {list(MIXES)}, got {mix!r}")
    if n_trajectories < 2:
        raise ValueError(f"--trajectories: expected at least 2, got {n_trajectories}")
    return dict(zip(SOURCES, (int(c) for c in proportional_counts(n_trajectories, MIXES[mix]))))


def behaviour_checkpoints(policies_dir: str | os.PathLike, rookie_steps: int | None = None) -> tuple[Path, Path]:
    """``(expert.pt, rookie_<steps>.pt)`` of a behaviour-policy directory (default rookie: the
    earliest stop)."""
    d = Path(policies_dir)
    expert = d / "expert.pt"
    if not expert.exists():
        raise ValueError(f"--policies: {expert} not found; run train-experts first")
    rookies = {int(p.stem.split("_", 1)[1]): p for p in d.glob("rookie_*.pt") if p.stem.split("_", 1)[1].isdigit()}
    if not rookies:
        raise ValueError(f"--policies: no rookie_<steps>.pt in {d}; give online_vdn.rookie_steps at least one count")
    if rookie_steps is None:
        return expert, rookies[min(rookies)]
    if int(rookie_steps) not in rookies:
        raise ValueError(f"collect.rookie_steps: {rookie_steps} not among the rookies of {d} ({sorted(rookies)})")
    return expert, rookies[int(rookie_steps)]


def source_skill_order(mean_returns: Mapping[str, float], behaviour: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table 1's order of the sources in a dataset: the mean return per agent of each source
    present, ``holds`` when they decrease in the order expert, unilateral, rookie, trivial, and
    (``behaviour``) the ``skill_order`` of the behaviour policies' evaluation (online VDN)."""
    present = [s for s in SOURCES if s in mean_returns]
    values = [float(mean_returns[s]) for s in present]
    out: dict[str, Any] = {
        "order": " > ".join(present),
        "mean_return_per_source": {s: float(mean_returns[s]) for s in present},
        "holds": bool(all(a > b for a, b in zip(values, values[1:]))),
    }
    if behaviour is not None:
        out["behaviour_policies"] = dict(behaviour)
    return out
