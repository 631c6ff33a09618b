"""Reading untrusted JSON and NPZ files into a mapping, with bounded memory and one-line errors.

JSON files over ``MAX_JSON_BYTES`` are refused before parsing (a parsed list of floats takes
several times its text), as is nesting deeper than the parser's recursion limit. NPZ members are
opened one by one: the NPY header gives the dtype and shape, so pickled (object) arrays are
refused without being loaded, and arrays over what is left of ``MEMORY_BUDGET_BYTES`` (all arrays
of a file together) or larger than the member that should hold them (a forged header) are
refused before anything is allocated.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .games import GameError

#: The largest array a reader allocates (2 GiB).
MEMORY_BUDGET_BYTES = 2 * 2**30

#: The largest JSON file a reader parses; larger arrays belong in NPZ. Parsed JSON can take
#: about 20 times its text (an empty list "[]," is 3 characters and a 56-byte object), so this
#: keeps a parse within the memory budget.
MAX_JSON_BYTES = 64 * 2**20

#: Characters of a value quoted in an error message (a message stays one short line).
REPR_CHARS = 60

_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    ValueError,
    OSError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    SyntaxError,
    UnicodeDecodeError,
    OverflowError,
)


def short_repr(value, limit: int = REPR_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, on one line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    return short_repr(str(exc) or type(exc).__name__, 2 * REPR_CHARS).strip("'\"")


def _read_json(path: Path) -> dict:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise GameError(
            f"{path}: {size / 2**20:.0f} MiB of JSON is over the reader's limit of "
            f"{MAX_JSON_BYTES // 2**20} MiB; store large arrays as .npz"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except RecursionError:
        raise GameError(f"{path}: cannot be read as JSON (nested too deeply)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GameError(f"{path}: cannot be read as JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise GameError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    major, _ = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh)
    return shape, dtype


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, budget: int) -> np.ndarray:
    key = info.filename[:-4]
    with zf.open(info) as fh:
        shape, dtype = _npy_header(fh)
        header_bytes = fh.tell()
    if dtype.hasobject:
        raise GameError(f"{path}: field {key!r} holds pickled Python objects, which this reader never loads; expected an array of numbers")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > budget:
        raise GameError(
            f"{path}: field {key!r} declares {nbytes / 2**30:.3g} GiB, over what is left of the reader's budget of "
            f"{MEMORY_BUDGET_BYTES / 2**30:.3g} GiB"
        )
    if nbytes > info.file_size - header_bytes:
        raise GameError(
            f"{path}: field {key!r} is truncated (its header declares {nbytes} bytes, "
            f"the file holds {max(info.file_size - header_bytes, 0)})"
        )
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _read_npz(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as zf:
            out, budget = {}, MEMORY_BUDGET_BYTES
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise GameError(
                        f"{path}: member {short_repr(info.filename)} is not an array (.npy); expected an NPZ written by numpy.savez"
                    )
                arr = out[info.filename[:-4]] = _read_member(zf, info, path, budget)
                budget -= arr.nbytes
            return out
    except GameError:
        raise
    except _READ_ERRORS as exc:
        raise GameError(f"{path}: cannot be read as NPZ (truncated or corrupt: {_one_line(exc)})") from None


def load_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a ``.json`` or ``.npz`` file (GameError naming the file)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npz"):
        raise GameError(f"{path}: unknown suffix {suffix!r}; expected .json or .npz")
    if not path.exists():
        raise GameError(f"{path}: no such file")
    if not path.is_file():
        raise GameError(f"{path}: is a directory; expected a {suffix[1:].upper()} file")
    try:
        return _read_json(path) if suffix == ".json" else _read_npz(path)
    except PermissionError:
        raise GameError(f"{path}: cannot be read (permission denied)") from None
