"""Figures of the checks: matplotlib without a display, and one way to finish and record a figure."""

from __future__ import annotations

from pathlib import Path

from marlcov.theory.atomic import save_figure

#: Resolution of every check figure.
FIGURE_DPI = 120


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: checks run without a display, and registering them
    does not import matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def saved_figure(fig, path: Path, caption: str) -> tuple[list[str], dict[str, str]]:
    """Lay ``fig`` out, write it atomically to ``path`` and close it; the ``figures`` and
    ``captions`` of a ``Verdict`` that shows it."""
    fig.tight_layout()
    save_figure(fig, path, dpi=FIGURE_DPI)
    pyplot().close(fig)
    return [path.name], {path.name: caption}
