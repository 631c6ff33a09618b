"""Identifiable coverage: Definition 1 with the reward term restricted to what preferences identify.

Preferences see ``psi(tau) - psi(tau')`` only. Block h of such a difference lies in the step's
identifiable subspace ``V_h = span{psi_h(s, a) - psi_h(s', a')}``; along its complement ``V_h^perp``
every feature of step h has the same projection, so ``theta_h -> theta_h + w`` with ``w`` in
``V_h^perp`` adds a constant to every reward of step h and changes no Nash gap. With
``V = V_1 + ... + V_H`` (blocks) and ``Q`` an orthonormal basis of ``V``:

- restricted reward covariance ``Sigma_V = Q^T Sigma_r Q = lambda I_k + (D Q)^T (D Q)``;
- identifiable reward bonus, relative to a reference point ``c_h`` of step h (an affine
  combination of the step's feature rows, so ``z_h(s, a) = psi_h(s, a) - c_h`` lies in ``V_h``):
  ``||Q^T zbar_h(s, a)||_{Sigma_V^{-1}}``.

Because the rows of ``D`` lie in ``V``, ``Sigma_r`` is block diagonal in ``V + V^perp`` (``lambda I`` on
``V^perp``), so for ``z`` in ``V``, ``z^T Sigma_r^{-1} z = (Q^T z)^T Sigma_V^{-1} (Q^T z)``: the restricted
norm is the full one evaluated at ``zbar``, with no basis to compute (``restricted_covariance`` forms
``Sigma_V`` explicitly, for the tests). Adding ``u_h`` to every feature of step h moves ``c_h`` by
``u_h`` as well, so every ``z`` and every difference, hence ``Sigma_r`` on ``V`` and the bonus, is
unchanged: the identifiable measures are exactly invariant; the paper's are not.

The reference point. The default is the reference policy's mean feature at step h,
``c_h = E_{pi*}[psi_h(s_h, a_h)]`` (exact, by forward dynamic programming), so a deterministic
reference with deterministic dynamics has single coverage 0. The measures DO depend on the
choice of ``c_h``: ``||z_h(s, a)||`` moves with it. What is free of it is what the certified bound
needs: ``Sigma_V``, the confidence set on the identifiable part of ``theta`` and every Nash gap; the
certificate holds for each reference (``linear_games.certificate``). (The claim that the
measures themselves are reference-free does not hold; tests/theory/test_identifiable.py shows
an instance.) The transition term is Definition 1's: regression identifies offsets.
"""

from __future__ import annotations

import numpy as np

from .coverage import (
    DEFAULT_LAMBDA,
    BonusTerms,
    Coverage,
    game_features,
    measures_from_bonus,
    reward_gram,
    reward_widths,
    step_features,
    step_table,
    transition_grams,
    transition_widths,
)
from .games import GameError, MarkovGame
from .policies import Policy, check_policy, joint_action_probs
from .preferences import PreferenceDataset
from .ridge_forms import RidgeGram, checked_lambda
from .tolerances import RANK_RTOL


def identifiable_subspace(features: np.ndarray, h: int, rtol: float = RANK_RTOL) -> np.ndarray:
    """Orthonormal basis ``Q_h[d, k_h]`` of ``V_h = span{psi_h(s, a) - psi_h(s', a')}``.

    The span of all pairwise differences is that of the differences to one row; its rank is the
    number of singular values above ``rtol`` times the largest (none when all rows coincide).
    """
    table = step_table(features, h)
    centred = table - table[0]
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    if sing.size == 0 or sing[0] == 0.0:
        return np.zeros((table.shape[1], 0))
    rank = int(np.sum(sing > rtol * sing[0]))
    return vt[:rank].T


