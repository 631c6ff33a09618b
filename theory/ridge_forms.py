"""Quadratic forms of ridge Gram matrices ``Sigma = lambda I + E^T E`` without forming ``Sigma``.

Every covariance of the MARLHF paper's coverage (section 4.1) has this shape: ``Sigma_r`` with
``E = D``, the ``N x Hd`` matrix of pair differences ``psi(tau_n) - psi(tau'_n)``, and
``Sigma_p[h]`` with ``E`` the visited rows of step h's feature table scaled by the square roots
of their visit counts. Only block-supported queries are needed: ``psibar_h(s, a)`` lives in block
h of ``R^{Hd}``, so a query is a matrix ``X_h[K, d]`` per block.

Two exact forms of ``x^T Sigma^{-1} x``, the cheaper chosen by size (``prefers_woodbury``):

- dense: ``Sigma`` (``n x n``, ``n = Hd``) by Cholesky, and the diagonal blocks of its inverse from
  one triangular inverse: ``O(n^3)`` time, ``O(n^2)`` memory;
- Woodbury: ``Sigma^{-1} = (I - E^T (lambda I_r + E E^T)^{-1} E) / lambda``, so
  ``x^T Sigma^{-1} x = (||x||^2 - ||L^{-1} E x||^2) / lambda`` with ``L L^T = lambda I_r + E E^T``:
  ``O(r^2 n + r^3)`` time and ``O(r n)`` memory for ``r`` rows. The subtraction loses at most
  ``eps (1 + ||E||_2^2 / lambda)`` relative accuracy, because the result is at least
  ``||x||^2 / (lambda + ||E||_2^2)``; the small-``r`` regime where this form is chosen keeps that
  factor small.

``log det(Sigma / lambda) = log det(I_r + E E^T / lambda)`` (Sylvester) in either form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve, lapack, solve_triangular

from .games import GameError


def checked_lambda(lam) -> float:
    """The ridge regulariser ``lambda`` as a float: GameError (a ValueError) naming it unless it
    is a finite number > 0. The one check of every ``lambda`` of the package."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise GameError(f"lambda: expected a positive number, got {lam!r}") from None
    if isinstance(lam, bool) or not np.isfinite(value) or value <= 0:
        raise GameError(f"lambda: expected a positive number, got {lam!r}")
    return value


def prefers_woodbury(n_rows: int, dim: int) -> bool:
    """Whether the Woodbury form is cheaper than the dense one: ``r^2 n + r^3 / 3 < n^3 / 3 + r n^2``."""
    r, n = float(n_rows), float(dim)
    return r * r * n + r**3 / 3.0 < n**3 / 3.0 + r * n * n


