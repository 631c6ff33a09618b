"""Versioned file formats of docs/formats.md: games, policies and preference datasets.

Games and policies are JSON or NPZ (chosen by the file suffix); datasets are NPZ. A reader
refuses a file it cannot use with a one-line GameError naming the file and the field: an
unknown ``format``, an unknown field, a field of the wrong type (strings, booleans or complex
numbers where real numbers are expected), a shape that disagrees with the declared sizes, a
truncated or corrupt file, pickled data (never loaded), and arrays over ``MEMORY_BUDGET_BYTES``
(refused from the NPY header, before anything is allocated).

Every file the package writes goes through ``atomic_write`` (module ``atomic``): a temporary
file beside the target, then a rename, so a killed writer never leaves a half-written file.

In NPZ, a policy's ``probs`` (ragged when players have different action counts) is stored as
arrays ``probs_0, probs_1, ...``; a single stacked ``probs`` array ``[m, H, S, A]`` is also read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import (
    atomic_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_many,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    save_figure,
    write_json,
)
from .games import GameError, MarkovGame
from .policies import Policy, check_policy
from .preferences import PreferenceDataset
from .safe_read import MAX_JSON_BYTES, MEMORY_BUDGET_BYTES, load_mapping, short_repr

__all__ = [
    "DATASET_FORMAT",
    "GAME_FORMAT",
    "MAX_JSON_BYTES",
    "MEMORY_BUDGET_BYTES",
    "POLICY_FORMAT",
    "atomic_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_many",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "game_to_dict",
    "load_dataset",
    "load_game",
    "load_policy",
    "merge_verify_checks",
    "policy_to_dict",
    "save_dataset",
    "save_figure",
    "save_game",
    "save_policy",
    "write_json",
]

GAME_FORMAT = "marlcov.game/1"
POLICY_FORMAT = "marlcov.policy/1"
DATASET_FORMAT = "marlcov.prefs/1"

GAME_FIELDS = (
    "format",
    "n_players",
    "n_states",
    "action_sizes",
    "horizon",
    "initial_state",
    "transitions",
    "rewards",
    "features",
    "theta",
    "name",
)
DATASET_FIELDS = ("format", "states", "actions", "prefs")


def _file_error(path, message: str) -> GameError:
    return GameError(f"{path}: {message}")


def _scalar(value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _check_format(path, data: dict, expected: str) -> None:
    fmt = _scalar(data.get("format"))
    if fmt is None:
        raise _file_error(path, f"field 'format' is missing; expected {expected!r}")
    if fmt != expected:
        raise _file_error(path, f"field 'format' is {short_repr(fmt)}; this reader knows only {expected!r}")


def _check_known_fields(path, data: dict, known) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise _file_error(path, f"unknown field(s) {short_repr(unknown)}; expected only {list(known)}")


def _require(path, data: dict, key: str):
    if key not in data:
        raise _file_error(path, f"field {key!r} is missing")
    return data[key]


def _int_field(path, data: dict, key: str) -> int:
    value = _scalar(_require(path, data, key))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _file_error(path, f"field {key!r}: expected an integer, got {short_repr(value)}")
    return int(value)


_KIND_NAMES = {
    "U": "strings",
    "S": "bytes",
    "b": "booleans",
    "c": "complex numbers",
    "O": "mixed or ragged entries",
    "M": "dates",
    "m": "time deltas",
    "V": "records",
}


def _real_array(path, key: str, raw, shape: tuple | None = None, declared: str = "") -> np.ndarray:
    """``raw`` as float64, refusing non-real entries (a string "0.5" is not a probability)."""
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError, RecursionError):
        raise _file_error(path, f"field {key!r}: expected a numeric array (ragged or non-numeric entries found)") from None
    if arr.dtype.kind not in "iuf":
        found = _KIND_NAMES.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise _file_error(path, f"field {key!r}: expected real numbers, found {found}")
    if shape is not None and arr.shape != shape:
        why = f" ({declared})" if declared else ""
        raise _file_error(path, f"field {key!r}: expected shape {short_repr(list(shape))}{why}, got {short_repr(list(arr.shape))}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise _file_error(path, f"field {key!r}: expected finite numbers, found NaN or infinity")
    return arr


def _int_array(path, key: str, raw) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iu":
        found = "real numbers" if arr.dtype.kind == "f" else _KIND_NAMES.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise _file_error(path, f"field {key!r}: expected an integer array, found {found}")
    return arr


def game_to_dict(game: MarkovGame) -> dict:
    out = {
        "format": GAME_FORMAT,
        "n_players": game.n_players,
        "n_states": game.n_states,
        "action_sizes": list(game.action_sizes),
        "horizon": game.horizon,
        "initial_state": game.initial_state,
        "transitions": game.transitions,
        "rewards": game.rewards,
    }
    if game.features is not None:
        out["features"] = np.ascontiguousarray(game.features)
    if game.theta is not None:
        out["theta"] = game.theta
    if game.name is not None:
        out["name"] = game.name
    return out


def _to_jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _save_npz(path, arrays: dict) -> None:
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_save(path, lambda fh: np.savez_compressed(fh, **payload))


def save_game(game: MarkovGame, path: str | os.PathLike) -> None:
    """Write ``game`` as JSON or NPZ according to the suffix of ``path``."""
    data = game_to_dict(game)
    if Path(path).suffix.lower() == ".npz":
        _save_npz(path, data)
    else:
        write_json(path, _to_jsonable(data))


def load_game(path: str | os.PathLike, bounded_rewards: bool = True) -> MarkovGame:
    """Read a ``marlcov.game/1`` file; every declared size is checked against the arrays.

    ``bounded_rewards=False`` accepts rewards outside [0, 1] (see :class:`MarkovGame`)."""
    data = load_mapping(path)
    _check_format(path, data, GAME_FORMAT)
    _check_known_fields(path, data, GAME_FIELDS)
    m = _int_field(path, data, "n_players")
    S = _int_field(path, data, "n_states")
    H = _int_field(path, data, "horizon")
    _int_field(path, data, "initial_state")
    for key, value, low in (("n_players", m, 1), ("n_states", S, 1), ("horizon", H, 1)):
        if value < low:
            raise _file_error(path, f"field {key!r}: expected an integer >= {low}, got {value}")
    sizes = _int_array(path, "action_sizes", _require(path, data, "action_sizes"))
    if sizes.ndim != 1 or sizes.shape[0] != m or np.any(sizes < 1):
        raise _file_error(
            path, f"field 'action_sizes': expected a list of {m} positive integers (n_players), got {short_repr(sizes.tolist())}"
        )
    actions = tuple(int(a) for a in sizes)
    P = _real_array(
        path,
        "transitions",
        _require(path, data, "transitions"),
        (H, S, *actions, S),
        "[H, S, A_1..A_m, S] from horizon, n_states, action_sizes",
    )
    R = _real_array(
        path,
        "rewards",
        _require(path, data, "rewards"),
        (H, m, S, *actions),
        "[H, m, S, A_1..A_m] from horizon, n_players, n_states, action_sizes",
    )
    psi = _real_array(path, "features", data["features"]) if "features" in data else None
    theta = _real_array(path, "theta", data["theta"]) if "theta" in data else None
    name = _scalar(data.get("name"))
    if name is not None and not isinstance(name, str):
        raise _file_error(path, f"field 'name': expected a string, got {short_repr(name)}")
    try:
        return MarkovGame(P, R, int(_scalar(data["initial_state"])), psi, theta, name, bounded_rewards)
    except GameError as exc:
        raise _file_error(path, str(exc)) from None


def policy_to_dict(policy: Policy) -> dict:
    return {"format": POLICY_FORMAT, "probs": [np.asarray(p) for p in policy]}


def save_policy(policy: Policy, path: str | os.PathLike) -> None:
    if Path(path).suffix.lower() == ".npz":
        _save_npz(path, {"format": POLICY_FORMAT, **{f"probs_{i}": p for i, p in enumerate(policy)}})
    else:
        write_json(path, _to_jsonable(policy_to_dict(policy)))


def _policy_arrays(path, data: dict, n_players: int) -> list:
    """The per-player arrays of a policy file: ``probs`` (a list, or stacked in NPZ), or the
    NPZ arrays ``probs_0 .. probs_{m-1}``; any other field is refused."""
    if "probs" in data:
        _check_known_fields(path, data, ("format", "probs"))
        probs = data["probs"]
        if isinstance(probs, np.ndarray):
            if probs.ndim != 4:
                raise _file_error(path, f"field 'probs': expected a stacked array [m, H, S, A], got shape {short_repr(list(probs.shape))}")
            probs = list(probs)
        if not isinstance(probs, list):
            raise _file_error(path, "field 'probs': expected a list over players of arrays [H, S, A_i]")
        return probs
    keys = [f"probs_{i}" for i in range(n_players)]
    _check_known_fields(path, data, ("format", "probs", *keys))
    missing = [k for k in keys if k not in data]
    if len(missing) == n_players:
        raise _file_error(path, "field 'probs' is missing (or, in NPZ, 'probs_0' .. 'probs_{m-1}')")
    if missing:
        raise _file_error(path, f"field {missing[0]!r} is missing; the game has {n_players} players")
    return [data[k] for k in keys]


def load_policy(path: str | os.PathLike, game: MarkovGame) -> Policy:
    """Read a ``marlcov.policy/1`` file and validate it against ``game``."""
    data = load_mapping(path)
    _check_format(path, data, POLICY_FORMAT)
    probs = _policy_arrays(path, data, game.n_players)
    if len(probs) != game.n_players:
        raise _file_error(path, f"field 'probs': expected {game.n_players} players (the game's n_players), got {len(probs)}")
    arrays = [_real_array(path, f"probs[{i}]", p) for i, p in enumerate(probs)]
    try:
        return check_policy(arrays, game, field_name="probs")
    except GameError as exc:
        raise _file_error(path, str(exc)) from None


def save_dataset(dataset: PreferenceDataset, path: str | os.PathLike) -> None:
    _save_npz(
        path,
        {"format": DATASET_FORMAT, "states": dataset.states, "actions": dataset.actions, "prefs": dataset.prefs},
    )


def load_dataset(path: str | os.PathLike, game: MarkovGame | None = None) -> PreferenceDataset:
    """Read a preference dataset NPZ; with ``game``, check sizes and index ranges against it."""
    if Path(path).suffix.lower() != ".npz":
        raise _file_error(path, "expected an .npz preference dataset (marlcov.prefs/1)")
    data = load_mapping(path)
    _check_format(path, data, DATASET_FORMAT)
    _check_known_fields(path, data, DATASET_FIELDS)
    arrays = {key: _int_array(path, key, _require(path, data, key)) for key in DATASET_FIELDS[1:]}
    try:
        ds = PreferenceDataset(arrays["states"], arrays["actions"], arrays["prefs"])
        if game is not None:
            ds.check_against(game)
    except GameError as exc:
        raise _file_error(path, str(exc)) from None
    return ds


def dataset_nbytes(n_pairs: int, horizon: int, n_players: int) -> int:
    """Bytes of a sampled preference dataset held in memory (int64 states, actions, prefs)."""
    return 8 * n_pairs * (2 * (horizon + 1) + 2 * horizon * n_players + n_players)


def merge_verify_checks(report: str | os.PathLike, checks: list[dict], settings: dict) -> list[dict]:
    """The ``checks`` of a ``verify.json`` about to replace ``report``: a partial run
    (``verify --only``) into a folder that holds a report keeps that report's other checks, in
    their order, with the re-run ones replaced by id and new ones appended. A report made with
    other ``settings`` (quick/full, seed) or one that cannot be read is refused, not overwritten.
    """
    report = Path(report)
    if not report.exists():
        return list(checks)
    old = load_mapping(report)
    old_checks = old.get("checks")
    if not isinstance(old_checks, list) or not all(isinstance(c, dict) and "id" in c for c in old_checks):
        raise _file_error(
            report, "field 'checks': expected a list of checks with ids; not merging into it (choose another --out, or remove the file)"
        )
    old_settings = {k: (old.get("settings") or {}).get(k) for k in settings}
    if old_settings != dict(settings):
        raise _file_error(
            report,
            f"field 'settings' is {short_repr(old_settings)}, this run {short_repr(dict(settings))}; "
            "not merging a partial run into it (choose another --out, or the same settings)",
        )
    new = {c["id"]: c for c in checks}
    merged = [new.pop(c["id"], c) for c in old_checks]
    return merged + [c for c in checks if c["id"] in new]