def identifiable_basis(features: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Orthonormal basis ``Q[Hd, k]`` of ``V = V_1 + ... + V_H`` (block h holds ``Q_h``)."""
    H, d = features.shape[0], features.shape[-1]
    blocks = [identifiable_subspace(features, h, rtol) for h in range(H)]
    out = np.zeros((H * d, sum(b.shape[1] for b in blocks)))
    col = 0
    for h, b in enumerate(blocks):
        out[h * d : (h + 1) * d, col : col + b.shape[1]] = b
        col += b.shape[1]
    return out


def restricted_covariance(gram: RidgeGram, basis: np.ndarray) -> np.ndarray:
    """``Sigma_V = Q^T Sigma_r Q`` for an orthonormal basis ``Q[Hd, k]`` of ``V``."""
    if gram.gram is None:
        dq = gram.rows @ basis
        return gram.lam * np.eye(basis.shape[1]) + dq.T @ dq
    return gram.lam * np.eye(basis.shape[1]) + basis.T @ gram.gram @ basis


def policy_reference(game: MarkovGame, policy: Policy, features: np.ndarray | None = None) -> np.ndarray:
    """``c_h = E_pi[psi_h(s_h, a_h)]``, shape ``[H, d]``: the step-h occupancy of ``pi`` times the table."""
    policy = check_policy(policy, game)
    features = game_features(game) if features is None else features
    joint = joint_action_probs(policy)
    H, S = game.horizon, game.n_states
    state = np.zeros(S)
    state[game.initial_state] = 1.0
    out = np.empty((H, features.shape[-1]))
    for h in range(H):
        occupancy = (state.reshape(S, *([1] * game.n_players)) * joint[h]).reshape(-1)
        out[h] = occupancy @ step_table(features, h)
        state = occupancy @ game.transitions[h].reshape(-1, S)
    return out


def dataset_reference(features: np.ndarray, dataset: PreferenceDataset) -> np.ndarray:
    """``c_h`` = the mean of ``psi_h(s_h, a_h)`` over both trajectories of every pair, ``[H, d]``."""
    if dataset.n_pairs == 0:
        raise GameError("dataset: expected at least one pair to take a reference point from")
    return step_features(features, dataset.states, dataset.actions).mean(axis=(0, 1))


def _check_reference(reference, features: np.ndarray) -> np.ndarray:
    H, d = features.shape[0], features.shape[-1]
    c = np.asarray(reference, dtype=np.float64)
    if c.shape != (H, d) or not np.all(np.isfinite(c)):
        raise GameError(f"reference: expected finite numbers of shape [H, d] = {[H, d]}, got {list(c.shape)}")
    return c


def identifiable_bonus(game: MarkovGame, dataset: PreferenceDataset, reference, lam: float = DEFAULT_LAMBDA) -> BonusTerms:
    """``(||zbar_h(s, a)||_{Sigma_V^{-1}}, ||psi_h(s, a)||_{Sigma_p[h]^{-1}})`` with ``z = psi - c``, each ``[H, S, A..]``."""
    dataset.check_against(game)
    lam = checked_lambda(lam)
    features = game_features(game)
    c = _check_reference(reference, features)
    return BonusTerms(
        reward_widths(features, reward_gram(features, dataset, lam), c),
        transition_widths(features, transition_grams(features, dataset, lam)),
    )


def identifiable_measures(
    game: MarkovGame, dataset: PreferenceDataset, policy: Policy, lam: float = DEFAULT_LAMBDA, reference=None
) -> Coverage:
    """Identifiable single, unilateral and uniform coverage around ``policy``, with the worst deviator.

    The same exact dynamic programme as ``theory.coverage.coverage_measures`` on the identifiable
    bonus; ``reference`` is ``c[H, d]`` (default: ``policy_reference(game, policy)``).
    """
    policy = check_policy(policy, game)
    c = policy_reference(game, policy) if reference is None else reference
    return measures_from_bonus(game, identifiable_bonus(game, dataset, c, lam).total(), policy, lam)


def both_measures(
    game: MarkovGame, dataset: PreferenceDataset, policy: Policy, lam: float = DEFAULT_LAMBDA, reference=None
) -> tuple[Coverage, Coverage]:
    """``(paper's Definition 1, identifiable)`` from one pass over the data (the covariances are shared)."""
    report = identifiable_report(game, dataset, policy, lam, reference, reward_term=False)
    return report["paper"], report["identifiable"]


def identifiable_report(
    game: MarkovGame, dataset: PreferenceDataset, policy: Policy, lam: float = DEFAULT_LAMBDA, reference=None, reward_term: bool = True
) -> dict[str, Coverage]:
    """``{"paper", "identifiable", "identifiable_reward_term"}`` from one pass: Definition 1, the
    identifiable measures, and (with ``reward_term``) those of the identifiable reward term alone,
    the part that is exactly invariant to step offsets (Definition 1's transition term is not)."""
    dataset.check_against(game)
    policy = check_policy(policy, game)
    lam = checked_lambda(lam)
    features = game_features(game)
    c = _check_reference(policy_reference(game, policy, features) if reference is None else reference, features)
    r_gram = reward_gram(features, dataset, lam)
    transition = transition_widths(features, transition_grams(features, dataset, lam))
    ident_reward = reward_widths(features, r_gram, c)
    out = {
        "paper": measures_from_bonus(game, reward_widths(features, r_gram) + transition, policy, lam),
        "identifiable": measures_from_bonus(game, ident_reward + transition, policy, lam),
    }
    if reward_term:
        out["identifiable_reward_term"] = measures_from_bonus(game, ident_reward, policy, lam)
    return out
