"""The table of ``marlcov verify`` fits 80 columns, with every check id whole on one line."""

import re

from rich.console import Console

from marlcov.cli.verify import TABLE_WIDTH, verify_tables
from marlcov.proofs_checks.registry import CheckResult, Verdict, all_checks


def rendered(results, width=TABLE_WIDTH) -> str:
    con = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    for table in verify_tables(results, width):
        con.print(table)
    return con.export_text()


def fake_results():
    long = "a key figure that is long enough to need wrapping " * 3
    return [CheckResult(c, Verdict("holds" if c.mutations else "definitional", long), 0.1) for c in all_checks().values()]


def test_table_fits_80_columns_and_keeps_ids_whole():
    results = fake_results()
    text = rendered(results)
    assert max(len(line) for line in text.splitlines()) <= TABLE_WIDTH
    for r in results:
        short = r.check.id.split(".", 1)[1]
        assert re.search(rf"(^|\s){re.escape(short)}(\s|$)", text, flags=re.M), r.check.id


def test_errors_show_the_last_line_of_the_traceback():
    chk = next(iter(all_checks().values()))
    text = rendered([CheckResult(chk, None, 0.1, "Traceback ...\nValueError: the reason")])
    assert "ValueError: the reason" in text and "error" in text
