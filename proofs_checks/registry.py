"""The registry of checks: each claim of a paper is a function that returns a verdict.

A check is registered with ``@check(id, paper, claim, kind)``. It receives a ``CheckContext``
(quick or full settings, the seed, where to save figures and counterexamples) and returns a
``Verdict``: ``holds``, ``refuted`` (with the counterexample) or ``erratum`` (the printed
statement and the corrected one, the corrected one holding). A check that raises is reported
as ``error``; that is a failure of the package, not a finding.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

VERDICTS = ("holds", "refuted", "erratum")
EVIDENCE_KINDS = ("exact", "symbolic", "statistical", "counterexample")

#: Modules holding checks, one per paper; imported on first use of the registry.
CHECK_MODULES = (
    "marlcov.proofs_checks.marlhf",
    "marlcov.proofs_checks.marlhf_sbsm",
    "marlcov.proofs_checks.omapl",
    "marlcov.proofs_checks.omiga",
    "marlcov.proofs_checks.mamql",
    "marlcov.proofs_checks.score_decomposition",
)


@dataclass
class CheckContext:
    """Settings handed to every check.

    Attributes:
        quick: small sweeps (the default of ``marlcov verify``); ``False`` for ``--full``.
        seed: base seed; a check derives all its randomness from it.
        out_dir: where figures and counterexamples go (``None``: do not write files).
    """

    quick: bool = True
    seed: int = 0
    out_dir: Path | None = None

    def path(self, name: str) -> Path | None:
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name


@dataclass
class Verdict:
    """What a check found.

    Attributes:
        verdict: one of ``VERDICTS``.
        summary: the key figure, one short line for the table.
        evidence: the numbers that support the verdict (JSON-serialisable).
        printed / corrected: for an erratum, the statement as printed and as corrected.
        counterexample: for a refutation, the instance (JSON-serialisable), saved to a file.
        figures: file names (relative to the output directory) of figures produced.
        seeds: the seeds used.
    """

    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    printed: str | None = None
    corrected: str | None = None
    counterexample: dict[str, Any] | None = None
    figures: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == "erratum" and not (self.printed and self.corrected):
            raise ValueError("an erratum verdict needs both the printed and the corrected statement")
        if self.verdict == "refuted" and self.counterexample is None:
            raise ValueError("a refuted verdict needs its counterexample")


@dataclass(frozen=True)
class Check:
    id: str
    paper: str
    claim: str
    kind: str
    func: Callable[[CheckContext], Verdict]


_REGISTRY: dict[str, Check] = {}


def check(id: str, paper: str, claim: str, kind: str) -> Callable:
    """Register ``func(ctx) -> Verdict`` as the check ``id`` (``paper.claim``)."""
    if kind not in EVIDENCE_KINDS:
        raise ValueError(f"kind: expected one of {EVIDENCE_KINDS}, got {kind!r}")

    def register(func: Callable[[CheckContext], Verdict]) -> Callable[[CheckContext], Verdict]:
        if id in _REGISTRY:
            raise ValueError(f"check id {id!r} is registered twice")
        _REGISTRY[id] = Check(id, paper, claim, kind, func)
        return func

    return register


def all_checks() -> dict[str, Check]:
    """Every registered check, by id, in registration order."""
    for module in CHECK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return dict(_REGISTRY)


@dataclass
class CheckResult:
    check: Check
    verdict: Verdict | None
    seconds: float
    error: str | None = None

    @property
    def status(self) -> str:
        return "error" if self.verdict is None else self.verdict.verdict


def run_check(chk: Check, ctx: CheckContext) -> CheckResult:
    start = time.perf_counter()
    try:
        verdict = chk.func(ctx)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"check {chk.id} returned {type(verdict).__name__}, expected Verdict")
    except Exception:
        return CheckResult(chk, None, time.perf_counter() - start, traceback.format_exc())
    return CheckResult(chk, verdict, time.perf_counter() - start)


def select(ids: list[str] | None) -> list[Check]:
    """The checks named by ``ids`` (exact ids or ``paper.`` prefixes); all when ``ids`` is empty."""
    registry = all_checks()
    if not ids:
        return list(registry.values())
    chosen = []
    for wanted in ids:
        matches = [c for cid, c in registry.items() if cid == wanted or cid.startswith(wanted.rstrip(".") + ".")]
        if not matches:
            known = ", ".join(registry)
            raise KeyError(f"--only: no check with id {wanted!r}; known ids: {known}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen
