"""Numerics behind the O-MAPL checks: curvature probes of ``L`` and ``J`` (second differences
along random directions), the symbolic Hessian and cvxpy DCP certificates of Proposition 4.1,
the weighted-behaviour-cloning optima of section 4.3 by cvxpy, and the figure and file helpers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cvxpy as cp
import numpy as np
import sympy as sp

from marlcov.theory.io import write_json
from marlcov.theory.objectives import omapl
from marlcov.theory.policies import joint_action_probs
from marlcov.theory.soft_games import inverse_soft_bellman, soft_bellman_solve

from .conic import solve_tight
from .figures import pyplot, saved_figure
from .instances import (
    LocalTables,
    MixedCooperativeGame,
    extreme_v_objective,
    implied_rewards,
    linear_mixer,
    preference_objective,
    random_preference_instance,
    random_tables,
)
from .registry import CheckContext

PAPER = "O-MAPL (Bui et al.)"

#: Where every O-MAPL quote comes from.
STATEMENTS = "arXiv 2501.18944v1, as transcribed in papers/omapl-statements.md"

#: Variable groups whose (joint) curvature the checks probe.
GROUPS = {"q": ("q",), "w": ("w", "b"), "v": ("v",), "qv": ("q", "v"), "qw": ("q", "w", "b"), "vw": ("v", "w", "b")}


def shifted(tab: LocalTables, names: tuple[str, ...], direction: dict[str, np.ndarray], t: float) -> LocalTables:
    """The tables moved by ``t * direction`` in the variables ``names``."""
    fields = {k: getattr(tab, k).copy() for k in ("q", "v", "w", "b")}
    for k in names:
        fields[k] = fields[k] + t * direction[k]
    return LocalTables(**fields)


def random_direction(rng: np.random.Generator, tab: LocalTables, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A random unit direction in the variables ``names`` (zero elsewhere)."""
    d = {k: rng.normal(size=getattr(tab, k).shape) for k in names}
    norm = np.sqrt(sum(float(np.sum(x * x)) for x in d.values()))
    return {k: x / norm for k, x in d.items()}


def second_difference(
    f: Callable[[LocalTables], float], tab: LocalTables, names: tuple[str, ...], direction: dict[str, np.ndarray], t: float
) -> float:
    """``f(x + t d) + f(x - t d) - 2 f(x)``: > 0 refutes concavity, < 0 refutes convexity, along ``d``."""
    return f(shifted(tab, names, direction, t)) + f(shifted(tab, names, direction, -t)) - 2.0 * f(tab)


def curvature_sweep(rng: np.random.Generator, n_instances: int, n_directions: int, mixer_factory=None, reg_sign: float = 1.0) -> dict:
    """Extreme midpoint second differences of L and J over random instances, points and directions.

    ``reg_sign = -1`` flips the sign of the chi^2 regulariser's coefficient (a planted bug).
    ``t`` stays below the smallest mixing weight so that every probed point keeps ``w > 0``.
    Returns, per (objective, group), the max and min second difference and the instance, point,
    direction and step that attain the max (for L) or the min (for J).
    """
    plan = [("L", g) for g in ("q", "w", "qv", "qw")] + [("J", g) for g in ("v", "qv", "vw")]
    out = {f"{obj}_{g}": {"max": -np.inf, "min": np.inf, "witness": None} for obj, g in plan}
    for _ in range(n_instances):
        inst = random_preference_instance(rng)
        inst = dataclasses.replace(inst, reg_coef=reg_sign * inst.reg_coef)
        tab = random_tables(rng, inst)
        mixer = linear_mixer if mixer_factory is None else mixer_factory(rng, inst)
        fL = lambda x: preference_objective(inst, x, mixer)  # noqa: E731
        fJ = lambda x: extreme_v_objective(inst, x, mixer)  # noqa: E731
        t_max = 0.9 * float(tab.w.min())
        for obj, g in plan:
            f = fL if obj == "L" else fJ
            rec = out[f"{obj}_{g}"]
            for _ in range(n_directions):
                d = random_direction(rng, tab, GROUPS[g])
                t = float(rng.uniform(0.05, 1.0)) * t_max
                val = second_difference(f, tab, GROUPS[g], d, t)
                worst_for_claim = val > rec["max"] if obj == "L" else val < rec["min"]
                rec["max"], rec["min"] = max(rec["max"], val), min(rec["min"], val)
                if worst_for_claim:
                    rec["witness"] = (inst, tab, g, d, t, val)
    return out


