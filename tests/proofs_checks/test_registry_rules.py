"""Rules of the registry, over every registered check: each verdict is cited (source), reproducible
(reproduce), falsifiable (every planted mutation changes it) and stable (quick and full agree)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from marlcov.proofs_checks.registry import VERDICTS, CheckContext, Source, Verdict, all_checks, check, run_check
from marlcov.proofs_checks.report import result_record

CHECKS = all_checks()
MUTATED = [(cid, name) for cid, c in CHECKS.items() for name in c.mutations]

#: The paper text each id prefix quotes from (``../shared/papers`` beside the repository, or
#: ``$MARLCOV_PAPERS``); the O-MAPL statements are transcribed in their own file.
PAPER_FILES = {
    "marlhf": ("marlhf-coverage.md",),
    "omapl": ("omapl-2501.18944.md", "omapl-statements.md"),
    "omiga": ("omiga-2307.11620.md",),
    "mamql": ("mamql-2503.04679.md",),
    "score": ("score-decomposition-2505.05968.md",),
}
PAPERS_DIR = Path(os.environ.get("MARLCOV_PAPERS", Path(__file__).resolve().parents[3] / "shared" / "papers"))
README = Path(__file__).resolve().parents[2] / "README.md"

#: Verdicts that are findings: each must be listed in the README's errata section.
FINDINGS = ("erratum", "proof-gap", "refuted")


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="module")
def quick(report_dir):
    """Every check once, quick, seed 0, writing its figures: the baseline the mutations must move away from."""
    return {cid: run_check(c, CheckContext(quick=True, seed=0, out_dir=report_dir)) for cid, c in CHECKS.items()}


def test_checks_are_registered():
    assert any(cid.startswith("marlhf.") for cid in CHECKS)


@pytest.mark.parametrize("cid", list(CHECKS))
def test_check_runs_and_cites_its_source(cid, quick):
    result = quick[cid]
    assert result.error is None, result.error
    record = result_record(result, CheckContext(quick=True, seed=0))
    assert isinstance(CHECKS[cid].source, Source)
    assert record["source"]["quote"].strip() and record["source"]["location"].strip()
    assert record["reproduce"] == f"marlcov verify --only {cid} --seed 0"
    if record["verdict"] == "definitional":
        assert record["falsified_by"] == []
    else:
        assert record["falsified_by"], f"{cid}: a non-definitional verdict needs planted mutations"


@pytest.mark.parametrize("cid", list(CHECKS))
def test_every_figure_is_written_with_a_caption(cid, quick, report_dir):
    verdict = quick[cid].verdict
    for name in verdict.figures:
        assert (report_dir / name).stat().st_size > 0
        assert verdict.captions.get(name, "").strip(), f"{cid}: figure {name} has no caption"


@pytest.mark.parametrize("cid,mutation", MUTATED)
def test_every_planted_mutation_changes_the_verdict(cid, mutation, quick):
    base = quick[cid]
    mutated = run_check(CHECKS[cid], CheckContext(quick=True, seed=0, mutation=mutation))
    assert mutated.error is None, mutated.error
    assert mutated.status != base.status, f"{cid} under {mutation!r} still says {base.status}"


@pytest.mark.parametrize("cid", [c for c in CHECKS if CHECKS[c].source.verbatim])
def test_verbatim_quotes_occur_in_the_paper(cid):
    files = PAPER_FILES.get(cid.split(".")[0], ())
    paths = [PAPERS_DIR / f for f in files if (PAPERS_DIR / f).is_file()]
    if not paths:
        pytest.skip(f"paper text for {cid} not found under {PAPERS_DIR}")
    text = squash(" ".join(p.read_text(encoding="utf-8") for p in paths))
    assert squash(CHECKS[cid].source.quote) in text, f"{cid}: the quote marked verbatim is not in {files}"


def test_readme_errata_match_the_report(quick):
    """README's "Errata found by the checks" lists exactly the findings of ``marlcov verify``."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Errata found by the checks", 1)[1].split("\n## ", 1)[0]
    listed = dict(re.findall(r"^- `([\w.]+)` \(([\w-]+)\)", section, flags=re.M))
    found = {cid: r.status for cid, r in quick.items() if r.status in FINDINGS}
    assert listed == found


def test_reproduce_names_full_runs():
    chk = next(iter(CHECKS.values()))
    record = result_record(run_check(chk, CheckContext(quick=False, seed=7)), CheckContext(quick=False, seed=7))
    assert record["reproduce"] == f"marlcov verify --only {chk.id} --seed 7 --full"


def test_unknown_mutation_is_an_error():
    chk = next(c for c in CHECKS.values() if c.mutations)
    with pytest.raises(ValueError, match="unknown mutation"):
        run_check(chk, CheckContext(mutation="no-such-mutation"))


def test_a_check_asking_for_an_unregistered_mutation_is_an_error():
    def body(ctx):
        ctx.mutated("typo")
        return Verdict("holds", "x")

    from marlcov.proofs_checks import registry

    check("test.typo", "P", "c", "exact", source=Source("q", "l", False), mutations={"real": "a bug"})(body)
    try:
        result = run_check(registry._REGISTRY["test.typo"], CheckContext())
    finally:
        del registry._REGISTRY["test.typo"]
    assert result.status == "error" and "not registered" in result.error


def test_definitional_iff_no_mutations():
    from marlcov.proofs_checks import registry

    check("test.plain", "P", "c", "exact", source=Source("q", "l", False))(lambda ctx: Verdict("holds", "x"))
    check("test.mut", "P", "c", "exact", source=Source("q", "l", False), mutations={"m": "a bug"})(lambda ctx: Verdict("definitional", "x"))
    try:
        plain = run_check(registry._REGISTRY["test.plain"], CheckContext())
        mut = run_check(registry._REGISTRY["test.mut"], CheckContext())
    finally:
        del registry._REGISTRY["test.plain"], registry._REGISTRY["test.mut"]
    assert plain.status == "error" and "must return 'definitional'" in plain.error
    assert mut.status == "error" and "cannot be 'definitional'" in mut.error


def test_verdict_kinds():
    assert set(VERDICTS) == {"holds", "refuted", "erratum", "proof-gap", "definitional"}
    with pytest.raises(ValueError, match="proof-gap"):
        Verdict("proof-gap", "x")
    with pytest.raises(ValueError, match="captions"):
        Verdict("holds", "x", figures=["a.png"], captions={"b.png": "c"})
    with pytest.raises(ValueError, match="quote"):
        Source(" ", "l", True)


@pytest.mark.slow
@pytest.mark.parametrize("cid", list(CHECKS))
def test_quick_and_full_agree(cid, quick):
    full = run_check(CHECKS[cid], CheckContext(quick=False, seed=0))
    assert full.error is None, full.error
    assert full.status == quick[cid].status


def test_checks_are_hashable_and_select_keeps_registration_order():
    from marlcov.proofs_checks.registry import select

    assert len(set(CHECKS.values())) == len(CHECKS)
    chosen = select(["marlhf.theorem4", "marlhf"])
    assert chosen[0].id == "marlhf.theorem4" and len({c.id for c in chosen}) == len(chosen)
    assert [c.id for c in select(["marlhf.theorem4"])] == ["marlhf.theorem4"]
