"""Pessimistic SBSM for linear Markov games (MARLHF paper, appendix A.2: Algorithms 2, 3, 4, Theorem 4).

The algorithm sees the feature map ``psi``, the sizes, the horizon, the start state and the
preference dataset; nothing else. ``sbsm`` takes a ``MarkovGame`` for convenience and reads only
those fields from it (its rewards and transitions are never touched; ``sbsm_json`` and
``theorem4_bound`` read them afterwards to report the true Nash gap and the bound).

Least-squares value iteration (Algorithms 2 and 3). For step ``h`` the samples are the steps
``(s_h^n, a_h^n, s_{h+1}^n)`` of both trajectories of every pair, exactly those that form
``Sigma_p[h] = lambda I + sum_n psi_n psi_n^T``, and

    w_h      = Sigma_p[h]^{-1} sum_n psi_n [r(s_h^n, a_h^n) + V_{h+1}(s_{h+1}^n)]
    Q_under  = max{<psi, w_h> - C_P ||psi||_{Sigma_p[h]^-1}, 0}        (Algorithm 2, r = r_under)
    Q_bar    = min{<psi, w_h> + C_P ||psi||_{Sigma_p[h]^-1}, H}        (Algorithm 3, r = r_bar)
    V_under  = E_{a ~ pi_h} Q_under,   V_bar^dagger = max_{a_i} E_{a_-i ~ pi_{h,-i}} Q_bar.

As printed, Algorithm 2 clips only below (at 0) and Algorithm 3 only above (at ``H``, the full
horizon at every step); ``clip=False`` drops both clips. The regression is linear in the targets,
so ``w_h = Sigma_p^{-1} Phi^T (n_h * r_h) + M_h V_{h+1}`` with ``M_h = Sigma_p^{-1} sum_n psi_n e_{s'_n}^T``
(``d x S``): the samples enter once, through counts, and each backward pass costs
``O(H (S |A| d + d S m))`` whatever ``N``.

Algorithm 4 minimises the surrogate ``sum_i [V_bar_{1,i}^{dagger, pi_-i}(s_1) - V_under_{1,i}^pi(s_1)]``:

- over a finite class (all deterministic Markov policies, or a user list): exact, by enumeration;
- over mixed product policies: for one-step two-player games exactly (``one_step_minimum``), and
  otherwise by a local method (L-BFGS on softmax logits with restarts), reported as not exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.games import GameError, MarkovGame, check_distribution
from marlcov.theory.policies import Policy, check_policy, joint_action_probs
from marlcov.theory.preferences import PreferenceDataset
from marlcov.theory.tolerances import PIVOT_ATOL, VALUE_ATOL
from marlcov.theory.values import best_response, evaluate_policy, nash_gap

from .estimation import DEFAULT_DELTA, DEFAULT_RIDGE, RewardConfidence, feature_map, reward_confidence

#: Largest deterministic policy class enumerated by ``policy_class="deterministic"``.
MAX_ENUMERATED_POLICIES = 50_000

#: Restarts of the local method over mixed policies (the first starts at the uniform policy).
DEFAULT_RESTARTS = 8

#: Iteration cap of each local L-BFGS run.
LOCAL_MAXITER = 300

#: Standard deviation of the random softmax logits that start the local restarts.
LOCAL_INIT_SCALE = 2.0

#: A candidate vertex may violate its region's inequalities by this much (relative to the payoffs).
VERTEX_ATOL = 1e-11


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
            f"actions: dataset has H = {dataset.horizon}, m = {dataset.n_players}; "
            f"the game H = {spec.horizon}, m = {spec.n_players}"
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
        features: ``psi`` flattened to ``[H, S*|A|, d]`` (joint index ``s * |A| + a``).
        counts: ``n_h(s, a)`` over both trajectories of every pair, ``[H, S*|A|]``.
        sigma_p: ``Sigma_p[h]``, ``[H, d, d]``.
        sigma_p_inv: ``Sigma_p[h]^{-1}``, ``[H, d, d]``.
        next_weights: ``M_h = Sigma_p[h]^{-1} sum_n psi_n e_{s'_n}^T``, ``[H, d, S]``.
        width: ``||psi_h(s, a)||_{Sigma_p[h]^-1}``, ``[H, S*|A|]``.
        action_sizes: ``(A_1..A_m)``.
    """

    features: np.ndarray
    counts: np.ndarray
    sigma_p: np.ndarray
    sigma_p_inv: np.ndarray
    next_weights: np.ndarray
    width: np.ndarray
    action_sizes: tuple[int, ...]

    @property
    def n_states(self) -> int:
        return int(self.next_weights.shape[2])

    def width_table(self) -> np.ndarray:
        """``||psi_h(s, a)||_{Sigma_p[h]^-1}`` as ``[H, S, A_1..A_m]``."""
        return self.width.reshape(self.width.shape[0], self.n_states, *self.action_sizes)

    def reward_weights(self, rewards: np.ndarray) -> np.ndarray:
        """``Sigma_p[h]^{-1} sum_n psi_n r_{h,k}(s_h^n, a_h^n)`` for ``rewards[H, k, S, A..]``; ``[H, d, k]``."""
        H, k = rewards.shape[:2]
        targets = (rewards.reshape(H, k, -1) * self.counts[:, None]).transpose(0, 2, 1)
        return np.matmul(self.sigma_p_inv, np.matmul(self.features.transpose(0, 2, 1), targets))


