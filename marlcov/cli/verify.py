"""``marlcov verify``: run the registered checks, print the table, write the report.

The table has one section per paper and fits 80 columns: a check's id (without its paper prefix,
never split), its verdict, and its claim with the key figure below it, wrapped.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from marlcov.cli._common import EXIT_CHECK_ERROR, print_json
from marlcov.theory.games import GameError
from marlcov.theory.io import merge_verify_checks
from marlcov.theory.progress import task

#: The widest table printed: it must fit a terminal of 80 columns.
TABLE_WIDTH = 80

COLOURS = {"holds": "green", "erratum": "yellow", "proof-gap": "magenta", "definitional": "cyan", "refuted": "red", "error": "bold red"}


def key_figure(result) -> str:
    """The row's key figure: the verdict's summary, or the last line of the traceback of an error."""
    if result.verdict is not None:
        return result.verdict.summary
    lines = (result.error or "").strip().splitlines()
    return lines[-1] if lines else "error"


def verify_tables(results, width: int = TABLE_WIDTH) -> list[Table]:
    """One table per paper, in the order the checks ran, each at most ``width`` columns wide."""
    papers: dict[str, list] = {}
    for r in results:
        papers.setdefault(r.check.paper, []).append(r)
    tables = []
    for paper, rows in papers.items():
        prefix = rows[0].check.id.split(".", 1)[0] + "."
        short = [r.check.id.removeprefix(prefix) for r in rows]
        table = Table(
            title=f"{paper}  ({prefix}*)", box=box.SIMPLE_HEAD, width=width, title_justify="left", pad_edge=False, show_edge=False
        )
        table.add_column("check", no_wrap=True, min_width=max(len(s) for s in short), style="bold")
        table.add_column("verdict", no_wrap=True, min_width=max(len(r.status) for r in rows))
        table.add_column("claim / key figure", ratio=1, overflow="fold")
        for name, r in zip(short, rows):
            colour = COLOURS.get(r.status, "white")
            cell = Group(Text(r.check.claim), Text("-> " + key_figure(r), style="dim"))
            table.add_row(name, Text(r.status, style=colour), cell)
        tables.append(table)
    return tables


def cmd_verify(args) -> int:
    from marlcov.proofs_checks.registry import CheckContext, run_check, select
    from marlcov.proofs_checks.report import write_report

    try:
        checks = select(args.only)
    except KeyError as exc:
        raise GameError(str(exc.args[0])) from None
    out_dir = Path(args.out)
    ctx = CheckContext(quick=not args.full, seed=args.seed, out_dir=out_dir)
    if args.only:
        # A report that a partial run could not merge into is refused before any check runs
        # (and before any figure of the folder is replaced).
        merge_verify_checks(out_dir / "verify.json", [], {"quick": ctx.quick, "seed": ctx.seed})
    con = Console(stderr=args.json, highlight=False)
    results = []
    with task("running the checks", total=len(checks)) as progress:
        for chk in checks:
            progress.description = f"running {chk.id}"
            results.append(run_check(chk, ctx))
            progress.advance()
    doc = write_report(results, ctx, partial=bool(args.only))
    if args.json:
        print_json(doc)
    else:
        con.print(f"marlcov verify ({'full' if args.full else 'quick'}, seed {args.seed})")
        for table in verify_tables(results, min(TABLE_WIDTH, con.width)):
            con.print(table)
        counts = {v: sum(r.status == v for r in results) for v in COLOURS}
        con.print(", ".join(f"{n} {v}" for v, n in counts.items() if n))
        con.print(f"report: {out_dir / 'verify.md'}, {out_dir / 'verify.json'}")
    return EXIT_CHECK_ERROR if any(r.status == "error" for r in results) else 0
