"""Exact core: coverage at scale against the machine's own matmul rate, and the exact Nash gap
against a plain loop over joint actions, both measured in the same run."""

from __future__ import annotations

import itertools
import time

import numpy as np

from marlcov.theory.coverage import reward_covariance, step_features, transition_covariances
from marlcov.theory.games import random_linear_markov_game, random_markov_game
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import PreferenceDataset
from marlcov.theory.values import nash_gap


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def synthetic_dataset(game, n_pairs: int, seed: int) -> PreferenceDataset:
    rng = np.random.default_rng(seed)
    H, m = game.horizon, game.n_players
    states = rng.integers(0, game.n_states, size=(n_pairs, 2, H + 1))
    actions = np.stack([rng.integers(0, a, size=(n_pairs, 2, H)) for a in game.action_sizes], axis=-1)
    prefs = rng.choice([-1, 1], size=(n_pairs, m))
    return PreferenceDataset(states, actions, prefs)


def bench_coverage(quick: bool) -> dict:
    N, H, d = (20_000 if quick else 100_000), 10, 16
    game = random_linear_markov_game(20, (3, 3), H, d, seed=0, step_dependent_features=True)
    ds = synthetic_dataset(game, N, 1)
    psi = game.features

    def ours():
        reward_covariance(psi, ds)
        transition_covariances(psi, ds)

    phi = step_features(psi, ds.states, ds.actions)
    diff = np.ascontiguousarray((phi[:, 0] - phi[:, 1]).reshape(N, H * d))
    by_step = np.ascontiguousarray(phi.transpose(2, 0, 1, 3).reshape(H, 2 * N, d))
    by_step_t = np.ascontiguousarray(by_step.transpose(0, 2, 1))

    def matmul_only():
        diff.T @ diff
        np.matmul(by_step_t, by_step)

    repeats = 3
    t_ours, t_mm = best_of(ours, repeats), best_of(matmul_only, repeats)
    return {
        "name": f"coverage covariances N={N} H={H} d={d}",
        "ours_s": t_ours,
        "baseline": "numpy matmul of the same shapes",
        "baseline_s": t_mm,
        "ratio": t_ours / t_mm,
        "matmul_fraction": t_mm / t_ours,
    }


def loop_nash_gap(game, policy) -> float:
    """The Bellman recursion written with a Python loop over states and joint actions."""
    H, S, m = game.horizon, game.n_states, game.n_players
    joint = list(itertools.product(*[range(a) for a in game.action_sizes]))
    gap = 0.0
    for i in range(m):
        V = np.zeros(S)
        Vbr = np.zeros(S)
        for h in range(H - 1, -1, -1):
            newV, newBr = np.zeros(S), np.zeros(S)
            for s in range(S):
                marg = np.zeros(game.action_sizes[i])
                for a in joint:
                    p_others = np.prod([policy[j][h, s, a[j]] for j in range(m) if j != i])
                    p = p_others * policy[i][h, s, a[i]]
                    P = game.transitions[(h, s, *a)]
                    r = game.rewards[(h, i, s, *a)]
                    newV[s] += p * (r + P @ V)
                    marg[a[i]] += p_others * (r + P @ Vbr)
                newBr[s] = marg.max()
            V, Vbr = newV, newBr
        gap += Vbr[game.initial_state] - V[game.initial_state]
    return gap


def bench_nash_gap(quick: bool) -> dict:
    S, A, H = 50, (5, 5, 5), (3 if quick else 10)
    game = random_markov_game(S, A, H, seed=0)
    pi = random_policy(game, 1)
    t_ours = best_of(lambda: nash_gap(game, pi), 3)
    start = time.perf_counter()
    ref = loop_nash_gap(game, pi)
    t_loop = time.perf_counter() - start
    assert abs(ref - nash_gap(game, pi).total) < 1e-9
    return {
        "name": f"exact Nash gap S={S} A={A} H={H}",
        "ours_s": t_ours,
        "baseline": "Python loop over joint actions",
        "baseline_s": t_loop,
        "ratio": t_ours / t_loop,
    }


def run(quick: bool) -> list[dict]:
    return [bench_coverage(quick), bench_nash_gap(quick)]


if __name__ == "__main__":
    for row in run(quick=False):
        print(row)