def regression_model(spec: GameSpec, dataset: PreferenceDataset, lam: float = DEFAULT_LAMBDA) -> RegressionModel:
    """Counts, ``Sigma_p``, ``M_h`` and the transition widths from the dataset (linear in ``N`` and ``H``)."""
    if not np.isfinite(lam) or lam <= 0:
        raise GameError(f"lambda: expected a positive number, got {lam}")
    _check_dataset(spec, dataset)
    H, S, d = spec.horizon, spec.n_states, spec.dim
    sizes = spec.action_sizes
    n_joint = int(np.prod(sizes))
    n_sa = S * n_joint
    flat = np.ascontiguousarray(spec.features.reshape(H, n_sa, d))
    joint = np.ravel_multi_index(tuple(np.moveaxis(dataset.actions, -1, 0)), sizes)  # [N, 2, H]
    sa = (dataset.states[:, :, :H] * n_joint + joint).transpose(2, 0, 1).reshape(H, -1)
    nxt = dataset.states[:, :, 1:].transpose(2, 0, 1).reshape(H, -1)
    counts = np.bincount((np.arange(H)[:, None] * n_sa + sa).ravel(), minlength=H * n_sa)
    counts = counts.reshape(H, n_sa).astype(np.float64)
    weighted = flat * counts[..., None]
    sigma = lam * np.eye(d) + np.matmul(weighted.transpose(0, 2, 1), flat)
    sigma_inv = np.linalg.inv(sigma)
    sigma_inv = 0.5 * (sigma_inv + sigma_inv.transpose(0, 2, 1))
    # One sparse matrix of transition counts (h, s') x (h, s, a) for all steps: O(N H d) to apply.
    steps = np.repeat(np.arange(H), sa.shape[1])
    transitions = sparse.csr_matrix(
        (np.ones(sa.size), ((steps * S + nxt.ravel()), (steps * n_sa + sa.ravel()))), shape=(H * S, H * n_sa)
    )
    moments = np.asarray(transitions @ flat.reshape(H * n_sa, d)).reshape(H, S, d)
    next_w = np.matmul(sigma_inv, moments.transpose(0, 2, 1))
    width = np.sqrt(np.maximum(np.sum(np.matmul(flat, sigma_inv) * flat, axis=-1), 0.0))
    return RegressionModel(flat, counts, sigma, sigma_inv, next_w, width, sizes)


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


def pessimistic_values(model: RegressionModel, reward_weights: np.ndarray, policy: Policy,
                       c_p: float, clip: bool = True) -> PessimisticValues:
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


def optimistic_best_responses(model: RegressionModel, reward_weights: np.ndarray, policy: Policy,
                              c_p: float, clip: bool = True) -> OptimisticBestResponses:
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


