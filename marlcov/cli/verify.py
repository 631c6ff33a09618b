"""``marlcov verify``: run the registered checks, print the table, write the report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from marlcov.cli._common import EXIT_CHECK_ERROR, print_json
from marlcov.theory.games import GameError


def cmd_verify(args) -> int:
    from marlcov.proofs_checks.registry import CheckContext, run_check, select
    from marlcov.proofs_checks.report import write_report

    try:
        checks = select(args.only)
    except KeyError as exc:
        raise GameError(str(exc.args[0])) from None
    out_dir = Path(args.out)
    ctx = CheckContext(quick=not args.full, seed=args.seed, out_dir=out_dir)
    con = Console(stderr=args.json, highlight=False)
    results = []
    for chk in checks:
        with con.status(f"running {chk.id}"):
            results.append(run_check(chk, ctx))
    doc = write_report(results, ctx)
    if args.json:
        print_json(doc)
    else:
        table = Table(title=f"marlcov verify ({'full' if args.full else 'quick'}, seed {args.seed})")
        for col in ("id", "paper", "claim", "verdict", "key figure", "s"):
            table.add_column(col, overflow="fold")
        colours = {"holds": "green", "erratum": "yellow", "refuted": "red", "error": "bold red"}
        for r in results:
            v = r.status
            summary = r.verdict.summary if r.verdict else (r.error or "").strip().splitlines()[-1]
            table.add_row(r.check.id, r.check.paper, r.check.claim, f"[{colours[v]}]{v}[/{colours[v]}]", summary, f"{r.seconds:.1f}")
        con.print(table)
        con.print(f"report: {out_dir / 'verify.md'}, {out_dir / 'verify.json'}")
    return EXIT_CHECK_ERROR if any(r.status == "error" for r in results) else 0
