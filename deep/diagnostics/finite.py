"""The diagnostic of a finite-game preference dataset, delegated to ``theory.dataset_coverage`` (exact measures)."""

from __future__ import annotations

import os

import numpy as np

from marlcov.theory.coverage import DEFAULT_LAMBDA
from marlcov.theory.dataset_coverage import (
    finite_game_coverage,
)

from .defaults import DEFAULT_BOOTSTRAP, FINITE_SIZE_FRACTIONS
from .report import DiagnosticResult


# ----------------------------------------------------------------------------- finite games
def diagnose_finite(game, data, policy, lam: float = DEFAULT_LAMBDA, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> DiagnosticResult:
    """The diagnostic of a finite-game preference dataset: exact measures from streamed covariances."""
    from marlcov.theory.io import load_dataset, load_game
    from marlcov.theory.io import load_policy as load_game_policy

    game_obj = load_game(game) if isinstance(game, (str, os.PathLike)) else game
    ds = load_dataset(data, game_obj) if isinstance(data, (str, os.PathLike)) else data
    if policy is None:
        raise ValueError("policy: a finite game needs the reference joint policy (a marlcov.policy/1 file)")
    pol = load_game_policy(policy, game_obj) if isinstance(policy, (str, os.PathLike)) else policy
    fc = finite_game_coverage(game_obj, ds, pol, lam, int(bootstrap), seed)
    cov = fc.coverage
    H, m = game_obj.horizon, game_obj.n_players
    states = np.concatenate([ds.states[:, 0, :H], ds.states[:, 1, :H]]).ravel()
    acts = np.concatenate([ds.actions[:, 0], ds.actions[:, 1]]).reshape(-1, m)
    n_trans = states.size
    joint = np.ravel_multi_index((states, *acts.T), (game_obj.n_states, *game_obj.action_sizes))
    counts = {
        "resolution": None,
        "transitions": int(n_trans),
        "distinct_state_joint_action": int(np.unique(joint).size),
        "joint_saco": np.unique(joint).size / n_trans,
        "distinct_states": int(np.unique(states).size),
        "state_ratio": np.unique(states).size / n_trans,
        "individual_saco": [np.unique(states * game_obj.action_sizes[i] + acts[:, i]).size / n_trans for i in range(m)],
        "state_joint_action_fraction": np.unique(joint).size / (game_obj.n_states * int(np.prod(game_obj.action_sizes))),
    }
    sizes = []
    for frac in FINITE_SIZE_FRACTIONS:
        n = max(1, int(round(frac * ds.n_pairs)))
        c = finite_game_coverage(game_obj, ds.subset(slice(0, n)), pol, lam).coverage
        sizes.append(
            {
                "fraction": frac,
                "pairs": n,
                "single": c.single,
                "unilateral": c.unilateral,
                "uniform": c.uniform,
                "per_agent": c.per_player.tolist(),
            }
        )
    per_agent = [
        {
            "player": i,
            "name": f"player_{i}",
            "unilateral": float(cov.per_player[i]),
            "estimator": "exact",
            "bootstrap": fc.bootstrap["per_player"][i],
        }
        for i in range(m)
    ]
    boot = {k: v for k, v in fc.bootstrap.items() if k != "per_player"}
    worst_dev = {"format": "marlcov.policy/1", "player": cov.worst_player, "probs": cov.worst_deviation.tolist()}
    bonus = fc.bonus
    return DiagnosticResult(
        lam=cov.lam,
        single=cov.single,
        unilateral=cov.unilateral,
        uniform=cov.uniform,
        worst_player=cov.worst_player,
        per_agent=per_agent,
        bootstrap=boot,
        counts=counts,
        sizes=sizes,
        reference={"kind": "policy", "policy": str(policy), "worst_deviation": worst_dev},
        features={
            "kind": "game" if game_obj.features is not None else "one-hot",
            "dim": int(game_obj.features.shape[-1]) if game_obj.features is not None else int(np.prod(bonus.shape[1:])),
        },
        dataset={"path": str(data), "format": "npz", "pairs": ds.n_pairs, "horizon": H, "agents": [f"player_{i}" for i in range(m)]},
        histograms={"reference": bonus.ravel()},
        identifiable={
            "single": fc.identifiable.single,
            "unilateral": fc.identifiable.unilateral,
            "uniform": fc.identifiable.uniform,
            "worst_deviator": {"player": fc.identifiable.worst_player, "value": fc.identifiable.unilateral},
            "per_agent": fc.identifiable.per_player.tolist(),
            "estimator": "exact",
            "reference": "c_h = E_pi*[psi_h(s_h, a_h)] (theory.identifiable.policy_reference)",
        },
    )