def surrogate_objective(spec: GameSpec, dataset: PreferenceDataset, confidence: RewardConfidence, c_p: float,
                        lam: float = DEFAULT_LAMBDA, clip: bool = True) -> SurrogateObjective:
    """The surrogate of Algorithm 4 built from the data and the reward confidence set."""
    model = regression_model(spec, dataset, lam)
    return SurrogateObjective(model, model.reward_weights(confidence.r_under), model.reward_weights(confidence.r_bar),
                              float(c_p), bool(clip), spec.initial_state)


# --- minimisers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySearch:
    """A minimiser's answer: the policy, its surrogate value, and what is certified about it.

    Attributes:
        policy: the minimising product policy.
        value: its surrogate value.
        exact: whether ``value`` is the minimum over the searched class.
        lower_bound: a certified lower bound on the minimum (``value`` when exact), or None.
        method: ``"enumeration"``, ``"list"``, ``"one_step_exact"`` or ``"local"``.
        n_candidates: policies (or vertex pairs) evaluated.
    """

    policy: Policy
    value: float
    exact: bool
    lower_bound: float | None
    method: str
    n_candidates: int


def _relevant_slots(horizon: int, n_states: int, initial_state: int) -> list[tuple[int, int]]:
    """The (h, s) whose action choice can change the surrogate: ``(0, s_1)`` and every ``h >= 1``."""
    return [(0, initial_state)] + [(h, s) for h in range(1, horizon) for s in range(n_states)]


def deterministic_class_size(spec: GameSpec) -> int:
    """``prod_i A_i^L`` with ``L = 1 + (H - 1) S`` relevant (h, s) slots."""
    slots = 1 + (spec.horizon - 1) * spec.n_states
    return int(np.prod([float(a) ** slots for a in spec.action_sizes]))


def deterministic_policies(spec: GameSpec):
    """Every deterministic Markov product policy that differs on a relevant slot.

    Entries at ``(0, s)`` with ``s != s_1`` never enter the surrogate and are set to action 0.
    """
    H, S = spec.horizon, spec.n_states
    slots = _relevant_slots(H, S, spec.initial_state)
    index = tuple(np.array(c) for c in zip(*slots))
    per_player = []
    for a in spec.action_sizes:
        tables = []
        for choice in itertools.product(range(a), repeat=len(slots)):
            table = np.zeros((H, S), dtype=np.int64)
            table[index] = choice
            tables.append(np.eye(a)[table])
        per_player.append(tables)
    for combo in itertools.product(*per_player):
        yield tuple(combo)


def minimise_over_list(objective: Callable[[Policy], float], policies, method: str = "list") -> PolicySearch:
    """Exact minimum of ``objective`` over a finite list (or iterable) of policies."""
    best, best_value, count = None, np.inf, 0
    for policy in policies:
        value = objective(policy)
        count += 1
        if value < best_value:
            best, best_value = policy, value
    if best is None:
        raise ValueError("policy_class: expected at least one policy")
    return PolicySearch(best, float(best_value), True, float(best_value), method, count)


def best_response_region_vertices(payoffs: np.ndarray) -> np.ndarray:
    """Vertices of every best-response region ``{z in simplex: k in argmax_j (payoffs @ z)_j}``.

    Args:
        payoffs: ``[K, n]``: payoff of each of the opponent's K pure replies against ``z`` in the
            n-simplex.
    Returns:
        ``[V, n]``: the union over ``k`` of the vertices of region ``k`` (a polytope ``{z >= 0,
        1^T z = 1, (payoffs[k] - payoffs[j]) z >= 0}``). A vertex is a feasible point where ``n - 1``
        of these inequalities and the equality hold with linearly independent normals, so solving
        every such ``n x n`` system and keeping the feasible solutions lists all of them.
    """
    K, n = payoffs.shape
    scale = max(1.0, float(np.max(np.abs(payoffs))))
    found = []
    for k in range(K):
        G = np.vstack([np.eye(n), payoffs[k] - np.delete(payoffs, k, axis=0)])
        combos = np.array(list(itertools.combinations(range(G.shape[0]), n - 1)), dtype=np.int64).reshape(-1, n - 1)
        systems = np.concatenate([G[combos], np.ones((len(combos), 1, n))], axis=1)
        rhs = np.zeros(n)
        rhs[-1] = 1.0
        regular = np.abs(np.linalg.det(systems)) > PIVOT_ATOL
        if not np.any(regular):
            continue
        points = np.linalg.solve(systems[regular], np.broadcast_to(rhs, (int(regular.sum()), n))[..., None])[..., 0]
        feasible = np.all(points @ G.T >= -VERTEX_ATOL * scale, axis=1)
        found.append(points[feasible])
    vertices = np.concatenate(found) if found else np.eye(n)
    vertices = np.maximum(vertices, 0.0)
    vertices /= vertices.sum(axis=1, keepdims=True)
    return np.unique(np.round(vertices, 14), axis=0)


