"""Streaming covariances of the dataset coverage: ``Sigma_r`` and ``Sigma_p[h]`` accumulated batch by
batch with bootstrap slots (``CovarianceAccumulator``), and the bonus they define (``BonusModel``).

The objects, the slots and the convention for episodes that end early are those of the module
docstring of ``theory.dataset_coverage``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas, lapack

from .coverage import DEFAULT_LAMBDA
from .ridge_forms import checked_lambda
from .tolerances import RANK_RTOL

#: Default memory the point and slot sums of one accumulator may take (bytes).
ACCUMULATOR_MEMORY_BYTES = 2 * 2**30

#: Queries per matrix product in ``BonusModel.terms`` (bounds its temporary memory).
BONUS_CHUNK = 16384


def _syrk_into(acc: np.ndarray, rows: np.ndarray) -> None:
    """``acc += rows^T rows`` on the lower triangle of ``acc`` (Fortran-ordered, float64).

    BLAS syrk does half the work of a general product and writes one triangle in place.
    """
    if rows.shape[0] == 0:
        return
    out = blas.dsyrk(1.0, np.ascontiguousarray(rows).T, beta=1.0, c=acc, trans=0, lower=1, overwrite_c=1)
    if not np.shares_memory(out, acc):
        acc[...] = out


def _symmetric(lower: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle is that of ``lower``."""
    return np.tril(lower) + np.tril(lower, -1).T


def _weight_rows(weights, n_slots: int, B: int, field: str) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_slots, B):
        raise ValueError(f"{field}: expected shape [n_slots, B] = {[n_slots, B]}, got {list(w.shape)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{field}: expected finite non-negative weights")
    return w


def _step_mask(valid, shape: tuple[int, int], field: str) -> np.ndarray | None:
    """``valid`` as a bool array of ``shape`` ``[B, H]`` (None stays None: every step real)."""
    if valid is None:
        return None
    v = np.asarray(valid)
    if v.dtype != np.bool_ or v.shape != tuple(shape):
        raise ValueError(f"{field}: expected a boolean mask of shape [B, H] = {list(shape)}, got {v.dtype} {list(v.shape)}")
    return v


