"""Versioned file formats of DESIGN.md: games, policies and preference datasets.

Games and policies are JSON or NPZ (chosen by the file suffix); datasets are NPZ. A reader
refuses a file whose ``format`` it does not know, or whose fields disagree, with a GameError
naming the file and the field. Writers go through a temporary file and a rename, so a crash
never leaves a half-written file.

In NPZ, a policy's ``probs`` (ragged when players have different action counts) is stored as
arrays ``probs_0, probs_1, ...``; a single stacked ``probs`` array ``[m, H, S, A]`` is also read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .games import GameError, MarkovGame
from .policies import Policy, check_policy
from .preferences import PreferenceDataset

GAME_FORMAT = "marlcov.game/1"
POLICY_FORMAT = "marlcov.policy/1"
DATASET_FORMAT = "marlcov.prefs/1"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = False) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=1))


def _file_error(path, message: str) -> GameError:
    return GameError(f"{path}: {message}")


def _load_mapping(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise _file_error(path, "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            with open(path) as fh:
                data = json.load(fh)
            if not isinstance(data, dict):
                raise _file_error(path, "expected a JSON object at the top level")
            return data
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
    except (json.JSONDecodeError, ValueError, OSError) as exc:
        if isinstance(exc, GameError):
            raise
        raise _file_error(path, f"cannot be read as {suffix[1:].upper()} ({exc})") from None
    raise _file_error(path, f"unknown suffix {suffix!r}; expected .json or .npz")


def _scalar(value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _check_format(path, data: dict, expected: str) -> None:
    fmt = _scalar(data.get("format"))
    if fmt is None:
        raise _file_error(path, f"field 'format' is missing; expected {expected!r}")
    if fmt != expected:
        raise _file_error(path, f"field 'format' is {fmt!r}; this reader knows only {expected!r}")


def _require(path, data: dict, key: str):
    if key not in data:
        raise _file_error(path, f"field {key!r} is missing")
    return data[key]


def _int_field(path, data: dict, key: str) -> int:
    value = _scalar(_require(path, data, key))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _file_error(path, f"field {key!r}: expected an integer, got {value!r}")
    return int(value)


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
    atomic_write(path, lambda fh: np.savez_compressed(fh, **payload), binary=True)


def save_game(game: MarkovGame, path: str | os.PathLike) -> None:
    """Write ``game`` as JSON or NPZ according to the suffix of ``path``."""
    data = game_to_dict(game)
    if Path(path).suffix.lower() == ".npz":
        _save_npz(path, data)
    else:
        write_json(path, _to_jsonable(data))


def load_game(path: str | os.PathLike) -> MarkovGame:
    """Read a ``marlcov.game/1`` file; every declared size is checked against the arrays."""
    data = _load_mapping(path)
    _check_format(path, data, GAME_FORMAT)
    m = _int_field(path, data, "n_players")
    S = _int_field(path, data, "n_states")
    H = _int_field(path, data, "horizon")
    s1 = _int_field(path, data, "initial_state")
    sizes = np.asarray(_require(path, data, "action_sizes"))
    if sizes.ndim != 1 or sizes.shape[0] != m or not np.issubdtype(sizes.dtype, np.integer):
        raise _file_error(path, f"field 'action_sizes': expected a list of {m} integers, got {sizes.tolist()}")
    actions = tuple(int(a) for a in sizes)

    def array(key: str, shape: tuple | None) -> np.ndarray:
        raw = _require(path, data, key)
        try:
            arr = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise _file_error(path, f"field {key!r}: expected a numeric array (ragged or non-numeric entries found)") from None
        if shape is not None and arr.shape != shape:
            raise _file_error(path, f"field {key!r}: expected shape {list(shape)}, got {list(arr.shape)}")
        return arr

    P = array("transitions", (H, S, *actions, S))
    R = array("rewards", (H, m, S, *actions))
    psi = array("features", None) if "features" in data else None
    theta = array("theta", None) if "theta" in data else None
    name = _scalar(data.get("name"))
    try:
        return MarkovGame(P, R, s1, psi, theta, None if name is None else str(name))
    except GameError as exc:
        raise _file_error(path, str(exc)) from None


def policy_to_dict(policy: Policy) -> dict:
    return {"format": POLICY_FORMAT, "probs": [np.asarray(p) for p in policy]}


def save_policy(policy: Policy, path: str | os.PathLike) -> None:
    if Path(path).suffix.lower() == ".npz":
        _save_npz(path, {"format": POLICY_FORMAT, **{f"probs_{i}": p for i, p in enumerate(policy)}})
    else:
        write_json(path, _to_jsonable(policy_to_dict(policy)))


def load_policy(path: str | os.PathLike, game: MarkovGame) -> Policy:
    """Read a ``marlcov.policy/1`` file and validate it against ``game``."""
    data = _load_mapping(path)
    _check_format(path, data, POLICY_FORMAT)
    if "probs" in data:
        probs = data["probs"]
        if isinstance(probs, np.ndarray):
            probs = list(probs)
    else:
        keys = sorted((k for k in data if k.startswith("probs_")), key=lambda k: int(k.split("_")[1]))
        if not keys:
            raise _file_error(path, "field 'probs' is missing")
        probs = [data[k] for k in keys]
    if not isinstance(probs, list):
        raise _file_error(path, "field 'probs': expected a list over players of arrays [H, S, A_i]")
    try:
        return check_policy(probs, game, field_name="probs")
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
        raise _file_error(path, "expected an .npz preference dataset")
    data = _load_mapping(path)
    _check_format(path, data, DATASET_FORMAT)
    try:
        ds = PreferenceDataset(
            _require(path, data, "states"), _require(path, data, "actions"), _require(path, data, "prefs")
        )
        if game is not None:
            ds.check_against(game)
    except GameError as exc:
        raise _file_error(path, str(exc)) from None
    return ds