def witness_json(witness, mixer_params: dict | None = None) -> dict:
    """A sweep witness ``(instance, point, group, direction, step, value)`` as a JSON-ready dict."""
    inst, tab, g, d, t, val = witness
    return {
        "instance": {
            "states": inst.states.tolist(),
            "actions": inst.actions.tolist(),
            "labels": inst.labels.tolist(),
            "j_states": inst.j_states.tolist(),
            "j_actions": inst.j_actions.tolist(),
            "gamma": inst.gamma,
            "beta": inst.beta,
            "reg_coef": inst.reg_coef,
        },
        "point": {"q": tab.q.tolist(), "v": tab.v.tolist(), "w": tab.w.tolist(), "b": tab.b.tolist()},
        "variables": list(GROUPS[g]),
        "direction": {k: x.tolist() for k, x in d.items()},
        "step": t,
        "second_difference": val,
        "mixer": mixer_params or "linear",
    }


def symbolic_bilinear_hessian() -> dict:
    """Exact Hessian of ``log sigma(w1 q1 + w2 q2 - c)`` at a point of zero margin.

    At margin 0, ``g' = 1/2`` and ``g'' = -1/4`` for ``g = log sigma``, so the Hessian in
    ``(q1, q2, w1, w2)`` is rational and its eigenvalues are exact. Also returns the symbolic
    identity ``g''(x) = -sigma(x)(1 - sigma(x)) < 0`` behind concavity in ``q`` for fixed ``w``.
    """
    q1, q2, w1, w2, c, x = sp.symbols("q1 q2 w1 w2 c x", real=True)
    g = -sp.log(1 + sp.exp(-x))
    f = g.subs(x, w1 * q1 + w2 * q2 - c)
    variables = [q1, q2, w1, w2]
    point = {q1: 0, q2: 1, w1: 1, w2: 1, c: 1}
    hess = sp.hessian(f, variables).subs(point).applyfunc(sp.simplify)
    eig = sorted(hess.eigenvals(multiple=True), key=lambda e: float(e))
    hess_q = sp.hessian(f, [q1, q2]).subs(point).applyfunc(sp.simplify)
    sigma = 1 / (1 + sp.exp(-x))
    g2_identity = sp.simplify(sp.diff(g, x, 2) + sigma * (1 - sigma)) == 0
    minor = sp.simplify(hess[0, 0] * hess[2, 2] - hess[0, 2] ** 2)
    return {
        "function": "log sigma(w1 q1 + w2 q2 - c)",
        "point": {str(k): int(v) for k, v in point.items()},
        "hessian_qw": sp.sstr(hess),
        "eigenvalues_qw": [sp.sstr(e) for e in eig],
        "max_eigenvalue_qw": float(max(eig, key=float)),
        "hessian_q": sp.sstr(hess_q),
        "max_eigenvalue_q": float(max(hess_q.eigenvals(multiple=True), key=float)),
        "minor_q1_w1": sp.sstr(minor),
        "g2_equals_minus_sigma_one_minus_sigma": bool(g2_identity),
        "value_at_point": float(f.subs(point)),
    }


