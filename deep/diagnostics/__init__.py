"""Unilateral-coverage diagnostic of an offline dataset (MARLHF paper, section 4.1, Definition 1).

``diagnose(path, ...)`` reads a dataset and reports single, unilateral (per agent) and uniform
coverage with bootstrap uncertainty, count-based coverage for comparison, and plots.

* Finite-game NPZ (docs/formats.md; needs the game and a policy): the covariances are streamed
  through ``theory.dataset_coverage.CovarianceAccumulator`` with the game's (or one-hot)
  features, and the measures are the exact dynamic programmes of Definition 1; they agree with
  ``theory.coverage.coverage_measures``. Bootstrap: Poisson(1) weights per pair.
* HDF5 (``deep.data``): three streaming passes, each batch by batch, never the whole file:
  (0) standardisation of the random features and the count keys; (1) the covariances, pairs
  scheduled by blocks of ``block`` trajectories so that each block is read contiguously and
  features are computed per block; (2) the measures on anchor trajectories.

Reference policy. With ``policy=None`` the reference is "the best trajectories of the data":
the top ``reference_fraction`` of trajectories ranked by a Bradley-Terry fit to the preference
labels (per agent, minorise-maximise iterations with one virtual win and one virtual loss against
a strength-1 opponent so every score is finite; the agents' centred log-strengths averaged).
True rewards are never read. Those trajectories are the anchors, their recorded joint actions
the reference's. With a policy (a callable of ``deep.envs.mpe``'s policy protocol, or a
checkpoint holding one), the anchors are the dataset's trajectories with the reference's
actions recomputed at their observations; and with a simulator (``simulate=True``, an MPE
dataset) the anchors are rollouts of the policy and ``U_D(pi_i, pi*_{-i})`` is also estimated
by rolling out deviations of agent i: uniform, given rookie policies, a bonus-greedy deviation
(agent i takes ``argmax_{a_i} bonus_h(s_h, (a_i, pi*_{-i}(s_h)))``) and its half mixture with
``pi*_i``; the worst found is reported.

Measures without a simulator are the plug-in estimates of ``theory.dataset_coverage`` (single,
one-step unilateral deviations, per-step joint maximum), documented there.

Bootstrap on HDF5 data: the pairs, in file order, are split into ``G`` contiguous groups whose
sums are kept as slots of the accumulator (one pass, cost of one accumulation); a replicate is
``lambda I + sum_g v_g G_g`` with ``v_g ~ Poisson(1)``, a bootstrap over groups of pairs.
Replicates are evaluated on a fixed random subset of at most ``bootstrap_anchors`` anchors and
centred at the full-anchor estimate (replicate minus its subset point estimate plus the full
point estimate), so they measure the uncertainty that comes from the preference data. The
same group sums give the coverage against dataset size (the first ``k`` groups, k = 1, 2, 4,
..: prefixes of the pairs), evaluated on the same anchor subset, where the last point (all
pairs) is the full covariance on that subset. Each measure is non-increasing along the curve.

Episodes that end early (SMAX) are stored padded to H steps; ``deep.common.step_masks`` gives
their real steps. A padded step counts for nothing anywhere: not in the feature standardisation,
the covariances, the bonus sums, the deviations, the histograms or the counts (the convention
and what it means for Definition 1: ``theory.dataset_coverage``, "Episodes that end before H").
A reference policy is queried only at real steps. The covariances span the steps up to the
longest episode (``dataset.longest_episode`` of the report; ``accumulate_pairs``): beyond it
every step is padding, whose blocks would be ``lambda I`` with no coupling to the others, so
the bonus of every real step is unchanged and ``Sigma_r`` is smaller (its factorisations cost
``(Hd)^3``).

Checks come before the streaming passes: the options, the pairs, the feature map and the
reference policy on one trajectory before anything else is read, then a pre-pass over
``avail`` and ``actions`` alone (``read_episode_lengths``) checks every episode's layout
(padding after its real steps, an available action for every agent at every real step,
actions in range) and gives the lengths that the three passes use.

Counts (OG-MARL's dataset analysis): the ratio of distinct (discretised state, joint action)
pairs to transitions (real steps), of distinct discretised states, per agent of distinct
(discretised observation, action); and ``unilateral_seen[i]``: the fraction of the anchors' unilateral
alternatives (discretised state, (a_i, a*_{-i})) that occur in the data, the count analogue
of the unilateral measure (the anchor's own action included). States are discretised on a
grid of ``count_resolution``, in the units of the stored state.

Identifiable measures (``theory.identifiable``) are reported beside the paper's under
``identifiable``: the reward term of ``psi_h - c_h`` with ``c_h`` the data's mean feature at step h
(HDF5; plug-in on the same anchors) or the reference policy's (finite games; exact), and the
directions of constant projection found in the data's features with the rank rule stated.

Modules: ``defaults``; ``ranking`` (Bradley-Terry reference trajectories); ``counts``;
``reference_policy``; ``streaming`` (checks and pass 1); ``deviations`` (pass 2 on anchors);
``simulator``; ``hdf5`` (the three passes); ``finite``; ``report`` (result, JSON, table); ``plots``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marlcov.theory.coverage import DEFAULT_LAMBDA

from ..data.external import open_dataset
from .defaults import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    BT_ITERATIONS,
    BT_PRIOR,
    BT_TOLERANCE,
    DEFAULT_BLOCK,
    DEFAULT_BOOTSTRAP,
    DEFAULT_BOOTSTRAP_ANCHORS,
    DEFAULT_COUNT_RESOLUTION,
    DEFAULT_FEATURE_DIM,
    DEFAULT_GROUPS,
    DEFAULT_REFERENCE_FRACTION,
    EVAL_VECTORS,
    FINITE_SIZE_FRACTIONS,
    HISTOGRAM_SAMPLES,
    PAIR_BATCH,
    SIMULATION_EPISODES,
    UNIFORM_EVALUATIONS,
)
from .finite import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    diagnose_finite,
)
from .hdf5 import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    diagnose_hdf5,
)
from .plots import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    write_plots,
)
from .ranking import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    bradley_terry_scores,
    reference_trajectories,
)
from .reference_policy import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    load_policy,
)
from .report import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    DiagnosticResult,
    format_table,
    table_rows,
)
from .simulator import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    _make_simulator,
    _rollout,
)
from .streaming import (  # noqa: F401  (the names of marlcov.deep.diagnostics)
    accumulate_pairs,
    pair_groups,
    read_episode_lengths,
)


# ----------------------------------------------------------------------------- entry points
def diagnose(
    path,
    policy=None,
    features: Any = "random",
    lam: float = DEFAULT_LAMBDA,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    out_dir=None,
    *,
    game=None,
    **kwargs,
) -> dict:
    """The dataset diagnostic as the CLI's JSON dict.

    Args:
        path: an HDF5 dataset (``.h5``/``.hdf5``, pairs inside or ``pairs_path=``) or a finite-game
            NPZ preference dataset (then ``game`` and ``policy`` are required).
        policy: the reference joint policy: None ("the best trajectories of the data", HDF5 only),
            a callable or a checkpoint (HDF5), or a policy file / ``Policy`` (finite games).
        features: ``"random"``, ``"random-obs"``, ``"reward-model:PATH"``, a features file, or a
            ``deep.features.FeatureMap`` (HDF5 only; finite games use their own or one-hot features).
        lam: the ridge lambda.
        bootstrap: number of bootstrap replicates (0: none).
        seed: seeds the feature draw, the bootstrap and the anchor subsets.
        out_dir: when given, the plots are written there and listed under ``"figures"``.
        game: the game file or ``MarkovGame`` of a finite-game dataset.
        **kwargs: further options of ``diagnose_hdf5``.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        if game is None:
            raise ValueError(f"{path}: a finite-game dataset needs its game (game=GAME)")
        result = diagnose_finite(game, path, policy, lam, bootstrap, seed)
    elif suffix in (".h5", ".hdf5") or Path(path).is_dir():
        result = diagnose_hdf5(path, policy, features, lam, bootstrap, seed, **kwargs)
    else:
        raise ValueError(
            f"{path}: expected an HDF5 dataset (.h5/.hdf5: marlcov, OMIGA or O-MAPL layout), an OG-MARL vault "
            "directory (NAME.vlt/UID) or a finite-game NPZ dataset"
        )
    if out_dir is not None:
        result.figures = write_plots(result, out_dir)
    return result.to_json()


