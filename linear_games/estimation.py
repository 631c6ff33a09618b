"""Reward estimation from preferences and its confidence set (MARLHF paper, appendix A.2, Lemma 5).

For each player ``i`` the reward is linear, ``r_{h,i}(s, a) = <psi_h(s, a), theta_{h,i}>``, and a
trajectory's return is ``<psi(tau), theta_i>`` with ``theta_i = [theta_{1,i} .. theta_{H,i}]`` in
R^{Hd}. With ``x_n = psi(tau_n) - psi(tau'_n)`` and labels ``y_n`` in {+1, -1},
``P(y_n = +1) = sigma(<x_n, theta_i>)`` and the MLE of appendix A.2 is

    theta_hat_i = argmin_{||theta_h|| <= sqrt(d) for all h}  sum_n log(1 + exp(-y_n <x_n, theta>)),

a convex program (solved with cvxpy). ``method="ridge"`` solves the unconstrained
``sum_n log(1 + exp(-y_n <x_n, theta>)) + ridge/2 ||theta||^2`` by L-BFGS with the analytic gradient.

Confidence set (Lemma 5 as used in appendix A.2):

    Theta = {theta : ||theta - theta_hat||_{Sigma_r} <= C_r},
    C_r   = C * sqrt((dH + log(1/delta)) / (lambda^2 n) + d),

and the optimistic / pessimistic rewards are the maximum / minimum of a linear function over an
ellipsoid, in closed form:

    r_bar_h(s, a)   = <psi_h(s, a), theta_hat_h> + C_r ||psibar_h(s, a)||_{Sigma_r^-1},
    r_under_h(s, a) = <psi_h(s, a), theta_hat_h> - C_r ||psibar_h(s, a)||_{Sigma_r^-1}.

Conventions (recorded, not hidden):

- ``Sigma_r`` contains ``lambda I`` once (docs/formats.md); the appendix writes ``Sigma_r + lambda I``
  with a ``Sigma_r`` that already holds ``lambda I``, i.e. ``2 lambda I``. With the convention here,
  the paper's double ``lambda`` is the special case ``lam -> 2 lam`` in ``Sigma_r`` only.
- ``C`` is an explicit constant (default 1); the paper leaves it unspecified.
- The radius is the printed formula. Lemma 5 comes from Zhu et al., whose covariance is normalised
  by ``n`` and whose bound carries ``1/gamma^2`` (the logistic curvature); with the unnormalised
  ``Sigma_r`` used here the ``1/n`` should not be there and the constant must absorb
  ``1/gamma``. The check ``marlhf.lemma5_radius`` measures how often the true
  ``theta`` lies in the set for a given ``C``: with ``C = 1`` the set is too small.
- Rewards are not clipped to [0, 1]: the algorithm as printed does not clip them.
- Preferences identify returns only up to a constant per step whenever the constant function lies
  in the span of the features (one-hot and simplex features): ``sum_h c_h <psi_h, 1>`` is the same
  for every trajectory, so ``theta_hat`` is unique only up to that *gauge*. The constrained MLE
  returns one point of the optimal set (the solver's), and ``||psibar_h||_{Sigma_r^-1}`` never falls
  below ``|<psi_h, g>| / sqrt(lambda)`` along a unit gauge direction ``g``, however large ``n``.
  ``linear_games.certificate`` builds the confidence set on the identifiable part of ``theta``
  instead, with a radius proved with every constant stated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from scipy.optimize import minimize

from marlcov.theory.coverage import DEFAULT_LAMBDA, reward_gram, reward_widths, step_features
from marlcov.theory.games import GameError, MarkovGame
from marlcov.theory.preferences import PreferenceDataset
from marlcov.theory.ridge_forms import RidgeGram
from marlcov.theory.tolerances import NORM_RTOL

DEFAULT_DELTA = 0.1

#: Default ridge of the unconstrained MLE (``method="ridge"``).
DEFAULT_RIDGE = 1e-6

#: Gradient tolerance of the L-BFGS solve of the ridge MLE.
RIDGE_GTOL = 1e-10

#: Solver of the constrained MLE (exponential cones).
MLE_SOLVER = cp.CLARABEL


def one_hot_features(n_states: int, action_sizes: tuple[int, ...], horizon: int) -> np.ndarray:
    """``psi_h(s, a) = e_{(s, a)}`` with ``d = S * prod(A_i)``, shape ``[H, S, A_1..A_m, d]``."""
    shape = (n_states, *action_sizes)
    d = int(np.prod(shape))
    return np.broadcast_to(np.eye(d).reshape(*shape, d), (horizon, *shape, d))


def feature_map(game: MarkovGame) -> np.ndarray:
    """The game's ``psi[h, s, a.., d]``, or one-hot features built from its sizes alone."""
    if game.features is not None:
        return game.features
    return one_hot_features(game.n_states, game.action_sizes, game.horizon)


