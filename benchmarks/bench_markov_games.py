"""Benchmark of the exact Nash gap at scale and of Markov-game equilibria.

(a) ``theory.values.nash_gap`` on random games with m = 2..5 players, S = 100, H = 10, four
    actions each (m = 2..4 with ``--quick``), against the physical floor: one pass over the
    transition tensor (one matrix-vector product ``P_h v`` per step). A second row compares
    with m + 1 passes (``evaluate_policy`` and one ``best_response`` per player), the previous
    implementation.
(b) ``markov_equilibrium`` of a zero-sum game (S = 20, H = 5, 4 x 4 actions): backward
    induction with one polished LP per (h, s), against the bare stage LPs
    (``scipy.optimize.linprog(method="highs")`` on the same stage matrices).

(c) ``markov_equilibrium`` of a general-sum 3-player game (S = 10, H = 3, 3 actions each),
    against the bare pygambit ``enumpoly_solve(stop_after=1)`` calls on the same stage games
    (the cost of building the gambit games and of our regret check).
(d) the choice of the n-player stage solver: ``n_player_equilibrium`` on random 3 x 3 x 3 and
    2 x 2 x 2 x 2 games against each of pygambit's other solvers (``logit``, ``ipa``, ``gnm``),
    with the largest normalised regret of what each returned and the number of games on which
    it returned nothing. ``simpdiv`` is left out: in rational arithmetic it took 65-95 ms per
    game on most and over 100 s on one of ten 3 x 3 x 3 games. (c) and (d) are skipped
    without pygambit.

``ratio = ours_s / baseline_s``. Run as ``python benchmarks/bench_markov_games.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marlcov.linear_games.markov_equilibria import _stage_payoffs, markov_equilibrium  # noqa: E402
from marlcov.linear_games.n_player import deviation_gains, has_gambit, n_player_equilibrium  # noqa: E402
from marlcov.theory.games import MarkovGame  # noqa: E402
from marlcov.theory.policies import random_policy  # noqa: E402
from marlcov.theory.values import best_response, evaluate_policy, nash_gap  # noqa: E402


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _row(name, ours_s, baseline, baseline_s, **extra) -> dict:
    row = {"name": name, "ours_s": ours_s, "baseline": baseline, "baseline_s": baseline_s, "ratio": ours_s / baseline_s}
    row.update(extra)
    return row


def _game(m: int, S: int, H: int, A: int, seed: int) -> MarkovGame:
    rng = np.random.default_rng(seed)
    P = rng.random((H, S, *([A] * m), S))
    P /= P.sum(axis=-1, keepdims=True)
    R = rng.random((H, m, S, *([A] * m)))
    return MarkovGame(P, R)


def bench_nash_gap(players, S: int = 100, H: int = 10, A: int = 4, repeats: int = 3) -> list[dict]:
    rows = []
    for m in players:
        game = _game(m, S, H, A, seed=m)
        pi = random_policy(game, 0)
        P = game.transitions
        v = np.random.default_rng(1).random(S)

        def one_pass():
            return [P[h].reshape(-1, S) @ v for h in range(H)]

        def m_plus_one_passes():
            own = evaluate_policy(P, game.rewards, pi).V
            return own, [best_response(P, game.rewards[:, i], pi, i).values for i in range(m)]

        ours_s, gap = _best_of(lambda: nash_gap(game, pi), repeats)
        floor_s, _ = _best_of(one_pass, repeats)
        old_s, (own, brs) = _best_of(m_plus_one_passes, 1)
        old_total = sum(max(0.0, br[0, 0] - own[0, i, 0]) for i, br in enumerate(brs))
        gb = P.nbytes / 2**30
        rows.append(_row(f"nash_gap_m{m}_S{S}_H{H}_A{A}", ours_s, "one pass over P (P_h @ v per step)", floor_s, P_GiB=gb))
        rows.append(
            _row(
                f"nash_gap_m{m}_S{S}_H{H}_A{A}",
                ours_s,
                "m + 1 passes (evaluate_policy + best_response)",
                old_s,
                agree=abs(gap.total - old_total),
            )
        )
    return rows


def bench_zero_sum_markov(S: int = 20, H: int = 5, A: int = 4) -> list[dict]:
    rng = np.random.default_rng(5)
    P = rng.random((H, S, A, A, S))
    P /= P.sum(axis=-1, keepdims=True)
    R0 = rng.random((H, S, A, A))
    game = MarkovGame(P, np.stack([R0, 1.0 - R0], axis=1))
    ours_s, eq = _best_of(lambda: markov_equilibrium(game), 1)
    # the stage matrices of the induction, solved by bare HiGHS calls
    stages = []
    V = np.zeros(S)
    for h in range(H - 1, -1, -1):
        Q = R0[h] + P[h] @ V
        stages += [Q[s] for s in range(S)]
        V = eq.values[h, 0]

    def bare():
        for M in stages:
            Mp = 1.0 + (M - M.min()) / max(np.ptp(M), 1e-300)
            linprog(np.ones(A), A_ub=-Mp.T, b_ub=-np.ones(A), bounds=(0, None), method="highs")

    base_s, _ = _best_of(bare, 1)
    return [_row(f"markov_equilibrium_zero_sum_S{S}_H{H}_A{A}", ours_s, f"{H * S} bare stage LPs (HiGHS)", base_s, nash_gap=eq.nash_gap)]


def _normalised(U: np.ndarray) -> np.ndarray:
    flat = U.reshape(U.shape[0], -1)
    lo, span = flat.min(axis=1), np.ptp(flat, axis=1)
    shape = (-1, *[1] * (U.ndim - 1))
    return (U - lo.reshape(shape)) / np.where(span > 0, span, 1.0).reshape(shape)


def bench_n_player_markov(S: int = 10, H: int = 3, A: int = 3) -> list[dict]:
    import pygambit as gbt

    game = _game(3, S, H, A, seed=7)
    ours_s, eq = _best_of(lambda: markov_equilibrium(game), 1)
    stages = []
    for h in range(H - 1, -1, -1):
        Q = _stage_payoffs(game, h, eq.values[h + 1])
        stages += [_normalised(Q[:, s]) for s in range(S)]

    def bare():
        return [gbt.nash.enumpoly_solve(gbt.StrategicGame.from_arrays(*U), stop_after=1) for U in stages]

    base_s, _ = _best_of(bare, 1)
    return [
        _row(
            f"markov_equilibrium_3_players_S{S}_H{H}_A{A}",
            ours_s,
            f"{H * S} bare pygambit enumpoly_solve calls",
            base_s,
            nash_gap=eq.nash_gap,
            stage_games=eq.stage_games,
        )
    ]


def _profile(eq, game) -> list[np.ndarray]:
    return [np.array([float(p) for _, p in eq[label]]) for label in game.players]


def bench_n_player_solvers(count: int = 10) -> list[dict]:
    import pygambit as gbt

    solvers = {
        "pygambit logit_solve": lambda g: [gbt.nash.logit_solve(g).equilibrium],
        "pygambit ipa_solve": lambda g: [gbt.nash.ipa_solve(g).equilibrium],
        "pygambit gnm_solve": lambda g: gbt.nash.gnm_solve(g).equilibria,
    }
    rows = []
    for shape in [(3, 3, 3), (2, 2, 2, 2)]:
        rng = np.random.default_rng(len(shape))
        games = [rng.random((len(shape), *shape)) for _ in range(count)]
        ours_s, ours = _best_of(lambda: [n_player_equilibrium(U) for U in games], 1)  # noqa: B023
        for label, solve in solvers.items():
            regrets, failures = [], 0
            t0 = time.perf_counter()
            for U in games:
                g = gbt.StrategicGame.from_arrays(*U)
                found = [e for e in solve(g) if e is not None]
                if not found:
                    failures += 1
                    continue
                regrets.append(deviation_gains(_normalised(U), _profile(found[0], g)).max())
            base_s = time.perf_counter() - t0
            rows.append(
                _row(
                    f"n_player_stage_{'x'.join(map(str, shape))}_x{count}",
                    ours_s,
                    label,
                    base_s,
                    regret_ours=max(e.regret for e in ours),
                    regret_peer=float(max(regrets, default=float("nan"))),
                    peer_failures=failures,
                )
            )
    return rows


def run(quick: bool) -> list[dict]:
    """Rows ``{"name", "ours_s", "baseline", "baseline_s", "ratio", ...}`` (ratio = ours/baseline)."""
    rows = bench_nash_gap([2, 3, 4] if quick else [2, 3, 4, 5])
    rows += bench_zero_sum_markov()
    if has_gambit():
        rows += bench_n_player_markov()
        rows += bench_n_player_solvers()
    else:
        print("pygambit not installed: the n-player rows are skipped", file=sys.stderr)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="m = 2..4 only")
    for r in run(quick=parser.parse_args().quick):
        extra = ", ".join(
            f"{k}={v:.3g}" for k, v in r.items() if isinstance(v, (int, float)) and k not in ("ours_s", "baseline_s", "ratio")
        )
        print(f"{r['name']:<40} ours {r['ours_s']:.4g}s  {r['baseline']}: {r['baseline_s']:.4g}s  ratio {r['ratio']:.3g}  {extra}")
