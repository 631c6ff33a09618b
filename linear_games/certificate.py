"""A certified Nash-gap bound from the identifiable part of the reward, every constant stated.

Setting (the paper's Assumption 1 and Bradley-Terry model): ``r_{h,i}(s, a) = <psi_h(s, a), theta_{h,i}>``
in ``[0, 1]``, labels ``P(y_{n,i} = +1 | x_n) = sigma(<x_n, theta_i>)`` with ``x_n = psi(tau_n) - psi(tau'_n)``
(steepness 1), pairs drawn independently, and a known bound ``||theta_i|| <= B`` (the paper's class
``||theta_{h,i}|| <= sqrt(d)``, so ``B = sqrt(H d)`` by default).

Estimator: ridge MLE ``theta_hat_i = argmin sum_n log(1 + exp(-y_n <x_n, theta>)) + (lambda / 8) ||theta||^2``
(ridge ``lambda / 4`` in ``estimation.bradley_terry_mle_ridge``'s convention); started at 0 it stays
in ``V = span{x_n}``, the identifiable subspace.

Confidence radius (proved here, in the style of generalised linear bandits). Let ``theta*_i`` be
the component of ``theta_i`` in ``V`` (the likelihood sees nothing else), ``Delta = theta_hat_i - theta*_i``,
``Sigma_r = lambda I + sum_n x_n x_n^T``, and ``g`` the gradient of the objective at ``theta_hat_i``
(0 at an exact minimiser; its measured value is kept). By the mean-value theorem
``G Delta = S + g - (lambda / 4) theta*_i`` with ``S = sum_n (b_n - sigma(<x_n, theta*_i>)) x_n`` (``b_n = (1 + y_n) / 2``)
and ``G = sum_n alpha_n x_n x_n^T + (lambda / 4) I``, ``alpha_n >= kappa = sigma'(M)`` where
``M = max(H, max_n |<x_n, theta_hat_i>|)`` bounds ``|<x_n, .>|`` on the segment (``|<x_n, theta*_i>| <= H``
because rewards lie in [0, 1]). As ``kappa <= 1/4``, ``G >= kappa Sigma_r``, so
``kappa ||Delta||_{Sigma_r} <= ||S||_{Sigma_r^-1} + ||g||_{Sigma_r^-1} + (sqrt(lambda) / 4) B``. The noise
``b_n - sigma(.)`` lies in an interval of length 1 (1/2-sub-Gaussian), and the self-normalised bound
(Abbasi-Yadkori et al. 2011, Theorem 1) gives, with probability at least ``1 - delta / m``,
``||S||_{Sigma_r^-1} <= (1/2) sqrt(2 log(m / delta) + log det(Sigma_r / lambda))``. So, with probability at
least ``1 - delta`` jointly over the m players,

    ||theta_hat_i - theta*_i||_{Sigma_r} <= C_i = [ (1/2) sqrt(2 log(m/delta) + log det(Sigma_r/lambda))
                                                   + ||g||_2 / sqrt(lambda) + sqrt(lambda) B / 4 ] / kappa_i.

Rewards relative to a reference point ``c_h`` (an affine combination of step h's feature rows:
``theory.identifiable``), ``r^c = <psi_h - c_h, theta_{h,i}> = r - <c_h, theta_{h,i}>``, differ from ``r`` by a
constant per step, so every Nash gap is the same under ``r^c``; ``z = psi_h - c_h`` lies in ``V``, so on
the event ``|r^c - r_hat^c| <= C_i ||zbar||_{Sigma_r^-1}`` at every ``(h, s, a)`` (Cauchy-Schwarz).

Certificate of a policy ``pi`` (any policy: SBSM's output or not). With
``r_bar = r_hat^c + C_i w`` and ``r_under = r_hat^c - C_i w`` (``w = ||zbar||_{Sigma_r^-1}``) and the game's
transitions (read, as Theorem 4's bound reads them; with ``H = 1`` they play no part),

    Gap(pi) <= cert(pi) = sum_i [ max_{pi_i} V_i^{r_bar}(pi_i, pi_-i) - V_i^{r_under}(pi) ]   on the event,

because values are monotone in the reward. And ``cert(pi) <= Gap(pi) + sum_i 2 C_i [U(pi) + max_{pi_i}
U(pi_i, pi_-i)]`` with ``U(pi) = E_pi[sum_h w]``, the identifiable reward coverage; at an equilibrium
``pi*`` this is ``coverage_bound``, which bounds ``cert(pi_out)`` whenever ``pi_out`` minimises ``cert``
over a class that holds ``pi*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from marlcov.theory.coverage import DEFAULT_LAMBDA, game_features, pair_differences, reward_gram, reward_widths
from marlcov.theory.games import GameError, MarkovGame
from marlcov.theory.identifiable import dataset_reference, identifiable_basis
from marlcov.theory.policies import Policy, check_policy
from marlcov.theory.preferences import PreferenceDataset
from marlcov.theory.ridge_forms import RidgeGram
from marlcov.theory.values import best_response, evaluate_policy

from .estimation import DEFAULT_DELTA, bradley_terry_mle_ridge

#: Range of a per-step mean reward (the game format's [0, 1]): ``|<x_n, theta_i>| <= H * REWARD_RANGE``.
REWARD_RANGE = 1.0

#: The estimator's ridge, as a fraction of ``lambda`` (``estimation``'s convention ``ridge/2 ||theta||^2``):
#: any value at most ``lambda / 4`` keeps ``G >= kappa Sigma_r``, since ``kappa <= 1/4``.
RIDGE_FRACTION = 0.25


def logistic_curvature(margin: float) -> float:
    """``kappa = sigma'(M) = sigma(M) (1 - sigma(M))``, the smallest slope of ``sigma`` on ``[-M, M]``."""
    return float(expit(margin) * expit(-margin))


