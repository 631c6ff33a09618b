"""The ``marlcov`` command line (DESIGN.md, "Command line").

Every command prints a table for people and, with ``--json``, one JSON document on stdout.
Bad input exits with status 2 and one line on stderr naming the file, the field and what was
expected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from marlcov.theory.games import GameError

EXIT_BAD_INPUT = 2
EXIT_CHECK_ERROR = 1


def _console() -> Console:
    return Console(highlight=False)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1) + "\n")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


# ----------------------------------------------------------------------------------------- solve
def cmd_solve(args) -> int:
    from marlcov.linear_games.solve import solve_one_shot
    from marlcov.theory.io import load_game

    game = load_game(args.game)
    result = solve_one_shot(game)
    if args.json:
        _print_json(result)
        return 0
    con = _console()
    title = f"{game.name or Path(args.game).name}: {'zero-sum (constant-sum)' if result['zero_sum'] else 'general-sum'}"
    if result["value"] is not None:
        title += f", value for player 0 = {_fmt(result['value'])}"
    table = Table(title=title)
    table.add_column("#")
    table.add_column("player 0 (rows)")
    table.add_column("player 1 (columns)")
    table.add_column("payoffs")
    for k, eq in enumerate(result["equilibria"]):
        x, y = eq["strategies"]
        table.add_row(str(k), " ".join(_fmt(v) for v in x), " ".join(_fmt(v) for v in y), ", ".join(_fmt(v) for v in eq["payoffs"]))
    con.print(table)
    if not result.get("complete", True):
        con.print("[yellow]The game is degenerate: the list may miss equilibria (components of equilibria are shown by their vertices found).[/yellow]")
    return 0


# -------------------------------------------------------------------------------------- nash-gap
def cmd_nash_gap(args) -> int:
    from marlcov.theory.io import load_game, load_policy
    from marlcov.theory.values import nash_gap

    game = load_game(args.game)
    policy = load_policy(args.policy, game)
    gap = nash_gap(game, policy)
    out = {
        "nash_gap": gap.total,
        "per_player": gap.per_player.tolist(),
        "values": gap.values.tolist(),
        "best_response_values": gap.best_response_values.tolist(),
    }
    if args.json:
        _print_json(out)
        return 0
    table = Table(title=f"Nash gap = {_fmt(gap.total)}")
    for col in ("player", "V^pi", "V^dagger", "gap"):
        table.add_column(col)
    for i in range(game.n_players):
        table.add_row(str(i), _fmt(gap.values[i]), _fmt(gap.best_response_values[i]), _fmt(gap.per_player[i]))
    _console().print(table)
    return 0


def _dataset_coverage(args) -> int:
    """Coverage diagnostics of an HDF5 dataset of deep/ (streaming; features from a map).
    The library's errors about its input (ValueError, FileNotFoundError, and h5py's OSError for
    a file that is not HDF5) name the file and field; they exit with status 2 as GameError."""
    from marlcov.deep.diagnostics import coverage_command, table_rows

    try:
        out = coverage_command(args)
    except GameError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise GameError(" ".join(str(exc).split())) from exc
    except OSError as exc:
        raise GameError(f"{exc.filename or args.game}: {' '.join(str(exc).split())}") from exc
    if args.json:
        _print_json(out)
        return 0
    table = Table(title=f"Coverage of {args.game} (lambda = {_fmt(out['lambda'])}, features: {out['features']})")
    table.add_column("measure")
    table.add_column("value [bootstrap 95% interval]")
    for name, value in table_rows(out):
        table.add_row(name, value)
    con = _console()
    con.print(table)
    for note in out.get("notes", []):
        con.print(f"note: {note}")
    return 0


# ---------------------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    from marlcov.theory.io import load_game, load_policy, save_dataset
    from marlcov.theory.preferences import sample_preference_dataset

    if args.pairs < 0:
        raise GameError(f"--pairs: expected a non-negative integer, got {args.pairs}")
    if not np.isfinite(args.steepness):
        raise GameError(f"--steepness: expected a finite number, got {args.steepness}")
    game = load_game(args.game)
    policy = load_policy(args.policy, game)
    ds = sample_preference_dataset(game, policy, args.pairs, seed=args.seed, steepness=args.steepness)
    save_dataset(ds, args.out)
    out = {"path": str(args.out), "pairs": ds.n_pairs}
    if args.json:
        _print_json(out)
    else:
        _console().print(f"wrote {ds.n_pairs} preference pairs to {args.out}")
    return 0


# -------------------------------------------------------------------------------------- coverage
def cmd_coverage(args) -> int:
    if Path(args.game).suffix.lower() in (".h5", ".hdf5"):
        return _dataset_coverage(args)
    if args.data is None:
        raise GameError("DATA: a finite game needs its preference dataset (.npz) after GAME")
    from marlcov.theory.coverage import coverage_measures
    from marlcov.theory.io import load_dataset, load_game, load_policy

    if args.policy is None:
        raise GameError("--policy: required for a finite game (the reference joint policy pi*)")
    game = load_game(args.game)
    ds = load_dataset(args.data, game)
    policy = load_policy(args.policy, game)
    cov = coverage_measures(game, ds, policy, lam=args.lam)
    out = {
        "lambda": cov.lam,
        "single": cov.single,
        "unilateral": cov.unilateral,
        "uniform": cov.uniform,
        "worst_deviator": {"player": cov.worst_player, "value": cov.unilateral},
        "per_player": cov.per_player.tolist(),
        "worst_deviation": {"format": "marlcov.policy/1", "player": cov.worst_player, "probs": cov.worst_deviation.tolist()},
        "features": "game" if game.features is not None else "one-hot",
        "pairs": ds.n_pairs,
    }
    if args.json:
        _print_json(out)
        return 0
    table = Table(title=f"Coverage of {args.data} (lambda = {_fmt(cov.lam)}, {ds.n_pairs} pairs, {out['features']} features)")
    table.add_column("measure")
    table.add_column("value")
    table.add_row("single U_D(pi*)", _fmt(cov.single))
    for i, v in enumerate(cov.per_player):
        table.add_row(f"unilateral, player {i}", _fmt(v))
    table.add_row("unilateral (max)", _fmt(cov.unilateral))
    table.add_row("uniform", _fmt(cov.uniform))
    _console().print(table)
    _console().print(f"worst deviator: player {cov.worst_player}")
    return 0


# ------------------------------------------------------------------------------------------ sbsm
def cmd_sbsm(args) -> int:
    from marlcov.linear_games.sbsm import sbsm_json
    from marlcov.theory.io import load_dataset, load_game, load_policy

    for name in ("delta", "c_r", "c_p", "constant", "lam"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise GameError(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    if not args.delta < 1:
        raise GameError(f"--delta: expected a number in (0, 1), got {args.delta}")
    game = load_game(args.game)
    ds = load_dataset(args.data, game)
    equilibrium = None if args.equilibrium is None else load_policy(args.equilibrium, game)
    out = sbsm_json(
        game,
        ds,
        equilibrium=equilibrium,
        delta=args.delta,
        c_r=args.c_r,
        c_p=args.c_p,
        policy_class=args.policy_class,
        lam=args.lam,
        seed=args.seed,
        constant=args.constant,
        clip=not args.no_clip,
    )
    if args.json:
        _print_json(out)
        return 0
    table = Table(title=f"pessimistic SBSM on {args.data} ({out['policy_class']}, {'exact' if out['exact'] else 'best found'})")
    table.add_column("quantity")
    table.add_column("value")
    table.add_row("surrogate sum_i [Vbar^dagger - Vunder^pi]", _fmt(out["surrogate"]))
    if out["lower_bound"] is not None:
        table.add_row("lower bound on the minimum", _fmt(out["lower_bound"]))
    table.add_row("C_r / C_P", f"{_fmt(out['c_r'])} / {_fmt(out['c_p'])}")
    table.add_row("true Nash gap of the output", _fmt(out["nash_gap"]))
    if out["bound"] is not None:
        table.add_row("Theorem 4 bound (printed / summed over players)", f"{_fmt(out['bound'])} / {_fmt(out['bound_summed'])}")
    _console().print(table)
    return 0


# ---------------------------------------------------------------------------------------- verify
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
        _print_json(doc)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marlcov", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        p.set_defaults(func=func)
        return p

    p = add("verify", cmd_verify, "run the registered checks of the papers and write a report")
    p.add_argument("--only", nargs="+", metavar="ID", help="check ids (or 'paper.' prefixes) to run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sweeps (default)")
    mode.add_argument("--full", action="store_true", help="the larger sweeps")
    p.add_argument("--out", default="marlcov-verify", help="report directory (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")

    p = add("solve", cmd_solve, "equilibria of a one-state, one-step two-player game")
    p.add_argument("game", help="game file (.json or .npz, marlcov.game/1)")

    p = add("nash-gap", cmd_nash_gap, "exact Nash gap of a product Markov policy, per player")
    p.add_argument("game")
    p.add_argument("policy", help="policy file (.json or .npz, marlcov.policy/1)")

    p = add("sample", cmd_sample, "sample a Bradley-Terry preference dataset from a behaviour policy")
    p.add_argument("game")
    p.add_argument("policy")
    p.add_argument("--pairs", type=int, required=True, help="number of trajectory pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steepness", type=float, default=1.0, help="factor on return differences (default 1)")
    p.add_argument("--out", required=True, help="output .npz")

    p = add("coverage", cmd_coverage, "single / unilateral / uniform coverage of a preference dataset")
    p.add_argument("game", help="game file (.json/.npz), or an HDF5 dataset of deep/ (.h5/.hdf5)")
    p.add_argument("data", nargs="?", help="preference dataset (.npz) of a finite game")
    p.add_argument("--policy", help="reference joint policy pi*: a policy file, or a checkpoint for an HDF5 dataset")
    p.add_argument("--lambda", dest="lam", type=float, default=1.0, help="ridge lambda (default 1)")
    p.add_argument("--features", default="random", help="HDF5 only: random | random-obs | reward-model:PATH | FILE")
    p.add_argument("--bootstrap", type=int, default=200, help="HDF5 only: bootstrap replicates (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="HDF5 only: seed of features and bootstrap")
    p.add_argument("--out", help="HDF5 only: directory for the plots")
    p.add_argument("--pairs-file", dest="pairs_file",
                   help="HDF5 only: preference pairs in a separate file (default: DATA.pairs.h5 when DATA holds none)")
    p.add_argument("--simulate", action="store_true", help="HDF5 only: roll out deviations in the simulator")
    p.add_argument("--feature-dim", dest="feature_dim", type=int, help="HDF5 only: dimension of the feature map")

    p = add("sbsm", cmd_sbsm, "pessimistic SBSM policy from a preference dataset (Algorithms 2-4)")
    p.add_argument("game", help="game file: the feature map, sizes and horizon are used; rewards and transitions only to report the true Nash gap")
    p.add_argument("data", help="preference dataset (.npz)")
    p.add_argument("--delta", type=float, default=0.1, help="failure probability of the confidence sets (default %(default)s)")
    p.add_argument("--c-r", dest="c_r", type=float, help="reward radius C_r (default: Lemma 5's formula)")
    p.add_argument("--c-p", dest="c_p", type=float, help="transition bonus scale C_P (default: Lemma 6's formula)")
    p.add_argument("--constant", type=float, default=1.0, help="the unspecified constant C of the radii formulas (default 1)")
    p.add_argument("--policy-class", choices=("deterministic", "mixed"), default="deterministic")
    p.add_argument("--lambda", dest="lam", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the local search's restarts")
    p.add_argument("--equilibrium", help="a Nash equilibrium policy of GAME, to report Theorem 4's bound")
    p.add_argument("--no-clip", action="store_true", help="drop the printed clipping at 0 and H (see the erratum marlhf.sbsm_clipping)")

    from marlcov.deep.cli import add_deep_parser

    add_deep_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GameError as exc:
        print(f"marlcov {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
