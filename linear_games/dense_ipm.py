"""A dense primal-dual interior-point method for the LP of a zero-sum matrix game.

With ``A' = An + 1 > 0`` (payoffs normalised to [1, 2]) the row player's LP and its dual are

    min 1^T u  s.t.  A'^T u - s = 1,  u, s >= 0;      max 1^T w  s.t.  A' w <= 1,  w >= 0,

and ``x = u / 1^T u``, ``y = w / 1^T w`` are optimal strategies (value ``1 / 1^T u - 1`` in
normalised units). Mehrotra's predictor-corrector (Wright, *Primal-Dual Interior-Point
Methods*, ch. 10) solves the standard form ``min c^T z, A z = b, z >= 0`` with
``A = [A'^T, -I]``; each iteration factors the dense normal matrix
``A diag(z / t) A^T = M diag(d_u) M^T + diag(d_s)`` (``n1 x n1``, ``M = A'^T``) by Cholesky: one
``n1^2 n0`` matrix product, the whole cost. An interior-point method converges to the centre
of the optimal face, so its supports are strictly complementary and the polishing of
:mod:`.zero_sum` identifies them exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from marlcov.theory.tolerances import PIVOT_ATOL

#: Iteration cap of the interior-point method (it needs ~20-40 on dense random games).
IPM_MAX_ITER = 100

#: Fraction of the step to the boundary taken each iteration (Mehrotra's customary 0.99...).
_STEP_FRACTION = 0.995


def _max_step(v: np.ndarray, dv: np.ndarray) -> float:
    neg = dv < 0
    return min(1.0, float((-v[neg] / dv[neg]).min())) if neg.any() else 1.0


def zero_sum_ipm(An: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal strategies ``(x, y)`` of the normalised zero-sum game ``An`` (entries in [0, 1]),
    to a duality gap and residuals below ``PIVOT_ATOL`` (then polished by the caller)."""
    n0, n1 = An.shape
    M = (An + 1.0).T  # [n1, n0]
    u, s = np.ones(n0), np.ones(n1)  # primal: M u - s = 1
    w = np.zeros(n1)  # dual of the equality rows
    zu, zs = np.ones(n0), np.ones(n1)  # dual slacks: M^T w + zu = 1, -w + zs = 0
    N = n0 + n1
    for _ in range(IPM_MAX_ITER):
        rp = 1.0 - (M @ u - s)
        rdu = 1.0 - M.T @ w - zu
        rds = w - zs
        gap = float(u @ zu + s @ zs)
        if max(np.abs(rp).max(), np.abs(rdu).max(), np.abs(rds).max()) <= PIVOT_ATOL and gap <= PIVOT_ATOL:
            break
        du_, ds_ = u / zu, s / zs
        K = (M * du_) @ M.T
        K[np.diag_indices(n1)] += ds_
        try:
            factor = cho_factor(K, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            # near the optimum the scaling d spans many orders of magnitude; a diagonal shift
            # at rounding level keeps the factor usable, and failing that the iterate is
            # already as good as this arithmetic allows (the caller polishes it)
            K[np.diag_indices(n1)] += np.finfo(float).eps * K.diagonal().max()
            try:
                factor = cho_factor(K, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                break

        def direction(rcu, rcs):
            # Z dz + X dzeta = rc, A dz = rp, A^T dw + dzeta = rd
            tu, ts = rcu / zu - du_ * rdu, rcs / zs - ds_ * rds
            dw = cho_solve(factor, rp - (M @ tu - ts), check_finite=False)
            dzu = rdu - M.T @ dw
            dzs = rds + dw
            return (rcu - u * dzu) / zu, (rcs - s * dzs) / zs, dw, dzu, dzs

        d_aff = direction(-u * zu, -s * zs)
        ap = min(_max_step(u, d_aff[0]), _max_step(s, d_aff[1]))
        ad = min(_max_step(zu, d_aff[3]), _max_step(zs, d_aff[4]))
        mu = gap / N
        mu_aff = float((u + ap * d_aff[0]) @ (zu + ad * d_aff[3]) + (s + ap * d_aff[1]) @ (zs + ad * d_aff[4])) / N
        sigma = (mu_aff / mu) ** 3
        dx_u, dx_s, dw, dzu, dzs = direction(
            -u * zu - d_aff[0] * d_aff[3] + sigma * mu, -s * zs - d_aff[1] * d_aff[4] + sigma * mu
        )
        ap = _STEP_FRACTION * min(_max_step(u, dx_u), _max_step(s, dx_s))
        ad = _STEP_FRACTION * min(_max_step(zu, dzu), _max_step(zs, dzs))
        u, s = u + ap * dx_u, s + ap * dx_s
        w, zu, zs = w + ad * dw, zu + ad * dzu, zs + ad * dzs
    x = np.clip(u, 0.0, None)
    y = np.clip(w, 0.0, None)
    return x / x.sum(), y / y.sum()
