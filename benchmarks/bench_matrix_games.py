"""Benchmark of the matrix-game solvers against direct baselines.

(a) zero-sum LP of a random n x n game (n = 1000; 300 with ``--quick``): ``zero_sum_solve``
    (build the LP, one HiGHS solve, dual marginals, polishing) vs one direct call of
    ``scipy.optimize.linprog(method="highs")`` on the same, prebuilt LP. Target: ratio <= 2.
(b) all equilibria of random 8 x 8 bimatrix games: ``all_equilibria`` vs nashpy's
    ``support_enumeration`` (its default, which also tries supports of unequal sizes, and
    ``non_degenerate=True``, the like-for-like algorithm), and quantecon's
    ``game_theory.support_enumeration`` if it is installed. Target: ratio <= 1.

``ratio = ours_s / baseline_s``; times are the best of several repeats of
``time.perf_counter``. Run as ``python benchmarks/bench_matrix_games.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marlcov.linear_games.matrix_games import all_equilibria, zero_sum_solve  # noqa: E402


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _row(name, ours_s, baseline, baseline_s, **extra) -> dict:
    row = {
        "name": name,
        "ours_s": ours_s,
        "baseline": baseline,
        "baseline_s": baseline_s,
        "ratio": ours_s / baseline_s,
    }
    row.update(extra)
    return row


def bench_zero_sum(n: int, repeats: int, seed: int = 0) -> dict:
    A = np.random.default_rng(seed).random((n, n))
    # the LP that zero_sum_solve("highs") solves: min 1^T u s.t. A'^T u >= 1, u >= 0,
    # with A' the payoffs normalised to [1, 2]
    Ap = 1.0 + (A - A.min()) / (A.max() - A.min())
    c, A_ub, b_ub = np.ones(n), -Ap.T, -np.ones(n)

    def baseline():
        return linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method="highs")

    ours_s, sol = _best_of(lambda: zero_sum_solve(A, method="highs"), repeats)
    base_s, res = _best_of(baseline, repeats)
    base_value = A.min() + (A.max() - A.min()) * (1.0 / res.fun - 1.0)
    exploit = float((A @ sol.col_strategy).max() - (sol.row_strategy @ A).min())
    return _row(
        f"zero_sum_lp_n{n}",
        ours_s,
        "scipy.linprog(highs), same LP",
        base_s,
        value_diff=abs(sol.value - base_value),
        exploitability=exploit,
    )


def _games(n_games: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, size)), rng.standard_normal((size, size))) for _ in range(n_games)]


def bench_bimatrix(n_games: int, repeats: int, size: int = 8, seed: int = 1) -> list[dict]:
    import nashpy

    games = _games(n_games, size, seed)
    ours_s, ours = _best_of(lambda: [all_equilibria(A, B) for A, B in games], repeats)
    n_ours = sum(len(r) for r in ours)
    rows = []
    for label, kwargs in [
        ("nashpy.support_enumeration()", {}),
        ("nashpy.support_enumeration(non_degenerate=True)", {"non_degenerate": True}),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            base_s, found = _best_of(
                lambda: [list(nashpy.Game(A, B).support_enumeration(**kwargs)) for A, B in games], 1
            )
        rows.append(
            _row(
                f"all_equilibria_{size}x{size}_x{n_games}",
                ours_s,
                label,
                base_s,
                equilibria_ours=n_ours,
                equilibria_baseline=sum(len(f) for f in found),
            )
        )
    try:
        from quantecon import game_theory as qe_gt
    except ImportError:
        print("note: quantecon is not installed; skipping the quantecon support_enumeration row")
    else:
        def qe():
            return [qe_gt.support_enumeration(qe_gt.NormalFormGame((qe_gt.Player(A), qe_gt.Player(B.T))))
                    for A, B in games]

        qe()  # numba compilation outside the timing
        base_s, found = _best_of(qe, repeats)
        rows.append(
            _row(
                f"all_equilibria_{size}x{size}_x{n_games}",
                ours_s,
                "quantecon.game_theory.support_enumeration",
                base_s,
                equilibria_ours=n_ours,
                equilibria_baseline=sum(len(f) for f in found),
            )
        )
    return rows


def run(quick: bool) -> list[dict]:
    """Rows ``{"name", "ours_s", "baseline", "baseline_s", "ratio", ...}`` (ratio = ours/baseline)."""
    rows = [bench_zero_sum(n=300 if quick else 1000, repeats=3)]
    rows += bench_bimatrix(n_games=1 if quick else 3, repeats=5)
    return rows


def _print_table(rows: list[dict]) -> None:
    head = f"{'name':<28} {'ours_s':>10} {'baseline_s':>11} {'ratio':>8}  baseline"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:<28} {r['ours_s']:>10.4f} {r['baseline_s']:>11.4f} {r['ratio']:>8.3f}  {r['baseline']}")
        extra = {k: v for k, v in r.items() if k not in ("name", "ours_s", "baseline", "baseline_s", "ratio")}
        if extra:
            print(" " * 29 + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller LP, fewer games")
    _print_table(run(quick=parser.parse_args().quick))