def trajectory_feature_differences(features: np.ndarray, dataset: PreferenceDataset) -> np.ndarray:
    """``x_n = psi(tau_n) - psi(tau'_n)`` in R^{Hd} (block h is step h), shape ``[N, H*d]``."""
    H, d = features.shape[0], features.shape[-1]
    if dataset.horizon != H:
        raise GameError(f"actions: dataset horizon {dataset.horizon} differs from the features' H = {H}")
    phi = step_features(features, dataset.states, dataset.actions)
    return (phi[:, 0] - phi[:, 1]).reshape(-1, H * d)


def _weighted_rows(diffs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-zero rows of ``y_n x_n`` with their multiplicities: the NLL depends on ``y_n x_n``
    only, and a zero row (two trajectories with equal features) adds the constant ``log 2``."""
    signed = diffs * labels[:, None].astype(np.float64)
    signed = signed[np.any(signed != 0.0, axis=1)]
    if signed.shape[0] == 0:
        return signed, np.zeros(0)
    rows, counts = np.unique(signed, axis=0, return_counts=True)
    return rows, counts.astype(np.float64)


def bradley_terry_mle_constrained(diffs: np.ndarray, labels: np.ndarray, horizon: int, radius: float) -> np.ndarray:
    """Constrained Bradley-Terry MLE of one player (appendix A.2): ``||theta_h|| <= radius`` per step.

    Args:
        diffs: ``x_n`` rows, shape ``[N, H*d]``.
        labels: ``y_n`` in {+1, -1}, shape ``[N]``.
        horizon: ``H`` (the blocks of ``theta``).
        radius: the norm bound, ``sqrt(d)`` in the paper.
    Returns:
        ``theta_hat`` of shape ``[H*d]`` (one point of the optimal set when it is not unique).

    Along unidentified (gauge) directions the objective is flat and the solver may report its
    answer as "optimal, inaccurate"; that answer is accepted (its warning silenced).
    """
    rows, weights = _weighted_rows(diffs, labels)
    dim = diffs.shape[1]
    d = dim // horizon
    if rows.shape[0] == 0:
        return np.zeros(dim)
    theta = cp.Variable(dim)
    objective = cp.sum(cp.multiply(weights, cp.logistic(-(rows @ theta))))
    constraints = [cp.norm(theta[h * d : (h + 1) * d]) <= radius for h in range(horizon)]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    if not problem.is_dcp():
        raise RuntimeError("the Bradley-Terry MLE was not recognised as a convex program")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
        problem.solve(solver=MLE_SOLVER)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or theta.value is None:
        raise RuntimeError(f"the constrained MLE did not solve: status {problem.status}")
    return np.asarray(theta.value, dtype=np.float64)


def bradley_terry_mle_ridge(diffs: np.ndarray, labels: np.ndarray, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Unconstrained ridge MLE of one player, ``NLL(theta) + ridge/2 ||theta||^2``, by L-BFGS.

    The gradient is ``-sum_n w_n sigma(-z_n) y_n x_n + ridge * theta`` with ``z_n = y_n <x_n, theta>``.
    With ``ridge = 0`` the minimiser exists only when the labels are not separable.
    """
    if ridge < 0:
        raise ValueError(f"ridge: expected a non-negative number, got {ridge}")
    rows, weights = _weighted_rows(diffs, labels)
    dim = diffs.shape[1]
    if rows.shape[0] == 0:
        return np.zeros(dim)

    def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = rows @ theta
        value = float(weights @ np.logaddexp(0.0, -z)) + 0.5 * ridge * float(theta @ theta)
        sig = np.exp(-np.logaddexp(0.0, z))  # sigma(-z), stable for large |z|
        return value, -(rows.T @ (weights * sig)) + ridge * theta

    result = minimize(
        value_and_grad, np.zeros(dim), jac=True, method="L-BFGS-B", options={"gtol": RIDGE_GTOL, "ftol": 0.0, "maxiter": 10_000}
    )
    return np.asarray(result.x, dtype=np.float64)


def reward_mle(
    features: np.ndarray,
    dataset: PreferenceDataset,
    method: str = "constrained",
    ridge: float = DEFAULT_RIDGE,
    radius: float | None = None,
) -> np.ndarray:
    """``theta_hat[h, i, d]`` for every player from the preference labels.

    Args:
        features: ``psi[h, s, a.., d]``.
        dataset: the preference dataset.
        method: ``"constrained"`` (cvxpy, ``||theta_h|| <= radius``) or ``"ridge"`` (scipy).
        ridge: the ridge of ``method="ridge"``.
        radius: the per-step norm bound; default ``sqrt(d)``.
    """
    H, d = features.shape[0], features.shape[-1]
    diffs = trajectory_feature_differences(features, dataset)
    radius = float(np.sqrt(d)) if radius is None else float(radius)
    out = np.empty((H, dataset.n_players, d))
    for i in range(dataset.n_players):
        labels = dataset.prefs[:, i]
        if method == "constrained":
            theta = bradley_terry_mle_constrained(diffs, labels, H, radius)
        elif method == "ridge":
            theta = bradley_terry_mle_ridge(diffs, labels, ridge)
        else:
            raise ValueError(f"method: expected 'constrained' or 'ridge', got {method!r}")
        out[:, i] = theta.reshape(H, d)
    return out


def confidence_radius(
    d: int, horizon: int, n: int, delta: float = DEFAULT_DELTA, lam: float = DEFAULT_LAMBDA, constant: float = 1.0
) -> float:
    """``C_r = C sqrt((dH + log(1/delta)) / (lambda^2 n) + d)`` (appendix A.2); ``n`` pairs."""
    if not 0 < delta < 1:
        raise ValueError(f"delta: expected a number in (0, 1), got {delta}")
    if lam <= 0 or constant <= 0:
        raise ValueError(f"lam and constant: expected positive numbers, got {lam}, {constant}")
    n_eff = max(int(n), 1)
    return float(constant * np.sqrt((d * horizon + np.log(1.0 / delta)) / (lam**2 * n_eff) + d))


@dataclass(frozen=True)
class RewardConfidence:
    """The MLE, the confidence set ``Theta`` and the optimistic / pessimistic rewards.

    Attributes:
        theta_hat: ``[H, m, d]``.
        gram: ``Sigma_r`` (``lambda I`` once) as a ``RidgeGram`` (never dense when the Woodbury form is cheaper).
        radius: ``C_r``.
        width: ``||psibar_h(s, a)||_{Sigma_r^-1}``, shape ``[H, S, A..]``.
        r_hat: ``<psi_h(s, a), theta_hat_{h,i}>``, shape ``[H, m, S, A..]``.
    """

    theta_hat: np.ndarray
    gram: RidgeGram
    radius: float
    width: np.ndarray
    r_hat: np.ndarray

    @property
    def sigma_r(self) -> np.ndarray:
        """``Sigma_r`` as a dense ``Hd x Hd`` array."""
        return self.gram.dense()

    @property
    def r_bar(self) -> np.ndarray:
        """``max_{theta in Theta} <psibar_h(s, a), theta>``, shape ``[H, m, S, A..]``."""
        return self.r_hat + self.radius * self.width[:, None]

    @property
    def r_under(self) -> np.ndarray:
        """``min_{theta in Theta} <psibar_h(s, a), theta>``, shape ``[H, m, S, A..]``."""
        return self.r_hat - self.radius * self.width[:, None]

    def distance(self, theta: np.ndarray) -> np.ndarray:
        """``||theta_i - theta_hat_i||_{Sigma_r}`` per player for ``theta[h, i, d]``; shape ``[m]``."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != self.theta_hat.shape:
            raise GameError(f"theta: expected shape {list(self.theta_hat.shape)}, got {list(theta.shape)}")
        diff = (theta - self.theta_hat).transpose(1, 0, 2).reshape(theta.shape[1], -1)
        return np.sqrt(self.gram.norm_squared(diff))

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Whether each player's ``theta_i`` lies in ``Theta`` (up to ``NORM_RTOL`` of the
        radius, the rounding of the norm); shape ``[m]``."""
        return self.distance(theta) <= self.radius * (1.0 + NORM_RTOL)


def reward_confidence(
    features: np.ndarray,
    dataset: PreferenceDataset,
    delta: float = DEFAULT_DELTA,
    lam: float = DEFAULT_LAMBDA,
    c_r: float | None = None,
    constant: float = 1.0,
    method: str = "constrained",
    ridge: float = DEFAULT_RIDGE,
) -> RewardConfidence:
    """MLE and confidence set of every player (appendix A.2, Lemma 5).

    Args:
        features: ``psi[h, s, a.., d]``.
        dataset: the preference dataset.
        delta: failure probability of the confidence set.
        lam: the ridge ``lambda`` in ``Sigma_r``.
        c_r: the radius ``C_r``; default ``confidence_radius(d, H, n, delta, lam, constant)``.
        constant: the unspecified constant ``C`` of the radius.
        method, ridge: the MLE (see ``reward_mle``).
    """
    H, d = features.shape[0], features.shape[-1]
    theta_hat = reward_mle(features, dataset, method, ridge)
    gram = reward_gram(features, dataset, lam)
    if c_r is None:
        c_r = confidence_radius(d, H, dataset.n_pairs, delta, lam, constant)
    elif not np.isfinite(c_r) or c_r < 0:
        raise ValueError(f"c_r: expected a non-negative number, got {c_r}")
    r_hat = np.einsum("h...d,hid->hi...", features, theta_hat)
    return RewardConfidence(theta_hat, gram, float(c_r), reward_widths(features, gram), r_hat)