@dataclass(frozen=True)
class OneStepMinimum:
    """Exact minimum of the one-step surrogate over mixed strategies ``(x, y)``."""

    x: np.ndarray
    y: np.ndarray
    value: float
    n_candidates: int


def one_step_surrogate(x: np.ndarray, y: np.ndarray, low: np.ndarray, high0: np.ndarray, high1: np.ndarray) -> np.ndarray:
    """``max_a (high0 y)_a + max_b (x^T high1)_b - x^T low y`` for rows ``x[p, A0]``, ``y[q, A1]``; ``[p, q]``.

    With ``low = Q_under_0 + Q_under_1`` and ``high_i = Q_bar_i`` at ``s_1`` this is Algorithm 4's
    surrogate of a one-step two-player game; with ``low = R_0 + R_1``, ``high_i = R_i`` it is the
    exact Nash gap of the bimatrix game ``(R_0, R_1)``.
    """
    x = np.atleast_2d(x)
    y = np.atleast_2d(y)
    return (x @ high1).max(axis=1)[:, None] + (y @ high0.T).max(axis=1)[None, :] - x @ low @ y.T


def one_step_minimum(low: np.ndarray, high0: np.ndarray, high1: np.ndarray) -> OneStepMinimum:
    """Global minimum of ``one_step_surrogate`` over the product of simplices, exactly.

    On the region where player 0's best reply to ``y`` is ``a*`` (a polytope in ``y``) and player
    1's best reply to ``x`` is ``b*`` (a polytope in ``x``) the surrogate equals the bilinear
    function ``(high0 y)_{a*} + (x^T high1)_{b*} - x^T low y``. A bilinear function over a product
    of polytopes attains its minimum at a pair of vertices (fix ``x``: linear in ``y``, minimised at
    a vertex; the minimum over those finitely many vertices of a function linear in ``x`` is again
    at a vertex). The regions cover the simplices, so the global minimum is the smallest surrogate
    value over all pairs (vertex of an ``x``-region, vertex of a ``y``-region); every such pair is
    feasible, so that smallest value is attained. The vertices come from ``n x n`` linear solves
    (``best_response_region_vertices``): exact up to floating-point rounding.
    """
    xs = best_response_region_vertices(high1.T)
    ys = best_response_region_vertices(high0)
    values = one_step_surrogate(xs, ys, low, high0, high1)
    p, q = np.unravel_index(np.argmin(values), values.shape)
    return OneStepMinimum(xs[p], ys[q], float(values[p, q]), int(values.size))


