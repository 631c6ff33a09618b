"""The reference policy: loading it, and its actions at the anchors' real steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------- policies
def load_policy(policy):
    """A reference policy: a callable ``(obs, avail, t) -> actions`` returned as is, or a path to a
    ``"q-policy"`` checkpoint of ``deep.marlhf.vdn`` (``expert.pt``, ``rookie_<steps>.pt``, an
    offline VDN ``policy.pt``: its greedy policy; read by ``deep.checkpoints.load_checkpoint``),
    or to a ``torch.save``d callable (loaded with ``weights_only=False``: only open checkpoints
    you trust)."""
    if policy is None or callable(policy):
        return policy
    path = Path(policy)
    if not path.exists():
        raise ValueError(f"policy: {policy!r} is neither a callable nor an existing checkpoint file")
    import torch

    from marlcov.deep.checkpoints import UNREADABLE_ERRORS, UnreadableCheckpointError, load_checkpoint
    from marlcov.deep.marlhf.vdn import policy_from_checkpoint

    try:
        return policy_from_checkpoint(load_checkpoint(path, "q-policy"))
    except UnreadableCheckpointError:
        pass  # not a dictionary of weights: a pickled callable, or no checkpoint at all
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except UNREADABLE_ERRORS as exc:
        # The loader's own message can be long and name pickling internals: the file and the kind suffice.
        raise ValueError(f"{path}: not a readable policy checkpoint ({type(exc).__name__} while loading it)") from None
    if not callable(obj):
        raise ValueError(f"{path}: expected a saved callable policy (obs, avail, t) -> actions, got {type(obj).__name__}")
    return obj


def _policy_actions(
    policy, obs: np.ndarray, avail: np.ndarray, valid: np.ndarray | None = None, fallback: np.ndarray | None = None
) -> np.ndarray:
    """``policy`` applied at every real step of a batch: obs ``[B, T, m, o]``, avail ``[B, T, m, A]``,
    ``valid [B, T]`` (default: every step real) -> ``[B, T, m]``. A padded step, where no action is
    available, is not shown to the policy; it keeps ``fallback [B, T, m]`` (the recorded actions;
    default 0), which no measure reads."""
    import torch

    B, T = avail.shape[:2]
    out = np.zeros((B, T, avail.shape[2]), dtype=np.int64) if fallback is None else np.array(fallback, dtype=np.int64)
    for t in range(T):
        rows = slice(None) if valid is None or valid[:, t].all() else np.flatnonzero(valid[:, t])
        if isinstance(rows, np.ndarray) and rows.size == 0:
            continue
        a = policy(torch.as_tensor(obs[rows, t], dtype=torch.float32), torch.as_tensor(avail[rows, t]), t)
        out[rows, t] = np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.int64)
    return out


def _step_masks(avail: np.ndarray, where: str = "avail", index: np.ndarray | None = None) -> np.ndarray:
    """``valid [B, H]`` (True at real steps) from ``avail [B, H, m, A]``, checked: the padding of an
    episode comes after its real steps, and every agent has an available action at every real
    step. ValueError naming ``where``, the trajectory and the step otherwise."""
    from marlcov.deep.common import step_masks

    avail = np.asarray(avail, dtype=bool)
    idx = np.arange(avail.shape[0]) if index is None else np.asarray(index)
    try:
        valid, _ = step_masks(avail)
    except ValueError:
        real = avail.any(axis=(2, 3))
        late = real[:, 1:] & ~real[:, :-1]
        n, t = np.argwhere(late)[0]
        raise ValueError(
            f"{where}: trajectory {int(idx[n])} has a real step {int(t) + 1} after a padded step {int(t)} "
            "(expected the padding of an episode after all its real steps)"
        ) from None
    stuck = valid[:, :, None] & ~avail.any(axis=3)
    if stuck.any():
        n, t, i = np.argwhere(stuck)[0]
        raise ValueError(
            f"{where}: trajectory {int(idx[n])}, step {int(t)}: agent {int(i)} has no available action at a "
            "real step (expected at least one, e.g. a no-op)"
        )
    return valid
