"""Pessimistic SBSM for linear Markov games (MARLHF paper, appendix A.2: Algorithms 2, 3, 4, Theorem 4).

The algorithm sees the feature map ``psi``, the sizes, the horizon, the start state and the
preference dataset; nothing else. ``sbsm`` takes a ``MarkovGame`` for convenience and reads only
those fields from it (its rewards and transitions are never touched; ``sbsm_json`` and
``theorem4_bound`` read them afterwards to report the true Nash gap and the bound).

Least-squares value iteration (Algorithms 2 and 3, ``sbsm_regression``). For step ``h`` the samples are the steps
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

Algorithm 4 minimises the surrogate ``sum_i [V_bar_{1,i}^{dagger, pi_-i}(s_1) - V_under_{1,i}^pi(s_1)]``
(``sbsm_minimisers``): exactly over a finite class, exactly over mixed policies of a one-step
two-player game, and otherwise by a local method reported as not exact.

``reward_set="identifiable"`` replaces the paper's reward confidence set by the one on the
identifiable part of ``theta`` with its stated radius (``certificate``); ``sbsm_json`` reports, beside
Theorem 4's bound, the certificate ``identifiable_bound`` of the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.games import GameError, MarkovGame, check_distribution
from marlcov.theory.policies import Policy, check_policy
from marlcov.theory.preferences import PreferenceDataset
from marlcov.theory.tolerances import VALUE_ATOL
from marlcov.theory.values import best_response, evaluate_policy, nash_gap

from .certificate import IdentifiableConfidence, coverage_bound, identifiable_confidence, nash_gap_certificate
from .estimation import DEFAULT_DELTA, DEFAULT_RIDGE, RewardConfidence, reward_confidence
from .sbsm_minimisers import (  # noqa: F401  (re-exported: the names of marlcov.linear_games.sbsm)
    DEFAULT_RESTARTS,
    LOCAL_INIT_SCALE,
    LOCAL_MAXITER,
    VERTEX_ATOL,
    OneStepMinimum,
    PolicySearch,
    best_response_region_vertices,
    bimatrix_equilibrium,
    deterministic_class_size,
    deterministic_policies,
    local_search,
    minimise_over_list,
    one_step_exact_search,
    one_step_minimum,
    one_step_surrogate,
)
from .sbsm_regression import (  # noqa: F401  (re-exported)
    GameSpec,
    OptimisticBestResponses,
    PessimisticValues,
    RegressionModel,
    SurrogateObjective,
    _check_dataset,
    game_spec,
    optimistic_best_responses,
    pessimistic_values,
    regression_model,
    surrogate_objective,
    transition_bonus_scale,
)

#: Largest deterministic policy class enumerated by ``policy_class="deterministic"``.
MAX_ENUMERATED_POLICIES = 50_000


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
        confidence: the reward MLE and confidence set (the paper's, or the identifiable one).
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
    confidence: RewardConfidence | IdentifiableConfidence
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
    reward_set: str = "paper",
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
        reward_set: ``"paper"`` (Lemma 5's set, radius ``c_r``) or ``"identifiable"`` (the set on the
            identifiable part of ``theta`` with its proved radius, ``certificate.identifiable_confidence``;
            ``c_r``, ``constant``, ``mle`` and ``ridge`` do not apply to it).
    """
    spec = game_spec(game)
    _check_dataset(spec, dataset)
    if reward_set == "paper":
        confidence = reward_confidence(spec.features, dataset, delta, lam, c_r, constant, mle, ridge)
    elif reward_set == "identifiable":
        if c_r is not None:
            raise ValueError("c_r: the identifiable reward set has its own stated radius; leave c_r unset")
        confidence = identifiable_confidence(spec.features, dataset, delta, lam)
    else:
        raise ValueError(f"reward_set: expected 'paper' or 'identifiable', got {reward_set!r}")
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
        search.policy,
        search.value,
        search.exact,
        search.lower_bound,
        search.method,
        class_name,
        objective.per_player(search.policy),
        confidence.radius,
        float(c_p),
        float(lam),
        float(delta),
        bool(clip),
        confidence,
        objective.model.width_table(),
        search.n_candidates,
        objective,
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
    per = np.array([best_response(game.transitions, bonus, equilibrium, i).values[0, s1] for i in range(game.n_players)])
    at_eq = float(evaluate_policy(game.transitions, bonus[:, None], equilibrium).V[0, 0, s1])
    return Theorem4Bound(float(4.0 * per.max()), float(2.0 * (game.n_players * at_eq + per.sum())), at_eq, per)


def policy_json(policy: Policy) -> dict:
    """``{"format": "marlcov.policy/1", "probs": [...]}`` (docs/formats.md)."""
    return {"format": "marlcov.policy/1", "probs": [np.asarray(p).tolist() for p in policy]}


def sbsm_json(game: MarkovGame, dataset: PreferenceDataset, equilibrium: Policy | None = None, **kwargs) -> dict:
    """The ``marlcov sbsm`` JSON (docs/formats.md); ``nash_gap`` is the true gap, ``bound`` Theorem 4's at ``equilibrium``.

    Keyword arguments go to ``sbsm``. ``bound`` is null without an equilibrium; extra keys give the
    proof's summed bound, the per-player gaps and the settings used. ``identifiable_bound`` is the
    certificate of the output (``certificate.nash_gap_certificate``: at least its true Nash gap with
    probability ``1 - delta``), with its constants under ``identifiable_certificate``.
    """
    result = sbsm(game, dataset, **kwargs)
    gap = nash_gap(game, result.policy)
    bound = None if equilibrium is None else theorem4_bound(game, result, equilibrium)
    if bound is not None and nash_gap(game, equilibrium).total > VALUE_ATOL:
        raise GameError("equilibrium: expected a Nash equilibrium of the game (its Nash gap is positive)")
    confidence = result.confidence
    if not isinstance(confidence, IdentifiableConfidence):
        confidence = identifiable_confidence(game_spec(game).features, dataset, result.delta, result.lam)
    certificate = nash_gap_certificate(game, confidence, result.policy)
    return {
        "surrogate": result.surrogate,
        "exact": result.exact,
        "lower_bound": result.lower_bound,
        "nash_gap": gap.total,
        "bound": None if bound is None else bound.printed,
        "bound_summed": None if bound is None else bound.summed,
        "identifiable_bound": certificate.value,
        "identifiable_certificate": {
            "probability": 1.0 - certificate.delta,
            "per_player": certificate.per_player.tolist(),
            "coverage_bound": None if equilibrium is None else coverage_bound(game, confidence, equilibrium),
            "constants": confidence.terms.as_dict(),
        },
        "per_player_gap": gap.per_player.tolist(),
        "method": result.method,
        "policy_class": result.policy_class,
        "c_r": result.c_r,
        "c_p": result.c_p,
        "clip": result.clip,
        "reward_set": "identifiable" if isinstance(result.confidence, IdentifiableConfidence) else "paper",
        "policy": policy_json(result.policy),
    }