def bimatrix_equilibrium(r0: np.ndarray, r1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Nash equilibrium ``(x, y)`` of the bimatrix game ``(r0, r1)`` (rows: player 0's actions).

    The exact Nash gap is the one-step surrogate with ``low = r0 + r1``, ``high_i = r_i``; it is
    non-negative and zero exactly at equilibria, which exist (Nash), so its exact minimiser is one.
    """
    best = one_step_minimum(r0 + r1, r0, r1)
    return best.x, best.y


def one_step_exact_search(objective: SurrogateObjective, spec: GameSpec) -> PolicySearch:
    """Exact minimiser of the surrogate over mixed policies of a one-step two-player game.

    With ``H = 1`` the ``Q`` tables of Algorithms 2 and 3 do not depend on the policy, so the
    surrogate at ``s_1`` is ``one_step_surrogate`` of them; entries at other states never enter.
    """
    if spec.horizon != 1 or spec.n_players != 2:
        raise ValueError(f"game: the exact mixed minimiser needs H = 1 and two players, got H = {spec.horizon}, m = {spec.n_players}")
    uniform = tuple(np.full((1, spec.n_states, a), 1.0 / a) for a in spec.action_sizes)
    s1 = spec.initial_state
    low = pessimistic_values(objective.model, objective.weights_under, uniform, objective.c_p, objective.clip).Q[0, :, s1]
    high = optimistic_best_responses(objective.model, objective.weights_bar, uniform, objective.c_p, objective.clip).Q[0, :, s1]
    best = one_step_minimum(low[0] + low[1], high[0], high[1])
    policy = tuple(u.copy() for u in uniform)
    policy[0][0, s1] = best.x
    policy[1][0, s1] = best.y
    value = objective(policy)
    return PolicySearch(policy, value, True, value, "one_step_exact", best.n_candidates)


def local_search(objective: SurrogateObjective, spec: GameSpec, n_restarts: int = DEFAULT_RESTARTS, seed: int = 0) -> PolicySearch:
    """L-BFGS on softmax logits of the relevant (h, s) slots, from the uniform policy and random starts."""
    H, S = spec.horizon, spec.n_states
    slots = _relevant_slots(H, S, spec.initial_state)
    index = tuple(np.array(c) for c in zip(*slots))
    sizes = spec.action_sizes
    splits = np.cumsum([len(slots) * a for a in sizes])[:-1]

    def policy_of(z: np.ndarray) -> Policy:
        out = []
        for a, block in zip(sizes, np.split(z, splits)):
            logits = block.reshape(len(slots), a)
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            pi = np.full((H, S, a), 1.0 / a)
            pi[index] = probs / probs.sum(axis=1, keepdims=True)
            out.append(pi)
        return tuple(out)

    rng = np.random.default_rng(seed)
    n_params = int(sum(len(slots) * a for a in sizes))
    best_z, best_value, evaluations = np.zeros(n_params), np.inf, 0
    for r in range(max(1, n_restarts)):
        z0 = np.zeros(n_params) if r == 0 else rng.normal(0.0, LOCAL_INIT_SCALE, n_params)
        result = minimize(lambda z: objective(policy_of(z)), z0, method="L-BFGS-B",
                          options={"maxiter": LOCAL_MAXITER})
        evaluations += int(result.nfev)
        if result.fun < best_value:
            best_z, best_value = result.x, float(result.fun)
    policy = policy_of(best_z)
    return PolicySearch(policy, objective(policy), False, None, "local", evaluations)


# --- SBSM ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SBSMResult:
    """Output of SBSM (Algorithm 4) and what it is certified to be.

    Attributes:
        policy: the output policy ``pi[i][h, s, a_i]``.
        surrogate: its surrogate value ``sum_i [V_bar^{dagger} - V_under]``.
        exact: whether ``surrogate`` is the minimum over the policy class.
        lower_bound: a certified lower bound on that minimum, or None when none is computed.
        method: ``"enumeration"``, ``"list"``, ``"one_step_exact"`` or ``"local"``.
        policy_class: ``"deterministic"``, ``"mixed"`` or ``"list"``.
        per_player: ``V_bar_{1,i}^{dagger} - V_under_{1,i}`` at the output, ``[m]``.
        c_r, c_p, lam, delta, clip: the settings used.
        confidence: the reward MLE and confidence set.
        transition_width: ``||psi_h(s, a)||_{Sigma_p[h]^-1}``, ``[H, S, A..]``.
        n_candidates: evaluations made by the minimiser.
        objective: the surrogate (with the dataset's regression statistics), for further evaluation.
    """

    policy: Policy
    surrogate: float
    exact: bool
    lower_bound: float | None
    method: str
    policy_class: str
    per_player: np.ndarray
    c_r: float
    c_p: float
    lam: float
    delta: float
    clip: bool
    confidence: RewardConfidence
    transition_width: np.ndarray
    n_candidates: int
    objective: SurrogateObjective = field(repr=False)

    @property
    def gap_to_lower_bound(self) -> float | None:
        return None if self.lower_bound is None else self.surrogate - self.lower_bound

    def bonus(self) -> np.ndarray:
        """``C_P ||psi||_{Sigma_p^-1} + C_r ||psibar||_{Sigma_r^-1}`` at every ``(h, s, a)``."""
        return self.c_p * self.transition_width + self.c_r * self.confidence.width


def sbsm(
    game: MarkovGame,
    dataset: PreferenceDataset,
    delta: float = DEFAULT_DELTA,
    c_r: float | None = None,
    c_p: float | None = None,
    policy_class: str | Sequence[Policy] = "deterministic",
    lam: float = DEFAULT_LAMBDA,
    seed: int = 0,
    constant: float = 1.0,
    clip: bool = True,
    mle: str = "constrained",
    ridge: float = DEFAULT_RIDGE,
    n_restarts: int = DEFAULT_RESTARTS,
) -> SBSMResult:
    """Pessimistic SBSM (Algorithm 4 with Algorithms 2 and 3) from a preference dataset.

    Only ``game.features`` (one-hot from the sizes when absent), the sizes, the horizon and the
    start state are read: the rewards and transitions of ``game`` do not influence the output.

    Args:
        game: supplies the feature map, sizes, horizon and start state.
        dataset: the preference dataset.
        delta: failure probability of the confidence sets.
        c_r: reward radius ``C_r`` (default: ``estimation.confidence_radius`` with ``constant``).
        c_p: transition bonus ``C_P`` (default: ``transition_bonus_scale`` with ``constant``).
        policy_class: ``"deterministic"`` (all deterministic Markov policies, exact enumeration),
            ``"mixed"`` (product policies: exact for one-step two-player games, local otherwise),
            or a list of policies (exact over the list).
        lam: the ridge ``lambda`` of ``Sigma_r`` and ``Sigma_p``.
        seed: seeds the restarts of the local method.
        constant: the unspecified constant ``C`` of ``C_r`` and ``C_P``.
        clip: the clips of Algorithms 2 and 3 as printed (``False`` drops both).
        mle, ridge: the reward MLE (``"constrained"`` cvxpy or ``"ridge"`` scipy).
        n_restarts: restarts of the local method.
    """
    spec = game_spec(game)
    _check_dataset(spec, dataset)
    confidence = reward_confidence(spec.features, dataset, delta, lam, c_r, constant, mle, ridge)
    if c_p is None:
        c_p = transition_bonus_scale(spec.dim, spec.horizon, dataset.n_pairs, delta, constant)
    elif not np.isfinite(c_p) or c_p < 0:
        raise ValueError(f"c_p: expected a non-negative number, got {c_p}")
    objective = surrogate_objective(spec, dataset, confidence, c_p, lam, clip)
    if isinstance(policy_class, str):
        if policy_class == "deterministic":
            size = deterministic_class_size(spec)
            if size > MAX_ENUMERATED_POLICIES:
                raise ValueError(
                    f"policy_class: the deterministic class has {size} policies, more than "
                    f"{MAX_ENUMERATED_POLICIES}; use 'mixed' or pass a list of policies"
                )
            search = minimise_over_list(objective, deterministic_policies(spec), "enumeration")
        elif policy_class == "mixed":
            if spec.horizon == 1 and spec.n_players == 2:
                search = one_step_exact_search(objective, spec)
            else:
                search = local_search(objective, spec, n_restarts, seed)
        else:
            raise ValueError(f"policy_class: expected 'deterministic', 'mixed' or a list of policies, got {policy_class!r}")
        class_name = policy_class
    else:
        checked = [_checked_policy(spec, p, f"policy_class[{k}]") for k, p in enumerate(policy_class)]
        search = minimise_over_list(objective, checked, "list")
        class_name = "list"
    return SBSMResult(
        search.policy, search.value, search.exact, search.lower_bound, search.method, class_name,
        objective.per_player(search.policy), confidence.radius, float(c_p), float(lam), float(delta), bool(clip),
        confidence, objective.model.width_table(), search.n_candidates, objective,
    )


def _checked_policy(spec: GameSpec, policy, name: str) -> Policy:
    """``policy`` as float arrays ``[H, S, A_i]`` on the simplex; GameError naming the player otherwise."""
    if isinstance(policy, np.ndarray) or not isinstance(policy, (list, tuple)) or len(policy) != spec.n_players:
        raise GameError(f"{name}: expected a list of {spec.n_players} arrays [H, S, A_i]")
    out = []
    for i, (pi_i, a) in enumerate(zip(policy, spec.action_sizes)):
        arr = np.asarray(pi_i, dtype=np.float64)
        if arr.shape != (spec.horizon, spec.n_states, a):
            raise GameError(f"{name}[{i}]: expected shape {[spec.horizon, spec.n_states, a]}, got {list(arr.shape)}")
        check_distribution(arr, f"{name}[{i}]")
        out.append(arr)
    return tuple(out)


# --- Theorem 4 and JSON --------------------------------------------------------------------------


@dataclass(frozen=True)
class Theorem4Bound:
    """The bound of Theorem 4 at an equilibrium ``pi*``, with ``b = C_P ||psi||_{Sigma_p^-1} + C_r ||psibar||_{Sigma_r^-1}``.

    Attributes:
        printed: ``4 max_i max_{pi_i} E_{pi_i, pi*_-i}[sum_h b]`` as stated.
        summed: ``2 sum_i (E_{pi*}[sum_h b] + max_{pi_i} E_{pi_i, pi*_-i}[sum_h b])``, what the proof's
            chain of inequalities gives before its last step; it can exceed ``printed`` by up to
            a factor ``m`` (the last step drops the sum over players).
        at_equilibrium: ``E_{pi*}[sum_h b]``.
        per_player: ``max_{pi_i} E_{pi_i, pi*_-i}[sum_h b]``, ``[m]``.
    """

    printed: float
    summed: float
    at_equilibrium: float
    per_player: np.ndarray


def theorem4_bound(game: MarkovGame, result: SBSMResult, equilibrium: Policy) -> Theorem4Bound:
    """Theorem 4's bound for the data behind ``result``; expectations exact under the game's dynamics."""
    equilibrium = check_policy(equilibrium, game, "equilibrium")
    bonus = result.bonus()
    s1 = game.initial_state
    per = np.array([best_response(game.transitions, bonus, equilibrium, i).values[0, s1]
                    for i in range(game.n_players)])
    at_eq = float(evaluate_policy(game.transitions, bonus[:, None], equilibrium).V[0, 0, s1])
    return Theorem4Bound(float(4.0 * per.max()), float(2.0 * (game.n_players * at_eq + per.sum())), at_eq, per)


def policy_json(policy: Policy) -> dict:
    """``{"format": "marlcov.policy/1", "probs": [...]}`` (DESIGN.md)."""
    return {"format": "marlcov.policy/1", "probs": [np.asarray(p).tolist() for p in policy]}


def sbsm_json(game: MarkovGame, dataset: PreferenceDataset, equilibrium: Policy | None = None, **kwargs) -> dict:
    """DESIGN.md's ``marlcov sbsm`` JSON; ``nash_gap`` is the true gap, ``bound`` Theorem 4's at ``equilibrium``.

    Keyword arguments go to ``sbsm``. ``bound`` is null without an equilibrium; extra keys give the
    proof's summed bound, the per-player gaps and the settings used.
    """
    result = sbsm(game, dataset, **kwargs)
    gap = nash_gap(game, result.policy)
    bound = None if equilibrium is None else theorem4_bound(game, result, equilibrium)
    if bound is not None and nash_gap(game, equilibrium).total > VALUE_ATOL:
        raise GameError("equilibrium: expected a Nash equilibrium of the game (its Nash gap is positive)")
    return {
        "surrogate": result.surrogate,
        "exact": result.exact,
        "lower_bound": result.lower_bound,
        "nash_gap": gap.total,
        "bound": None if bound is None else bound.printed,
        "bound_summed": None if bound is None else bound.summed,
        "per_player_gap": gap.per_player.tolist(),
        "method": result.method,
        "policy_class": result.policy_class,
        "c_r": result.c_r,
        "c_p": result.c_p,
        "clip": result.clip,
        "policy": policy_json(result.policy),
    }