@dataclass(frozen=True)
class RadiusTerms:
    """The constants of ``C_i`` (module docstring), per player where they differ.

    Attributes:
        delta: the failure probability, over all players together.
        lam: ``lambda``.
        theta_norm_bound: ``B``.
        log_det: ``log det(Sigma_r / lambda)``.
        noise: ``(1/2) sqrt(2 log(m / delta) + log_det)``.
        residual: ``||g_i||_2 / sqrt(lambda)``, ``[m]``.
        bias: ``sqrt(lambda) B / 4``.
        margin: ``M_i``, ``[m]``.
        kappa: ``sigma'(M_i)``, ``[m]``.
    """

    delta: float
    lam: float
    theta_norm_bound: float
    log_det: float
    noise: float
    residual: np.ndarray
    bias: float
    margin: np.ndarray
    kappa: np.ndarray

    @property
    def radii(self) -> np.ndarray:
        return (self.noise + self.residual + self.bias) / self.kappa

    def as_dict(self) -> dict:
        return {
            "delta": self.delta,
            "lambda": self.lam,
            "theta_norm_bound": self.theta_norm_bound,
            "log_det": self.log_det,
            "noise": self.noise,
            "residual": self.residual.tolist(),
            "bias": self.bias,
            "margin": self.margin.tolist(),
            "kappa": self.kappa.tolist(),
            "radius": self.radii.tolist(),
        }


@dataclass(frozen=True)
class IdentifiableConfidence:
    """The confidence set on the identifiable part of every ``theta_i`` and the rewards it bounds.

    Attributes:
        theta_hat: ``[H, m, d]``.
        reference: ``c[H, d]``.
        terms: the constants of the radii.
        width: ``||zbar_h(s, a)||_{Sigma_r^-1}``, ``[H, S, A..]``.
        r_hat: ``<psi_h(s, a) - c_h, theta_hat_{h,i}>``, ``[H, m, S, A..]``.
        gram: ``Sigma_r``.
    """

    theta_hat: np.ndarray
    reference: np.ndarray
    terms: RadiusTerms
    width: np.ndarray
    r_hat: np.ndarray
    gram: RidgeGram

    @property
    def radii(self) -> np.ndarray:
        return self.terms.radii

    @property
    def radius(self) -> float:
        """``max_i C_i``: one radius valid for every player."""
        return float(self.radii.max())

    def _scaled_width(self) -> np.ndarray:
        shape = (1, -1) + (1,) * (self.width.ndim - 1)
        return self.radii.reshape(shape) * self.width[:, None]

    @property
    def r_bar(self) -> np.ndarray:
        return self.r_hat + self._scaled_width()

    @property
    def r_under(self) -> np.ndarray:
        return self.r_hat - self._scaled_width()

    def distance(self, theta: np.ndarray, features: np.ndarray) -> np.ndarray:
        """``||theta_hat_i - P_V theta_i||_{Sigma_r}`` per player for ``theta[h, i, d]`` (``P_V`` by an explicit basis)."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != self.theta_hat.shape:
            raise GameError(f"theta: expected shape {list(self.theta_hat.shape)}, got {list(theta.shape)}")
        basis = identifiable_basis(features)
        m = theta.shape[1]
        flat = theta.transpose(1, 0, 2).reshape(m, -1)
        projected = (flat @ basis) @ basis.T
        diff = self.theta_hat.transpose(1, 0, 2).reshape(m, -1) - projected
        return np.sqrt(self.gram.norm_squared(diff))

    def contains(self, theta: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Whether the event of the radius holds for each player, ``[m]``."""
        return self.distance(theta, features) <= self.radii


