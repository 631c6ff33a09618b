"""Reward uncertainty measured in the identifiable quotient (DESIGN.md, "Identifiable coverage").

Pairwise preferences see ``theta`` only through ``psi(tau) - psi(tau')``, whose block h lies in
``V_h = span{psi_h(s, a) - psi_h(s', a')}``. Relative to a reference point ``c_h`` of step h (here
a policy's mean feature), ``z_h(s, a) = psi_h(s, a) - c_h`` lies in ``V_h``; the rows of
``Sigma_r - lambda I`` lie in ``V``, so ``Sigma_r`` is block diagonal in ``V + V^perp`` and the
identifiable width ``||Q^T zbar_h||_{(Q^T Sigma_r Q)^-1}`` equals ``||zbar_h||_{Sigma_r^-1}``. Adding a
vector to every feature of a step moves ``c_h`` with it: the width is invariant, and it tends to 0
as the data grow, where ``||psibar_h||_{Sigma_r^-1}`` does not.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import block_diag, cho_factor, cho_solve, orth

from marlcov.theory.games import MarkovGame
from marlcov.theory.policies import Policy, joint_action_probs


def identifiable_basis(features: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``Q`` (``[Hd, k]``) of the span of within-step feature differences."""
    H, d = features.shape[0], features.shape[-1]
    blocks = []
    for h in range(H):
        flat = features[h].reshape(-1, d)
        diffs = flat[1:] - flat[0]
        blocks.append(orth(diffs.T) if diffs.size else np.zeros((d, 0)))
    return block_diag(*blocks)


def policy_mean_features(game: MarkovGame, policy: Policy, features: np.ndarray) -> np.ndarray:
    """``c_h = E_pi[psi_h(s_h, a_h)]`` for every step, shape ``[H, d]``, by forward dynamic programming."""
    joint = joint_action_probs(policy)  # [H, S, A_1..A_m]
    occupancy = np.zeros(game.n_states)
    occupancy[game.initial_state] = 1.0
    means = np.empty((game.horizon, features.shape[-1]))
    for h in range(game.horizon):
        weights = occupancy.reshape((-1,) + (1,) * len(game.action_sizes)) * joint[h]
        means[h] = np.tensordot(weights, features[h], axes=weights.ndim)
        occupancy = np.tensordot(weights, game.transitions[h], axes=weights.ndim)
    return means


def identifiable_reward_widths(features: np.ndarray, sigma_r: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``||zbar_h(s, a)||_{Sigma_r^-1}`` with ``z_h = psi_h - reference[h]``, shape ``[H, S, A..]``."""
    H, d = features.shape[0], features.shape[-1]
    z = (features - reference.reshape((H,) + (1,) * (features.ndim - 2) + (d,))).reshape(H, -1, d)
    inv = cho_solve(cho_factor(sigma_r, lower=True), np.eye(H * d))
    blocks = inv.reshape(H, d, H, d)[np.arange(H), :, np.arange(H), :]  # only block (h, h) of Sigma_r^-1 enters
    quad = np.einsum("hkd,hde,hke->hk", z, blocks, z)
    return np.sqrt(np.maximum(quad, 0.0)).reshape(features.shape[:-1])