@dataclass(frozen=True)
class RidgeGram:
    """``Sigma = lambda I_n + G`` with ``G = E^T E``, ``n`` split into blocks of ``block``.

    Held either as the rows ``E`` (``from_rows``: the Woodbury form is used when it is cheaper)
    or, when there are more rows than dimensions, as ``G`` itself (``from_gram``: dense form).

    Attributes:
        lam: ``lambda > 0``.
        block: the block size ``d`` (``n = H d``); queries are per block.
        rows: ``E``, shape ``[r, n]``, or None.
        gram: ``G``, shape ``[n, n]``, or None.
    """

    lam: float
    block: int
    rows: np.ndarray | None = None
    gram: np.ndarray | None = None

    def __post_init__(self) -> None:
        checked_lambda(self.lam)
        if (self.rows is None) == (self.gram is None):
            raise ValueError("rows, gram: expected exactly one of them")
        held = np.asarray(self.rows if self.gram is None else self.gram, dtype=np.float64)
        if held.ndim != 2 or held.shape[1] % self.block or (self.gram is not None and held.shape[0] != held.shape[1]):
            raise ValueError(f"rows/gram: expected [r, n] or [n, n] with n a multiple of the block {self.block}, got {list(held.shape)}")
        object.__setattr__(self, "rows" if self.gram is None else "gram", held)
        object.__setattr__(self, "_cache", {})

    @classmethod
    def from_rows(cls, lam: float, rows: np.ndarray, block: int) -> RidgeGram:
        """From ``E``; kept as rows when the Woodbury form is cheaper, else reduced to ``G``."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim == 2 and not prefers_woodbury(*rows.shape):
            return cls(lam, block, gram=rows.T @ rows)
        return cls(lam, block, rows=rows)

    @classmethod
    def from_gram(cls, lam: float, gram: np.ndarray, block: int) -> RidgeGram:
        return cls(lam, block, gram=gram)

    @classmethod
    def from_covariance(cls, lam: float, sigma: np.ndarray, block: int) -> RidgeGram:
        """From the dense ``Sigma = lambda I + G`` itself (``G = Sigma - lambda I``)."""
        sigma = np.asarray(sigma, dtype=np.float64)
        return cls(lam, block, gram=sigma - lam * np.eye(sigma.shape[0]))

    @property
    def dim(self) -> int:
        return int((self.rows if self.gram is None else self.gram).shape[1])

    @property
    def n_blocks(self) -> int:
        return self.dim // self.block

    @property
    def woodbury(self) -> bool:
        """Whether queries use the Woodbury form (held as rows: chosen by size in ``from_rows``)."""
        return self.gram is None

    def dense(self) -> np.ndarray:
        """``Sigma`` as an ``n x n`` array (only for sizes where that is affordable)."""
        g = self.rows.T @ self.rows if self.gram is None else self.gram
        return self.lam * np.eye(self.dim) + g

    def norm_squared(self, vectors: np.ndarray) -> np.ndarray:
        """``||v||_Sigma^2 = lambda ||v||^2 + v^T G v`` for rows ``vectors[k, n]``; shape ``[k]``."""
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        if self.gram is None:
            quad = np.sum((v @ self.rows.T) ** 2, axis=1)
        else:
            quad = np.einsum("kn,kn->k", v @ self.gram, v)
        return self.lam * np.einsum("kn,kn->k", v, v) + np.maximum(quad, 0.0)

    def log_det_ratio(self) -> float:
        """``log det(Sigma / lambda)``, as ``log det(I_r + E E^T / lambda)`` (Sylvester) in the Woodbury form."""
        if self.gram is None:
            small = np.eye(self.rows.shape[0]) + (self.rows @ self.rows.T) / self.lam
        else:
            small = np.eye(self.dim) + self.gram / self.lam
        if small.shape[0] == 0:
            return 0.0
        return float(2.0 * np.sum(np.log(np.diag(cho_factor(small, lower=True)[0]))))

    def _small_factor(self) -> np.ndarray:
        if "small" not in self._cache:
            r = self.rows.shape[0]
            self._cache["small"] = cho_factor(self.lam * np.eye(r) + self.rows @ self.rows.T, lower=True)[0]
        return self._cache["small"]

    def _inverse_blocks(self) -> np.ndarray:
        """``[Sigma^{-1}]_{hh}`` for every block, from one Cholesky factor and its triangular inverse."""
        if "blocks" not in self._cache:
            chol, info = lapack.dpotrf(np.asfortranarray(self.dense()), lower=1, clean=1, overwrite_a=1)
            if info != 0:
                raise ValueError(f"Sigma: not positive definite (Cholesky failed at column {info})")
            linv, info = lapack.dtrtri(chol, lower=1, overwrite_c=1)
            if info != 0:
                raise ValueError(f"Sigma: singular (LAPACK trtri info {info})")
            d = self.block
            out = np.empty((self.n_blocks, d, d))
            for h in range(self.n_blocks):
                col = linv[h * d :, h * d : (h + 1) * d]
                out[h] = col.T @ col
            self._cache["blocks"] = out
        return self._cache["blocks"]

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``Sigma^{-1} rhs`` for ``rhs[n, k]``: Woodbury ``(rhs - E^T L^-T L^-1 E rhs) / lambda``, or Cholesky."""
        b = np.asarray(rhs, dtype=np.float64)
        if self.woodbury:
            if self.rows.shape[0] == 0:
                return b / self.lam
            w = solve_triangular(self._small_factor(), self.rows @ b, lower=True, check_finite=False)
            w = solve_triangular(self._small_factor(), w, lower=True, trans="T", check_finite=False)
            return (b - self.rows.T @ w) / self.lam
        if "full" not in self._cache:
            self._cache["full"] = cho_factor(self.dense(), lower=True)
        return cho_solve(self._cache["full"], b)

    def block_forms(self, h: int, queries: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """``(x - c)^T Sigma^{-1} (x - c)`` for ``x`` the rows of ``queries[K, d]`` placed in block ``h``.

        Args:
            h: the block.
            queries: ``[K, d]`` (may be a read-only view; never copied in the Woodbury form).
            offset: ``c`` in R^d, also in block ``h`` (None: 0). It is applied algebraically, so
                ``queries - c`` is never formed.
        Returns:
            ``[K]``, clipped at 0 against rounding.
        """
        x = queries
        d = self.block
        if self.woodbury:
            cols = self.rows[:, h * d : (h + 1) * d]
            sq = np.einsum("kd,kd->k", x, x)
            ex = cols @ x.T
            if offset is not None:
                c = np.asarray(offset, dtype=np.float64)
                sq = sq - 2.0 * (x @ c) + c @ c
                ex = ex - (cols @ c)[:, None]
            if ex.shape[0]:
                w = solve_triangular(self._small_factor(), ex, lower=True, check_finite=False)
                sq = sq - np.einsum("rk,rk->k", w, w)
            return np.maximum(sq / self.lam, 0.0)
        inv = self._inverse_blocks()[h]
        z = x if offset is None else x - np.asarray(offset, dtype=np.float64)
        return np.maximum(np.einsum("kd,kd->k", z @ inv, z), 0.0)
