"""Coverage of a preference dataset (MARLHF paper, section 4.1 and Definition 1).

With ``psi(s, a)`` in R^d and the lift ``psibar_h(s, a)`` in R^{Hd} (``psi`` in block h):

- ``Sigma_r = lambda I + sum_n (psi(tau_n) - psi(tau'_n)) (psi(tau_n) - psi(tau'_n))^T``  (Hd x Hd),
  ``psi(tau) = sum_h psibar_h(s_h, a_h)``;
- ``Sigma_p[h] = lambda I + sum_n [psi(s_h, a_h) psi(s_h, a_h)^T + psi(s'_h, a'_h) psi(s'_h, a'_h)^T]``;
- ``bonus_h(s, a) = ||psibar_h(s, a)||_{Sigma_r^-1} + ||psi(s, a)||_{Sigma_p[h]^-1}``;
- ``U_D(pi) = E_pi[sum_h bonus_h(s_h, a_h)]``, exact by dynamic programming;
- single ``U_D(pi*)``, unilateral ``max_i max_{pi_i} U_D(pi_i, pi*_{-i})``, uniform ``max_pi U_D(pi)``.

The paper's main text writes ``Sigma_r`` with ``lambda I`` inside and the appendix (Lemmas 1-3)
adds ``lambda I`` once more; this package fixes the convention: ``lambda I`` once.

Both covariances are ``lambda I + E^T E`` (``theory.ridge_forms.RidgeGram``): ``E = D``, the ``N x Hd``
pair differences, for ``Sigma_r``; the visited rows of step h's table scaled by the square roots of
their counts for ``Sigma_p[h]``. The bonus needs only quadratic forms, taken in the Woodbury form
when the rows are few against the dimension (a tabular game with ``Hd = 50,000`` and 10 pairs:
no ``Hd x Hd`` matrix is formed) and in the dense form otherwise; the one-hot feature map is a
broadcast view, read step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .games import MarkovGame
from .policies import Policy, check_policy
from .preferences import PreferenceDataset
from .ridge_forms import RidgeGram, checked_lambda, prefers_woodbury
from .values import best_response, evaluate_policy, optimal_joint_values

DEFAULT_LAMBDA = 1.0

#: Rows of the dataset processed at once when forming covariances, to bound memory.
CHUNK_PAIRS = 65536


def step_features(features: np.ndarray, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``psi(s_h, a_h)`` along trajectories.

    Args:
        features: ``psi[h, s, a_1..a_m, d]``.
        states: ``[..., H+1]`` (the last state is not used).
        actions: ``[..., H, m]``.
    Returns:
        ``[..., H, d]``.

    The gather is made step by step from ``step_table(features, h)``, so a feature map that is a
    broadcast view over ``h`` (one-hot features) is never copied ``H`` times.
    """
    H, d = features.shape[0], features.shape[-1]
    out = np.empty((*states.shape[:-1], H, d))
    for h in range(H):
        rows = np.ravel_multi_index((states[..., h], *np.moveaxis(actions[..., h, :], -1, 0)), features.shape[1:-1])
        out[..., h, :] = step_table(features, h)[rows]
    return out


def step_table(features: np.ndarray, h: int) -> np.ndarray:
    """``psi_h`` as a ``[S * |A|, d]`` table (a view when ``features[h]`` is contiguous)."""
    return features[h].reshape(-1, features.shape[-1])


