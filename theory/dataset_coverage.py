"""Coverage of offline datasets at scale: streaming covariances, bonuses, bootstrap, plug-in measures.

The objects are those of ``theory.coverage`` (MARLHF paper, section 4.1 and Definition 1):

- ``Sigma_r = lambda I + sum_p (psi(tau_p) - psi(tau'_p)) (psi(tau_p) - psi(tau'_p))^T`` (Hd x Hd),
  ``psi(tau) = sum_h psibar_h(s_h, a_h)``, i.e. the per-step features ``[H, d]`` flattened;
- ``Sigma_p[h] = lambda I + sum_p [psi(s_h, a_h) psi(s_h, a_h)^T + psi(s'_h, a'_h) psi(s'_h, a'_h)^T]``;
- ``bonus_h(s, a) = ||psibar_h(s, a)||_{Sigma_r^-1} + ||psi(s, a)||_{Sigma_p[h]^-1}``;
- ``U_D(pi) = E_pi[sum_h bonus_h(s_h, a_h)]``.

Here they are accumulated from batches of per-step features ``[B, H, d]`` (``CovarianceAccumulator``),
so a dataset never has to be in memory, and ``BonusModel`` evaluates the bonus on batches of
features. Only ``[Sigma_r^-1]_{hh}``, the diagonal blocks, enter ``||psibar_h||_{Sigma_r^-1}``.

Bootstrap in the same pass: besides the point sums, an accumulator keeps ``n_slots`` weighted
sums ``sum_p w_{k,p} z_p z_p^T`` (and the same for ``Sigma_p``) whose weights the caller gives
per sample. With Poisson(1) weights per pair each slot is a Poisson-bootstrap replicate of the
dataset; with 0/1 indicators of disjoint groups of pairs the slots are group sums, from which
replicates ``lambda I + sum_g v_g G_g`` (``v_g`` Poisson(1) per group: a bootstrap over groups)
and prefix subsamples (``v_g = 1`` for the first groups) are formed without another pass.

Plug-in measures without a simulator (``PlugInAccumulator``), on a set of anchor trajectories
``tau^(1..B)`` that stand for the reference policy's trajectory distribution (rollouts of
``pi*``, or the dataset trajectories taken as its samples), with ``a*_h`` the anchor's joint
action at step h and ``A_i(s_h)`` agent i's available actions:

- single:      ``mean_b sum_h bonus_h(s_h, a*_h)``;
- unilateral, agent i: ``mean_b sum_h max_{a_i in A_i(s_h)} bonus_h(s_h, (a_i, a*_{-i,h}))``: agent i
  deviates at every step to its least-covered action while the others keep the reference's
  actions, on the anchor states. ``a_i = a*_{i,h}`` is among the choices, so it is at least
  the single estimate, trajectory by trajectory. The mean over ``a_i`` instead of the maximum
  is reported as the uniform-deviation estimate ``uniform_deviation``;
- uniform:     ``mean_b sum_h max_{a in A(s_h)} bonus_h(s_h, a)``, the maximum over all available
  joint actions, so at least the unilateral estimate of every agent on the same anchors (when
  the anchors' own actions are available).

These are ``U_D`` of one-step deviations on the anchor states: the deviating policy is not
allowed to move the state distribution. They equal ``max_{pi_i} U_D(pi_i, pi*_{-i})`` and
``max_pi U_D(pi)`` exactly when transitions do not depend on actions (H = 1 in particular);
otherwise states reachable only by deviating are not seen, and the simulator-based estimates
of ``deep.diagnostics`` (or the exact dynamic programme of ``finite_game_coverage``) are the
complement.

Episodes that end before H (stored padded to H steps, as SMAX episodes are: ``deep.envs.smax``).
Definition 1 is written for episodes of exactly H steps; an episode that ends at step L < H is
one that enters an absorbing terminal state after its last real step, where the reward (0) and
the transition (it stays) are known, so there is nothing to learn there and its feature is
taken to be zero: ``psi(terminal, a) = 0`` for every action. Hence:

- ``psi(tau) = sum_{h < L} psibar_h(s_h, a_h)``: padded steps add nothing to ``Sigma_r``;
- ``Sigma_p[h]`` sums over the trajectories still running at step h only;
- ``bonus_h = 0`` at a padded step for every joint action, so ``U_D(pi) = E_pi[sum of the bonus
  over the real steps]``: a padded step adds nothing to any measure and offers no deviation;
  the means are over anchor trajectories (a shorter episode adds fewer terms), not over steps.

The accumulators take ``valid [B, H]`` (bool, True at real steps; ``deep.common.step_masks``) and
never read the features of other steps. With every step real, the masked sums are those of the
unmasked path up to float64 rounding. A one-step deviation here never changes when an episode ends (the
states are the anchors'), one more way in which the plug-in estimates differ from ``U_D`` of
the deviating policy.

Modules: ``theory.streaming_covariance`` (``CovarianceAccumulator``, ``BonusModel``), ``theory.plug_in``
(bootstrap weights and summaries, ``PlugInAccumulator``), and here the finite-game path
(``finite_game_coverage``); every name stays importable from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .coverage import DEFAULT_LAMBDA, Coverage, measures_from_bonus, step_features
from .games import MarkovGame
from .identifiable import policy_reference
from .plug_in import (  # noqa: F401  (re-exported: the names of theory.dataset_coverage)
    BOOTSTRAP_LEVEL,
    PlugInAccumulator,
    PlugInMeasures,
    bootstrap_summary,
    multinomial_weights,
    poisson_weights,
)
from .policies import Policy, check_policy
from .preferences import PreferenceDataset
from .streaming_covariance import (  # noqa: F401  (re-exported)
    ACCUMULATOR_MEMORY_BYTES,
    BONUS_CHUNK,
    BonusModel,
    CovarianceAccumulator,
)

#: Pairs per batch when a finite-game dataset is streamed through an accumulator.
BATCH_PAIRS = 4096


# ----------------------------------------------------------------------------- finite games
def bonus_grid(model: BonusModel, features: np.ndarray, c_r: float = 1.0, c_p: float = 1.0) -> np.ndarray:
    """``bonus_h(s, a)`` on the whole table ``features[H, S, A_1..A_m, d]``, shape ``[H, S, A..]``."""
    H, d = features.shape[0], features.shape[-1]
    flat = np.ascontiguousarray(features).reshape(H, -1, d).transpose(1, 0, 2)
    return model.bonus(flat, c_r, c_p).T.reshape(features.shape[:-1])


@dataclass(frozen=True)
class FiniteGameCoverage:
    """Streaming coverage of a finite-game dataset with bootstrap replicates.

    Attributes:
        coverage: Definition 1 from the streamed covariances (equals ``coverage_measures``).
        identifiable: the identifiable measures (equal ``theory.identifiable.identifiable_measures``).
        bonus: the bonus table ``[H, S, A..]``.
        replicates: ``{"single": [R], "unilateral": [R], "uniform": [R], "per_player": [R, m]}``.
        bootstrap: ``bootstrap_summary`` of each measure, plus ``per_player`` (a list).
    """

    coverage: Coverage
    bonus: np.ndarray
    replicates: dict
    bootstrap: dict
    identifiable: Coverage


def game_features(game: MarkovGame) -> np.ndarray:
    """``psi[H, S, A.., d]``: the game's features, or one-hot ones when it has none."""
    return game.features if game.features is not None else game.with_one_hot_features().features


