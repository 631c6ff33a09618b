"""Dataset coverage at scale: the streaming covariance pass (Sigma_r, Sigma_p) and the bonus pass
over 10^6 transitions (quick: 10^5) with d = 256 and H = 25, against the machine's own numpy
matmul on the same shapes and batches, measured in the same run.

``ratio`` is ours / baseline; ``matmul_fraction`` is baseline / ours, the share of the plain
matmul rate the pass runs at (above 1 where the pass does less arithmetic than the plain
products: Sigma_r uses BLAS syrk, which computes one triangle).
"""

from __future__ import annotations

import time

import numpy as np

from marlcov.theory.dataset_coverage import CovarianceAccumulator

H, D = 25, 256
PAIR_BATCH = 512
QUERY_BATCH = 2048


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool) -> list[dict]:
    transitions = 100_000 if quick else 1_000_000
    n_traj = transitions // H
    n_pairs = n_traj // 2
    rng = np.random.default_rng(0)
    first = rng.normal(size=(PAIR_BATCH, H, D)) / np.sqrt(D)
    second = rng.normal(size=(PAIR_BATCH, H, D)) / np.sqrt(D)
    batches = [min(PAIR_BATCH, n_pairs - s) for s in range(0, n_pairs, PAIR_BATCH)]
    acc = CovarianceAccumulator(H, D)

    def ours_cov():
        for b in batches:
            acc.update(first[:b], second[:b])

    def matmul_cov():
        sigma_r = np.zeros((H * D, H * D))
        sigma_p = np.zeros((H, D, D))
        for b in batches:
            z = (first[:b] - second[:b]).reshape(b, H * D)
            sigma_r += z.T @ z
            both = np.concatenate([first[:b], second[:b]]).transpose(1, 0, 2)
            sigma_p += np.matmul(both.transpose(0, 2, 1), both)

    t_cov, t_cov_mm = _timed(ours_cov), _timed(matmul_cov)
    model_holder = {}
    t_model = _timed(lambda: model_holder.setdefault("m", acc.bonus_model()))
    model = model_holder["m"]
    queries = rng.normal(size=(QUERY_BATCH, H, D)) / np.sqrt(D)
    q_batches = [min(QUERY_BATCH, n_traj - s) for s in range(0, n_traj, QUERY_BATCH)]
    both = np.concatenate([model.reward_blocks, model.transition_inverse], axis=2)

    def ours_bonus():
        for b in q_batches:
            model.bonus(queries[:b])

    def matmul_bonus():
        for b in q_batches:
            np.matmul(queries[:b].transpose(1, 0, 2), both)

    t_bonus, t_bonus_mm = _timed(ours_bonus), _timed(matmul_bonus)
    rows = []
    for name, ours, base, what in (
        (
            f"covariance pass {transitions:.0e} transitions, {n_pairs} pairs, H={H} d={D}",
            t_cov,
            t_cov_mm,
            "numpy matmul: z^T z and per-step x^T x on the same batches",
        ),
        (
            f"bonus pass {transitions:.0e} transitions, H={H} d={D}",
            t_bonus,
            t_bonus_mm,
            "numpy matmul: features x [Sigma_r^-1 blocks | Sigma_p^-1] on the same batches",
        ),
        (
            f"end to end {transitions:.0e} transitions (covariances, inverse, bonus)",
            t_cov + t_model + t_bonus,
            t_cov_mm + t_bonus_mm,
            "numpy matmul of both passes (no inverse)",
        ),
    ):
        rows.append(
            {"name": name, "ours_s": ours, "baseline": what, "baseline_s": base, "ratio": ours / base, "matmul_fraction": base / ours}
        )
    rows[-1]["inverse_s"] = t_model
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run(args.quick):
        print(
            f"{row['name']:<75} ours {row['ours_s']:.3f}s  matmul {row['baseline_s']:.3f}s  ratio {row['ratio']:.3f}  "
            f"matmul_fraction {row['matmul_fraction']:.3f}"
        )