def _flat_indices(features: np.ndarray, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Row of ``features.reshape(-1, d)`` holding ``psi_h(s_h, a_h)``, shape ``[..., H]``."""
    H = features.shape[0]
    return np.ravel_multi_index((np.arange(H), states[..., :H], *np.moveaxis(actions, -1, 0)), features.shape[:-1])


def pair_differences(features: np.ndarray, dataset: PreferenceDataset, sl: slice = slice(None)) -> np.ndarray:
    """``D``: rows ``psi(tau_n) - psi(tau'_n)`` in R^{Hd} (block h is step h) for the pairs ``sl``; ``[n, Hd]``."""
    phi = step_features(features, dataset.states[sl], dataset.actions[sl])
    return (phi[:, 0] - phi[:, 1]).reshape(phi.shape[0], features.shape[0] * features.shape[-1])


def reward_gram(features: np.ndarray, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> RidgeGram:
    """``Sigma_r = lambda I + D^T D`` as a ``RidgeGram``: the ``N x Hd`` rows ``D`` when the Woodbury
    form is cheaper (``N`` small against ``Hd``), else ``D^T D`` accumulated over chunks of pairs."""
    lam = checked_lambda(lam)
    H, d = features.shape[0], features.shape[-1]
    if prefers_woodbury(dataset.n_pairs, H * d):
        return RidgeGram.from_rows(lam, pair_differences(features, dataset), d)
    gram = np.zeros((H * d, H * d))
    for start in range(0, dataset.n_pairs, CHUNK_PAIRS):
        diff = pair_differences(features, dataset, slice(start, start + CHUNK_PAIRS))
        gram += diff.T @ diff
    return RidgeGram.from_gram(lam, gram, d)


def reward_covariance(features: np.ndarray, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """``Sigma_r`` (Hd x Hd) as a dense array."""
    return reward_gram(features, dataset, lam).dense()


def visit_counts(features: np.ndarray, dataset: PreferenceDataset) -> np.ndarray:
    """``n_h(s, a)`` over both trajectories of every pair, shape ``[H, S * |A|]``."""
    H = features.shape[0]
    n_sa = int(np.prod(features.shape[1:-1]))
    flat = _flat_indices(features, dataset.states, dataset.actions).ravel()
    return np.bincount(flat, minlength=H * n_sa).reshape(H, n_sa).astype(np.float64)


def transition_grams(features: np.ndarray, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> list[RidgeGram]:
    """``Sigma_p[h] = lambda I + Psi_h^T diag(n_h) Psi_h`` per step: the visited rows ``sqrt(n_h) psi_h``
    (at most ``2N``), so the cost is one counting pass whatever the number of samples."""
    lam = checked_lambda(lam)
    counts = visit_counts(features, dataset)
    out = []
    for h in range(features.shape[0]):
        seen = np.flatnonzero(counts[h])
        rows = np.sqrt(counts[h, seen])[:, None] * step_table(features, h)[seen]
        out.append(RidgeGram.from_rows(lam, rows, features.shape[-1]))
    return out


def transition_covariances(features: np.ndarray, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """``Sigma_p[h]`` for every step, shape ``[H, d, d]``; both trajectories of a pair count."""
    return np.stack([g.dense() for g in transition_grams(features, dataset, lam)])


def _quadratic_forms(vectors: np.ndarray, spd: np.ndarray) -> np.ndarray:
    """``v^T spd^{-1} v`` for rows ``vectors[k, d]``, via a Cholesky factorisation."""
    factor = cho_factor(spd, lower=True)
    solved = cho_solve(factor, vectors.T)
    return np.maximum(np.einsum("kd,dk->k", vectors, solved), 0.0)


@dataclass(frozen=True)
class BonusTerms:
    """The two uncertainty terms, each shaped ``[H, S, A_1..A_m]``.

    Attributes:
        reward: ``||psibar_h(s, a)||_{Sigma_r^-1}``.
        transition: ``||psi(s, a)||_{Sigma_p[h]^-1}``.
    """

    reward: np.ndarray
    transition: np.ndarray

    def total(self, c_r: float = 1.0, c_p: float = 1.0) -> np.ndarray:
        """``C_r * reward + C_P * transition`` (the coverage bonus is ``c_r = c_p = 1``)."""
        return c_r * self.reward + c_p * self.transition


def bonus_terms(features: np.ndarray, sigma_r: np.ndarray, sigma_p: np.ndarray) -> BonusTerms:
    """Both uncertainty terms at every ``(h, s, a)`` from dense ``Sigma_r`` and ``Sigma_p``.

    ``||psibar_h||_{Sigma_r^-1}`` needs only block (h, h) of ``Sigma_r^{-1}``; the inverse is taken
    once by Cholesky and every quadratic form is a batched contraction.
    """
    H, d = features.shape[0], features.shape[-1]
    grid = features.shape[:-1]
    flat = features.reshape(H, -1, d)
    inv_r = cho_solve(cho_factor(sigma_r, lower=True), np.eye(H * d))
    blocks = inv_r.reshape(H, d, H, d)[np.arange(H), :, np.arange(H), :]
    r_quad = np.einsum("hkd,hde,hke->hk", flat, blocks, flat)
    p_quad = np.stack([_quadratic_forms(flat[h], sigma_p[h]) for h in range(H)])
    return BonusTerms(
        np.sqrt(np.maximum(r_quad, 0.0)).reshape(grid),
        np.sqrt(p_quad).reshape(grid),
    )


def reward_widths(features: np.ndarray, gram: RidgeGram, reference: np.ndarray | None = None) -> np.ndarray:
    """``||psibar_h(s, a) - cbar_h||_{Sigma_r^-1}`` at every ``(h, s, a)``, shape ``[H, S, A..]``.

    ``reference``: ``c[H, d]`` (None: 0, the paper's ``||psibar_h(s, a)||_{Sigma_r^-1}``).
    """
    H = features.shape[0]
    forms = [gram.block_forms(h, step_table(features, h), None if reference is None else reference[h]) for h in range(H)]
    return np.sqrt(np.stack(forms)).reshape(features.shape[:-1])


def transition_widths(features: np.ndarray, grams: list[RidgeGram]) -> np.ndarray:
    """``||psi_h(s, a)||_{Sigma_p[h]^-1}`` at every ``(h, s, a)``, shape ``[H, S, A..]``."""
    forms = [g.block_forms(0, step_table(features, h)) for h, g in enumerate(grams)]
    return np.sqrt(np.stack(forms)).reshape(features.shape[:-1])


def dataset_bonus(game: MarkovGame, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> BonusTerms:
    """The bonus terms of ``dataset`` under the feature map of ``game`` (one-hot if it has none)."""
    dataset.check_against(game)
    features = game_features(game)
    return BonusTerms(
        reward_widths(features, reward_gram(features, dataset, lam)), transition_widths(features, transition_grams(features, dataset, lam))
    )


def game_features(game: MarkovGame) -> np.ndarray:
    """``psi[H, S, A.., d]``: the game's features, or one-hot ones (a broadcast view over ``h``)."""
    if game.features is not None:
        return game.features
    shape = (game.n_states, *game.action_sizes)
    d = int(np.prod(shape))
    return np.broadcast_to(np.eye(d).reshape(*shape, d), (game.horizon, *shape, d))


def policy_uncertainty(game: MarkovGame, bonus: np.ndarray, policy: Policy) -> float:
    """``U_D(pi) = E_pi[sum_h bonus_h(s_h, a_h)]`` for a bonus tensor ``[H, S, A..]``."""
    values = evaluate_policy(game.transitions, bonus[:, None], policy)
    return float(values.V[0, 0, game.initial_state])


@dataclass(frozen=True)
class Coverage:
    """Definition 1 of the MARLHF paper, computed exactly.

    Attributes:
        lam: the ridge ``lambda``.
        single: ``U_D(pi*)``.
        unilateral: ``max_i max_{pi_i} U_D(pi_i, pi*_{-i})``.
        uniform: ``max_pi U_D(pi)``.
        per_player: ``max_{pi_i} U_D(pi_i, pi*_{-i})`` for each player, shape ``[m]``.
        worst_player: the maximising ``i``.
        worst_deviation: a maximising deviation ``pi_i[h, s, a_i]`` (deterministic).
    """

    lam: float
    single: float
    unilateral: float
    uniform: float
    per_player: np.ndarray
    worst_player: int
    worst_deviation: np.ndarray


def coverage_measures(game: MarkovGame, dataset: PreferenceDataset, policy: Policy, lam: float = DEFAULT_LAMBDA) -> Coverage:
    """Single, unilateral and uniform coverage of ``dataset`` around ``policy`` (Definition 1).

    Only the feature map, sizes, horizon and transitions of ``game`` are used: the expectation
    over ``pi`` is exact under the game's dynamics.
    """
    policy = check_policy(policy, game)
    return measures_from_bonus(game, dataset_bonus(game, dataset, lam).total(), policy, lam)


def measures_from_bonus(game: MarkovGame, bonus: np.ndarray, policy: Policy, lam: float = DEFAULT_LAMBDA) -> Coverage:
    """Definition 1 for a given bonus table ``bonus[h, s, a_1..a_m]``, by exact dynamic programming.

    Unilateral coverage is a best response of each player in the game whose reward is the
    bonus; uniform coverage is the optimum over joint policies of that game.
    """
    s1 = game.initial_state
    single = policy_uncertainty(game, bonus, policy)
    per_player = np.empty(game.n_players)
    deviations = []
    for i in range(game.n_players):
        br = best_response(game.transitions, bonus, policy, i)
        per_player[i] = br.values[0, s1]
        deviations.append(br.policy)
    worst = int(np.argmax(per_player))
    uniform = float(optimal_joint_values(game.transitions, bonus)[0, s1])
    return Coverage(float(lam), single, float(per_player[worst]), uniform, per_player, worst, deviations[worst])
