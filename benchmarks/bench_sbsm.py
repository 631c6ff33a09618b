"""Timing of Algorithms 2 + 3 (pessimistic evaluation and optimistic best responses).

Measured: building the dataset's regression statistics (``regression_model``: counts,
``Sigma_p``, ``M_h``, widths), the reward moments of ``r_under`` and ``r_bar``, and one backward
pass of Algorithm 2 and of Algorithm 3 for every player, at S = 100, A = (4, 4, 4), H = 10,
d = 32, N = 10,000 pairs; then at 2N and at 2H in the same run. ``ratio = ours_s / baseline_s``:
against the literal transcription (per step, the targets ``r + V(s')`` of all 2N samples are
formed and regressed afresh) for the main row, against the base size for the scaling rows
(linear scaling gives a ratio of at most 2).
"""

from __future__ import annotations

import time

import numpy as np

from marlcov.linear_games.sbsm import (
    GameSpec,
    optimistic_best_responses,
    pessimistic_values,
    regression_model,
)
from marlcov.theory.policies import joint_action_probs
from marlcov.theory.preferences import PreferenceDataset

SIZES = dict(n_states=100, action_sizes=(4, 4, 4), horizon=10, dim=32, n_pairs=10_000)


def _instance(n_states, action_sizes, horizon, dim, n_pairs, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.dirichlet(np.full(dim, 0.5), size=(horizon, n_states, *action_sizes))
    m = len(action_sizes)
    states = rng.integers(0, n_states, size=(n_pairs, 2, horizon + 1))
    actions = np.stack([rng.integers(0, a, size=(n_pairs, 2, horizon)) for a in action_sizes], axis=-1)
    prefs = rng.choice([-1, 1], size=(n_pairs, m))
    rewards = rng.uniform(-1.0, 2.0, size=(2, horizon, m, n_states, *action_sizes))
    policy = tuple(rng.dirichlet(np.ones(a), size=(horizon, n_states)) for a in action_sizes)
    return GameSpec(features, 0), PreferenceDataset(states, actions, prefs), rewards, policy


def algorithms_2_3(spec, dataset, rewards, policy, c_p=1.0):
    """Algorithms 2 and 3 from raw data: statistics, reward moments, both backward passes."""
    model = regression_model(spec, dataset)
    low = pessimistic_values(model, model.reward_weights(rewards[0]), policy, c_p)
    high = optimistic_best_responses(model, model.reward_weights(rewards[1]), policy, c_p)
    return low.V, high.V


def literal_algorithms_2_3(spec, dataset, rewards, policy, c_p=1.0, lam=1.0):
    """The printed loops: per step, per algorithm, regress the 2N targets ``r + V(s')`` afresh."""
    H, S, d = spec.horizon, spec.n_states, spec.dim
    sizes = spec.action_sizes
    m = len(sizes)
    flat = spec.features.reshape(H, -1, d)
    n_joint = int(np.prod(sizes))
    joint = np.ravel_multi_index(tuple(np.moveaxis(dataset.actions, -1, 0)), sizes)
    probs = joint_action_probs(policy).reshape(H, S, -1)
    others = [joint_action_probs(policy, skip=i) for i in range(m)]
    out = []
    for sign, table in ((-1.0, rewards[0]), (1.0, rewards[1])):
        V = np.zeros((H + 1, m, S))
        for h in range(H - 1, -1, -1):
            sa = (dataset.states[:, :, h] * n_joint + joint[:, :, h]).ravel()
            nxt = dataset.states[:, :, h + 1].ravel()
            psi = flat[h, sa]
            sigma = lam * np.eye(d) + psi.T @ psi
            targets = table[h].reshape(m, -1)[:, sa].T + V[h + 1][:, nxt].T
            w = np.linalg.solve(sigma, psi.T @ targets)
            width = np.sqrt(np.einsum("kd,de,ke->k", flat[h], np.linalg.inv(sigma), flat[h]))
            q = flat[h] @ w + sign * c_p * width[:, None]
            q = np.maximum(q, 0.0) if sign < 0 else np.minimum(q, float(H))
            if sign < 0:
                V[h] = np.sum(q.T.reshape(m, S, -1) * probs[h][None], axis=-1)
                continue
            q_players = q.T.reshape(m, S, *sizes)
            for i in range(m):
                axes = tuple(1 + j for j in range(m) if j != i)
                V[h, i] = np.sum(q_players[i] * others[i][h], axis=axes).reshape(S, -1).max(axis=1)
        out.append(V)
    return out


def run(quick: bool = True) -> list[dict]:
    """Rows ``{"name", "ours_s", "baseline", "baseline_s", "ratio"}`` with ``ratio = ours_s / baseline_s``.

    The cases are timed in interleaved rounds and each keeps its best round, so that load on a
    shared machine affects them alike.
    """
    repeats = 5 if quick else 11
    base = dict(SIZES)
    cases = {"N": base, "2N": {**base, "n_pairs": 2 * base["n_pairs"]}, "2H": {**base, "horizon": 2 * base["horizon"]}}
    instances = {key: _instance(**sizes) for key, sizes in cases.items()}
    ours_v = algorithms_2_3(*instances["N"])
    literal_v = literal_algorithms_2_3(*instances["N"])
    if not all(np.allclose(a, b, atol=1e-8) for a, b in zip(ours_v, literal_v)):
        raise RuntimeError("the vectorised and the literal Algorithms 2 + 3 disagree")
    jobs = {key: (lambda args=args: algorithms_2_3(*args)) for key, args in instances.items()}
    jobs["literal"] = lambda: literal_algorithms_2_3(*instances["N"])
    times = {key: np.inf for key in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[key] = min(times[key], time.perf_counter() - t0)
    literal = times["literal"]
    label = "S=100 A=(4,4,4) d=32"
    return [
        {
            "name": f"alg2+3 {label} H=10 N=10000",
            "ours_s": times["N"],
            "baseline": "literal per-step regression",
            "baseline_s": literal,
            "ratio": times["N"] / literal,
        },
        {
            "name": f"alg2+3 {label} H=10 N=20000",
            "ours_s": times["2N"],
            "baseline": "same at N=10000",
            "baseline_s": times["N"],
            "ratio": times["2N"] / times["N"],
        },
        {
            "name": f"alg2+3 {label} H=20 N=10000",
            "ours_s": times["2H"],
            "baseline": "same at H=10",
            "baseline_s": times["N"],
            "ratio": times["2H"] / times["N"],
        },
    ]


if __name__ == "__main__":
    import sys

    for row in run(quick="--full" not in sys.argv):
        print(f"{row['name']:<45} ours {row['ours_s']:.4f}s  {row['baseline']:<30} {row['baseline_s']:.4f}s  ratio {row['ratio']:.3f}")