def identifiable_confidence(
    features: np.ndarray,
    dataset: PreferenceDataset,
    delta: float = DEFAULT_DELTA,
    lam: float = DEFAULT_LAMBDA,
    theta_norm_bound: float | None = None,
    reference: np.ndarray | None = None,
) -> IdentifiableConfidence:
    """The ridge MLE, the radii ``C_i`` with their constants, and the identifiable widths.

    Args:
        features: ``psi[h, s, a.., d]``.
        dataset: the preference pairs.
        delta: failure probability over all players.
        lam: ``lambda`` of ``Sigma_r``.
        theta_norm_bound: ``B >= ||theta_i||`` (default ``sqrt(H d)``, the paper's class).
        reference: ``c[H, d]`` (default: the dataset's mean feature per step, ``dataset_reference``).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta: expected a number in (0, 1), got {delta}")
    H, d = features.shape[0], features.shape[-1]
    m = dataset.n_players
    bound = float(np.sqrt(H * d)) if theta_norm_bound is None else float(theta_norm_bound)
    if not (np.isfinite(bound) and bound >= 0):
        raise ValueError(f"theta_norm_bound: expected a non-negative number, got {theta_norm_bound}")
    gram = reward_gram(features, dataset, lam)
    diffs = pair_differences(features, dataset)
    ridge = RIDGE_FRACTION * gram.lam
    theta_hat = np.empty((H, m, d))
    residual, margin = np.empty(m), np.empty(m)
    for i in range(m):
        y = dataset.prefs[:, i].astype(np.float64)
        theta = bradley_terry_mle_ridge(diffs, dataset.prefs[:, i], ridge)
        z = diffs @ theta
        grad = diffs.T @ (expit(z) - 0.5 * (1.0 + y)) + ridge * theta
        residual[i] = float(np.linalg.norm(grad)) / np.sqrt(gram.lam)
        margin[i] = max(H * REWARD_RANGE, float(np.max(np.abs(z))) if z.size else 0.0)
        theta_hat[:, i] = theta.reshape(H, d)
    log_det = gram.log_det_ratio()
    terms = RadiusTerms(
        float(delta),
        gram.lam,
        bound,
        log_det,
        0.5 * float(np.sqrt(2.0 * np.log(m / delta) + log_det)),
        residual,
        0.25 * np.sqrt(gram.lam) * bound,
        margin,
        np.array([logistic_curvature(M) for M in margin]),
    )
    c = dataset_reference(features, dataset) if reference is None else np.asarray(reference, dtype=np.float64)
    width = reward_widths(features, gram, c)
    r_hat = np.einsum("h...d,hid->hi...", features, theta_hat) - np.einsum("hd,hid->hi", c, theta_hat).reshape(
        H, m, *([1] * (features.ndim - 2))
    )
    return IdentifiableConfidence(theta_hat, c, terms, width, r_hat, gram)


@dataclass(frozen=True)
class Certificate:
    """``cert(pi)`` and its parts.

    Attributes:
        value: ``sum_i [max_{pi_i} V_i^{r_bar}(pi_i, pi_-i) - V_i^{r_under}(pi)]``.
        per_player: the terms, ``[m]``.
        delta: the probability ``1 - delta`` with which ``Gap(pi) <= value``.
    """

    value: float
    per_player: np.ndarray
    delta: float


def nash_gap_certificate(game: MarkovGame, confidence: IdentifiableConfidence, policy: Policy) -> Certificate:
    """``cert(pi)`` (module docstring), exact by dynamic programming under the game's transitions."""
    policy = check_policy(policy, game)
    s1 = game.initial_state
    low = evaluate_policy(game.transitions, confidence.r_under, policy).V[0, :, s1]
    high = np.array([best_response(game.transitions, confidence.r_bar[:, i], policy, i).values[0, s1] for i in range(game.n_players)])
    per = high - low
    return Certificate(float(per.sum()), per, confidence.terms.delta)


def coverage_bound(game: MarkovGame, confidence: IdentifiableConfidence, policy: Policy) -> float:
    """``sum_i 2 C_i [U(pi) + max_{pi_i} U(pi_i, pi_-i)]`` with ``U`` the identifiable reward coverage
    of the confidence set's widths: at an equilibrium ``pi*``, a bound on ``cert(pi*)``."""
    policy = check_policy(policy, game)
    s1 = game.initial_state
    w = confidence.width
    at = float(evaluate_policy(game.transitions, w[:, None], policy).V[0, 0, s1])
    dev = np.array([best_response(game.transitions, w, policy, i).values[0, s1] for i in range(game.n_players)])
    return float(np.sum(2.0 * confidence.radii * (at + dev)))


def game_confidence(game: MarkovGame, dataset: PreferenceDataset, **kwargs) -> IdentifiableConfidence:
    """``identifiable_confidence`` on the game's feature map (one-hot when it has none)."""
    dataset.check_against(game)
    return identifiable_confidence(game_features(game), dataset, **kwargs)
