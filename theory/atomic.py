"""The one atomic writer of the package, and checks of output paths before any work is done.

``atomic_save(path, writer)`` calls ``writer(fileobj)`` on a temporary file beside ``path``,
flushes it to disk, gives it the mode an ordinary new file gets (``0666 & ~umask``, usually
0644; ``mkstemp`` alone would leave 0600) and renames it onto ``path``: a reader sees the old
file or the new one, never a half-written one. A temporary file is named
``.{name}.{pid}.{random}.tmp``; one left behind by a killed process (its pid gone) is removed by
the next write of the same target. Figures (``save_figure``), text, JSON and groups of files
written together (``atomic_write_many``: all temporaries first, then the renames) use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from .games import GameError

Writer = Callable[[IO], None]


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Temporaries of ``path`` left by processes that no longer run (killed mid-write)."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{prefix}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _write_temporary(path: Path, writer: Writer, binary: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_save(path: str | os.PathLike, writer: Writer) -> Path:
    """Call ``writer(binary_fileobj)`` on a temporary file, then rename it onto ``path``."""
    return atomic_write(path, writer, binary=True)


def atomic_write(path: str | os.PathLike, write: Writer, binary: bool = False) -> Path:
    """Call ``write(fileobj)`` (text mode unless ``binary``) on a temporary file beside
    ``path``, then rename it into place. Returns ``path``."""
    path = Path(path)
    tmp = _write_temporary(path, write, binary)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_many(writers: Mapping[str | os.PathLike, Writer], binary: bool = False) -> list[Path]:
    """Write several files that belong together (a report and its summary): every temporary
    first, then the renames, so no interruption while writing leaves one new and one old."""
    done: list[tuple[Path, Path]] = []
    try:
        for path, write in writers.items():
            done.append((_write_temporary(Path(path), write, binary), Path(path)))
        for tmp, path in done:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in done]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_save(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda fh: json.dump(obj, fh, indent=1))


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig`` through ``atomic_save``; the image format is the suffix of ``path``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    return atomic_save(path, lambda fh: fig.savefig(fh, format=fmt, **savefig_kwargs))


def _first_existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def _check_parent(path: Path, option: str) -> None:
    ancestor = _first_existing_ancestor(path.absolute())
    if not ancestor.is_dir():
        raise GameError(f"{option}: {path} lies under {ancestor}, which is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise GameError(f"{option}: cannot create {path}: {ancestor} is not writable")


def check_output_file(path: str | os.PathLike, suffixes: Iterable[str], option: str = "--out") -> Path:
    """Refuse, before any work, an output file path that cannot be written or has the wrong
    suffix (a dataset asked for as ``x.json`` would be written as NPZ under that name)."""
    if str(path).strip() == "":
        raise GameError(f"{option}: expected a file path, got an empty string")
    path = Path(path)
    suffixes = tuple(s.lower() for s in suffixes)
    if path.suffix.lower() not in suffixes:
        raise GameError(f"{option}: {path} has suffix {path.suffix or '(none)'!r}; expected {' or '.join(suffixes)}")
    if path.is_dir():
        raise GameError(f"{option}: {path} is a directory; expected a file path")
    if path.exists() and not os.access(path.parent, os.W_OK):
        raise GameError(f"{option}: cannot replace {path}: its directory is not writable")
    _check_parent(path, option)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output directory that is a file or cannot be created."""
    if str(path).strip() == "":
        raise GameError(f"{option}: expected a directory path, got an empty string")
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise GameError(f"{option}: {path} is a file; expected a directory (it holds several files)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise GameError(f"{option}: {path} is not writable")
        return path
    _check_parent(path, option)
    return path