def coverage_command(args) -> dict:
    """``marlcov coverage DATASET [--policy CKPT] [--features ...] [--lambda L] [--bootstrap R]
    [--seed K] [--out DIR] [--pairs-file FILE]`` on an HDF5 dataset; reads these attributes of the
    argparse namespace (missing ones take their defaults): ``game`` (the dataset path, the first
    positional argument), ``policy``, ``features``, ``lam``, ``bootstrap``, ``seed``, ``out``,
    ``pairs_file``, ``simulate``, ``feature_dim``. Without ``pairs_file``, a dataset that holds
    no pairs itself is read with ``DATA.pairs.h5`` beside it when there is one (where ``marlcov
    deep label`` writes them)."""
    get = lambda name, default: getattr(args, name, default) if getattr(args, name, None) is not None else default  # noqa: E731
    kwargs = {"feature_dim": int(get("feature_dim", DEFAULT_FEATURE_DIM)), "simulate": bool(get("simulate", False))}
    pairs_file = get("pairs_file", None)
    if pairs_file is None:
        pairs_file = _default_pairs_file(args.game)
    if pairs_file is not None:
        kwargs["pairs_path"] = pairs_file
    return diagnose(
        args.game,
        get("policy", None),
        get("features", "random"),
        float(get("lam", DEFAULT_LAMBDA)),
        int(get("bootstrap", DEFAULT_BOOTSTRAP)),
        int(get("seed", 0)),
        get("out", None),
        **kwargs,
    )


def _default_pairs_file(path) -> Path | None:
    """``DATA.pairs.h5`` beside a dataset that holds no pairs itself, when it exists; else None
    (and ``diagnose`` reports whatever is wrong with the dataset)."""
    from marlcov.deep.pipeline import pairs_path_for

    candidate = pairs_path_for(path)
    if not (candidate.is_file() and Path(path).exists()):
        return None
    try:
        with open_dataset(path) as reader:
            return None if reader.has_pairs() else candidate
    except (OSError, ValueError):
        return None
