"""Helpers shared by the commands of ``marlcov``: JSON on stdout, tables, number formats."""

from __future__ import annotations

import json
import sys

from rich.console import Console

EXIT_BAD_INPUT = 2
EXIT_CHECK_ERROR = 1


def console() -> Console:
    return Console(highlight=False)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


def fmt(x: float) -> str:
    return f"{x:.6g}"
