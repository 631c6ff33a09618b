"""Flat-step offline datasets read in place: OG-MARL / flashbax Vaults and the OMIGA HDF5 release.

Both store consecutive steps, episode after episode, along a time axis (a vault has ``B`` such
rows, OMIGA one) and mark an episode's last step with a done flag. ``FlatStepReader`` cuts the
rows into episodes by those flags (one streaming pass over the flags, at open) and serves
trajectories in the project's padded layout (``external.py``), reading for each request only
the spans of steps it covers. Steps after a row's last done flag belong to an unfinished
episode and are left out (``dropped_steps``).

A flashbax Vault (``flashbax.vault.Vault``, format version 1.x) is a directory with
``metadata.json`` (``structure_shape`` / ``structure_dtype``: the experience tree, leaves
``[B, T, ...]``), one zarr array over an OCDBT key-value store per leaf (named by the leaf's
keys joined and ended with ``.``), and ``vault_index`` (how many time steps were written).
OG-MARL's experience tree: ``observations [B, T, m, O]``, ``actions [B, T, m]`` (or
``[B, T, m, A]`` floats), ``rewards [B, T, m]``, ``terminals`` and ``truncations [B, T, m]``,
optional ``infos.legals [B, T, m, n_actions]`` and ``infos.state [B, T, S]``; a step's done
flag is ``terminals | truncations`` of any agent. Observation ``t`` is the one the action of
step ``t`` was chosen from; the observation after an episode's last step is not stored, so the
final slot repeats the last stored one (as padding does).

OMIGA (``datasets/offline_dataset.py`` of its release): root datasets ``o [T, m, O]``,
``s [T, m, S]`` (flattened to ``m * S``) or ``[T, S]``, ``a [T, m, A]`` floats (MaMuJoCo) or
``[T, m]`` integers, ``r`` and ``d`` as ``[T]``, ``[T, 1]`` or ``[T, m]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .external import ExternalReader, continuous_config, layout_uuid, shape_error, team_rewards
from .schema import DatasetSpec

KIND_VAULT = "og-marl-vault"
KIND_OMIGA = "omiga-hdf5"
METADATA_FILE = "metadata.json"
SUPPORTED_VAULT_MAJOR = 1
#: Steps per read of the segmentation pass (bounded memory on million-step datasets).
SEGMENT_CHUNK = 1 << 18


class FlatStepReader(ExternalReader):
    """Episodes cut from rows of consecutive steps. A subclass sets ``path``, ``_rows`` (steps
    written per row), ``_m``, ``_continuous``, ``_has_legals``, ``_has_state`` and implements
    ``_spans(name, requests)`` (``name`` in obs, state, actions, legals, rewards, done; requests
    ``(row, start, stop)``; returns one array per request), then calls ``_finish``."""

    def _spans(self, name: str, requests: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        raise NotImplementedError

    def _segment(self) -> int:
        """Episode table (row, start, length) from the done flags; returns the max action + 1
        seen (discrete actions), read in the same pass."""
        rows, starts, lengths = [], [], []
        self.dropped_steps = 0
        top = 0
        for row, n in enumerate(self._rows):
            ends = []
            for s in range(0, n, SEGMENT_CHUNK):
                e = min(s + SEGMENT_CHUNK, n)
                done = self._spans("done", [(row, s, e)])[0]
                ends.append(s + np.flatnonzero(done))
                if not self._continuous and not self._has_legals:
                    top = max(top, int(self._spans("actions", [(row, s, e)])[0].max(initial=-1)) + 1)
            end = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
            begin = np.concatenate([[0], end[:-1] + 1]).astype(np.int64)
            rows.append(np.full(end.shape, row))
            starts.append(begin)
            lengths.append(end - begin + 1)
            self.dropped_steps += int(n - (end[-1] + 1 if end.size else 0))
        self._ep_row, self._ep_start, self._ep_len = (np.concatenate(x).astype(np.int64) for x in (rows, starts, lengths))
        if self._ep_len.size == 0:
            raise ValueError(f"{self.path}: no finished episode (no done flag in any row)")
        return top

    def _finish(self, name: str, obs_dim: int, state_dim: int, n_actions: int, action_dim: int, identity: Sequence[Any]) -> None:
        kind = self.kind
        config: dict[str, Any] = {"source_layout": kind}
        if self._continuous:
            config.update(continuous_config(action_dim))
            n_actions = 1
        H = int(self._ep_len.max())
        self.n_trajectories = int(self._ep_len.size)
        self.spec = DatasetSpec(
            f"{kind}:{name}", config, tuple(f"agent_{i}" for i in range(self._m)), int(obs_dim), int(state_dim), int(n_actions), H
        )
        self.uuid = layout_uuid(kind, [*identity, self.n_trajectories])
        self.source_names = np.asarray([name])
        self.policy_names = self.source_names

    def _read(self, idx: np.ndarray, fields: Sequence[str]) -> dict[str, np.ndarray]:
        H, m = self.spec.horizon, self._m
        row, start, length = self._ep_row[idx], self._ep_start[idx], self._ep_len[idx]
        # Episodes adjacent in storage are read as one span.
        order = np.lexsort((start, row))
        r, s, ln = row[order], start[order], length[order]
        new_run = np.ones(len(order), dtype=bool)
        new_run[1:] = (r[1:] != r[:-1]) | (s[1:] != s[:-1] + ln[:-1])
        run_id = np.cumsum(new_run) - 1
        first = np.flatnonzero(new_run)
        run_stop = np.zeros(first.size, dtype=np.int64)
        np.maximum.at(run_stop, run_id, s + ln)
        requests = [(int(r[i]), int(s[i]), int(e)) for i, e in zip(first, run_stop)]
        offsets = np.concatenate([[0], np.cumsum(run_stop - s[first])[:-1]]).astype(np.int64)
        base = np.empty(len(idx), dtype=np.int64)
        base[order] = offsets[run_id] + (s - s[first][run_id])
        t = np.arange(H + 1)
        steps = base[:, None] + np.minimum(t[None, :], length[:, None] - 1)
        valid = t[None, :H] < length[:, None]

        def gathered(name: str, slots: int) -> np.ndarray:
            return np.concatenate(self._spans(name, requests))[steps[:, :slots]]

        out: dict[str, np.ndarray] = {}
        if "obs" in fields:
            out["obs"] = gathered("obs", H + 1).astype(np.float32)
        if "state" in fields:
            st = gathered("state" if self._has_state else "obs", H + 1)
            out["state"] = st.reshape(len(idx), H + 1, -1).astype(np.float32)
        if "rewards" in fields:
            out["rewards"] = np.where(valid[..., None], gathered("rewards", H), 0.0).astype(np.float32)
        if "actions" in fields:
            a = gathered("actions", H)
            mask = valid.reshape(valid.shape + (1,) * (a.ndim - 2))
            out["actions"] = np.where(mask, a, 0).astype(np.float32 if self._continuous else np.int16)
        if "avail" in fields:
            if self._continuous or not self._has_legals:
                out["avail"] = np.broadcast_to(valid[:, :, None, None], (len(idx), H, m, self.spec.n_actions)).copy()
            else:
                out["avail"] = gathered("legals", H).astype(bool) & valid[:, :, None, None]
        return out


def find_vault(path: str | os.PathLike) -> Path:
    """The vault directory at ``path``: ``path`` itself when it holds ``metadata.json``, else its
    one subdirectory that does (a ``NAME.vlt`` with a single UID)."""
    p = Path(path)
    if (p / METADATA_FILE).is_file():
        return p
    uids = sorted(d.name for d in p.iterdir() if (d / METADATA_FILE).is_file())
    if len(uids) == 1:
        return p / uids[0]
    if not uids:
        raise ValueError(f"{p}: no {METADATA_FILE} here or in a subdirectory; expected a flashbax vault (NAME.vlt/UID)")
    raise ValueError(f"{p}: holds the vaults {uids}; give one of them, e.g. {p / uids[0]}")


def _leaf(tree: dict, dotted: str):
    node = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


class VaultReader(FlatStepReader):
    """An OG-MARL / flashbax vault read in place (module docstring)."""

    kind = KIND_VAULT
    LEAVES = {
        "obs": "observations",
        "actions": "actions",
        "rewards": "rewards",
        "terminals": "terminals",
        "truncations": "truncations",
        "legals": "infos.legals",
        "state": "infos.state",
    }
    REQUIRED = ("obs", "actions", "rewards", "terminals", "truncations")

    def __init__(self, path: str | os.PathLike) -> None:
        import tensorstore as ts

        self.path = Path(path)
        meta_path = self.path / METADATA_FILE
        where = str(meta_path)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: unreadable ({exc})") from None
        for key in ("version", "structure_shape", "structure_dtype"):
            if key not in meta:
                raise ValueError(f"{where}: field {key!r} is missing; expected flashbax vault metadata")
        if int(float(meta["version"])) != SUPPORTED_VAULT_MAJOR:
            raise ValueError(f"{where}: field 'version' is {meta['version']!r}; this reader knows version {SUPPORTED_VAULT_MAJOR}.x")
        shapes, dtypes = {}, {}
        for name, dotted in self.LEAVES.items():
            shape, dtype = _leaf(meta["structure_shape"], dotted), _leaf(meta["structure_dtype"], dotted)
            if shape is None:
                if name in self.REQUIRED:
                    raise ValueError(
                        f"{where}: field 'structure_shape.{dotted}' is missing; expected an OG-MARL vault "
                        "(observations, actions, rewards, terminals, truncations)"
                    )
                continue
            shapes[name], dtypes[name] = tuple(int(x) for x in str(shape).strip("()").split(",") if x.strip()), str(dtype)
        obs = shapes["obs"]
        if len(obs) != 4:
            raise shape_error(where, "structure_shape.observations", "[B, T, m, obs_dim]", obs)
        B, _, m, obs_dim = obs
        for name in ("rewards", "terminals", "truncations"):
            if shapes[name][:1] != (B,) or len(shapes[name]) not in (2, 3):
                raise shape_error(where, f"structure_shape.{self.LEAVES[name]}", f"[{B}, T] or [{B}, T, {m}]", shapes[name])
        self._m, self._continuous = m, dtypes["actions"].startswith("float")
        act = shapes["actions"]
        expected = 4 if self._continuous else 3
        if len(act) != expected or act[0] != B or act[2] != m:
            raise shape_error(
                where, "structure_shape.actions", f"[{B}, T, {m}]" + (", action_dim]" if self._continuous else " integers"), act
            )
        self._has_legals, self._has_state = "legals" in shapes, "state" in shapes
        if self._has_legals and (len(shapes["legals"]) != 4 or shapes["legals"][2] != m):
            raise shape_error(where, "structure_shape.infos.legals", f"[{B}, T, {m}, n_actions]", shapes["legals"])
        base = f"file://{self.path.resolve()}"

        def open_leaf(dotted: str):
            return ts.open({"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": base, "path": dotted + "."}}).result()

        try:
            self._stores = {name: open_leaf(self.LEAVES[name]) for name in shapes}
            index = ts.open({"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": base, "path": "vault_index"}}).result()
            written = int(np.asarray(index.read().result()).reshape(-1)[0])
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: cannot open the vault's arrays ({exc})") from None
        self._rows = [written] * B
        top = self._segment()
        n_actions = shapes["legals"][3] if self._has_legals else top
        state_dim = int(np.prod(shapes["state"][2:])) if self._has_state else m * obs_dim
        action_dim = act[3] if self._continuous else 0
        self._finish(
            f"{self.path.parent.name}/{self.path.name}", obs_dim, state_dim, n_actions, action_dim, [sorted(shapes.items()), written]
        )

    def _spans(self, name: str, requests: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        if name == "done":
            flags = [self._spans(k, requests) for k in ("terminals", "truncations")]
            return [(a.reshape(a.shape[0], -1).astype(bool) | b.reshape(b.shape[0], -1).astype(bool)).any(axis=1) for a, b in zip(*flags)]
        store = self._stores[name]
        futures = [store[row, s:e].read() for row, s, e in requests]
        values = [np.asarray(f.result()) for f in futures]
        if name == "rewards":
            return [team_rewards(v, self._m, 1, str(self.path), "rewards") for v in values]
        return values


class OmigaReader(FlatStepReader):
    """The OMIGA release HDF5 read in place (module docstring)."""

    kind = KIND_OMIGA
    FIELDS = {"obs": "o", "state": "s", "actions": "a", "rewards": "r", "done": "d"}

    def __init__(self, path: str | os.PathLike) -> None:
        self._open_hdf5(path, self._open)

    def _open(self) -> None:
        f, where = self._file, str(self.path)
        o = f["o"].shape
        if len(o) != 3:
            raise shape_error(where, "o", "[T, m, obs_dim]", o)
        T, m, obs_dim = o
        s, a = f["s"].shape, f["a"]
        if s[:1] != (T,) or len(s) not in (2, 3):
            raise shape_error(where, "s", f"[{T}, state_dim] or [{T}, {m}, state_dim]", s)
        for key in ("r", "d"):
            if f[key].shape[:1] != (T,) or len(f[key].shape) > 2:
                raise shape_error(where, key, f"[{T}], [{T}, 1] or [{T}, {m}]", f[key].shape)
        self._m, self._continuous = m, a.dtype.kind == "f"
        if a.shape[:2] != (T, m) or a.ndim != (3 if self._continuous else 2):
            raise shape_error(where, "a", f"[{T}, {m}, action_dim] floats or [{T}, {m}] integers", a.shape)
        self._has_legals, self._has_state = False, True
        self._rows = [T]
        top = self._segment()
        self._finish(
            self.path.stem,
            obs_dim,
            int(np.prod(s[1:])),
            top,
            a.shape[2] if self._continuous else 0,
            [(k, f[k].shape, str(f[k].dtype)) for k in sorted(f.keys())],
        )

    def close(self) -> None:
        self._file.close()

    def _spans(self, name: str, requests: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        ds = self._file[self.FIELDS[name]]
        values = [ds[s:e] for _, s, e in requests]
        if name == "done":
            return [v.reshape(v.shape[0], -1).astype(bool).any(axis=1) for v in values]
        if name == "rewards":
            return [team_rewards(v, self._m, 1, str(self.path), "r") for v in values]
        return values
