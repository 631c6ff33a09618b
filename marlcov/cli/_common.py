"""Helpers shared by the commands of ``marlcov``: JSON on stdout, tables, number formats, option
types, one-line error messages, and the progress display on stderr."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from rich.console import Console

from marlcov.theory.progress import Task

EXIT_BAD_INPUT = 2
EXIT_CHECK_ERROR = 1
#: The shell's status for a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: Longest error line on stderr; longer messages are cut (a message never quotes a whole array).
MAX_ERROR_CHARS = 300

#: Seconds a task runs before a log (stderr not a terminal) hears of it, and between its lines.
LOG_QUIET_SECONDS = 2.0
LOG_EVERY_SECONDS = 30.0


def console() -> Console:
    return Console(highlight=False)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


def fmt(x: float) -> str:
    return f"{x:.6g}"


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` on one line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- option types
def _typed(parse, check, expected: str):
    def convert(text: str):
        try:
            value = parse(text)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    convert.__name__ = expected
    return convert


nonnegative_int = _typed(int, lambda v: v >= 0, "a non-negative integer")
positive_int = _typed(int, lambda v: v >= 1, "a positive integer")
finite_float = _typed(float, math.isfinite, "a finite number")
positive_float = _typed(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
open_unit_float = _typed(float, lambda v: 0 < v < 1, "a number in (0, 1)")


# ----------------------------------------------------------------------------- errors
def input_error_message(exc: BaseException) -> str | None:
    """The one-line message of an error about the command's input, or None for any other
    error (a bug keeps its traceback)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror or exc}" if where else str(exc)
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'MemoryError'}): the input asks for more memory than this machine has"
    if isinstance(exc, ValueError):
        return str(exc)
    return None


# ----------------------------------------------------------------------------- progress
class StderrProgress:
    """A ``theory.progress`` listener: bars with the time left on a terminal (rich, removed
    when done); on a log, a line per task that runs longer than ``LOG_QUIET_SECONDS``, then
    one every ``LOG_EVERY_SECONDS``, and its end."""

    def __init__(self, prefix: str, stream=None) -> None:
        self.prefix = prefix
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bars = None
        self._ids: dict[int, int] = {}
        self._logged: dict[int, float] = {}

    # terminal
    def _progress(self):
        if self._bars is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bars = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bars.start()
        return self._bars

    # log
    def _line(self, task: Task, state: str) -> None:
        left = task.remaining()
        how_far = f"{task.done}/{task.total}" if task.total is not None else f"{task.done}"
        eta = f", about {left:.0f} s left" if left is not None and state == "running" else ""
        print(f"{self.prefix}: {task.description}: {how_far} {state} after {task.elapsed():.0f} s{eta}", file=self.stream, flush=True)

    def start(self, task: Task) -> None:
        if self.live:
            self._ids[id(task)] = self._progress().add_task(task.description, total=task.total)

    def update(self, task: Task) -> None:
        if self.live:
            self._progress().update(self._ids[id(task)], completed=task.done, description=task.description)
            return
        last = self._logged.get(id(task))
        wait = LOG_QUIET_SECONDS if last is None else LOG_EVERY_SECONDS
        if time.monotonic() - (task.started if last is None else last) >= wait:
            self._logged[id(task)] = time.monotonic()
            self._line(task, "running")

    def finish(self, task: Task) -> None:
        if self.live:
            self._progress().remove_task(self._ids.pop(id(task)))
            if not self._ids:
                self.close()
        elif self._logged.pop(id(task), None) is not None or task.elapsed() >= LOG_QUIET_SECONDS:
            self._line(task, "done")

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


#: Suffixes of the HDF5 datasets ``marlcov coverage`` reads (marlcov, OMIGA and O-MAPL layouts).
HDF5_SUFFIXES = (".h5", ".hdf5")


def is_deep_dataset(path) -> bool:
    """Whether ``marlcov coverage`` reads ``path`` as a deep dataset (an HDF5 file, or a
    directory: an OG-MARL vault) rather than as a finite game."""
    return Path(path).suffix.lower() in HDF5_SUFFIXES or Path(path).is_dir()
