"""Pass 2: the plug-in measures of every bonus model on the anchors, at the reference actions and the one-step deviations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from marlcov.theory.dataset_coverage import (
    BonusModel,
    PlugInAccumulator,
)

from ..features import FeatureMap, all_joint_actions, joint_action_index
from .defaults import EVAL_VECTORS, HISTOGRAM_SAMPLES
from .reference_policy import _step_masks


# ----------------------------------------------------------------------------- evaluation
@dataclass
class _ModelSet:
    """The bonus models evaluated on anchors: point, bootstrap replicates, size prefixes."""

    point: BonusModel
    replicates: list
    sizes: list
    identifiable: BonusModel | None = None


class _AnchorEvaluation:
    """Pass 2: the plug-in measures of every model on the anchors, plus histograms and counts."""

    def __init__(self, models: _ModelSet, n_agents: int, n_actions: int) -> None:
        self.models = models
        self.m, self.n_actions = n_agents, n_actions
        self.point = PlugInAccumulator(n_agents)
        self.point_sub = PlugInAccumulator(n_agents)
        self.ident = None if models.identifiable is None else PlugInAccumulator(n_agents)
        self.others = [PlugInAccumulator(n_agents) for _ in (*models.replicates, *models.sizes)]
        self.hist = {"reference": [], "worst_deviation": [], "joint_max": []}
        self.seen = np.zeros(n_agents)
        self.seen_total = np.zeros(n_agents)

    @property
    def reps(self) -> list:
        return self.others[: len(self.models.replicates)]

    @property
    def sizes(self) -> list:
        return self.others[len(self.models.replicates) :]

    def _kept(self, key: str) -> bool:
        return sum(x.size for x in self.hist[key]) < HISTOGRAM_SAMPLES

    def add(self, ref, devs, avail, in_subset: np.ndarray, valid: np.ndarray) -> None:
        """Anchors' features at the reference actions ``[B, H, d]`` and, per agent, at each of its
        actions ``[B, H, A, d]`` (or None); ``in_subset`` ``[B]`` marks the bootstrap anchors and
        ``valid [B, H]`` the real steps (the only ones that count)."""
        model = self.models.point
        r = model.bonus(ref)
        d = None if devs is None else [_bonus_over(model, x) for x in devs]
        self.point.add(r, d, avail, valid=valid)
        if self.ident is not None:
            ident = self.models.identifiable
            self.ident.add(ident.bonus(ref), None if devs is None else [_bonus_over(ident, x) for x in devs], avail, valid=valid)
        if self._kept("reference"):
            self.hist["reference"].append(r[valid])
            if d is not None:
                worst = np.max([np.where(avail[i], d[i], -np.inf).max(axis=-1) for i in range(self.m)], axis=0)
                self.hist["worst_deviation"].append(worst[valid])
        sub = np.flatnonzero(in_subset)
        if sub.size == 0 or not self.others:
            return
        a_sub = None if d is None else [x[sub] for x in avail]
        v_sub = valid[sub]
        self.point_sub.add(r[sub], None if d is None else [x[sub] for x in d], a_sub, valid=v_sub)
        ref_sub = ref[sub]
        devs_sub = None if devs is None else [x[sub] for x in devs]
        for acc, other in zip(self.others, (*self.models.replicates, *self.models.sizes)):
            acc.add(other.bonus(ref_sub), None if devs_sub is None else [_bonus_over(other, x) for x in devs_sub], a_sub, valid=v_sub)

    def add_joint(self, joint, in_subset: np.ndarray, valid: np.ndarray, available: np.ndarray) -> None:
        """Features at every joint action ``[B, H, K, d]`` of anchors of the uniform subset, their
        real steps ``valid [B, H]`` and available joint actions ``[B, H, K]``."""
        j = _bonus_over(self.models.point, joint)
        self.point.add_uniform(j, valid=valid, available=available)
        if self.ident is not None:
            self.ident.add_uniform(_bonus_over(self.models.identifiable, joint), valid=valid, available=available)
        if self._kept("joint_max"):
            self.hist["joint_max"].append(np.where(available, j, -np.inf).max(axis=-1)[valid])
        sub = np.flatnonzero(in_subset)
        if sub.size == 0 or not self.others:
            return
        self.point_sub.add_uniform(j[sub], valid=valid[sub], available=available[sub])
        joint_sub = joint[sub]
        for acc, other in zip(self.others, (*self.models.replicates, *self.models.sizes)):
            acc.add_uniform(_bonus_over(other, joint_sub), valid=valid[sub], available=available[sub])


def _bonus_over(model: BonusModel, features: np.ndarray) -> np.ndarray:
    """Bonus of features ``[B, H, K, d]`` -> ``[B, H, K]`` (moved so the step axis is second to last)."""
    x = np.moveaxis(features, 2, 1)
    return np.moveaxis(model.bonus(x), 1, 2)


def _evaluate_batch(
    evaluation: _AnchorEvaluation,
    fmap: FeatureMap,
    d: Mapping,
    ref_actions: np.ndarray,
    idx,
    in_subset,
    in_uniform,
    can: dict,
    hasher,
    sorted_sa,
    H: int,
    valid: np.ndarray | None = None,
) -> None:
    """Features of one batch of anchors at the reference, unilateral and joint actions; the
    measures of every model, and the count of unilateral alternatives seen in the data. ``H``
    is the number of leading steps evaluated (the covariances' horizon); only the real steps
    ``valid [B, H]`` count (default: from ``d["avail"]``)."""
    m, nA = evaluation.m, evaluation.n_actions
    if valid is None:
        valid = _step_masks(d["avail"][:, :H])
    ref = fmap(d, ref_actions, idx)
    avail = [np.asarray(d["avail"][:, :H, i], dtype=bool) for i in range(m)]
    devs = None
    if can["unilateral"]:
        try:
            devs = [fmap.unilateral(d, ref_actions, i, idx) for i in range(m)]
        except NotImplementedError:
            can["unilateral"] = False
    evaluation.add(ref, devs, avail if devs is not None else None, in_subset, valid)
    rows = np.flatnonzero(in_uniform)
    step = max(1, EVAL_VECTORS // (H * nA**m))
    table = all_joint_actions(m, nA) if rows.size and can["uniform"] else None
    for c in range(0, rows.size if can["uniform"] else 0, step):
        chunk = rows[c : c + step]
        try:
            joint = fmap.joint({k: v[chunk] for k, v in d.items()}, H, None if idx is None else np.asarray(idx)[chunk])
        except NotImplementedError:
            can["uniform"] = False
            break
        evaluation.add_joint(joint, in_subset[chunk], valid[chunk], _joint_available(avail, chunk, table))
    if devs is not None and "state" in d:
        state = np.asarray(d["state"][:, :H], dtype=np.float64)
        for i in range(m):
            alt = np.repeat(ref_actions[:, :, None, :], nA, axis=2)
            alt[..., i] = np.arange(nA)
            keys = hasher(np.repeat(state[:, :, None, :], nA, axis=2), joint_action_index(alt, nA))
            pos = np.searchsorted(sorted_sa, keys)
            hit = (pos < sorted_sa.size) & (sorted_sa[np.minimum(pos, sorted_sa.size - 1)] == keys)
            evaluation.seen[i] += float((hit & avail[i]).sum())
            evaluation.seen_total[i] += float(avail[i].sum())


def _joint_available(avail: Sequence[np.ndarray], rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``[len(rows), H, K]``: joint action k (``table [K, m]``, ``all_joint_actions`` order) is
    available when each agent's action is; ``avail`` holds per agent ``[B, H, A]``."""
    out = avail[0][rows][..., table[:, 0]]
    for i in range(1, len(avail)):
        out &= avail[i][rows][..., table[:, i]]
    return out
