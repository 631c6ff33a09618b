"""Identifiable coverage against today's coverage pass (the paper's Definition 1), measured in one run.

- ``identifiable measures``: ``theory.identifiable.identifiable_measures`` (reference from the
  policy's occupancy, identifiable reward widths, the same dynamic programme) against
  ``theory.coverage.coverage_measures`` on the same game, data and policy. Target: ratio <= 1.5.
- ``both measures``: the paper's and the identifiable ones from one pass (``both_measures``).
- ``tabular H=10 S=200 5x5, 10 pairs``: the Woodbury path on a tabular game (Hd = 50,000,
  a dense Sigma_r would be 18.6 GiB); ``peak_gib`` is this process's peak resident memory after it.
"""

from __future__ import annotations

import resource
import time

from marlcov.theory.coverage import coverage_measures
from marlcov.theory.games import random_linear_markov_game, random_markov_game
from marlcov.theory.identifiable import both_measures, identifiable_measures
from marlcov.theory.policies import random_policy
from marlcov.theory.preferences import sample_preference_dataset

REPEATS = 3


def _best_of(fn) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(quick: bool) -> list[dict]:
    rows = []
    game = random_linear_markov_game(20, (4, 4), 5, 16, seed=0, step_dependent_features=True)
    policy = random_policy(game, 1)
    data = sample_preference_dataset(game, policy, 2000 if quick else 20_000, 2)
    t_paper = _best_of(lambda: coverage_measures(game, data, policy))
    t_ident = _best_of(lambda: identifiable_measures(game, data, policy))
    t_both = _best_of(lambda: both_measures(game, data, policy))
    label = f"S=20 4x4 H=5 d=16, {data.n_pairs} pairs"
    rows.append(
        {
            "name": f"identifiable measures, {label}",
            "ours_s": t_ident,
            "baseline": "coverage_measures (Definition 1)",
            "baseline_s": t_paper,
            "ratio": t_ident / t_paper,
        }
    )
    rows.append(
        {
            "name": f"paper + identifiable in one pass, {label}",
            "ours_s": t_both,
            "baseline": "coverage_measures (Definition 1)",
            "baseline_s": t_paper,
            "ratio": t_both / t_paper,
        }
    )
    tab = random_markov_game(200, (5, 5), 10, seed=0)
    tab_policy = random_policy(tab, 1)
    tab_data = sample_preference_dataset(tab, tab_policy, 10, 2)
    start = time.perf_counter()
    coverage_measures(tab, tab_data, tab_policy)
    t_tab_paper = time.perf_counter() - start
    start = time.perf_counter()
    both_measures(tab, tab_data, tab_policy)
    t_tab_both = time.perf_counter() - start
    rows.append(
        {
            "name": "tabular H=10 S=200 5x5, 10 pairs: paper + identifiable",
            "ours_s": t_tab_both,
            "baseline": "coverage_measures (Woodbury)",
            "baseline_s": t_tab_paper,
            "ratio": t_tab_both / t_tab_paper,
            "peak_gib": _peak_gib(),
        }
    )
    return rows
