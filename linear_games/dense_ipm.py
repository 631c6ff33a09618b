"""A dense primal-dual interior-point method for the LPs of zero-sum matrix games, batched.

With ``A' = An + 1 > 0`` (payoffs normalised to [1, 2]) the row player's LP and its dual are

    min 1^T u  s.t.  A'^T u - s = 1,  u, s >= 0;      max 1^T w  s.t.  A' w <= 1,  w >= 0,

and ``x = u / 1^T u``, ``y = w / 1^T w`` are optimal strategies. Mehrotra's predictor-corrector
(Wright, *Primal-Dual Interior-Point Methods*, ch. 10) solves the standard form
``min c^T z, A z = b, z >= 0`` with ``A = [A'^T, -I]``; each iteration factors the dense normal
matrix ``A diag(z / t) A^T = M diag(d_u) M^T + diag(d_s)`` (``n1 x n1``, ``M = A'^T``): one
``n1^2 n0`` matrix product, the whole cost for a large game (Cholesky). Many small games (the
stage games of a Markov game) are solved together along a leading batch axis, each game
stopping on its own criterion. An interior-point method converges to the centre of the optimal
face, so its supports are strictly complementary and the polishing of :mod:`.zero_sum`
identifies them exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from marlcov.theory.tolerances import PIVOT_ATOL

#: Iteration cap of the interior-point method (it needs ~20-40 on dense random games).
IPM_MAX_ITER = 100

#: Fraction of the step to the boundary taken each iteration (Mehrotra's customary 0.99...).
_STEP_FRACTION = 0.995


def _max_step(v: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Largest ``a <= 1`` with ``v + a dv >= 0``, per game (rows)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dv < 0, -v / dv, np.inf)
    return np.minimum(1.0, ratio.min(axis=1))


def _normal_solver(K: np.ndarray):
    """A solver for the normal equations ``K[k] dw = r[k]``; None if no factor is usable.

    One large game: Cholesky (a rounding-level diagonal shift if the scaling near the optimum
    has made ``K`` numerically indefinite). A batch of small games: batched LU."""
    if K.shape[0] == 1:
        K0 = K[0]
        for shift in (0.0, np.finfo(float).eps * K0.diagonal().max()):
            try:
                f = cho_factor(K0 + shift * np.eye(len(K0)), lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                continue
            return lambda r: cho_solve(f, r[0], check_finite=False)[None]
        return None
    singular = np.linalg.slogdet(K)[0] == 0
    if singular.any():  # those games stop at their current iterate (NaN directions)
        K = np.where(singular[:, None, None], np.eye(K.shape[1]), K)

    def solve(r):
        out = np.linalg.solve(K, r[..., None])[..., 0]
        out[singular] = np.nan
        return out

    return solve


def zero_sum_ipm_batch(An: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal strategies ``(x [k, n0], y [k, n1])`` of the normalised zero-sum games
    ``An[k]`` (entries in [0, 1]), each to a duality gap and residuals below ``PIVOT_ATOL``
    (then polished by the caller)."""
    k, n0, n1 = An.shape
    M = An.transpose(0, 2, 1) + 1.0  # [k, n1, n0]
    Mt = An + 1.0
    u, s = np.ones((k, n0)), np.ones((k, n1))  # primal: M u - s = 1
    w = np.zeros((k, n1))  # dual of the equality rows
    zu, zs = np.ones((k, n0)), np.ones((k, n1))  # dual slacks: M^T w + zu = 1, -w + zs = 0
    N = n0 + n1
    mv = lambda X, v: np.einsum("kij,kj->ki", X, v)  # noqa: E731
    active = np.ones(k, dtype=bool)
    for _ in range(IPM_MAX_ITER):
        rp = 1.0 - (mv(M, u) - s)
        rdu = 1.0 - mv(Mt, w) - zu
        rds = w - zs
        gap = (u * zu).sum(axis=1) + (s * zs).sum(axis=1)
        resid = np.maximum.reduce([np.abs(rp).max(axis=1), np.abs(rdu).max(axis=1), np.abs(rds).max(axis=1)])
        active &= ~((resid <= PIVOT_ATOL) & (gap <= PIVOT_ATOL))
        if not active.any():
            break
        du_, ds_ = u / zu, s / zs
        K = (M * du_[:, None, :]) @ Mt
        K[:, np.arange(n1), np.arange(n1)] += ds_
        with np.errstate(all="ignore"):
            solve = _normal_solver(K)
            if solve is None:
                break

            def direction(rcu, rcs):
                # Z dz + X dzeta = rc, A dz = rp, A^T dw + dzeta = rd
                tu, ts = rcu / zu - du_ * rdu, rcs / zs - ds_ * rds
                dw = solve(rp - (mv(M, tu) - ts))
                dzu = rdu - mv(Mt, dw)
                dzs = rds + dw
                return (rcu - u * dzu) / zu, (rcs - s * dzs) / zs, dw, dzu, dzs

            a0, a1, _, a3, a4 = direction(-u * zu, -s * zs)
            ap = np.minimum(_max_step(u, a0), _max_step(s, a1))[:, None]
            ad = np.minimum(_max_step(zu, a3), _max_step(zs, a4))[:, None]
            mu = gap / N
            mu_aff = (((u + ap * a0) * (zu + ad * a3)).sum(axis=1) + ((s + ap * a1) * (zs + ad * a4)).sum(axis=1)) / N
            sigma = ((mu_aff / mu) ** 3)[:, None]
            mu = mu[:, None]
            dxu, dxs, dw, dzu, dzs = direction(-u * zu - a0 * a3 + sigma * mu, -s * zs - a1 * a4 + sigma * mu)
        ap = _STEP_FRACTION * np.minimum(_max_step(u, dxu), _max_step(s, dxs))
        ad = _STEP_FRACTION * np.minimum(_max_step(zu, dzu), _max_step(zs, dzs))
        ok = active & np.isfinite(ap) & np.isfinite(ad) & np.isfinite(dw).all(axis=1)
        ap, ad = np.where(ok, ap, 0.0)[:, None], np.where(ok, ad, 0.0)[:, None]
        u, s = u + ap * np.nan_to_num(dxu), s + ap * np.nan_to_num(dxs)
        w, zu, zs = w + ad * np.nan_to_num(dw), zu + ad * np.nan_to_num(dzu), zs + ad * np.nan_to_num(dzs)
        active &= ok  # a game whose factor broke down keeps its last iterate
    return _to_simplex_rows(u), _to_simplex_rows(w)


def _to_simplex_rows(V: np.ndarray) -> np.ndarray:
    """Rows clipped at 0 and normalised; a row with no positive entry becomes uniform (an
    honest strategy whose exploitability the caller measures)."""
    V = np.clip(V, 0.0, None)
    tot = V.sum(axis=1, keepdims=True)
    return np.where(tot > 0, V / np.where(tot > 0, tot, 1.0), 1.0 / V.shape[1])


def zero_sum_ipm(An: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`zero_sum_ipm_batch` for one game ``An [n0, n1]``."""
    x, y = zero_sum_ipm_batch(An[None])
    return x[0], y[0]
