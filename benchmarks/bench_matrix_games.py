"""Benchmark of the matrix-game solvers against the peers, measured in the same run.

(a) all extreme equilibria of random n x n games (n = 8, 10, 12; 8, 10 with ``--quick``):
    ``all_equilibria`` vs quantecon's ``vertex_enumeration`` (warm: its numba JIT compiled
    before timing), nashpy's ``vertex_enumeration`` and pygambit's ``enummixed`` (float).
(b) one fresh Python process that imports the solver and solves one 8 x 8 game: ours vs
    quantecon (whose numba compilation is paid in every new process).
(c) Lemke-Howson from label 0 on random n x n games (n = 12, 30): ours vs quantecon, one path
    per call, then the same paths in one call (``lemke_howson_batch``, a row of its own) and every
    starting label of one game in one batch, each against quantecon called once per path; and one
    fresh process that imports the solver and runs one 12 x 12 path, with the numba cache warm and
    with it cold (``NUMBA_CACHE_DIR`` an empty folder, for quantecon too), against quantecon.
(d) zero-sum LP of a random dense n x n game (n = 1000; 300 with ``--quick``):
    ``zero_sum_solve`` vs HiGHS interior point and dual simplex on the same LP, with the
    exploitability certified from each pair of strategies.

Peers are benchmark-only (the ``bench`` extra); a peer that is not installed is skipped with a
note. ``ratio = ours_s / baseline_s``; times are the best of several repeats.
Run as ``python benchmarks/bench_matrix_games.py [--quick]`` or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marlcov.linear_games.matrix_games import all_equilibria, lemke_howson, lemke_howson_batch, zero_sum_solve  # noqa: E402


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _best_of_interleaved(ours, peer, repeats: int) -> tuple[float, object, float, object]:
    """Best-of times of two functions measured alternately, so that a change of machine load
    during the run biases neither side."""
    t_ours = t_peer = float("inf")
    out_ours = out_peer = None
    for _ in range(repeats):
        t, out_ours = _best_of(ours, 1)
        t_ours = min(t_ours, t)
        t, out_peer = _best_of(peer, 1)
        t_peer = min(t_peer, t)
    return t_ours, out_ours, t_peer, out_peer


def _row(name, ours_s, baseline, baseline_s, **extra) -> dict:
    row = {"name": name, "ours_s": ours_s, "baseline": baseline, "baseline_s": baseline_s, "ratio": ours_s / baseline_s}
    row.update(extra)
    return row


def _have(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        print(f"note: {module} is not installed; its rows are skipped (pip install marlcov[bench])")
        return False
    return True


def _games(n: int, count: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, n)), rng.standard_normal((n, n))) for _ in range(count)]


def _peers_all_equilibria():
    peers = {}
    if _have("quantecon"):
        from quantecon import game_theory as gt

        peers["quantecon.vertex_enumeration (warm)"] = lambda A, B: gt.vertex_enumeration(gt.NormalFormGame((gt.Player(A), gt.Player(B.T))))
    if _have("nashpy"):
        import nashpy

        # pure Python: ~1.6 s per 8 x 8 game, minutes at 10 x 10, so timed at n <= 8 only
        peers["nashpy.vertex_enumeration"] = lambda A, B: list(nashpy.Game(A, B).vertex_enumeration())
    if _have("pygambit"):
        import pygambit as gbt

        peers["pygambit.enummixed (float)"] = lambda A, B: (
            gbt.nash.enummixed_solve(gbt.StrategicGame.from_arrays(A, B), rational=False).equilibria
        )
    return peers


def bench_all_equilibria(sizes, count: int, repeats: int) -> list[dict]:
    rows = []
    peers = _peers_all_equilibria()
    for n in sizes:
        games = _games(n, count, seed=n)
        for label, peer in peers.items():
            if "nashpy" in label and n > 8:
                continue
            peer(*games[0])  # JIT / warm-up outside the timing
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours_s, ours, base_s, found = _best_of_interleaved(
                    lambda: [all_equilibria(A, B) for A, B in games],
                    lambda: [peer(A, B) for A, B in games],  # noqa: B023 - called inside the loop
                    1 if "nashpy" in label else repeats,
                )
            rows.append(
                _row(
                    f"all_equilibria_{n}x{n}_x{count}",
                    ours_s,
                    label,
                    base_s,
                    equilibria_ours=sum(len(r) for r in ours),
                    equilibria_peer=sum(len(f) for f in found),
                )
            )
    return rows


_FRESH = {
    "ours": "import numpy as np; from marlcov.linear_games.matrix_games import all_equilibria; "
    "r = np.random.default_rng(8); A, B = r.standard_normal((8, 8)), r.standard_normal((8, 8)); "
    "all_equilibria(A, B)",
    "quantecon": "import numpy as np; from quantecon import game_theory as gt; "
    "r = np.random.default_rng(8); A, B = r.standard_normal((8, 8)), r.standard_normal((8, 8)); "
    "gt.vertex_enumeration(gt.NormalFormGame((gt.Player(A), gt.Player(B.T))))",
}


def bench_fresh_process() -> list[dict]:
    if not _have("quantecon"):
        return []

    def run(code):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t0

    ours = min(run(_FRESH["ours"]) for _ in range(2))
    peer = min(run(_FRESH["quantecon"]) for _ in range(2))
    return [_row("all_equilibria_8x8_fresh_process", ours, "quantecon.vertex_enumeration, fresh process", peer)]


def bench_lemke_howson(sizes, count: int, repeats: int) -> list[dict]:
    """Lemke-Howson from label 0 on ``count`` random games: one call per game (``lemke_howson``),
    and the same paths in one call (``lemke_howson_batch``, its own row), against quantecon's
    ``lemke_howson`` called once per game; then every starting label of one game (batched)."""
    if not _have("quantecon"):
        return []
    from quantecon import game_theory as gt

    def qe(A, B, k=0):
        return gt.lemke_howson(gt.NormalFormGame((gt.Player(A), gt.Player(B.T))), init_pivot=k)

    peer = "quantecon.lemke_howson (warm), one call per path"
    # nashpy's float tableau can fail to return on random games (see tests/linear_games), so it
    # is not timed here
    rows = []
    for n in sizes:
        games = _games(n, count, seed=100 + n)
        A, B = np.stack([g[0] for g in games]), np.stack([g[1] for g in games])
        qe(A[0], B[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_s, _, base_s, _ = _best_of_interleaved(
                lambda: [lemke_howson(a, b, 0) for a, b in games],
                lambda: [qe(a, b) for a, b in games],
                repeats,
            )
            rows.append(_row(f"lemke_howson_{n}x{n}_x{count}", ours_s, peer, base_s))
            ours_s, _, base_s, _ = _best_of_interleaved(
                lambda: lemke_howson_batch(A, B, 0),  # noqa: B023 - called inside the loop
                lambda: [qe(a, b) for a, b in games],
                repeats,
            )
            rows.append(_row(f"lemke_howson_batch_{n}x{n}_x{count}", ours_s, peer, base_s))
            L = 2 * n
            ours_s, _, base_s, _ = _best_of_interleaved(
                lambda: lemke_howson_batch(np.repeat(A[:1], L, 0), np.repeat(B[:1], L, 0), range(L)),  # noqa: B023
                lambda: [qe(A[0], B[0], k) for k in range(L)],  # noqa: B023
                repeats,
            )
            rows.append(_row(f"lemke_howson_batch_{n}x{n}_all_{L}_labels", ours_s, peer, base_s))
    return rows


_FRESH_LH = {
    "ours": "import numpy as np; from marlcov.linear_games.lemke_howson import lemke_howson; "
    "A, B = np.random.default_rng(12).standard_normal((2, 12, 12)); lemke_howson(A, B)",
    "quantecon": "import numpy as np; from quantecon import game_theory as gt; "
    "A, B = np.random.default_rng(12).standard_normal((2, 12, 12)); "
    "gt.lemke_howson(gt.NormalFormGame((gt.Player(A), gt.Player(B.T))))",
}


def bench_lemke_howson_fresh_process(repeats: int) -> list[dict]:
    """A fresh process (interpreter start, imports, first call), best of ``repeats``: with the
    numba cache warm (one untimed run fills it), and cold (each run with an empty
    ``NUMBA_CACHE_DIR``, so that both sides compile). Wall time, and the CPU time of the
    process (``*_cpu_s``: less sensitive to the load of a shared machine)."""
    if not _have("quantecon"):
        return []

    def run(code, cache_dir=None) -> tuple[float, float]:
        env = os.environ if cache_dir is None else {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    def cold(code) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as empty:
            return run(code, empty)

    rows = []
    for cache, timed in (("warm", run), ("cold", cold)):
        if cache == "warm":
            for code in _FRESH_LH.values():
                run(code)
        best = {side: (float("inf"), float("inf")) for side in _FRESH_LH}
        for _ in range(repeats):  # interleaved against changes of machine load
            for side, code in _FRESH_LH.items():
                best[side] = tuple(map(min, best[side], timed(code)))
        rows.append(
            _row(
                f"lemke_howson_12x12_fresh_process_cache_{cache}",
                best["ours"][0],
                f"quantecon.lemke_howson, fresh process, cache {cache}",
                best["quantecon"][0],
                ours_cpu_s=best["ours"][1],
                baseline_cpu_s=best["quantecon"][1],
            )
        )
    return rows


def bench_zero_sum(n: int, repeats: int, seed: int = 0) -> list[dict]:
    A = np.random.default_rng(seed).random((n, n))
    # the same LP as zero_sum_solve: min 1^T u s.t. A'^T u >= 1, u >= 0, A' in [1, 2]
    Ap = 1.0 + (A - A.min()) / (A.max() - A.min())
    c, A_ub, b_ub = np.ones(n), -Ap.T, -np.ones(n)

    def exploit(x, y):
        return float((A @ y).max() - (x @ A).min())

    ours_s, sol = _best_of(lambda: zero_sum_solve(A), repeats)
    rows = []
    for method in ("highs-ipm", "highs-ds"):
        base_s, res = _best_of(lambda: linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method=method), 1)
        x = np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()
        y = np.clip(-res.ineqlin.marginals, 0, None)
        y /= y.sum()
        rows.append(
            _row(
                f"zero_sum_lp_n{n}",
                ours_s,
                f"scipy.linprog({method}), same LP",
                base_s,
                exploitability_ours=sol.exploitability,
                exploitability_peer=exploit(x, y),
            )
        )
    return rows


def run(quick: bool) -> list[dict]:
    """Rows ``{"name", "ours_s", "baseline", "baseline_s", "ratio", ...}`` (ratio = ours/baseline)."""
    rows = bench_all_equilibria([8, 10] if quick else [8, 10, 12], count=2 if quick else 3, repeats=7)
    rows += bench_fresh_process()
    rows += bench_lemke_howson([12] if quick else [12, 30], count=20, repeats=5)
    rows += bench_lemke_howson_fresh_process(repeats=2 if quick else 3)
    rows += bench_zero_sum(n=300 if quick else 1000, repeats=1 if not quick else 2)
    return rows


def _print_table(rows: list[dict]) -> None:
    for r in rows:
        extra = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("name", "ours_s", "baseline", "baseline_s", "ratio")
        )
        print(f"{r['name']:<34} ours {r['ours_s']:.4g}s  {r['baseline']}: {r['baseline_s']:.4g}s  ratio {r['ratio']:.3g}  {extra}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller games and LP")
    _print_table(run(quick=parser.parse_args().quick))
