"""Least-squares value iteration of pessimistic SBSM (MARLHF paper, appendix A.2: Algorithms 2 and 3).

The algorithm sees the feature map ``psi``, the sizes, the horizon, the start state and the
preference dataset; nothing else (``GameSpec``).

For step ``h`` the samples are the steps ``(s_h^n, a_h^n, s_{h+1}^n)`` of both trajectories of every
pair, exactly those that form ``Sigma_p[h] = lambda I + sum_n psi_n psi_n^T``, and

    w_h      = Sigma_p[h]^{-1} sum_n psi_n [r(s_h^n, a_h^n) + V_{h+1}(s_{h+1}^n)]
    Q_under  = max{<psi, w_h> - C_P ||psi||_{Sigma_p[h]^-1}, 0}        (Algorithm 2, r = r_under)
    Q_bar    = min{<psi, w_h> + C_P ||psi||_{Sigma_p[h]^-1}, H}        (Algorithm 3, r = r_bar)
    V_under  = E_{a ~ pi_h} Q_under,   V_bar^dagger = max_{a_i} E_{a_-i ~ pi_{h,-i}} Q_bar.

As printed, Algorithm 2 clips only below (at 0) and Algorithm 3 only above (at ``H``, the full
horizon at every step); ``clip=False`` drops both clips. The regression is linear in the targets,
so ``w_h = Sigma_p^{-1} Phi^T (n_h * r_h) + M_h V_{h+1}`` with ``M_h = Sigma_p^{-1} sum_n psi_n e_{s'_n}^T``
(``d x S``): the samples enter once, through counts, and each backward pass costs
``O(H (S |A| d + d S m))`` whatever ``N``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.games import GameError, MarkovGame
from marlcov.theory.policies import Policy, joint_action_probs
from marlcov.theory.preferences import PreferenceDataset
from marlcov.theory.ridge_forms import RidgeGram, checked_lambda

from .estimation import DEFAULT_DELTA, RewardConfidence, feature_map


def transition_bonus_scale(d: int, horizon: int, n: int, delta: float = DEFAULT_DELTA, constant: float = 1.0) -> float:
    """``C_P = C d H sqrt(log(2 d N H / delta))`` (Lemma 6); ``N`` is the number of pairs."""
    if not 0 < delta < 1:
        raise ValueError(f"delta: expected a number in (0, 1), got {delta}")
    n_eff = max(int(n), 1)
    return float(constant * d * horizon * np.sqrt(np.log(2.0 * d * n_eff * horizon / delta)))


@dataclass(frozen=True)
class GameSpec:
    """What SBSM may see of a game: ``psi[h, s, a.., d]`` and the start state (sizes follow)."""

    features: np.ndarray
    initial_state: int

    @property
    def horizon(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_states(self) -> int:
        return int(self.features.shape[1])

    @property
    def action_sizes(self) -> tuple[int, ...]:
        return tuple(int(a) for a in self.features.shape[2:-1])

    @property
    def n_players(self) -> int:
        return len(self.action_sizes)

    @property
    def dim(self) -> int:
        return int(self.features.shape[-1])


def game_spec(game: MarkovGame) -> GameSpec:
    """The feature map (one-hot when the game has none) and start state of ``game``; nothing else."""
    return GameSpec(np.asarray(feature_map(game), dtype=np.float64), game.initial_state)


def _check_dataset(spec: GameSpec, dataset: PreferenceDataset) -> None:
    if dataset.horizon != spec.horizon or dataset.n_players != spec.n_players:
        raise GameError(
            f"actions: dataset has H = {dataset.horizon}, m = {dataset.n_players}; the game H = {spec.horizon}, m = {spec.n_players}"
        )
    if dataset.states.size and (dataset.states.min() < 0 or dataset.states.max() >= spec.n_states):
        raise GameError(f"states: expected indices in [0, {spec.n_states - 1}]")
    for i, a in enumerate(spec.action_sizes):
        col = dataset.actions[..., i]
        if col.size and (col.min() < 0 or col.max() >= a):
            raise GameError(f"actions: player {i}'s actions expected in [0, {a - 1}]")


@dataclass(frozen=True)
class RegressionModel:
    """The dataset's sufficient statistics for Algorithms 2 and 3.

    Attributes:
        features: ``psi`` as ``[H, S*|A|, d]`` (joint index ``s * |A| + a``; a view of the feature map).
        counts: ``n_h(s, a)`` over both trajectories of every pair, ``[H, S*|A|]``.
        grams: ``Sigma_p[h]`` as ``RidgeGram``s (the visited rows; Woodbury when cheaper).
        next_weights: ``M_h = Sigma_p[h]^{-1} sum_n psi_n e_{s'_n}^T``, ``[H, d, S]``.
        width: ``||psi_h(s, a)||_{Sigma_p[h]^-1}``, ``[H, S*|A|]``.
        action_sizes: ``(A_1..A_m)``.
    """

    features: np.ndarray
    counts: np.ndarray
    grams: tuple
    next_weights: np.ndarray
    width: np.ndarray
    action_sizes: tuple[int, ...]

    @property
    def n_states(self) -> int:
        return int(self.next_weights.shape[2])

    @property
    def sigma_p(self) -> np.ndarray:
        """``Sigma_p[h]`` as a dense ``[H, d, d]`` array."""
        return np.stack([g.dense() for g in self.grams])

    @property
    def sigma_p_inv(self) -> np.ndarray:
        """``Sigma_p[h]^{-1}`` as a dense ``[H, d, d]`` array."""
        d = self.features.shape[-1]
        return np.stack([g.solve(np.eye(d)) for g in self.grams])

    def width_table(self) -> np.ndarray:
        """``||psi_h(s, a)||_{Sigma_p[h]^-1}`` as ``[H, S, A_1..A_m]``."""
        return self.width.reshape(self.width.shape[0], self.n_states, *self.action_sizes)

    def reward_weights(self, rewards: np.ndarray) -> np.ndarray:
        """``Sigma_p[h]^{-1} sum_n psi_n r_{h,k}(s_h^n, a_h^n)`` for ``rewards[H, k, S, A..]``; ``[H, d, k]``."""
        H, k = rewards.shape[:2]
        targets = (rewards.reshape(H, k, -1) * self.counts[:, None]).transpose(0, 2, 1)
        return np.stack([g.solve(self.features[h].T @ targets[h]) for h, g in enumerate(self.grams)])


def regression_model(spec: GameSpec, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> RegressionModel:
    """Counts, ``Sigma_p``, ``M_h`` and the transition widths from the dataset (linear in ``N`` and ``H``).

    Only the visited rows of each step's feature table enter ``Sigma_p[h]``, and the table itself is
    read through views, so a one-hot feature map (``d = S |A|``) is never copied per step.
    """
    checked_lambda(lam)
    _check_dataset(spec, dataset)
    H, S, d = spec.horizon, spec.n_states, spec.dim
    sizes = spec.action_sizes
    n_joint = int(np.prod(sizes))
    n_sa = S * n_joint
    flat = spec.features.reshape(H, n_sa, d)
    joint = np.ravel_multi_index(tuple(np.moveaxis(dataset.actions, -1, 0)), sizes)  # [N, 2, H]
    sa = (dataset.states[:, :, :H] * n_joint + joint).transpose(2, 0, 1).reshape(H, -1)
    nxt = dataset.states[:, :, 1:].transpose(2, 0, 1).reshape(H, -1)
    counts = np.bincount((np.arange(H)[:, None] * n_sa + sa).ravel(), minlength=H * n_sa)
    counts = counts.reshape(H, n_sa).astype(np.float64)
    grams, next_w = [], np.empty((H, d, S))
    for h in range(H):
        seen = np.flatnonzero(counts[h])
        grams.append(RidgeGram.from_rows(lam, np.sqrt(counts[h, seen])[:, None] * flat[h][seen], d))
        # Transition counts (s' x (s, a)) of step h: O(N d) to apply.
        moves = sparse.csr_matrix((np.ones(sa.shape[1]), (nxt[h], sa[h])), shape=(S, n_sa))
        next_w[h] = grams[h].solve(np.asarray(moves @ flat[h]).T)
    width = np.stack([np.sqrt(g.block_forms(0, flat[h])) for h, g in enumerate(grams)])
    return RegressionModel(flat, counts, tuple(grams), next_w, width, sizes)


@dataclass(frozen=True)
class PessimisticValues:
    """Algorithm 2 for every player: ``V_under[h, i, s]`` (``V[H] = 0``), ``Q_under[h, i, s, a..]``."""

    V: np.ndarray
    Q: np.ndarray


@dataclass(frozen=True)
class OptimisticBestResponses:
    """Algorithm 3 for every player against ``pi_{-i}``.

    Attributes:
        V: ``V_bar^{dagger, pi_-i}[h, i, s]`` (``V[H] = 0``).
        Q: ``Q_bar[h, i, s, a..]``.
        q_marginal: per player ``E_{a_-i ~ pi_-i} Q_bar[h, s, a_i]``, ``[H, S, A_i]``.
        policy: per player the greedy (deterministic) best response ``[H, S, A_i]``.
    """

    V: np.ndarray
    Q: np.ndarray
    q_marginal: tuple[np.ndarray, ...]
    policy: tuple[np.ndarray, ...]


def pessimistic_values(
    model: RegressionModel, reward_weights: np.ndarray, policy: Policy, c_p: float, clip: bool = True
) -> PessimisticValues:
    """Algorithm 2 (pessimistic policy evaluation) for all players at once.

    Args:
        model: the dataset's statistics (``regression_model``).
        reward_weights: ``model.reward_weights(r_under)``, ``[H, d, m]``.
        policy: ``pi[i][h, s, a_i]``.
        c_p: the bonus scale ``C_P``.
        clip: clip ``Q`` below at 0 as printed.
    """
    H, _, m = reward_weights.shape
    S, sizes = model.n_states, model.action_sizes
    joint = joint_action_probs(policy).reshape(H, S, -1)
    V = np.zeros((H + 1, m, S))
    Q = np.empty((H, m, model.features.shape[1]))
    for h in range(H - 1, -1, -1):
        w = reward_weights[h] + model.next_weights[h] @ V[h + 1].T
        q = (model.features[h] @ w - c_p * model.width[h][:, None]).T
        Q[h] = np.maximum(q, 0.0) if clip else q
        V[h] = np.sum(Q[h].reshape(m, S, -1) * joint[h][None], axis=-1)
    return PessimisticValues(V, Q.reshape(H, m, S, *sizes))


def optimistic_best_responses(
    model: RegressionModel, reward_weights: np.ndarray, policy: Policy, c_p: float, clip: bool = True
) -> OptimisticBestResponses:
    """Algorithm 3 (optimistic best response) of every player ``i`` against ``pi_{-i}``.

    Args:
        model: the dataset's statistics.
        reward_weights: ``model.reward_weights(r_bar)``, ``[H, d, m]``.
        policy: ``pi``; player ``i``'s own entry is not used for player ``i``.
        c_p: the bonus scale ``C_P``.
        clip: clip ``Q`` above at ``H`` as printed.
    """
    H, _, m = reward_weights.shape
    S, sizes = model.n_states, model.action_sizes
    others = [joint_action_probs(policy, skip=i) for i in range(m)]
    V = np.zeros((H + 1, m, S))
    Q = np.empty((H, m, S, *sizes))
    marginals = [np.empty((H, S, a)) for a in sizes]
    for h in range(H - 1, -1, -1):
        w = reward_weights[h] + model.next_weights[h] @ V[h + 1].T
        q = (model.features[h] @ w + c_p * model.width[h][:, None]).T
        Q[h] = (np.minimum(q, float(H)) if clip else q).reshape(m, S, *sizes)
        for i in range(m):
            axes = tuple(1 + j for j in range(m) if j != i)
            marginals[i][h] = np.sum(Q[h, i] * others[i][h], axis=axes).reshape(S, sizes[i])
            V[h, i] = marginals[i][h].max(axis=1)
    greedy = tuple(np.eye(a)[np.argmax(mg, axis=2)] for a, mg in zip(sizes, marginals))
    return OptimisticBestResponses(V, Q, tuple(marginals), greedy)


@dataclass(frozen=True)
class SurrogateObjective:
    """Algorithm 4's objective ``pi -> sum_i [V_bar_{1,i}^{dagger, pi_-i}(s_1) - V_under_{1,i}^pi(s_1)]``."""

    model: RegressionModel
    weights_under: np.ndarray
    weights_bar: np.ndarray
    c_p: float
    clip: bool
    initial_state: int

    def per_player(self, policy: Policy) -> np.ndarray:
        """``V_bar_{1,i}^{dagger, pi_-i}(s_1) - V_under_{1,i}^pi(s_1)`` per player, ``[m]``."""
        low = pessimistic_values(self.model, self.weights_under, policy, self.c_p, self.clip)
        high = optimistic_best_responses(self.model, self.weights_bar, policy, self.c_p, self.clip)
        s1 = self.initial_state
        return high.V[0, :, s1] - low.V[0, :, s1]

    def __call__(self, policy: Policy) -> float:
        return float(self.per_player(policy).sum())


def surrogate_objective(
    spec: GameSpec, dataset: PreferenceDataset, confidence: RewardConfidence, c_p: float, lam: float = DEFAULT_LAMBDA, clip: bool = True
) -> SurrogateObjective:
    """The surrogate of Algorithm 4 built from the data and the reward confidence set."""
    model = regression_model(spec, dataset, lam)
    return SurrogateObjective(
        model, model.reward_weights(confidence.r_under), model.reward_weights(confidence.r_bar), float(c_p), bool(clip), spec.initial_state
    )