def _affine_map(func: Callable[[np.ndarray], np.ndarray], dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Columns ``func(e_k) - func(0)`` and offset ``func(0)``; with the affinity error at a random point."""
    base = func(np.zeros(dim))
    A = np.stack([func(np.eye(dim)[k]) - base for k in range(dim)], axis=-1)
    x = rng.normal(size=dim)
    return A, base, float(np.max(np.abs(func(x) - (A @ x + base))))


def dcp_certificates(rng: np.random.Generator) -> dict:
    """cvxpy DCP analysis of ``L`` in ``q`` (fixed v, w, b) and of ``J`` in ``v`` (fixed q, w, b).

    The implied rewards are affine in ``q`` (resp. ``V_tot`` in ``v``) for fixed mixing weights;
    the affine map is read off the shared objective code, and the cvxpy expression is checked
    to take the same value as the shared objective at a random point.
    """
    inst = random_preference_instance(rng)
    tab = random_tables(rng, inst)
    nq = tab.q.size
    N, T = inst.states.shape[0], inst.states.shape[2] - 1

    def rewards_of_q(qflat):
        return np.concatenate([r.ravel() for r in implied_rewards(inst, LocalTables(qflat.reshape(tab.q.shape), tab.v, tab.w, tab.b))])

    A, base, affinity_err = _affine_map(rewards_of_q, nq, rng)
    qv = cp.Variable(nq)
    R = A @ qv + base
    G1 = cp.sum(cp.reshape(R[: N * T], (N, T), order="C"), axis=1)
    G2 = cp.sum(cp.reshape(R[N * T :], (N, T), order="C"), axis=1)
    y = inst.labels
    loglik = cp.sum(cp.multiply(y, -cp.logistic(-(G1 - G2))) + cp.multiply(1 - y, -cp.logistic(G1 - G2))) / N
    L_expr = loglik + inst.reg_coef * cp.sum(R - 0.5 * cp.square(R)) / (2 * N * T)
    x = rng.normal(size=nq)
    qv.value = x
    L_shared = preference_objective(inst, LocalTables(x.reshape(tab.q.shape), tab.v, tab.w, tab.b))

    agents = np.arange(inst.n_agents)
    q_tot = linear_mixer(tab.q[agents, inst.j_states[:, None], inst.j_actions], inst.j_states, tab)

    def vtot_of_v(vflat):
        v = vflat.reshape(tab.v.shape)
        return linear_mixer(v[agents, inst.j_states[:, None]], inst.j_states, tab)

    B, vbase, affinity_err_v = _affine_map(vtot_of_v, tab.v.size, rng)
    vv = cp.Variable(tab.v.size)
    z = (q_tot - (B @ vv + vbase)) / inst.beta
    J_expr = cp.sum(cp.exp(z) - z - 1) / len(inst.j_states)
    xv = rng.normal(size=tab.v.size)
    vv.value = xv
    J_shared = extreme_v_objective(inst, LocalTables(tab.q, xv.reshape(tab.v.shape), tab.w, tab.b))
    return {
        "L_in_q_is_concave_dcp": bool(L_expr.is_concave()),
        "L_in_q_maximize_is_dcp": bool(cp.Problem(cp.Maximize(L_expr)).is_dcp()),
        "J_in_v_is_convex_dcp": bool(J_expr.is_convex()),
        "J_in_v_minimize_is_dcp": bool(cp.Problem(cp.Minimize(J_expr)).is_dcp()),
        "cvxpy_vs_shared_L": abs(float(L_expr.value) - L_shared),
        "cvxpy_vs_shared_J": abs(float(J_expr.value) - J_shared),
        "affinity_error_R_in_q": affinity_err,
        "affinity_error_Vtot_in_v": affinity_err_v,
        "joint_q_w_expressible": "no: w_i q_i is a product of two variables, outside DCP",
    }


def slice_figure(
    ctx: CheckContext, name: str, panels: list[tuple[str, Callable[[float], float], float]], caption: str
) -> tuple[list[str], dict[str, str]]:
    """One panel per ``(title, f, t)``: ``f`` on ``[-t, t]`` against its chord; the ``Verdict``'s
    figures and captions (empty without an output directory)."""
    path = ctx.path(name)
    if path is None:
        return [], {}
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, f, t) in zip(np.atleast_1d(axes), panels):
        ts = np.linspace(-t, t, 81)
        vals = np.array([f(s) for s in ts])
        ax.plot(ts, vals, label="objective")
        ax.plot([-t, t], [vals[0], vals[-1]], "--", label="chord")
        ax.set_title(f"{title}\nf(t)+f(-t)-2f(0) = {vals[0] + vals[-1] - 2 * vals[40]:+.2e}", fontsize=9)
        ax.set_xlabel("step along direction")
        ax.legend(fontsize=8)
    return saved_figure(fig, path, caption)


def save_json(ctx: CheckContext, name: str, payload: dict) -> str | None:
    """Write ``payload`` to ``name`` in the output directory (atomically); its name, or None."""
    path = ctx.path(name)
    if path is None:
        return None
    write_json(path, payload)
    return path.name


def wbc_numeric_optimum(coef: np.ndarray) -> tuple[np.ndarray, bool]:
    """``argmax_p sum_a coef[k, a] log p[k, a]`` over rows on the simplex, by cvxpy (one problem for all rows)."""
    p = cp.Variable(coef.shape, nonneg=True)
    prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(coef, cp.log(p)))), [cp.sum(p, axis=1) == 1])
    solve_tight(prob, "WBC problem")
    return np.asarray(p.value), bool(prob.is_dcp())


def wbc_solution(g: MixedCooperativeGame, weigh_by_behaviour: bool = True) -> dict:
    """The local WBC optima (numerical), the closed form of Theorem 4.4 and the global optimum.

    ``weigh_by_behaviour=False`` plants a bug: the local WBC coefficients drop the behaviour
    probabilities ``mu(a)`` (a uniform average over joint actions instead of ``E_mu``).
    """
    m = len(g.q)
    H, S = g.w.shape[:2]
    Q = g.q_tot()
    mu_joint = g.mu_joint
    sol = soft_bellman_solve(g.P, inverse_soft_bellman(g.P, Q, mu_joint, g.beta), mu_joint, g.beta)
    V_tot = g.v_tot().reshape(H, S, *[1] * m)
    weights = mu_joint * omapl.wbc_weights(Q, V_tot, g.beta)
    coef_weights = weights if weigh_by_behaviour else omapl.wbc_weights(Q, V_tot, g.beta) * np.ones_like(mu_joint)
    locals_numeric, closed, dcp_ok = [], [], True
    for i in range(m):
        others = tuple(j for j in range(m) if j != i)
        coef = np.sum(coef_weights, axis=tuple(2 + j for j in others)).reshape(H * S, -1)
        p, ok = wbc_numeric_optimum(coef / coef.sum(axis=1, keepdims=True))
        dcp_ok &= ok
        locals_numeric.append(p.reshape(H, S, -1))
        closed.append(omapl.wbc_local_policy(list(g.mu), list(g.q), g.v, g.w, g.b_q, g.b_v, g.beta, i))
    product = joint_action_probs(tuple(locals_numeric))
    naive = [g.mu[i] * np.exp(g.w[..., i : i + 1] * (g.q[i] - g.v[..., i : i + 1]) / g.beta) for i in range(m)]
    # The shared WBC objective is no larger at perturbed policies than at the closed form.
    worst_gain = -np.inf
    rng = np.random.default_rng(0)
    for i in range(m):
        for _ in range(3):
            alt = 0.7 * closed[i] + 0.3 * rng.dirichlet(np.ones(closed[i].shape[-1]), size=closed[i].shape[:2])
            shape = [H, S] + [1] * m
            shape[2 + i] = closed[i].shape[-1]
            at_closed = omapl.wbc_objective(np.log(closed[i]).reshape(shape), Q, V_tot, g.beta, weights=mu_joint)
            at_alt = omapl.wbc_objective(np.log(alt).reshape(shape), Q, V_tot, g.beta, weights=mu_joint)
            worst_gain = max(worst_gain, float(at_alt - at_closed))
    return {
        "round_trip_q": float(np.max(np.abs(sol.Q - Q))),
        "global_policy": sol.policy,
        "product_of_local_wbc": product,
        "locals_numeric": locals_numeric,
        "closed_form": closed,
        "naive": naive,
        "naive_row_sum_error": max(float(np.max(np.abs(x.sum(axis=-1) - 1))) for x in naive),
        "closed_row_sum_error": max(float(np.max(np.abs(x.sum(axis=-1) - 1))) for x in closed),
        "wbc_dcp": dcp_ok,
        "max_objective_gain_of_perturbation": worst_gain,
    }
