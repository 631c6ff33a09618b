"""Run every benchmark module (``bench_*.py`` beside this file) and print one table.

Each module exposes ``run(quick) -> list[dict]`` with rows ``name, ours_s, baseline,
baseline_s, ratio`` (ours / baseline, measured in the same run). Usage:

    python benchmarks/run.py [--quick] [--only NAME ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", nargs="+", help="module names, e.g. bench_core")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and path.stem not in args.only:
            continue
        try:
            module = load(path)
        except ImportError as exc:
            print(f"{path.stem}: skipped, missing dependency ({exc})", file=sys.stderr)
            continue
        for row in module.run(quick=args.quick):
            row["module"] = path.stem
            rows.append(row)
            extra = "".join(
                f"  {k}={v:.3g}"
                for k, v in row.items()
                if k not in {"name", "ours_s", "baseline", "baseline_s", "ratio", "module"} and isinstance(v, float)
            )
            print(
                f"{row['name']:<55} ours {row['ours_s']:.4g}s  {row['baseline']}: {row['baseline_s']:.4g}s  ratio {row['ratio']:.3g}{extra}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"python": platform.python_version(), "machine": platform.machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
