"""The training objectives of the offline MARL papers, written once for any array library.

Every function takes arrays of one namespace (numpy in the checks of ``proofs_checks``, torch
tensors in ``deep``) and computes with ``array_api_compat.array_namespace`` of its inputs, so
the loss that ``marlcov verify`` proves convex or consistent is the very function that the deep
pipeline differentiates. Nothing here imports torch.

Modules: ``marlhf`` (MARLHF, (1)-(4)), ``omapl`` (O-MAPL), ``omiga`` (OMIGA), ``mamql`` (MAMQL),
``score_decomposition``.
The numerical helpers below are the namespace-agnostic pieces they share.
"""

from __future__ import annotations

from array_api_compat import array_namespace

__all__ = ["namespace", "logsumexp", "log_sigmoid", "softmax", "log_softmax", "weighted_logsumexp"]


def namespace(*arrays):
    """The array namespace of ``arrays`` (numpy, torch, ...); raises TypeError on a mix."""
    return array_namespace(*arrays)


def logsumexp(x, axis=-1, keepdims: bool = False):
    """``log sum_axis exp(x)``, stable for large entries; ``axis`` an int or a tuple of ints."""
    xp = array_namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    # A row of -inf has max -inf; shifting by 0 there keeps the result -inf instead of NaN.
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    if keepdims:
        return out
    return xp.squeeze(out, axis=axis)


def weighted_logsumexp(x, log_weights, axis=-1, keepdims: bool = False):
    """``log sum_axis w exp(x)`` with ``log_weights = log w`` (``-inf`` for a zero weight)."""
    return logsumexp(x + log_weights, axis=axis, keepdims=keepdims)


def log_sigmoid(x):
    """``log sigma(x) = -log(1 + exp(-x))``, stable for large ``|x|``."""
    xp = array_namespace(x)
    return xp.minimum(x, xp.zeros_like(x)) - xp.log1p(xp.exp(-xp.abs(x)))


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` along ``axis``."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    """``exp(x) / sum exp(x)`` along ``axis``."""
    xp = array_namespace(x)
    return xp.exp(log_softmax(x, axis=axis))
