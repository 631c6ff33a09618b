"""``verify.json`` and ``verify.md``: the written face of a ``marlcov verify`` run."""

from __future__ import annotations

import json
import platform

import numpy as np

from marlcov.theory.io import atomic_write_many, merge_verify_checks, write_json

from .registry import CheckContext, CheckResult, reproduce_command

SCHEMA = "marlcov.verify/1"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def result_record(result: CheckResult, ctx: CheckContext) -> dict:
    """One entry of ``checks`` in verify.json (the documented keys first, docs/formats.md)."""
    chk, v = result.check, result.verdict
    record = {
        "id": chk.id,
        "paper": chk.paper,
        "claim": chk.claim,
        "verdict": result.status,
        "evidence": {} if v is None else v.evidence,
        "seconds": round(result.seconds, 4),
        "kind": chk.kind,
        "summary": "" if v is None else v.summary,
        "seeds": [] if v is None else v.seeds,
        "source": {"quote": chk.source.quote, "location": chk.source.location, "verbatim": chk.source.verbatim},
        "reproduce": reproduce_command(chk, ctx),
        "falsified_by": chk.falsified_by,
        "mutations": dict(chk.mutations),
        "settings": {"quick": ctx.quick, "seed": ctx.seed},
    }
    if result.mutation is not None:
        record["mutation"] = result.mutation
    if v is not None:
        if v.printed:
            record["printed"] = v.printed
            record["corrected"] = v.corrected
        if v.counterexample is not None:
            record["counterexample"] = v.counterexample
        if v.figures:
            record["figures"] = v.figures
            record["captions"] = {name: v.captions.get(name, "") for name in v.figures}
    if result.error:
        record["error"] = result.error
    return _jsonable(record)


def save_counterexamples(results: list[CheckResult], ctx: CheckContext) -> None:
    for r in results:
        if r.verdict is not None and r.verdict.counterexample is not None and ctx.out_dir is not None:
            write_json(ctx.out_dir / f"counterexample_{r.check.id}.json", _jsonable(r.verdict.counterexample))


def write_report(results: list[CheckResult], ctx: CheckContext, partial: bool = False) -> dict:
    """Write verify.json and verify.md into ``ctx.out_dir`` together (both temporaries, then both
    renames) and return this run's JSON document. ``partial`` (``verify --only``): the checks of a
    report already in the folder are kept, the re-run ones replaced (``theory.io.merge_verify_checks``
    refuses a report made with other settings rather than overwrite it)."""
    settings = {"quick": ctx.quick, "seed": ctx.seed}
    doc = {
        "schema": SCHEMA,
        "settings": {**settings, "python": platform.python_version()},
        "checks": [result_record(r, ctx) for r in results],
    }
    if ctx.out_dir is None:
        return doc
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    report = ctx.out_dir / "verify.json"
    written = {**doc, "checks": merge_verify_checks(report, doc["checks"], settings)} if partial else doc
    save_counterexamples(results, ctx)
    atomic_write_many(
        {
            report: lambda fh: json.dump(written, fh, indent=1),
            ctx.out_dir / "verify.md": lambda fh: fh.write(markdown(written)),
        }
    )
    return doc


def markdown(doc: dict) -> str:
    """A report readable on its own: a summary table, then each check's claim, source and evidence."""
    s = doc["settings"]
    lines = [
        "# marlcov verify",
        "",
        f"Settings: {'quick' if s['quick'] else 'full'}, seed {s['seed']}, Python {s['python']}.",
        "",
        "Verdicts: **holds** (the claim as printed is confirmed), **erratum** (as printed it is wrong;",
        "the corrected statement holds), **refuted** (a counterexample is saved beside this file),",
        "**proof-gap** (the printed proof does not establish the printed statement; no counterexample",
        "found), **definitional** (true by construction: no planted mutation can change it),",
        "**error** (the check itself failed to run). See docs/verify.md.",
        "",
        "| id | paper | verdict | key figure | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in doc["checks"]:
        cells = [f"`{c['id']}`", c["paper"], c["verdict"], c["summary"], f"{c['seconds']:.2f}"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    for c in doc["checks"]:
        lines += ["", f"## `{c['id']}` — {c['verdict']}", "", f"*{c['paper']}* ({c['kind']} evidence).", "", f"Claim: {c['claim']}", ""]
        src = c.get("source")
        if src:
            how = "verbatim" if src["verbatim"] else "paraphrase, not verbatim"
            lines += [f"Printed ({src['location']}; {how}):", "", "> " + src["quote"].replace("\n", "\n> "), ""]
        if "printed" in c:
            lines += [f"As printed: {c['printed']}", "", f"Corrected: {c['corrected']}", ""]
        if "counterexample" in c:
            lines += [f"Counterexample: `counterexample_{c['id']}.json`.", ""]
        if c.get("falsified_by"):
            lines += ["Planted mutations that must change the verdict:", ""]
            lines += [f"- `{name}`: {c['mutations'].get(name, '')}" for name in c["falsified_by"]] + [""]
        if "reproduce" in c:
            lines += [f"Reproduce: `{c['reproduce']}`", ""]
        if c["evidence"]:
            lines += ["Evidence:", "", "```json", json.dumps(c["evidence"], indent=1), "```", ""]
        for fig in c.get("figures", []):
            lines += [f"![{c['id']}]({fig})", ""]
            caption = c.get("captions", {}).get(fig)
            if caption:
                lines += [f"*{caption}*", ""]
        if "error" in c:
            lines += ["Error:", "", "```", c["error"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"
