"""Progress of long computations, for whoever listens (the command line draws it on stderr).

Library code marks a long loop with ``task`` (or wraps an iterable in ``tracked``); nothing is
shown unless a listener is installed with ``listening``, so library calls and tests stay
silent. A listener receives ``start(task)``, ``update(task)`` and ``finish(task)``; a ``Task``
knows what is being done, how far it is (``done`` of ``total``, when the total is known) and an
estimate of the time left from the mean rate so far.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


class Listener(Protocol):
    def start(self, task: Task) -> None: ...

    def update(self, task: Task) -> None: ...

    def finish(self, task: Task) -> None: ...


_listener: ContextVar[Listener | None] = ContextVar("marlcov_progress_listener", default=None)


@dataclass
class Task:
    """One long computation: ``description``, ``done`` units of ``total`` (None: unknown)."""

    description: str
    total: int | None = None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _listener: Listener | None = field(default=None, repr=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._listener is not None:
            self._listener.update(self)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float | None:
        """Seconds left at the mean rate so far (None until a unit is done or without a total)."""
        if self.total is None or self.done <= 0:
            return None
        return self.elapsed() / self.done * max(self.total - self.done, 0)


@contextmanager
def task(description: str, total: int | None = None) -> Iterator[Task]:
    """A ``Task`` reported to the current listener from entry to exit (silent without one)."""
    listener = _listener.get()
    current = Task(description, total, _listener=listener)
    if listener is not None:
        listener.start(current)
    try:
        yield current
    finally:
        if listener is not None:
            listener.finish(current)


def tracked(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items``, advancing one ``task`` per item (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as t:
        for item in items:
            yield item
            t.advance()


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send the progress of every ``task`` started inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