def _cholesky_lower(a: np.ndarray, field: str) -> np.ndarray:
    c, info = lapack.dpotrf(np.asfortranarray(a), lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise ValueError(f"{field}: not positive definite (Cholesky failed at column {info})")
    return c


def _spd_inverse(a: np.ndarray, field: str) -> np.ndarray:
    """``a^{-1}`` for a symmetric positive definite ``a`` (Cholesky, in LAPACK)."""
    inv, info = lapack.dpotri(_cholesky_lower(a, field), lower=1, overwrite_c=1)
    if info != 0:
        raise ValueError(f"{field}: singular (LAPACK potri info {info})")
    return _symmetric(inv)


def _inverse_diagonal_blocks(a: np.ndarray, block: int, field: str) -> np.ndarray:
    """The diagonal ``block x block`` blocks of ``a^{-1}``, shape ``[n / block, block, block]``.

    With ``a = L L^T``, ``a^{-1} = L^{-T} L^{-1}`` and block (h, h) is ``sum_{k >= h} M_kh^T M_kh``
    over the blocks ``M_kh`` of the lower-triangular ``L^{-1}``: one factorisation, one triangular
    inverse, and products of ``n^3 / n_blocks`` work instead of the full inverse.
    """
    linv, info = lapack.dtrtri(_cholesky_lower(a, field), lower=1, overwrite_c=1)
    if info != 0:
        raise ValueError(f"{field}: singular (LAPACK trtri info {info})")
    n_blocks = a.shape[0] // block
    out = np.empty((n_blocks, block, block))
    for h in range(n_blocks):
        col = linv[h * block :, h * block : (h + 1) * block]
        out[h] = col.T @ col
    return out


class CovarianceAccumulator:
    """Running sums of ``Sigma_r`` and ``Sigma_p[h]`` over batches of per-step features.

    Args:
        horizon: H.
        dim: d, the feature dimension.
        n_slots: weighted copies kept beside the point sums (bootstrap replicates or groups).
        lam: the ridge ``lambda`` added when a covariance is read.
        memory_bytes: refuse to allocate more than this for the sums (ValueError naming the
            largest ``n_slots`` that fits).

    The sums are exact in float64 and additive, so any split of the data into batches, in any
    order, gives the same matrices up to rounding (``merge`` adds two accumulators).
    """

    def __init__(
        self, horizon: int, dim: int, n_slots: int = 0, lam: float = DEFAULT_LAMBDA, memory_bytes: int = ACCUMULATOR_MEMORY_BYTES
    ) -> None:
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon: expected a positive integer, got {horizon!r}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        if not isinstance(n_slots, (int, np.integer)) or n_slots < 0:
            raise ValueError(f"n_slots: expected a non-negative integer, got {n_slots!r}")
        self.horizon, self.dim, self.n_slots = int(horizon), int(dim), int(n_slots)
        self.lam = checked_lambda(lam)
        need = self.bytes_needed(self.horizon, self.dim, self.n_slots)
        if need > memory_bytes:
            fit = self.max_slots(self.horizon, self.dim, memory_bytes)
            raise ValueError(
                f"n_slots: {n_slots} weighted copies of Sigma_r ({self.horizon * self.dim}^2) and Sigma_p need "
                f"{need / 2**30:.2f} GiB, over the budget of {memory_bytes / 2**30:.2f} GiB; at most {max(fit, 0)} fit"
            )
        Hd = self.horizon * self.dim
        # One Fortran-ordered matrix per slot, slot 0 the point estimate, so syrk updates in place.
        self._r = [np.zeros((Hd, Hd), order="F") for _ in range(self.n_slots + 1)]
        self._p = [[np.zeros((self.dim, self.dim), order="F") for _ in range(self.horizon)] for _ in range(self.n_slots + 1)]
        self.n_pairs = 0
        self.slot_pairs = np.zeros(self.n_slots)
        self.transition_mass = np.zeros(self.n_slots + 1)
        # Point sums of psi_h and of the trajectories running at step h, for the identifiable reference.
        self.feature_sums = np.zeros((self.horizon, self.dim))
        self.step_mass = np.zeros(self.horizon)

    @staticmethod
    def bytes_needed(horizon: int, dim: int, n_slots: int) -> int:
        return 8 * (n_slots + 1) * ((horizon * dim) ** 2 + horizon * dim * dim)

    @staticmethod
    def max_slots(horizon: int, dim: int, memory_bytes: int = ACCUMULATOR_MEMORY_BYTES) -> int:
        """Largest ``n_slots`` whose sums fit in ``memory_bytes`` (-1 when not even the point sums fit)."""
        per = 8 * ((horizon * dim) ** 2 + horizon * dim * dim)
        return int(memory_bytes // per) - 1

    def _check_features(self, x, field: str, valid=None, valid_field: str = "valid") -> tuple[np.ndarray, np.ndarray | None]:
        """``(features [B, H, d] float64, valid [B, H] or None)``; the features of padded steps
        are set to 0 (module docstring), so only real steps need to be finite."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[1:] != (self.horizon, self.dim):
            raise ValueError(f"{field}: expected shape [B, H, d] = [B, {self.horizon}, {self.dim}], got {list(arr.shape)}")
        v = _step_mask(valid, arr.shape[:2], valid_field)
        if v is not None:
            arr = np.where(v[..., None], arr, 0.0)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{field}: expected finite features")
        return arr, v

    def update(self, features_first, features_second, weights=None, transitions: bool = True, valid_first=None, valid_second=None) -> None:
        """Add ``B`` preference pairs given by the per-step features of both trajectories.

        Args:
            features_first, features_second: ``[B, H, d]``: ``psi(s_h, a_h)`` of ``tau`` and ``tau'``.
            weights: optional ``[n_slots, B]`` non-negative weight of each pair in each slot.
            transitions: also add both trajectories to ``Sigma_p`` (the paper's definition);
                False when ``Sigma_p`` is accumulated separately by ``update_transitions``.
            valid_first, valid_second: optional ``[B, H]`` bool, True at the real steps of each
                trajectory (default: all); padded steps have feature 0 (module docstring).
        """
        first, v_first = self._check_features(features_first, "features_first", valid_first, "valid_first")
        second, v_second = self._check_features(features_second, "features_second", valid_second, "valid_second")
        if first.shape != second.shape:
            raise ValueError(f"features_second: expected the shape of features_first {list(first.shape)}, got {list(second.shape)}")
        B = first.shape[0]
        w = _weight_rows(weights, self.n_slots, B, "weights")
        diff = (first - second).reshape(B, self.horizon * self.dim)
        _syrk_into(self._r[0], diff)
        for k in range(self.n_slots):
            nz = np.flatnonzero(w[k])
            _syrk_into(self._r[k + 1], diff[nz] * np.sqrt(w[k, nz])[:, None])
        self.n_pairs += B
        if w is not None:
            self.slot_pairs += w.sum(axis=1)
        if transitions:
            both = np.concatenate([first, second])
            valid = None
            if v_first is not None or v_second is not None:
                real = np.ones(first.shape[:2], dtype=bool)
                valid = np.concatenate([real if v_first is None else v_first, real if v_second is None else v_second])
            self.update_transitions(both, weights=None if w is None else np.concatenate([w, w], axis=1), valid=valid)

    def update_transitions(self, features, counts=None, weights=None, valid=None) -> None:
        """Add trajectories to ``Sigma_p`` only: ``Sigma_p[h] += sum_b c_b psi_h(b) psi_h(b)^T``
        over the trajectories ``b`` still running at step h.

        Args:
            features: ``[B, H, d]``.
            counts: optional ``[B]`` non-negative multiplicity of each trajectory in the point
                sums (e.g. how many pairs it belongs to); default 1.
            weights: optional ``[n_slots, B]`` multiplicity in each slot; default ``counts``.
            valid: optional ``[B, H]`` bool, True at real steps (default: all).
        """
        x, v = self._check_features(features, "features", valid)
        B = x.shape[0]
        c = np.ones(B) if counts is None else np.asarray(counts, dtype=np.float64)
        if c.shape != (B,) or not np.all(np.isfinite(c)) or np.any(c < 0):
            raise ValueError(f"counts: expected [B] = [{B}] finite non-negative multiplicities")
        w = _weight_rows(weights, self.n_slots, B, "weights")
        if w is None:
            w = np.broadcast_to(c, (self.n_slots, B))
        by_step = np.ascontiguousarray(x.transpose(1, 0, 2))
        running = np.ones((B, self.horizon)) if v is None else v.astype(np.float64)
        self.feature_sums += np.einsum("b,bh,hbd->hd", c, running, by_step)
        self.step_mass += c @ running
        for k, coef in enumerate([c, *w]):
            nz = np.flatnonzero(coef)
            if nz.size == 0:
                continue
            scale = np.sqrt(coef[nz])[:, None]
            for h in range(self.horizon):
                if v is None:
                    _syrk_into(self._p[k][h], by_step[h, nz] * scale)
                else:
                    running = v[nz, h]
                    _syrk_into(self._p[k][h], by_step[h, nz[running]] * scale[running])
            self.transition_mass[k] += coef.sum()

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """Add the sums of ``other`` (same horizon, dimension, slots and lambda) into this one."""
        if (other.horizon, other.dim, other.n_slots, other.lam) != (self.horizon, self.dim, self.n_slots, self.lam):
            raise ValueError("other: expected an accumulator of the same horizon, dim, n_slots and lambda")
        for k in range(self.n_slots + 1):
            self._r[k] += other._r[k]
            for h in range(self.horizon):
                self._p[k][h] += other._p[k][h]
        self.n_pairs += other.n_pairs
        self.slot_pairs += other.slot_pairs
        self.transition_mass += other.transition_mass
        self.feature_sums += other.feature_sums
        self.step_mass += other.step_mass
        return self

    def feature_mean(self) -> np.ndarray:
        """``c_h``: the mean of ``psi_h`` over the trajectories running at step h (point counts), ``[H, d]``;
        0 at a step no trajectory reaches. An affine combination of the data's features, so
        ``psi_h - c_h`` lies in the span of the within-step differences: the identifiable reference
        (``theory.identifiable``)."""
        return self.feature_sums / np.maximum(self.step_mass, 1.0)[:, None] * (self.step_mass > 0)[:, None]

    def constant_directions(self, rtol: float = RANK_RTOL) -> np.ndarray:
        """Per step, how many directions every feature of the data projects onto identically: the
        eigenvalues of the centred second moment ``sum_b psi psi^T / n - c c^T`` at most ``rtol`` times
        the largest (all ``d`` when every feature of the step coincides), ``[H]`` ints."""
        out = np.zeros(self.horizon, dtype=np.int64)
        for h in range(self.horizon):
            if self.step_mass[h] <= 0:
                out[h] = self.dim
                continue
            mean = self.feature_sums[h] / self.step_mass[h]
            centred = _symmetric(self._p[0][h]) / self.step_mass[h] - np.outer(mean, mean)
            eig = np.linalg.eigvalsh(centred)
            top = max(float(eig[-1]), 0.0)
            out[h] = int(np.sum(eig <= rtol * top)) if top > 0 else self.dim
        return out

    def _coefficients(self, slot: int | None, coefficients) -> np.ndarray:
        """Coefficients over ``[point, slot_1..slot_K]`` of the sums a covariance is made of."""
        coef = np.zeros(self.n_slots + 1)
        if coefficients is not None:
            if slot is not None:
                raise ValueError("slot: give either slot or coefficients, not both")
            c = np.asarray(coefficients, dtype=np.float64)
            if c.shape != (self.n_slots,) or np.any(c < 0):
                raise ValueError(f"coefficients: expected [n_slots] = [{self.n_slots}] non-negative numbers")
            coef[1:] = c
        elif slot is None:
            coef[0] = 1.0
        else:
            if not 0 <= slot < self.n_slots:
                raise ValueError(f"slot: expected an index in [0, {self.n_slots - 1}], got {slot}")
            coef[slot + 1] = 1.0
        return coef

    def sigma_r(self, slot: int | None = None, coefficients=None) -> np.ndarray:
        """``lambda I + G_r`` of the point sums (default), of one slot, or of ``sum_k c_k G_r^(k)``."""
        coef = self._coefficients(slot, coefficients)
        out = self.lam * np.eye(self.horizon * self.dim)
        for k in np.flatnonzero(coef):
            out += coef[k] * _symmetric(self._r[k])
        return out

    def sigma_p(self, slot: int | None = None, coefficients=None) -> np.ndarray:
        """``Sigma_p[h]``, shape ``[H, d, d]``, selected as in ``sigma_r``."""
        coef = self._coefficients(slot, coefficients)
        out = np.broadcast_to(self.lam * np.eye(self.dim), (self.horizon, self.dim, self.dim)).copy()
        for k in np.flatnonzero(coef):
            out += coef[k] * np.stack([_symmetric(m) for m in self._p[k]])
        return out

    def bonus_model(self, slot: int | None = None, coefficients=None) -> BonusModel:
        """The bonus of the point sums, of one slot, or of a combination of slots."""
        return BonusModel.from_covariances(self.sigma_r(slot, coefficients), self.sigma_p(slot, coefficients))


@dataclass(frozen=True)
class BonusModel:
    """``bonus_h(s, a)`` from the inverses of ``Sigma_r`` (its diagonal blocks) and ``Sigma_p[h]``.

    Attributes:
        reward_blocks: ``[Sigma_r^{-1}]_{hh}``, shape ``[H, d, d]``.
        transition_inverse: ``Sigma_p[h]^{-1}``, shape ``[H, d, d]``.
    """

    reward_blocks: np.ndarray
    transition_inverse: np.ndarray
    reference: np.ndarray | None = None

    def with_reference(self, reference: np.ndarray) -> BonusModel:
        """The identifiable bonus: the reward term of ``psi_h - c_h`` (``reference`` ``c[H, d]``), the
        transition term unchanged (``theory.identifiable``)."""
        c = np.asarray(reference, dtype=np.float64)
        if c.shape != (self.horizon, self.dim) or not np.all(np.isfinite(c)):
            raise ValueError(f"reference: expected finite numbers of shape [H, d] = {[self.horizon, self.dim]}")
        return BonusModel(self.reward_blocks, self.transition_inverse, c)

    @classmethod
    def from_covariances(cls, sigma_r: np.ndarray, sigma_p: np.ndarray) -> BonusModel:
        sigma_p = np.asarray(sigma_p, dtype=np.float64)
        if sigma_p.ndim != 3 or sigma_p.shape[1] != sigma_p.shape[2]:
            raise ValueError(f"sigma_p: expected shape [H, d, d], got {list(sigma_p.shape)}")
        H, d = sigma_p.shape[:2]
        sigma_r = np.asarray(sigma_r, dtype=np.float64)
        if sigma_r.shape != (H * d, H * d):
            raise ValueError(f"sigma_r: expected shape [Hd, Hd] = {[H * d, H * d]}, got {list(sigma_r.shape)}")
        blocks = _inverse_diagonal_blocks(sigma_r, d, "sigma_r")
        inv_p = np.stack([_spd_inverse(sigma_p[h], f"sigma_p[{h}]") for h in range(H)])
        return cls(blocks, inv_p)

    @property
    def horizon(self) -> int:
        return int(self.reward_blocks.shape[0])

    @property
    def dim(self) -> int:
        return int(self.reward_blocks.shape[1])

    def terms(self, features) -> tuple[np.ndarray, np.ndarray]:
        """``(||psibar_h||_{Sigma_r^-1}, ||psi||_{Sigma_p[h]^-1})`` for features ``[..., H, d]``,
        each shaped ``[..., H]``: one batched product per step with both inverses side by side."""
        x = np.asarray(features, dtype=np.float64)
        H, d = self.horizon, self.dim
        if x.ndim < 2 or x.shape[-2:] != (H, d):
            raise ValueError(f"features: expected shape [..., H, d] = [..., {H}, {d}], got {list(x.shape)}")
        lead = x.shape[:-2]
        flat = x.reshape(-1, H, d)
        both = np.concatenate([self.reward_blocks, self.transition_inverse], axis=2)
        quad = np.empty((2, flat.shape[0], H))
        for start in range(0, flat.shape[0], BONUS_CHUNK):
            by_step = flat[start : start + BONUS_CHUNK].transpose(1, 0, 2)
            if self.reference is None:
                prod = np.matmul(by_step, both)
                quad[0, start : start + BONUS_CHUNK] = np.einsum("hnd,hnd->nh", prod[..., :d], by_step)
                quad[1, start : start + BONUS_CHUNK] = np.einsum("hnd,hnd->nh", prod[..., d:], by_step)
            else:
                z = by_step - self.reference[:, None, :]
                quad[0, start : start + BONUS_CHUNK] = np.einsum("hnd,hnd->nh", np.matmul(z, self.reward_blocks), z)
                quad[1, start : start + BONUS_CHUNK] = np.einsum("hnd,hnd->nh", np.matmul(by_step, self.transition_inverse), by_step)
        root = np.sqrt(np.maximum(quad, 0.0))
        return root[0].reshape(*lead, H), root[1].reshape(*lead, H)

    def bonus(self, features, c_r: float = 1.0, c_p: float = 1.0) -> np.ndarray:
        """``c_r ||psibar_h||_{Sigma_r^-1} + c_p ||psi||_{Sigma_p[h]^-1}``, shape ``[..., H]``."""
        r, p = self.terms(features)
        return c_r * r + c_p * p

    def step_bonus(self, features, h: int) -> np.ndarray:
        """``bonus_h`` at one step for features ``[..., d]`` (shape ``[...]``)."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"features: expected last axis d = {self.dim}, got {list(x.shape)}")
        if not 0 <= h < self.horizon:
            raise ValueError(f"h: expected a step in [0, {self.horizon - 1}], got {h}")
        z = x if self.reference is None else x - self.reference[h]
        r = np.einsum("...d,de,...e->...", z, self.reward_blocks[h], z)
        p = np.einsum("...d,de,...e->...", x, self.transition_inverse[h], x)
        return np.sqrt(np.maximum(r, 0.0)) + np.sqrt(np.maximum(p, 0.0))
