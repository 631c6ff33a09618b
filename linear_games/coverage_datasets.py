"""Preference datasets with a chosen coverage of an equilibrium (MARLHF paper, section 4.1, Definition 1).

- single-policy: both trajectories of every pair follow ``pi*``;
- unilateral: each trajectory follows ``pi*`` or one of its unilateral deviations ``(pi_i, pi*_-i)``;
- uniform: each trajectory follows the uniform policy;
- mixture: each trajectory follows a policy drawn from a given mixture.

Every dataset comes with its coverage measures (single, unilateral, uniform) around the reference
policy, computed exactly: the paper's (``theory.coverage``) and the identifiable ones
(``theory.identifiable``), from one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA, Coverage
from marlcov.theory.games import GameError, MarkovGame
from marlcov.theory.identifiable import both_measures
from marlcov.theory.policies import Policy, check_policy, replace_player, uniform_policy
from marlcov.theory.preferences import PreferenceDataset, mixture_dataset, sample_preference_dataset


@dataclass(frozen=True)
class CoverageDataset:
    """A dataset, how it was drawn, and its coverage of the reference policy.

    Attributes:
        kind: ``"single"``, ``"unilateral"``, ``"uniform"`` or ``"mixture"``.
        dataset: the preference pairs.
        coverage: single / unilateral / uniform coverage around ``reference`` (Definition 1).
        behaviour: the behaviour policies.
        weights: their mixture weights (summing to one).
        identifiable: the identifiable measures around ``reference`` (reference point: its mean feature).
    """

    kind: str
    dataset: PreferenceDataset
    coverage: Coverage
    behaviour: tuple[Policy, ...]
    weights: np.ndarray
    identifiable: Coverage | None = None

    def summary(self) -> dict:
        """The coverage measures as plain numbers."""
        c, ident = self.coverage, self.identifiable
        out = {
            "kind": self.kind,
            "pairs": self.dataset.n_pairs,
            "lambda": c.lam,
            "single": c.single,
            "unilateral": c.unilateral,
            "uniform": c.uniform,
            "worst_player": c.worst_player,
        }
        if ident is not None:
            out["identifiable"] = {
                "single": ident.single,
                "unilateral": ident.unilateral,
                "uniform": ident.uniform,
                "worst_player": ident.worst_player,
            }
        return out


def unilateral_deviations(game: MarkovGame, policy: Policy, include_uniform: bool = True) -> list[Policy]:
    """Unilateral deviations ``(pi_i, pi_-i)`` of ``policy``: for every player ``i``, each constant
    action ``a_i`` (played at every step and state) and, with ``include_uniform``, the uniform ``pi_i``.

    In a one-step one-state game the constant actions are exactly the pure unilateral deviations;
    the uniform deviation puts weight on every ``(h, s, a_i)`` that a deviation can reach.
    """
    policy = check_policy(policy, game, "reference")
    H, S = game.horizon, game.n_states
    out = []
    for i, a in enumerate(game.action_sizes):
        for action in range(a):
            out.append(replace_player(policy, i, np.broadcast_to(np.eye(a)[action], (H, S, a)).copy()))
        if include_uniform:
            out.append(replace_player(policy, i, np.full((H, S, a), 1.0 / a)))
    return out


def _with_coverage(kind, game, dataset, reference, behaviour, weights, lam) -> CoverageDataset:
    w = np.asarray(weights, dtype=np.float64)
    paper, ident = both_measures(game, dataset, reference, lam)
    return CoverageDataset(kind, dataset, paper, tuple(behaviour), w / w.sum(), ident)


def single_policy_dataset(
    game: MarkovGame, policy: Policy, n_pairs: int, seed=None, lam: float = DEFAULT_LAMBDA, steepness: float = 1.0
) -> CoverageDataset:
    """Both trajectories of every pair follow ``policy`` (single-policy coverage of ``policy``)."""
    policy = check_policy(policy, game)
    data = sample_preference_dataset(game, policy, n_pairs, seed, steepness)
    return _with_coverage("single", game, data, policy, [policy], [1.0], lam)


def unilateral_dataset(
    game: MarkovGame,
    policy: Policy,
    n_pairs: int,
    seed=None,
    equilibrium_weight: float = 0.5,
    include_uniform: bool = True,
    lam: float = DEFAULT_LAMBDA,
    steepness: float = 1.0,
) -> CoverageDataset:
    """Each trajectory follows ``policy`` with probability ``equilibrium_weight``, otherwise one of
    ``unilateral_deviations(game, policy)`` chosen uniformly."""
    if not 0 <= equilibrium_weight <= 1:
        raise ValueError(f"equilibrium_weight: expected a number in [0, 1], got {equilibrium_weight}")
    policy = check_policy(policy, game)
    deviations = unilateral_deviations(game, policy, include_uniform)
    behaviour = [policy, *deviations]
    weights = [equilibrium_weight] + [(1 - equilibrium_weight) / len(deviations)] * len(deviations)
    data = mixture_dataset(game, behaviour, weights, n_pairs, seed, steepness)
    return _with_coverage("unilateral", game, data, policy, behaviour, weights, lam)


def uniform_dataset(
    game: MarkovGame, reference: Policy, n_pairs: int, seed=None, lam: float = DEFAULT_LAMBDA, steepness: float = 1.0
) -> CoverageDataset:
    """Both trajectories follow the uniform policy; coverage is measured around ``reference``."""
    reference = check_policy(reference, game, "reference")
    uniform = uniform_policy(game)
    data = sample_preference_dataset(game, uniform, n_pairs, seed, steepness)
    return _with_coverage("uniform", game, data, reference, [uniform], [1.0], lam)


def mixture_coverage_dataset(
    game: MarkovGame,
    reference: Policy,
    policies: Sequence[Policy],
    weights: Sequence[float],
    n_pairs: int,
    seed=None,
    lam: float = DEFAULT_LAMBDA,
    steepness: float = 1.0,
) -> CoverageDataset:
    """Each trajectory follows a policy drawn from ``weights``; coverage measured around ``reference``."""
    if len(policies) == 0:
        raise GameError("policies: expected at least one behaviour policy")
    reference = check_policy(reference, game, "reference")
    checked = [check_policy(p, game, f"policies[{k}]") for k, p in enumerate(policies)]
    data = mixture_dataset(game, checked, weights, n_pairs, seed, steepness)
    return _with_coverage("mixture", game, data, reference, checked, weights, lam)


def combined(
    game: MarkovGame, reference: Policy, parts: Sequence[PreferenceDataset], lam: float = DEFAULT_LAMBDA, kind: str = "mixture"
) -> CoverageDataset:
    """The union of given datasets (pairs concatenated) with its coverage around ``reference``."""
    if len(parts) == 0:
        raise GameError("parts: expected at least one dataset")
    data = parts[0]
    for extra in parts[1:]:
        data = data + extra
    reference = check_policy(reference, game, "reference")
    paper, ident = both_measures(game, data, reference, lam)
    return CoverageDataset(kind, data, paper, (), np.ones(0), ident)
