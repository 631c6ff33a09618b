"""Unilateral-coverage diagnostic of an offline dataset (MARLHF paper, section 4.1, Definition 1).

``diagnose(path, ...)`` reads a dataset and reports single, unilateral (per agent) and uniform
coverage with bootstrap uncertainty, count-based coverage for comparison, and plots.

* Finite-game NPZ (DESIGN.md format; needs the game and a policy): the covariances are streamed
  through ``theory.dataset_coverage.CovarianceAccumulator`` with the game's (or one-hot)
  features, and the measures are the exact dynamic programmes of Definition 1; they agree with
  ``theory.coverage.coverage_measures``. Bootstrap: Poisson(1) weights per pair.
* HDF5 (``deep.data``): three streaming passes, each batch by batch, never the whole file:
  (0) standardisation of the random features and the count keys; (1) the covariances, pairs
  scheduled by blocks of ``block`` trajectories so that each block is read contiguously and
  features are computed per block; (2) the measures on anchor trajectories.

Reference policy. With ``policy=None`` the reference is "the best trajectories of the data":
the top ``reference_fraction`` of trajectories ranked by a Bradley-Terry fit to the preference
labels (per agent, minorise-maximise iterations with one virtual win and one virtual loss against
a strength-1 opponent so every score is finite; the agents' centred log-strengths averaged).
True rewards are never read. Those trajectories are the anchors, their recorded joint actions
the reference's. With a policy (a callable of ``deep.envs.mpe``'s policy protocol, or a
checkpoint holding one), the anchors are the dataset's trajectories with the reference's
actions recomputed at their observations; and with a simulator (``simulate=True``, an MPE
dataset) the anchors are rollouts of the policy and ``U_D(pi_i, pi*_{-i})`` is also estimated
by rolling out deviations of agent i: uniform, given rookie policies, a bonus-greedy deviation
(agent i takes ``argmax_{a_i} bonus_h(s_h, (a_i, pi*_{-i}(s_h)))``) and its half mixture with
``pi*_i``; the worst found is reported.

Measures without a simulator are the plug-in estimates of ``theory.dataset_coverage`` (single,
one-step unilateral deviations, per-step joint maximum), documented there.

Bootstrap on HDF5 data: the pairs, in file order, are split into ``G`` contiguous groups whose
sums are kept as slots of the accumulator (one pass, cost of one accumulation); a replicate is
``lambda I + sum_g v_g G_g`` with ``v_g ~ Poisson(1)``, a bootstrap over groups of pairs.
Replicates are evaluated on a fixed random subset of at most ``bootstrap_anchors`` anchors and
centred at the full-anchor estimate (replicate minus its subset point estimate plus the full
point estimate), so they measure the uncertainty that comes from the preference data. The
same group sums give the coverage against dataset size (the first ``k`` groups, k = 1, 2, 4,
..: prefixes of the pairs), evaluated on the same anchor subset, where the last point (all
pairs) is the full covariance on that subset. Each measure is non-increasing along the curve.

Episodes that end early (SMAX) are stored padded to H steps; ``deep.common.step_masks`` gives
their real steps. A padded step counts for nothing anywhere: not in the feature standardisation,
the covariances, the bonus sums, the deviations, the histograms or the counts (the convention
and what it means for Definition 1: ``theory.dataset_coverage``, "Episodes that end before H").
A reference policy is queried only at real steps. The covariances span the steps up to the
longest episode (``dataset.longest_episode`` of the report; ``accumulate_pairs``): beyond it
every step is padding, whose blocks would be ``lambda I`` with no coupling to the others, so
the bonus of every real step is unchanged and ``Sigma_r`` is smaller (its factorisations cost
``(Hd)^3``).

Checks come before the streaming passes: the options, the pairs, the feature map and the
reference policy on one trajectory before anything else is read, then a pre-pass over
``avail`` and ``actions`` alone (``read_episode_lengths``) checks every episode's layout
(padding after its real steps, an available action for every agent at every real step,
actions in range) and gives the lengths that the three passes use.

Counts (OG-MARL's dataset analysis): the ratio of distinct (discretised state, joint action)
pairs to transitions (real steps), of distinct discretised states, per agent of distinct
(discretised observation, action); and ``unilateral_seen[i]``: the fraction of the anchors' unilateral
alternatives (discretised state, (a_i, a*_{-i})) that occur in the data, the count analogue
of the unilateral measure (the anchor's own action included). States are discretised on a
grid of ``count_resolution``, in the units of the stored state.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.dataset_coverage import (
    ACCUMULATOR_MEMORY_BYTES,
    BonusModel,
    CovarianceAccumulator,
    PlugInAccumulator,
    PlugInMeasures,
    bootstrap_summary,
    finite_game_coverage,
)
from marlcov.theory.tolerances import RANK_RTOL

from .data.hdf5 import DatasetReader, read_pairs
from .data.schema import PAIRS_GROUP
from .features import STD_FLOOR, FeatureMap, RandomFourierFeatures, all_joint_actions, joint_action_index, make_feature_map

DEFAULT_BOOTSTRAP = 200
#: Random-feature dimension of the diagnostic. Each bootstrap replicate and size prefix needs a
#: factorisation of Sigma_r (Hd x Hd) and keeps 2 H d^2 numbers, so d = 64 keeps 200 replicates
#: cheap; d = 256 (DEFAULT_DIM of deep.features) works for the point estimates at 10^6
#: transitions, with fewer groups (the memory budget decides) and replicates.
DEFAULT_FEATURE_DIM = 64
DEFAULT_REFERENCE_FRACTION = 0.1
#: Groups of pairs kept as accumulator slots (bootstrap over groups, size curve).
DEFAULT_GROUPS = 32
#: Trajectories per block of the pair schedule (pass 1) and per read elsewhere.
DEFAULT_BLOCK = 2048
#: Pairs per accumulator update.
PAIR_BATCH = 512
#: Anchor trajectories on which bootstrap replicates and dataset-size prefixes are evaluated.
DEFAULT_BOOTSTRAP_ANCHORS = 512
#: Cap on (anchor step x joint action) bonus evaluations for the uniform measure.
UNIFORM_EVALUATIONS = 1 << 22
#: Feature vectors per batch of bonus evaluation (bounds temporary memory).
EVAL_VECTORS = 1 << 15
#: Grid of the count discretisation of states and observations.
DEFAULT_COUNT_RESOLUTION = 0.1
#: Bradley-Terry minorise-maximise: iterations, relative tolerance, virtual games per trajectory.
BT_ITERATIONS = 500
BT_TOLERANCE = 1e-10
BT_PRIOR = 1.0
#: Per-step bonus values kept for the histograms.
HISTOGRAM_SAMPLES = 200_000
#: Episodes per rollout batch of the simulator.
SIMULATION_EPISODES = 256
#: Prefix fractions of the size curve of a finite-game dataset.
FINITE_SIZE_FRACTIONS = (0.125, 0.25, 0.5, 1.0)

_HASH_SEED = 0x5EED


# ----------------------------------------------------------------------------- results
@dataclass
class DiagnosticResult:
    """Everything ``diagnose`` reports; ``to_json`` gives the CLI's JSON dict."""

    lam: float
    single: float
    unilateral: float
    uniform: float | None
    worst_player: int
    per_agent: list
    bootstrap: dict
    counts: dict
    sizes: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    simulator: dict | None = None
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    histograms: dict = field(default_factory=dict, repr=False)
    identifiable: dict | None = None

    def to_json(self) -> dict:
        out = {
            "lambda": self.lam,
            "single": self.single,
            "unilateral": self.unilateral,
            "uniform": self.uniform,
            "worst_deviator": {"player": self.worst_player, "value": self.unilateral},
            "identifiable": self.identifiable,
            "per_agent": self.per_agent,
            "bootstrap": self.bootstrap,
            "counts": self.counts,
            "sizes": self.sizes,
            "reference": self.reference,
            "features": self.features,
            "dataset": self.dataset,
            "simulator": self.simulator,
            "figures": self.figures,
            "notes": self.notes,
        }
        return json.loads(json.dumps(out, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite_or_none(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


# ----------------------------------------------------------------------------- preference ranking
def bradley_terry_scores(first, second, labels, n_trajectories: int, prior: float = BT_PRIOR,
                         iterations: int = BT_ITERATIONS, tol: float = BT_TOLERANCE) -> np.ndarray:
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


# ----------------------------------------------------------------------------- policies
def load_policy(policy):
    """A reference policy: a callable ``(obs, avail, t) -> actions`` returned as is, or a path to a
    policy checkpoint of ``deep.marlhf.vdn`` (``expert.pt``, ``rookie_<steps>.pt``, an offline
    VDN ``policy.pt``: its greedy policy), or to a ``torch.save``d callable (loaded with
    ``weights_only=False``: only open checkpoints you trust)."""
    if policy is None or callable(policy):
        return policy
    path = Path(policy)
    if not path.exists():
        raise ValueError(f"policy: {policy!r} is neither a callable nor an existing checkpoint file")
    import torch

    from marlcov.deep.marlhf.vdn import POLICY_FORMAT
    from marlcov.deep.marlhf.vdn import load_policy as load_q_policy

    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and obj.get("format") == POLICY_FORMAT:
        return load_q_policy(path)
    if not callable(obj):
        raise ValueError(f"{path}: expected a saved callable policy (obs, avail, t) -> actions, got {type(obj).__name__}")
    return obj


def _policy_actions(policy, obs: np.ndarray, avail: np.ndarray, valid: np.ndarray | None = None,
                    fallback: np.ndarray | None = None) -> np.ndarray:
    """``policy`` applied at every real step of a batch: obs ``[B, T, m, o]``, avail ``[B, T, m, A]``,
    ``valid [B, T]`` (default: every step real) -> ``[B, T, m]``. A padded step, where no action is
    available, is not shown to the policy; it keeps ``fallback [B, T, m]`` (the recorded actions;
    default 0), which no measure reads."""
    import torch

    B, T = avail.shape[:2]
    out = np.zeros((B, T, avail.shape[2]), dtype=np.int64) if fallback is None else np.array(fallback, dtype=np.int64)
    for t in range(T):
        rows = slice(None) if valid is None or valid[:, t].all() else np.flatnonzero(valid[:, t])
        if isinstance(rows, np.ndarray) and rows.size == 0:
            continue
        a = policy(torch.as_tensor(obs[rows, t], dtype=torch.float32), torch.as_tensor(avail[rows, t]), t)
        out[rows, t] = np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.int64)
    return out


def _step_masks(avail: np.ndarray, where: str = "avail", index: np.ndarray | None = None) -> np.ndarray:
    """``valid [B, H]`` (True at real steps) from ``avail [B, H, m, A]``, checked: the padding of an
    episode comes after its real steps, and every agent has an available action at every real
    step. ValueError naming ``where``, the trajectory and the step otherwise."""
    from marlcov.deep.common import step_masks

    avail = np.asarray(avail, dtype=bool)
    idx = np.arange(avail.shape[0]) if index is None else np.asarray(index)
    try:
        valid, _ = step_masks(avail)
    except ValueError:
        real = avail.any(axis=(2, 3))
        late = real[:, 1:] & ~real[:, :-1]
        n, t = np.argwhere(late)[0]
        raise ValueError(f"{where}: trajectory {int(idx[n])} has a real step {int(t) + 1} after a padded step {int(t)} "
                         "(expected the padding of an episode after all its real steps)") from None
    stuck = valid[:, :, None] & ~avail.any(axis=3)
    if stuck.any():
        n, t, i = np.argwhere(stuck)[0]
        raise ValueError(f"{where}: trajectory {int(idx[n])}, step {int(t)}: agent {int(i)} has no available action at a "
                         "real step (expected at least one, e.g. a no-op)")
    return valid


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
        return self.others[len(self.models.replicates):]

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
            self.ident.add(ident.bonus(ref), None if devs is None else [_bonus_over(ident, x) for x in devs], avail,
                           valid=valid)
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
            acc.add(other.bonus(ref_sub), None if devs_sub is None else [_bonus_over(other, x) for x in devs_sub], a_sub,
                    valid=v_sub)

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


# ----------------------------------------------------------------------------- HDF5 diagnostic
def _fields_needed(fmap: FeatureMap, extra: Sequence[str]) -> list[str]:
    return sorted(set(fmap.fields) | set(extra))


def _check_hdf5_options(*, lam, bootstrap, groups, bootstrap_anchors, reference_fraction, count_resolution, block,
                        episodes) -> None:
    """ValueError naming the first option out of its range; run before anything is read."""
    def integer(name, value, low):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")

    if not (isinstance(lam, (int, float, np.number)) and np.isfinite(lam) and lam > 0):
        raise ValueError(f"lambda: expected a positive number, got {lam!r}")
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
            raise ValueError(f"{reader.path}: actions: expected values in [0, {nA - 1}], trajectory {n} has {acts[n - idx[0]].min()}.."
                             f"{acts[n - idx[0]].max()}")
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
        raise ValueError(f"policy: expected one action in [0, {spec.n_actions - 1}] per agent ({spec.n_agents}) on "
                         f"{reader.path}, got {a.reshape(-1).tolist()}")


def pair_groups(n_pairs: int, groups: int) -> np.ndarray:
    """Group of each pair in file order: ``G`` contiguous runs of (almost) equal length."""
    return (np.arange(n_pairs) * groups) // n_pairs if groups else np.zeros(n_pairs, dtype=np.int64)


def accumulate_pairs(reader: DatasetReader, pairs, fmap: FeatureMap, lam: float = DEFAULT_LAMBDA, groups: int = 0,
                     block: int = DEFAULT_BLOCK, memory_bytes: int = ACCUMULATOR_MEMORY_BYTES,
                     horizon: int | None = None) -> tuple[CovarianceAccumulator, np.ndarray]:
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
    group_mult = np.stack([np.bincount(member[member_group == g], minlength=N) for g in range(groups)]).astype(np.float64) if groups else None
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
        if multiplicity[lo:lo + block].sum() == 0:
            continue
        F_i, V_i = block_features(bi)
        acc.update_transitions(F_i, multiplicity[lo:lo + block], None if group_mult is None else group_mult[:, lo:lo + block],
                               valid=V_i)
        rows = order[starts[bi]:starts[bi + 1]]
        for bj in np.unique(bs[rows]):
            sel = rows[bs[rows] == bj]
            F_j, V_j = (F_i, V_i) if bj == bi else block_features(bj)
            for c in range(0, sel.size, PAIR_BATCH):
                chunk = sel[c:c + PAIR_BATCH]
                w = (group[chunk][None, :] == np.arange(groups)[:, None]).astype(np.float64) if groups else None
                first, second = f_idx[chunk] - lo, s_idx[chunk] - bj * block
                acc.update(F_i[first], F_j[second], w, transitions=False, valid_first=V_i[first], valid_second=V_j[second])
    return acc, multiplicity


def diagnose_hdf5(
    path: str | os.PathLike,
    policy=None,
    features: Any = "random",
    lam: float = DEFAULT_LAMBDA,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    *,
    pairs_path: str | os.PathLike | None = None,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    reference_fraction: float = DEFAULT_REFERENCE_FRACTION,
    groups: int = DEFAULT_GROUPS,
    bootstrap_anchors: int = DEFAULT_BOOTSTRAP_ANCHORS,
    uniform: bool = True,
    count_resolution: float = DEFAULT_COUNT_RESOLUTION,
    block: int = DEFAULT_BLOCK,
    memory_bytes: int = ACCUMULATOR_MEMORY_BYTES,
    simulate: bool = False,
    rookies: Mapping[str, Any] | None = None,
    episodes: int = SIMULATION_EPISODES,
    progress: Callable[[str], None] | None = None,
    fit_features: bool = True,
) -> DiagnosticResult:
    """The diagnostic of an HDF5 dataset (module docstring); arguments as in ``diagnose``.
    ``fit_features=False`` keeps the standardisation of a given ``RandomFourierFeatures`` (to
    compare several datasets on one feature map) instead of fitting it to this dataset.

    ValueError (FileNotFoundError for a missing file) naming the option, file or field, raised
    before the streaming passes wherever the check does not need them."""
    say = progress or (lambda msg: None)
    notes: list[str] = []
    _check_hdf5_options(lam=lam, bootstrap=bootstrap, groups=groups, bootstrap_anchors=bootstrap_anchors,
                        reference_fraction=reference_fraction, count_resolution=count_resolution, block=block,
                        episodes=episodes if simulate else 1)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: dataset file not found")
    if pairs_path is not None and not Path(pairs_path).is_file():
        raise FileNotFoundError(f"{pairs_path}: pairs file not found")
    with _open_hdf5(DatasetReader, path) as reader:
        spec = reader.spec
        H, m, nA, N = spec.horizon, spec.n_agents, spec.n_actions, len(reader)
        if N == 0:
            raise ValueError(f"{path}: n_trajectories: the dataset has no trajectories")
        if pairs_path is None and not reader.has_pairs():
            raise ValueError(f"{path}: no preference pairs (group '{PAIRS_GROUP}'), which every coverage measure needs: label "
                             "the dataset (marlcov deep label writes DATA.pairs.h5 beside it) or give its pairs file (--pairs-file)")
        pairs = _open_hdf5(read_pairs, pairs_path, reader) if pairs_path is not None else reader.pairs()
        P = len(pairs)
        _check_pairs(pairs, N, m, pairs_path if pairs_path is not None else path)
        fmap = make_feature_map(features, spec, dim=feature_dim, seed=seed)
        pol = load_policy(policy)
        _probe(reader, fmap, pol)

        # Pre-pass over avail and actions only (little to read): every check of the episodes.
        say("episode lengths")
        lengths = read_episode_lengths(reader, block)
        # The covariances need only the steps up to the longest episode: the rest is padding.
        H_c = int(lengths.max())
        if H_c == 0:
            raise ValueError(f"{path}: avail: no trajectory has a real step (an available action)")
        if CovarianceAccumulator.max_slots(H_c, fmap.dim, memory_bytes) < 0:
            need = CovarianceAccumulator.bytes_needed(H_c, fmap.dim, 0)
            raise ValueError(f"memory_bytes: Sigma_r and Sigma_p of Hd = {H_c * fmap.dim} need {need / 2**30:.2f} GiB, over the "
                             f"budget of {memory_bytes / 2**30:.2f} GiB; use a smaller feature dimension")
        sim_env = None
        if simulate:
            if pol is None:
                notes.append("simulate: no reference policy given; the simulator needs one, so it was not used")
            elif H_c < H:
                notes.append("simulate: the dataset's episodes end early, which the simulator's do not; it was not used")
            else:
                sim_env, why = _make_simulator(spec, episodes)
                if sim_env is None:
                    notes.append(f"simulate: {why}")

        # Pass 0: feature standardisation and count keys, on the real steps.
        say("pass 0: statistics and counts")
        hasher_s = _Hasher(spec.state_dim, count_resolution)
        hasher_o = _Hasher(spec.obs_dim, count_resolution)
        keys_sa, keys_s, keys_oa = [], [], [[] for _ in range(m)]
        fit = fit_features and isinstance(fmap, RandomFourierFeatures)
        total = np.zeros(getattr(fmap, "input_dim", 0))
        squares = np.zeros_like(total)
        count = 0
        for idx, d in reader.iter_batches(block, fields=["state", "obs", "actions"]):
            valid = np.arange(H)[None, :] < lengths[idx][:, None]
            st = d["state"][:, :H].astype(np.float64)[valid]
            acts = d["actions"][:, :H][valid]
            ja = joint_action_index(acts, nA)
            hs = hasher_s(st)
            keys_s.append(np.unique(hs))
            keys_sa.append(np.unique(hasher_s(st, ja)))
            for i in range(m):
                keys_oa[i].append(np.unique(hasher_o(d["obs"][:, :H, i].astype(np.float64)[valid], acts[..., i])))
            if fit:
                x = np.asarray(d[fmap.source][:, :H], dtype=np.float64)
                x = x.reshape(*x.shape[:2], fmap.input_dim)[valid]
                total += x.sum(axis=0)
                squares += (x * x).sum(axis=0)
                count += x.shape[0]
        n_trans = int(lengths.sum())
        if fit:
            fmap.mean = total / count
            std = np.sqrt(np.maximum(squares / count - fmap.mean ** 2, 0.0))
            fmap.std = np.where(std < STD_FLOOR, 1.0, std)
        data_sa = np.unique(np.concatenate(keys_sa))
        counts = {
            "resolution": count_resolution,
            "transitions": n_trans,
            "distinct_state_joint_action": int(data_sa.size),
            "joint_saco": data_sa.size / n_trans,
            "distinct_states": int(np.unique(np.concatenate(keys_s)).size),
            "individual_saco": [np.unique(np.concatenate(k)).size / n_trans for k in keys_oa],
        }
        counts["state_ratio"] = counts["distinct_states"] / n_trans
        del keys_sa, keys_s, keys_oa

        # Pass 1: covariances, pairs scheduled by blocks.
        G = min(groups, P, max(CovarianceAccumulator.max_slots(H_c, fmap.dim, memory_bytes), 0))
        if G < groups:
            notes.append(f"bootstrap and size curve use {G} pair groups (memory budget {memory_bytes / 2**30:.1f} GiB, Hd = {H_c * fmap.dim})")
        say(f"pass 1: covariances over {P} pairs, {G} groups")
        acc, multiplicity = accumulate_pairs(reader, pairs, fmap, lam, G, block, memory_bytes, horizon=H_c)

        # Bonus models: point, bootstrap replicates over groups, size prefixes.
        rng = np.random.default_rng(seed)
        say("bonus models")
        point = acc.bonus_model()
        n_rep = int(bootstrap) if G >= 2 else 0
        if bootstrap and not n_rep:
            notes.append("bootstrap skipped: fewer than two pair groups fit")
        v = rng.poisson(1.0, size=(n_rep, G)).astype(np.float64)
        replicates = [acc.bonus_model(coefficients=v[r]) for r in range(n_rep)]
        prefix_groups = sorted({int(2 ** k) for k in range(int(np.log2(G)) + 1)} - {G}) if G >= 2 else []
        size_models = [acc.bonus_model(coefficients=(np.arange(G) < k).astype(np.float64)) for k in prefix_groups]
        models = _ModelSet(point, replicates, size_models, point.with_reference(acc.feature_mean()))

        # Anchors.
        if pol is None:
            ranked = bradley_terry_scores(pairs.first, pairs.second, pairs.labels, N)
            in_pairs = multiplicity > 0
            anchors = reference_trajectories(ranked, in_pairs, reference_fraction)
            reference = {"kind": "preference-ranking", "score": "bradley-terry", "fraction": reference_fraction,
                         "trajectories": int(anchors.size)}
        elif sim_env is None:
            anchors = np.arange(N)
            reference = {"kind": "policy", "policy": str(policy), "anchors": "dataset states", "trajectories": N}
        else:
            anchors = None
            reference = {"kind": "policy", "policy": str(policy), "anchors": "simulator rollouts", "trajectories": int(episodes)}

        joint_size = nA ** m
        evaluation = _AnchorEvaluation(models, m, nA)
        n_anchor = anchors.size if anchors is not None else int(episodes)
        perm = rng.permutation(n_anchor)
        in_subset_all = np.zeros(n_anchor, dtype=bool)
        in_subset_all[perm[:bootstrap_anchors]] = True
        n_uniform = min(n_anchor, max(1, UNIFORM_EVALUATIONS // (H_c * joint_size))) if uniform else 0
        in_uniform_all = np.zeros(n_anchor, dtype=bool)
        in_uniform_all[perm[:n_uniform]] = True
        if uniform and n_uniform < n_anchor:
            notes.append(f"uniform: evaluated on {n_uniform} of {n_anchor} anchor trajectories ({joint_size} joint actions each step)")
        sorted_sa = data_sa
        say(f"pass 2: measures on {n_anchor} anchor trajectories")
        fields_anchor = _fields_needed(fmap, ["actions", "avail", "obs", "state"])
        batch = max(1, min(block, EVAL_VECTORS // (H_c * max(m * nA, 1))))
        can = {"unilateral": True, "uniform": uniform}
        if anchors is not None:
            for c in range(0, n_anchor, batch):
                pos = np.arange(c, min(c + batch, n_anchor))
                idx = anchors[pos]
                d = reader.read_fields(idx, fields_anchor)
                valid = np.arange(H_c)[None, :] < lengths[idx][:, None]
                recorded = d["actions"][:, :H_c].astype(np.int64)
                ref_actions = recorded if pol is None else _policy_actions(pol, d["obs"][:, :H_c], d["avail"][:, :H_c], valid, recorded)
                _evaluate_batch(evaluation, fmap, d, ref_actions, idx, in_subset_all[pos], in_uniform_all[pos], can, hasher_s, sorted_sa,
                                H_c, valid)
            simulator = None
        else:
            simulator = _simulate(sim_env, spec, pol, fmap, point, evaluation, in_subset_all, in_uniform_all, can, hasher_s,
                                  sorted_sa, rookies or {}, seed, episodes, say)
        if not can["unilateral"]:
            notes.append("unilateral: the feature map gives no features at other actions")
        if not can["uniform"] and uniform:
            notes.append("uniform: the feature map gives no features at arbitrary joint actions")

    reader_info = {**_spec_dict_from(spec, path, N), "pairs": P, "pairs_file": None if pairs_path is None else str(pairs_path),
                   "real_steps": n_trans, "padded_trajectories": int(np.sum(lengths < H)), "longest_episode": H_c}
    return _assemble(evaluation, models, prefix_groups, G, P, acc, counts, reference, fmap, spec, reader_info=reader_info,
                     simulator=simulator, notes=notes, n_rep=n_rep, bootstrap_anchors=int(in_subset_all.sum()), can=can)


def _spec_dict_from(spec, path, N) -> dict:
    return {"path": str(path), "format": "hdf5", "env_name": spec.env_name, "trajectories": int(N),
            "horizon": spec.horizon, "agents": list(spec.agent_names), "n_actions": spec.n_actions}


def _evaluate_batch(evaluation: _AnchorEvaluation, fmap: FeatureMap, d: Mapping, ref_actions: np.ndarray, idx,
                    in_subset, in_uniform, can: dict, hasher, sorted_sa, H: int, valid: np.ndarray | None = None) -> None:
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
    step = max(1, EVAL_VECTORS // (H * nA ** m))
    table = all_joint_actions(m, nA) if rows.size and can["uniform"] else None
    for c in range(0, rows.size if can["uniform"] else 0, step):
        chunk = rows[c:c + step]
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


def _summaries(point: PlugInMeasures, point_sub: PlugInMeasures, reps: Sequence[PlugInMeasures]) -> dict:
    """Bootstrap summaries centred at the full-anchor point estimate (module docstring)."""
    def shifted(get):
        base, sub = get(point), get(point_sub)
        return bootstrap_summary(base, [get(r) - sub + base for r in reps])

    out = {
        "single": shifted(lambda x: x.single),
        "unilateral": shifted(lambda x: float(np.nanmax(x.unilateral)) if np.any(np.isfinite(x.unilateral)) else np.nan),
        "uniform": shifted(lambda x: x.uniform),
        "per_agent": [shifted(lambda x, i=i: x.unilateral[i]) for i in range(len(point.unilateral))],
    }
    return out


def _assemble(evaluation, models, prefix_groups, G, P, acc, counts, reference, fmap, spec, reader_info, simulator,
              notes, n_rep, bootstrap_anchors, can) -> DiagnosticResult:
    point = evaluation.point.result()
    m = evaluation.m
    per_agent_values = np.array(point.unilateral, dtype=np.float64)
    estimator = "plug-in"
    if simulator is not None:
        per_agent_values = np.array([simulator["per_agent"][i]["worst"]["value"] for i in range(m)])
        estimator = "simulator"
    has_uni = can["unilateral"] or simulator is not None
    worst = int(np.argmax(per_agent_values)) if has_uni else -1
    single = point.single if simulator is None else simulator["single"]
    boot = {"unit": "pair-group", "groups": G, "replicates": n_rep, "anchors": bootstrap_anchors}
    if n_rep:
        reps = [r.result() for r in evaluation.reps]
        boot.update(_summaries(point, evaluation.point_sub.result(), reps))
    counts = dict(counts)
    if evaluation.seen_total.sum() > 0:
        counts["unilateral_seen"] = (evaluation.seen / np.maximum(evaluation.seen_total, 1)).tolist()
    per_agent = []
    for i in range(m):
        entry = {
            "player": i,
            "name": spec.agent_names[i],
            "unilateral": _finite_or_none(per_agent_values[i]) if has_uni else None,
            "plug_in": _finite_or_none(point.unilateral[i]),
            "uniform_deviation": _finite_or_none(point.uniform_deviation[i]),
            "estimator": estimator,
        }
        if n_rep and "per_agent" in boot:
            entry["bootstrap"] = boot["per_agent"][i]
        if simulator is not None:
            entry["simulated"] = simulator["per_agent"][i]
        per_agent.append(entry)
    sizes = []
    for k, acc_k in zip(prefix_groups, evaluation.sizes):
        r = acc_k.result()
        sizes.append({"fraction": k / G, "pairs": int(np.sum((np.arange(P) * G) // P < k)), "single": _finite_or_none(r.single),
                      "unilateral": _finite_or_none(np.nanmax(r.unilateral)) if np.any(np.isfinite(r.unilateral)) else None,
                      "uniform": _finite_or_none(r.uniform), "per_agent": [_finite_or_none(x) for x in r.unilateral]})
    if evaluation.sizes:
        sub = evaluation.point_sub.result()
        sizes.append({"fraction": 1.0, "pairs": int(P), "single": _finite_or_none(sub.single),
                      "unilateral": _finite_or_none(np.nanmax(sub.unilateral)) if np.any(np.isfinite(sub.unilateral)) else None,
                      "uniform": _finite_or_none(sub.uniform), "per_agent": [_finite_or_none(x) for x in sub.unilateral]})
    hist = {k: np.concatenate(v) if v else np.zeros(0) for k, v in evaluation.hist.items()}
    identifiable = None if evaluation.ident is None else _identifiable_json(evaluation.ident.result(), acc, can)
    return DiagnosticResult(
        lam=acc.lam, single=float(single), unilateral=float(per_agent_values[worst]) if has_uni else float("nan"),
        uniform=_finite_or_none(point.uniform), worst_player=worst, per_agent=per_agent, bootstrap=boot, counts=counts,
        sizes=sizes, reference=reference, features=fmap.describe(), dataset=reader_info, simulator=simulator,
        notes=notes, histograms=hist, identifiable=identifiable,
    )


def _identifiable_json(point: PlugInMeasures, acc: CovarianceAccumulator, can) -> dict:
    """The identifiable plug-in measures (reward term of ``psi_h - c_h``) with the reference and rank rule."""
    has_uni = can["unilateral"] and np.any(np.isfinite(point.unilateral))
    worst = int(np.nanargmax(point.unilateral)) if has_uni else -1
    return {
        "single": _finite_or_none(point.single),
        "unilateral": _finite_or_none(point.unilateral[worst]) if has_uni else None,
        "uniform": _finite_or_none(point.uniform),
        "worst_deviator": {"player": worst, "value": _finite_or_none(point.unilateral[worst]) if has_uni else None},
        "per_agent": [_finite_or_none(x) for x in point.unilateral],
        "estimator": "plug-in",
        "reference": "c_h = mean of psi_h over the data's trajectories running at step h",
        "constant_directions": acc.constant_directions().tolist(),
        "rank_rule": (f"a direction of step h is one of constant projection when the centred second moment of the "
                      f"data's psi_h has an eigenvalue <= {RANK_RTOL:g} times its largest along it; psi_h - c_h "
                      "cancels every such direction, so they add nothing to the identifiable reward term"),
    }


# ----------------------------------------------------------------------------- simulator
def _make_simulator(spec, episodes: int):
    """An ``MPEBatch`` reproducing the dataset's environment, or ``(None, reason)``."""
    try:
        from marlcov.deep.envs import mpe
    except ImportError as exc:
        return None, f"the MPE simulator is unavailable ({exc})"
    if spec.env_name not in mpe.ENV_NAMES:
        return None, f"no simulator for environment {spec.env_name!r}"
    cfg = dict(spec.env_config)
    if spec.env_name == "simple_tag_v3" and cfg.get("prey_policy", "uniform") != "uniform":
        return None, f"the dataset's prey policy {cfg.get('prey_policy')!r} cannot be rebuilt from the file"
    kwargs = {"horizon": int(cfg.get("horizon", spec.horizon))}
    if "local_ratio" in cfg:
        kwargs["local_ratio"] = float(cfg["local_ratio"])
    if "num_agents" in cfg:
        kwargs["num_agents"] = int(cfg["num_agents"])
    return mpe.MPEBatch(spec.env_name, int(episodes), **kwargs), ""


def _rollout(env, act, seed: int) -> dict:
    """Play ``env.batch_size`` episodes with ``act(step, t) -> actions [B, m]`` (the step carries
    obs, state and avail); arrays in the dataset layout."""
    import torch

    H = env.spec.horizon
    cur = env.reset(seed)
    obs, state, actions, avail = [cur.obs.numpy().copy()], [cur.state.numpy().copy()], [], []
    for t in range(H):
        a = torch.as_tensor(act(cur, t)).to(torch.long)
        avail.append(cur.avail.numpy().copy())
        actions.append(a.numpy().copy())
        cur = env.step(a)
        obs.append(cur.obs.numpy().copy())
        state.append(cur.state.numpy().copy())
    return {"obs": np.stack(obs, 1), "state": np.stack(state, 1), "actions": np.stack(actions, 1).astype(np.int64),
            "avail": np.stack(avail, 1)}


def _simulate(env, spec, pol, fmap, point: BonusModel, evaluation, in_subset, in_uniform, can, hasher, sorted_sa,
              rookies: Mapping[str, Any], seed: int, episodes: int, say) -> dict:
    """Rollouts of ``pi*`` (the anchors) and of deviations of each agent; ``U_D`` by Monte Carlo,
    every rollout from the same reset seeds (common random numbers for the comparisons)."""
    import torch

    from marlcov.deep.envs.mpe import UniformRandomPolicy

    H, m, nA = spec.horizon, spec.n_agents, spec.n_actions

    def reference(cur, t):
        return torch.as_tensor(pol(cur.obs, cur.avail, t)).to(torch.long)

    def uncertainty(d):
        values = np.where(_step_masks(d["avail"]), point.bonus(fmap(d, d["actions"][:, :H])), 0.0).sum(axis=1)
        se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
        return float(values.mean()), se

    say("simulator: reference rollouts")
    ref = _rollout(env, reference, seed)
    _evaluate_batch(evaluation, fmap, ref, ref["actions"], None, in_subset, in_uniform, can, hasher, sorted_sa, H)
    single, single_se = uncertainty(ref)

    def deviation(player, policy=None, mix=0.0, rng_seed=0):
        rng = np.random.default_rng(rng_seed)

        def act(cur, t):
            base = reference(cur, t).clone()
            if policy is not None:
                alt = torch.as_tensor(policy(cur.obs, cur.avail, t))[:, player].to(torch.long)
            else:
                fields = {"obs": cur.obs.numpy()[:, None], "state": cur.state.numpy()[:, None]}
                feats = fmap.unilateral(fields, base.numpy()[:, None, :], player)[:, 0]
                bonus = np.where(cur.avail.numpy()[:, player], point.step_bonus(feats, t), -np.inf)
                alt = torch.as_tensor(bonus.argmax(axis=-1))
                if mix > 0:
                    keep = torch.as_tensor(rng.random(alt.shape[0]) < mix)
                    alt = torch.where(keep, base[:, player], alt)
            base[:, player] = alt
            return base
        return act

    per_agent = []
    for i in range(m):
        candidates = {"uniform": deviation(i, UniformRandomPolicy(seed + i))}
        for name, rookie in rookies.items():
            candidates[f"rookie:{name}"] = deviation(i, load_policy(rookie))
        if can["unilateral"]:
            candidates["bonus-greedy"] = deviation(i)
            candidates["bonus-greedy-mix0.5"] = deviation(i, mix=0.5, rng_seed=seed + i)
        values = {}
        for name, act in candidates.items():
            say(f"simulator: agent {i} deviation {name}")
            mean, se = uncertainty(_rollout(env, act, seed))
            values[name] = {"value": mean, "stderr": se}
        worst = max(values, key=lambda k: values[k]["value"])
        per_agent.append({"candidates": values, "worst": {"name": worst, **values[worst]}})
    return {"episodes": int(episodes), "single": single, "single_stderr": single_se, "per_agent": per_agent,
            "unilateral": max(a["worst"]["value"] for a in per_agent)}


# ----------------------------------------------------------------------------- finite games
def diagnose_finite(game, data, policy, lam: float = DEFAULT_LAMBDA, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> DiagnosticResult:
    """The diagnostic of a finite-game preference dataset: exact measures from streamed covariances."""
    from marlcov.theory.io import load_dataset, load_game
    from marlcov.theory.io import load_policy as load_game_policy

    game_obj = load_game(game) if isinstance(game, (str, os.PathLike)) else game
    ds = load_dataset(data, game_obj) if isinstance(data, (str, os.PathLike)) else data
    if policy is None:
        raise ValueError("policy: a finite game needs the reference joint policy (a marlcov.policy/1 file)")
    pol = load_game_policy(policy, game_obj) if isinstance(policy, (str, os.PathLike)) else policy
    fc = finite_game_coverage(game_obj, ds, pol, lam, int(bootstrap), seed)
    cov = fc.coverage
    H, m = game_obj.horizon, game_obj.n_players
    states = np.concatenate([ds.states[:, 0, :H], ds.states[:, 1, :H]]).ravel()
    acts = np.concatenate([ds.actions[:, 0], ds.actions[:, 1]]).reshape(-1, m)
    n_trans = states.size
    joint = np.ravel_multi_index((states, *acts.T), (game_obj.n_states, *game_obj.action_sizes))
    counts = {
        "resolution": None,
        "transitions": int(n_trans),
        "distinct_state_joint_action": int(np.unique(joint).size),
        "joint_saco": np.unique(joint).size / n_trans,
        "distinct_states": int(np.unique(states).size),
        "state_ratio": np.unique(states).size / n_trans,
        "individual_saco": [np.unique(states * game_obj.action_sizes[i] + acts[:, i]).size / n_trans for i in range(m)],
        "state_joint_action_fraction": np.unique(joint).size / (game_obj.n_states * int(np.prod(game_obj.action_sizes))),
    }
    sizes = []
    for frac in FINITE_SIZE_FRACTIONS:
        n = max(1, int(round(frac * ds.n_pairs)))
        c = finite_game_coverage(game_obj, ds.subset(slice(0, n)), pol, lam).coverage
        sizes.append({"fraction": frac, "pairs": n, "single": c.single, "unilateral": c.unilateral, "uniform": c.uniform,
                      "per_agent": c.per_player.tolist()})
    per_agent = [{"player": i, "name": f"player_{i}", "unilateral": float(cov.per_player[i]), "estimator": "exact",
                  "bootstrap": fc.bootstrap["per_player"][i]} for i in range(m)]
    boot = {k: v for k, v in fc.bootstrap.items() if k != "per_player"}
    worst_dev = {"format": "marlcov.policy/1", "player": cov.worst_player, "probs": cov.worst_deviation.tolist()}
    bonus = fc.bonus
    return DiagnosticResult(
        lam=cov.lam, single=cov.single, unilateral=cov.unilateral, uniform=cov.uniform, worst_player=cov.worst_player,
        per_agent=per_agent, bootstrap=boot, counts=counts, sizes=sizes,
        reference={"kind": "policy", "policy": str(policy), "worst_deviation": worst_dev},
        features={"kind": "game" if game_obj.features is not None else "one-hot",
                  "dim": int(game_obj.features.shape[-1]) if game_obj.features is not None else int(np.prod(bonus.shape[1:]))},
        dataset={"path": str(data), "format": "npz", "pairs": ds.n_pairs, "horizon": H, "agents": [f"player_{i}" for i in range(m)]},
        histograms={"reference": bonus.ravel()},
        identifiable={"single": fc.identifiable.single, "unilateral": fc.identifiable.unilateral,
                      "uniform": fc.identifiable.uniform,
                      "worst_deviator": {"player": fc.identifiable.worst_player, "value": fc.identifiable.unilateral},
                      "per_agent": fc.identifiable.per_player.tolist(), "estimator": "exact",
                      "reference": "c_h = E_pi*[psi_h(s_h, a_h)] (theory.identifiable.policy_reference)"},
    )


# ----------------------------------------------------------------------------- plots
def write_plots(result: DiagnosticResult, out_dir: str | os.PathLike) -> list[str]:
    """Per-agent unilateral coverage bars, bonus histograms and coverage against dataset size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = [a["name"] for a in result.per_agent]
    vals = [np.nan if a["unilateral"] is None else a["unilateral"] for a in result.per_agent]
    err = None
    if all("bootstrap" in a and a["bootstrap"].get("low") is not None for a in result.per_agent):
        err = np.array([[max(v - a["bootstrap"]["low"], 0.0), max(a["bootstrap"]["high"] - v, 0.0)] for v, a in zip(vals, result.per_agent)]).T
    ax.bar(names, vals, yerr=err, capsize=4, color="tab:orange", label="unilateral (agent deviates)")
    ax.axhline(result.single, color="tab:blue", ls="--", label="single")
    if result.uniform is not None:
        ax.axhline(result.uniform, color="tab:gray", ls=":", label="uniform")
    ax.set_ylabel("U_D")
    ax.set_title("Unilateral coverage per agent")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(str(out / "unilateral_per_agent.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("reference", "reference actions"), ("worst_deviation", "worst unilateral deviation"), ("joint_max", "worst joint action")):
        vals = result.histograms.get(key)
        if vals is not None and len(vals):
            ax.hist(vals, bins=50, alpha=0.5, label=label)
    ax.set_xlabel("per-step bonus")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(str(out / "bonus_histograms.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if result.sizes:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        pairs = [s["pairs"] for s in result.sizes]
        for key, style in (("single", "o-"), ("unilateral", "s-"), ("uniform", "^-")):
            ys = [np.nan if s[key] is None else s[key] for s in result.sizes]
            ax.plot(pairs, ys, style, label=key)
        ax.set_xscale("log")
        ax.set_xlabel("preference pairs (prefix of the dataset)")
        ax.set_ylabel("U_D")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(str(out / "coverage_vs_size.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- entry points
def diagnose(path, policy=None, features: Any = "random", lam: float = DEFAULT_LAMBDA, bootstrap: int = DEFAULT_BOOTSTRAP,
             seed: int = 0, out_dir=None, *, game=None, **kwargs) -> dict:
    """The dataset diagnostic as the CLI's JSON dict.

    Args:
        path: an HDF5 dataset (``.h5``/``.hdf5``, pairs inside or ``pairs_path=``) or a finite-game
            NPZ preference dataset (then ``game`` and ``policy`` are required).
        policy: the reference joint policy: None ("the best trajectories of the data", HDF5 only),
            a callable or a checkpoint (HDF5), or a policy file / ``Policy`` (finite games).
        features: ``"random"``, ``"random-obs"``, ``"reward-model:PATH"``, a features file, or a
            ``deep.features.FeatureMap`` (HDF5 only; finite games use their own or one-hot features).
        lam: the ridge lambda.
        bootstrap: number of bootstrap replicates (0: none).
        seed: seeds the feature draw, the bootstrap and the anchor subsets.
        out_dir: when given, the plots are written there and listed under ``"figures"``.
        game: the game file or ``MarkovGame`` of a finite-game dataset.
        **kwargs: further options of ``diagnose_hdf5``.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        if game is None:
            raise ValueError(f"{path}: a finite-game dataset needs its game (game=GAME)")
        result = diagnose_finite(game, path, policy, lam, bootstrap, seed)
    elif suffix in (".h5", ".hdf5"):
        result = diagnose_hdf5(path, policy, features, lam, bootstrap, seed, **kwargs)
    else:
        raise ValueError(f"{path}: expected an HDF5 dataset (.h5/.hdf5) or a finite-game NPZ dataset")
    if out_dir is not None:
        result.figures = write_plots(result, out_dir)
    return result.to_json()


def coverage_command(args) -> dict:
    """``marlcov coverage DATASET [--policy CKPT] [--features ...] [--lambda L] [--bootstrap R]
    [--seed K] [--out DIR] [--pairs-file FILE]`` on an HDF5 dataset; reads these attributes of the
    argparse namespace (missing ones take their defaults): ``game`` (the dataset path, the first
    positional argument), ``policy``, ``features``, ``lam``, ``bootstrap``, ``seed``, ``out``,
    ``pairs_file``, ``simulate``, ``feature_dim``. Without ``pairs_file``, a dataset that holds
    no pairs itself is read with ``DATA.pairs.h5`` beside it when there is one (where ``marlcov
    deep label`` writes them)."""
    get = lambda name, default: getattr(args, name, default) if getattr(args, name, None) is not None else default  # noqa: E731
    kwargs = {"feature_dim": int(get("feature_dim", DEFAULT_FEATURE_DIM)), "simulate": bool(get("simulate", False))}
    pairs_file = get("pairs_file", None)
    if pairs_file is None:
        pairs_file = _default_pairs_file(args.game)
    if pairs_file is not None:
        kwargs["pairs_path"] = pairs_file
    return diagnose(args.game, get("policy", None), get("features", "random"), float(get("lam", DEFAULT_LAMBDA)),
                    int(get("bootstrap", DEFAULT_BOOTSTRAP)), int(get("seed", 0)), get("out", None), **kwargs)


def _default_pairs_file(path) -> Path | None:
    """``DATA.pairs.h5`` beside a dataset that holds no pairs itself, when it exists; else None
    (and ``diagnose`` reports whatever is wrong with the dataset)."""
    from marlcov.deep.pipeline import pairs_path_for

    candidate = pairs_path_for(path)
    if not (candidate.is_file() and Path(path).is_file()):
        return None
    try:
        with DatasetReader(path) as reader:
            return None if reader.has_pairs() else candidate
    except (OSError, ValueError):
        return None


def table_rows(out: Mapping) -> list[tuple[str, str]]:
    """``(measure, value)`` rows of the human-readable table of a diagnostic's JSON dict."""
    def fmt(x, b=None):
        if x is None:
            return "n/a"
        s = f"{x:.4g}"
        if b and b.get("low") is not None:
            s += f"  [{b['low']:.4g}, {b['high']:.4g}]"
        return s

    boot = out.get("bootstrap", {})
    rows = [("single U_D(pi*)", fmt(out["single"], boot.get("single")))]
    for a in out["per_agent"]:
        rows.append((f"unilateral, {a['name']}", fmt(a["unilateral"], a.get("bootstrap"))))
    rows.append(("unilateral (max)", fmt(out["unilateral"], boot.get("unilateral"))))
    rows.append(("uniform", fmt(out["uniform"], boot.get("uniform"))))
    rows.append(("worst deviator", str(out["worst_deviator"]["player"])))
    c = out.get("counts", {})
    if "joint_saco" in c:
        rows.append(("distinct (state, joint action) / transitions", fmt(c["joint_saco"])))
    if "unilateral_seen" in c:
        rows.append(("unilateral alternatives seen in data", ", ".join(f"{v:.3g}" for v in c["unilateral_seen"])))
    return rows


def format_table(out: Mapping) -> str:
    """A plain-text table of ``table_rows``."""
    rows = table_rows(out)
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)