def finite_game_coverage(
    game: MarkovGame,
    dataset: PreferenceDataset,
    policy: Policy,
    lam: float = DEFAULT_LAMBDA,
    n_bootstrap: int = 0,
    seed: int | None = 0,
    batch_pairs: int = BATCH_PAIRS,
) -> FiniteGameCoverage:
    """Definition 1 of a finite-game preference dataset through the streaming accumulator.

    The pairs are fed in batches of ``batch_pairs``; each bootstrap replicate weighs the pairs
    (two independent trajectories each) by Poisson(1) multiplicities, in the same pass.
    """
    dataset.check_against(game)
    policy = check_policy(policy, game)
    if batch_pairs < 1:
        raise ValueError(f"batch_pairs: expected a positive integer, got {batch_pairs}")
    features = game_features(game)
    H, d = features.shape[0], features.shape[-1]
    acc = CovarianceAccumulator(H, d, n_bootstrap, lam)
    weights = poisson_weights(dataset.n_pairs, n_bootstrap, seed)
    for start in range(0, dataset.n_pairs, batch_pairs):
        sl = slice(start, start + batch_pairs)
        phi = step_features(features, dataset.states[sl], dataset.actions[sl])
        acc.update(phi[:, 0], phi[:, 1], weights[:, sl] if n_bootstrap else None)
    point = acc.bonus_model()
    bonus = bonus_grid(point, features)
    cov = measures_from_bonus(game, bonus, policy, acc.lam)
    ident = measures_from_bonus(game, bonus_grid(point.with_reference(policy_reference(game, policy, features)), features), policy, acc.lam)
    reps = {
        "single": np.empty(n_bootstrap),
        "unilateral": np.empty(n_bootstrap),
        "uniform": np.empty(n_bootstrap),
        "per_player": np.empty((n_bootstrap, game.n_players)),
    }
    for k in range(n_bootstrap):
        c = measures_from_bonus(game, bonus_grid(acc.bonus_model(slot=k), features), policy, acc.lam)
        reps["single"][k], reps["unilateral"][k], reps["uniform"][k] = c.single, c.unilateral, c.uniform
        reps["per_player"][k] = c.per_player
    summary = {name: bootstrap_summary(getattr(cov, name), reps[name]) for name in ("single", "unilateral", "uniform")}
    summary["per_player"] = [bootstrap_summary(cov.per_player[i], reps["per_player"][:, i]) for i in range(game.n_players)]
    summary["unit"] = "pair"
    summary["replicates"] = int(n_bootstrap)
    return FiniteGameCoverage(cov, bonus, reps, summary, ident)
