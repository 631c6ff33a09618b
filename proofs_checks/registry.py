"""The registry of checks: each claim of a paper is a function that returns a verdict.

A check is registered with ``@check(id, paper, claim, kind, source=Source(...), mutations={...})``.
It receives a ``CheckContext`` (quick or full settings, the seed, where to save figures, and
possibly the name of a planted mutation) and returns a ``Verdict``:

- ``holds``: the claim as printed is confirmed;
- ``refuted``: a counterexample to the printed claim (saved with the report);
- ``erratum``: the printed statement is wrong, the corrected one holds;
- ``proof-gap``: the printed proof does not establish the printed statement; no counterexample found;
- ``definitional``: true by construction, no planted mutation can change it.

A check that raises is reported as ``error``; that is a failure of the package, not a finding.

Falsifiability is a rule of the registry: every check registers at least one planted mutation (a
plausible bug or misreading of the object under test, by name with a one-line description), and
applies it when ``ctx.mutated(name)`` is true; running it under that mutation must change its
verdict. A check that registers no mutation must return ``definitional``.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

VERDICTS = ("holds", "refuted", "erratum", "proof-gap", "definitional")
EVIDENCE_KINDS = ("exact", "symbolic", "statistical", "counterexample")

#: Modules holding checks, one or more per paper; imported on first use of the registry.
CHECK_MODULES = (
    "marlcov.proofs_checks.marlhf",
    "marlcov.proofs_checks.marlhf_sec5",
    "marlcov.proofs_checks.marlhf_tables",
    "marlcov.proofs_checks.marlhf_sbsm",
    "marlcov.proofs_checks.marlhf_bounds",
    "marlcov.proofs_checks.marlhf_lemmas",
    "marlcov.proofs_checks.marlhf_identifiable",
    "marlcov.proofs_checks.omapl",
    "marlcov.proofs_checks.omapl_extraction",
    "marlcov.proofs_checks.omapl_local_values",
    "marlcov.proofs_checks.omiga",
    "marlcov.proofs_checks.mamql",
    "marlcov.proofs_checks.mamql_concavity",
    "marlcov.proofs_checks.score_decomposition",
    "marlcov.proofs_checks.score_denoising",
)


@dataclass(frozen=True)
class Source:
    """Where a checked claim is printed.

    Attributes:
        quote: the printed statement (verbatim when ``verbatim``; else a faithful paraphrase,
            e.g. from an abstract or summary when the full text is not at hand).
        location: section, equation, page (e.g. ``"Theorem 3, section 4.2, p. 6"``).
        verbatim: whether ``quote`` is copied word for word from the paper text.
    """

    quote: str
    location: str
    verbatim: bool

    def __post_init__(self) -> None:
        if not self.quote.strip():
            raise ValueError("Source.quote: expected the printed statement, got an empty string")
        if not self.location.strip():
            raise ValueError("Source.location: expected section/equation/page, got an empty string")


@dataclass
class CheckContext:
    """Settings handed to every check.

    Attributes:
        quick: small sweeps (the default of ``marlcov verify``); ``False`` for ``--full``.
        seed: base seed; a check derives all its randomness from it.
        out_dir: where figures and counterexamples go (``None``: do not write files).
        mutation: the name of a planted mutation to apply (``None``: the check as intended).
    """

    quick: bool = True
    seed: int = 0
    out_dir: Path | None = None
    mutation: str | None = None
    #: the mutation names of the check being run (set by ``run_check``), so that a check asking
    #: for a name it did not register fails loudly instead of silently never mutating.
    known_mutations: frozenset[str] | None = field(default=None, repr=False)

    def path(self, name: str) -> Path | None:
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name

    def mutated(self, name: str) -> bool:
        """Whether the planted mutation ``name`` is to be applied in this run."""
        if self.known_mutations is not None and name not in self.known_mutations:
            raise KeyError(f"mutation {name!r} is not registered for this check; registered: {sorted(self.known_mutations)}")
        return self.mutation == name


@dataclass
class Verdict:
    """What a check found.

    Attributes:
        verdict: one of ``VERDICTS``.
        summary: the key figure, one short line for the table, computed from ``evidence``.
        evidence: the numbers that support the verdict (JSON-serialisable).
        printed / corrected: for an erratum, the statement as printed and as corrected; for a
            proof-gap, the proof's step as printed and what the proof does establish.
        counterexample: for a refutation, the instance (JSON-serialisable), saved to a file.
        figures: file names (relative to the output directory) of figures produced.
        captions: a caption per figure file name, printed under the figure in the report.
        seeds: the seeds used.
    """

    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    printed: str | None = None
    corrected: str | None = None
    counterexample: dict[str, Any] | None = None
    figures: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict in ("erratum", "proof-gap") and not (self.printed and self.corrected):
            raise ValueError(f"an {self.verdict} verdict needs both the printed and the corrected statement")
        if self.verdict == "refuted" and self.counterexample is None:
            raise ValueError("a refuted verdict needs its counterexample")
        unknown = set(self.captions) - set(self.figures)
        if unknown:
            raise ValueError(f"captions: for figures not listed in figures: {sorted(unknown)}")


@dataclass(frozen=True)
class Check:
    id: str
    paper: str
    claim: str
    kind: str
    func: Callable[[CheckContext], Verdict]
    source: Source
    mutations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def falsified_by(self) -> list[str]:
        """The names of the planted mutations, in registration order."""
        return list(self.mutations)


_REGISTRY: dict[str, Check] = {}


def check(
    id: str,
    paper: str,
    claim: str,
    kind: str,
    *,
    source: Source,
    mutations: Mapping[str, str] = MappingProxyType({}),
) -> Callable:
    """Register ``func(ctx) -> Verdict`` as the check ``id`` (``paper.claim``).

    ``source`` says where the claim is printed; ``mutations`` maps a planted-mutation name to a
    one-line description of the plausible bug or misreading it plants.
    """
    if kind not in EVIDENCE_KINDS:
        raise ValueError(f"kind: expected one of {EVIDENCE_KINDS}, got {kind!r}")
    if not isinstance(source, Source):
        raise TypeError(f"source: expected a Source, got {type(source).__name__}")
    for name, description in mutations.items():
        if not (isinstance(name, str) and name.strip() and isinstance(description, str) and description.strip()):
            raise ValueError(f"mutations of {id!r}: expected non-empty name -> one-line description, got {name!r}")

    def register(func: Callable[[CheckContext], Verdict]) -> Callable[[CheckContext], Verdict]:
        if id in _REGISTRY:
            raise ValueError(f"check id {id!r} is registered twice")
        _REGISTRY[id] = Check(id, paper, claim, kind, func, source, MappingProxyType(dict(mutations)))
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
    mutation: str | None = None

    @property
    def status(self) -> str:
        return "error" if self.verdict is None else self.verdict.verdict


def run_check(chk: Check, ctx: CheckContext) -> CheckResult:
    """Run one check; a raised exception or a verdict breaking the registry's rules is ``error``.

    Raises ``ValueError`` if ``ctx.mutation`` names a mutation the check does not register.
    """
    if ctx.mutation is not None and ctx.mutation not in chk.mutations:
        raise ValueError(f"check {chk.id}: unknown mutation {ctx.mutation!r}; registered: {chk.falsified_by}")
    run_ctx = dataclasses.replace(ctx, known_mutations=frozenset(chk.mutations))
    start = time.perf_counter()
    try:
        verdict = chk.func(run_ctx)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"check {chk.id} returned {type(verdict).__name__}, expected Verdict")
        if not chk.mutations and verdict.verdict != "definitional":
            raise ValueError(f"check {chk.id} registers no mutation, so it must return 'definitional', not {verdict.verdict!r}")
        if chk.mutations and verdict.verdict == "definitional":
            raise ValueError(f"check {chk.id} registers mutations {chk.falsified_by}, so it cannot be 'definitional'")
    except Exception:
        return CheckResult(chk, None, time.perf_counter() - start, traceback.format_exc(), ctx.mutation)
    return CheckResult(chk, verdict, time.perf_counter() - start, mutation=ctx.mutation)


def reproduce_command(chk: Check, ctx: CheckContext) -> str:
    """The command line that reproduces the row of ``chk`` alone, with the settings of ``ctx``."""
    return f"marlcov verify --only {chk.id} --seed {ctx.seed}" + ("" if ctx.quick else " --full")


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
