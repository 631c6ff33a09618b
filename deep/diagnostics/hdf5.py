"""The HDF5 diagnostic: the three streaming passes (module docstring of ``deep.diagnostics``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.dataset_coverage import (
    ACCUMULATOR_MEMORY_BYTES,
    CovarianceAccumulator,
)

from ..data.external import open_dataset
from ..data.hdf5 import read_pairs
from ..data.schema import PAIRS_GROUP
from ..features import STD_FLOOR, RandomFourierFeatures, joint_action_index, make_feature_map
from .counts import _Hasher
from .defaults import (
    DEFAULT_BLOCK,
    DEFAULT_BOOTSTRAP,
    DEFAULT_BOOTSTRAP_ANCHORS,
    DEFAULT_COUNT_RESOLUTION,
    DEFAULT_FEATURE_DIM,
    DEFAULT_GROUPS,
    DEFAULT_REFERENCE_FRACTION,
    EVAL_VECTORS,
    SIMULATION_EPISODES,
    UNIFORM_EVALUATIONS,
)
from .deviations import _AnchorEvaluation, _evaluate_batch, _ModelSet
from .ranking import bradley_terry_scores, reference_trajectories
from .reference_policy import _policy_actions, load_policy
from .report import DiagnosticResult, _assemble
from .simulator import _make_simulator, _simulate
from .streaming import _check_hdf5_options, _check_pairs, _fields_needed, _open_hdf5, _probe, accumulate_pairs, read_episode_lengths


def diagnose_hdf5(
    path: str | os.PathLike,
    policy=None,
    features: Any = "random",
    lam: float = DEFAULT_LAMBDA,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    *,
    pairs_path: str | os.PathLike | None = None,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    reference_fraction: float = DEFAULT_REFERENCE_FRACTION,
    groups: int = DEFAULT_GROUPS,
    bootstrap_anchors: int = DEFAULT_BOOTSTRAP_ANCHORS,
    uniform: bool = True,
    count_resolution: float = DEFAULT_COUNT_RESOLUTION,
    block: int = DEFAULT_BLOCK,
    memory_bytes: int = ACCUMULATOR_MEMORY_BYTES,
    simulate: bool = False,
    rookies: Mapping[str, Any] | None = None,
    episodes: int = SIMULATION_EPISODES,
    progress: Callable[[str], None] | None = None,
    fit_features: bool = True,
) -> DiagnosticResult:
    """The diagnostic of an HDF5 dataset (module docstring); arguments as in ``diagnose``.
    ``fit_features=False`` keeps the standardisation of a given ``RandomFourierFeatures`` (to
    compare several datasets on one feature map) instead of fitting it to this dataset.

    ValueError (FileNotFoundError for a missing file) naming the option, file or field, raised
    before the streaming passes wherever the check does not need them."""
    say = progress or (lambda msg: None)
    notes: list[str] = []
    _check_hdf5_options(
        lam=lam,
        bootstrap=bootstrap,
        groups=groups,
        bootstrap_anchors=bootstrap_anchors,
        reference_fraction=reference_fraction,
        count_resolution=count_resolution,
        block=block,
        episodes=episodes if simulate else 1,
    )
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: dataset not found")
    if pairs_path is not None and not Path(pairs_path).is_file():
        raise FileNotFoundError(f"{pairs_path}: pairs file not found")
    with _open_hdf5(open_dataset, path) as reader:
        spec = reader.spec
        H, m, nA, N = spec.horizon, spec.n_agents, spec.n_actions, len(reader)
        if N == 0:
            raise ValueError(f"{path}: n_trajectories: the dataset has no trajectories")
        if pairs_path is None and not reader.has_pairs():
            raise ValueError(
                f"{path}: no preference pairs (group '{PAIRS_GROUP}'), which every coverage measure needs: label "
                "the dataset (marlcov deep label writes DATA.pairs.h5 beside it) or give its pairs file (--pairs-file)"
            )
        pairs = _open_hdf5(read_pairs, pairs_path, reader) if pairs_path is not None else reader.pairs()
        P = len(pairs)
        _check_pairs(pairs, N, m, pairs_path if pairs_path is not None else path)
        fmap = make_feature_map(features, spec, dim=feature_dim, seed=seed)
        pol = load_policy(policy)
        _probe(reader, fmap, pol)

        # Pre-pass over avail and actions only (little to read): every check of the episodes.
        say("episode lengths")
        lengths = read_episode_lengths(reader, block)
        # The covariances need only the steps up to the longest episode: the rest is padding.
        H_c = int(lengths.max())
        if H_c == 0:
            raise ValueError(f"{path}: avail: no trajectory has a real step (an available action)")
        if CovarianceAccumulator.max_slots(H_c, fmap.dim, memory_bytes) < 0:
            need = CovarianceAccumulator.bytes_needed(H_c, fmap.dim, 0)
            raise ValueError(
                f"memory_bytes: Sigma_r and Sigma_p of Hd = {H_c * fmap.dim} need {need / 2**30:.2f} GiB, over the "
                f"budget of {memory_bytes / 2**30:.2f} GiB; use a smaller feature dimension"
            )
        sim_env = None
        if simulate:
            if pol is None:
                notes.append("simulate: no reference policy given; the simulator needs one, so it was not used")
            elif H_c < H:
                notes.append("simulate: the dataset's episodes end early, which the simulator's do not; it was not used")
            else:
                sim_env, why = _make_simulator(spec, episodes)
                if sim_env is None:
                    notes.append(f"simulate: {why}")

        # Pass 0: feature standardisation and count keys, on the real steps.
        say("pass 0: statistics and counts")
        hasher_s = _Hasher(spec.state_dim, count_resolution)
        hasher_o = _Hasher(spec.obs_dim, count_resolution)
        keys_sa, keys_s, keys_oa = [], [], [[] for _ in range(m)]
        fit = fit_features and isinstance(fmap, RandomFourierFeatures)
        total = np.zeros(getattr(fmap, "input_dim", 0))
        squares = np.zeros_like(total)
        count = 0
        for idx, d in reader.iter_batches(block, fields=["state", "obs", "actions"]):
            valid = np.arange(H)[None, :] < lengths[idx][:, None]
            st = d["state"][:, :H].astype(np.float64)[valid]
            acts = d["actions"][:, :H][valid]
            ja = joint_action_index(acts, nA)
            hs = hasher_s(st)
            keys_s.append(np.unique(hs))
            keys_sa.append(np.unique(hasher_s(st, ja)))
            for i in range(m):
                keys_oa[i].append(np.unique(hasher_o(d["obs"][:, :H, i].astype(np.float64)[valid], acts[..., i])))
            if fit:
                x = np.asarray(d[fmap.source][:, :H], dtype=np.float64)
                x = x.reshape(*x.shape[:2], fmap.input_dim)[valid]
                total += x.sum(axis=0)
                squares += (x * x).sum(axis=0)
                count += x.shape[0]
        n_trans = int(lengths.sum())
        if fit:
            fmap.mean = total / count
            std = np.sqrt(np.maximum(squares / count - fmap.mean**2, 0.0))
            fmap.std = np.where(std < STD_FLOOR, 1.0, std)
        data_sa = np.unique(np.concatenate(keys_sa))
        counts = {
            "resolution": count_resolution,
            "transitions": n_trans,
            "distinct_state_joint_action": int(data_sa.size),
            "joint_saco": data_sa.size / n_trans,
            "distinct_states": int(np.unique(np.concatenate(keys_s)).size),
            "individual_saco": [np.unique(np.concatenate(k)).size / n_trans for k in keys_oa],
        }
        counts["state_ratio"] = counts["distinct_states"] / n_trans
        del keys_sa, keys_s, keys_oa

        # Pass 1: covariances, pairs scheduled by blocks.
        G = min(groups, P, max(CovarianceAccumulator.max_slots(H_c, fmap.dim, memory_bytes), 0))
        if G < groups:
            notes.append(
                f"bootstrap and size curve use {G} pair groups (memory budget {memory_bytes / 2**30:.1f} GiB, Hd = {H_c * fmap.dim})"
            )
        say(f"pass 1: covariances over {P} pairs, {G} groups")
        acc, multiplicity = accumulate_pairs(reader, pairs, fmap, lam, G, block, memory_bytes, horizon=H_c)

        # Bonus models: point, bootstrap replicates over groups, size prefixes.
        rng = np.random.default_rng(seed)
        say("bonus models")
        point = acc.bonus_model()
        n_rep = int(bootstrap) if G >= 2 else 0
        if bootstrap and not n_rep:
            notes.append("bootstrap skipped: fewer than two pair groups fit")
        v = rng.poisson(1.0, size=(n_rep, G)).astype(np.float64)
        replicates = [acc.bonus_model(coefficients=v[r]) for r in range(n_rep)]
        prefix_groups = sorted({int(2**k) for k in range(int(np.log2(G)) + 1)} - {G}) if G >= 2 else []
        size_models = [acc.bonus_model(coefficients=(np.arange(G) < k).astype(np.float64)) for k in prefix_groups]
        models = _ModelSet(point, replicates, size_models, point.with_reference(acc.feature_mean()))

        # Anchors.
        if pol is None:
            ranked = bradley_terry_scores(pairs.first, pairs.second, pairs.labels, N)
            in_pairs = multiplicity > 0
            anchors = reference_trajectories(ranked, in_pairs, reference_fraction)
            reference = {
                "kind": "preference-ranking",
                "score": "bradley-terry",
                "fraction": reference_fraction,
                "trajectories": int(anchors.size),
            }
        elif sim_env is None:
            anchors = np.arange(N)
            reference = {"kind": "policy", "policy": str(policy), "anchors": "dataset states", "trajectories": N}
        else:
            anchors = None
            reference = {"kind": "policy", "policy": str(policy), "anchors": "simulator rollouts", "trajectories": int(episodes)}

        joint_size = nA**m
        evaluation = _AnchorEvaluation(models, m, nA)
        n_anchor = anchors.size if anchors is not None else int(episodes)
        perm = rng.permutation(n_anchor)
        in_subset_all = np.zeros(n_anchor, dtype=bool)
        in_subset_all[perm[:bootstrap_anchors]] = True
        n_uniform = min(n_anchor, max(1, UNIFORM_EVALUATIONS // (H_c * joint_size))) if uniform else 0
        in_uniform_all = np.zeros(n_anchor, dtype=bool)
        in_uniform_all[perm[:n_uniform]] = True
        if uniform and n_uniform < n_anchor:
            notes.append(f"uniform: evaluated on {n_uniform} of {n_anchor} anchor trajectories ({joint_size} joint actions each step)")
        sorted_sa = data_sa
        say(f"pass 2: measures on {n_anchor} anchor trajectories")
        fields_anchor = _fields_needed(fmap, ["actions", "avail", "obs", "state"])
        batch = max(1, min(block, EVAL_VECTORS // (H_c * max(m * nA, 1))))
        can = {"unilateral": True, "uniform": uniform}
        if anchors is not None:
            for c in range(0, n_anchor, batch):
                pos = np.arange(c, min(c + batch, n_anchor))
                idx = anchors[pos]
                d = reader.read_fields(idx, fields_anchor)
                valid = np.arange(H_c)[None, :] < lengths[idx][:, None]
                recorded = d["actions"][:, :H_c].astype(np.int64)
                ref_actions = recorded if pol is None else _policy_actions(pol, d["obs"][:, :H_c], d["avail"][:, :H_c], valid, recorded)
                _evaluate_batch(
                    evaluation, fmap, d, ref_actions, idx, in_subset_all[pos], in_uniform_all[pos], can, hasher_s, sorted_sa, H_c, valid
                )
            simulator = None
        else:
            simulator = _simulate(
                sim_env,
                spec,
                pol,
                fmap,
                point,
                evaluation,
                in_subset_all,
                in_uniform_all,
                can,
                hasher_s,
                sorted_sa,
                rookies or {},
                seed,
                episodes,
                say,
            )
        if not can["unilateral"]:
            notes.append("unilateral: the feature map gives no features at other actions")
        if not can["uniform"] and uniform:
            notes.append("uniform: the feature map gives no features at arbitrary joint actions")

    reader_info = {
        **_spec_dict_from(spec, path, N),
        "pairs": P,
        "pairs_file": None if pairs_path is None else str(pairs_path),
        "real_steps": n_trans,
        "padded_trajectories": int(np.sum(lengths < H)),
        "longest_episode": H_c,
    }
    return _assemble(
        evaluation,
        models,
        prefix_groups,
        G,
        P,
        acc,
        counts,
        reference,
        fmap,
        spec,
        reader_info=reader_info,
        simulator=simulator,
        notes=notes,
        n_rep=n_rep,
        bootstrap_anchors=int(in_subset_all.sum()),
        can=can,
    )


def _spec_dict_from(spec, path, N) -> dict:
    return {
        "path": str(path),
        "format": "hdf5",
        "env_name": spec.env_name,
        "trajectories": int(N),
        "horizon": spec.horizon,
        "agents": list(spec.agent_names),
        "n_actions": spec.n_actions,
    }
