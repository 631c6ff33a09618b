"""Minimisers of Algorithm 4's surrogate (MARLHF paper, appendix A.2).

- over a finite class (all deterministic Markov policies, or a user list): exact, by enumeration;
- over mixed product policies: for one-step two-player games exactly (``one_step_minimum``), and
  otherwise by a local method (L-BFGS on softmax logits with restarts), reported as not exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from marlcov.theory.policies import Policy
from marlcov.theory.tolerances import PIVOT_ATOL

from .sbsm_regression import GameSpec, SurrogateObjective, optimistic_best_responses, pessimistic_values

#: Restarts of the local method over mixed policies (the first starts at the uniform policy).
DEFAULT_RESTARTS = 8

#: Iteration cap of each local L-BFGS run.
LOCAL_MAXITER = 300

#: Standard deviation of the random softmax logits that start the local restarts.
LOCAL_INIT_SCALE = 2.0

#: A candidate vertex may violate its region's inequalities by this much (relative to the payoffs).
VERTEX_ATOL = 1e-11


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
        result = minimize(lambda z: objective(policy_of(z)), z0, method="L-BFGS-B", options={"maxiter": LOCAL_MAXITER})
        evaluations += int(result.nfev)
        if result.fun < best_value:
            best_z, best_value = result.x, float(result.fun)
    policy = policy_of(best_z)
    return PolicySearch(policy, objective(policy), False, None, "local", evaluations)
