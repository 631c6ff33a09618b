"""The ``marlcov`` command line. File formats and every command's JSON keys: docs/formats.md.

Every command prints a table for people and, with ``--json``, one JSON document on stdout.
Bad input or options exit with status 2 and one line on stderr naming the file (or option), the
field and what was expected; Ctrl-C exits with status 130 and one line. Long computations show
their progress on stderr (quiet under ``--json`` unless ``--progress``). The commands live
beside this file: ``finite`` (solve, nash-gap, sample, coverage, sbsm), ``verify``, ``deep``
(the deep pipeline and the coverage study); the parser and ``main`` are here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from marlcov import __version__
from marlcov.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    StderrProgress,
    finite_float,
    input_error_message,
    is_deep_dataset,
    nonnegative_int,
    one_line,
    open_unit_float,
    positive_float,
    positive_int,
)
from marlcov.cli.deep import add_deep_parser
from marlcov.cli.finite import cmd_coverage, cmd_nash_gap, cmd_sample, cmd_sbsm, cmd_solve
from marlcov.cli.verify import cmd_verify
from marlcov.theory.atomic import check_output_dir, check_output_file
from marlcov.theory.games import GameError
from marlcov.theory.progress import listening

FORMATS = "docs/formats.md"
#: Set to 1 to see the traceback of an error reported in one line.
TRACEBACK_ENV = "MARLCOV_TRACEBACK"


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``marlcov CMD: error: ...``), status 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, one_line(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="marlcov",
        description="marlcov: theory, coverage diagnostics and verification for offline multi-agent RL "
        f"from preferences. File formats and the JSON keys of every command: {FORMATS}.",
    )
    parser.add_argument("--version", action="version", version=f"marlcov {__version__}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=f"{help}. JSON keys: {FORMATS}.")
        p.add_argument("--json", action="store_true", help=f"one JSON document on stdout (keys: {FORMATS})")
        p.add_argument("--progress", action="store_true", help="show progress on stderr also under --json")
        p.set_defaults(func=func, output_files=(), output_dirs=(), hdf5_only={})
        return p

    game_help = "game file (.json or .npz, marlcov.game/1)"
    policy_help = "policy file (.json or .npz, marlcov.policy/1)"

    p = add("verify", cmd_verify, "run the registered checks of the papers and write a report")
    p.add_argument("--only", nargs="+", metavar="ID", help="check ids (or 'paper.' prefixes) to run; merged into a report in --out")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sweeps (default)")
    mode.add_argument("--full", action="store_true", help="the larger sweeps")
    p.add_argument("--out", default="marlcov-verify", help="report directory (default: %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="base seed, a non-negative integer (default: %(default)s)")
    p.set_defaults(output_dirs=("out",))

    p = add("solve", cmd_solve, "all extreme equilibria of a matrix game; a Markov perfect equilibrium of a Markov game")
    p.add_argument("game", help="game file (.json or .npz, marlcov.game/1); payoffs need not lie in [0, 1]")
    p.add_argument("--policy-out", metavar="POLICY", help="Markov games: write the equilibrium policy here (.json/.npz)")
    p.set_defaults(output_files=(("policy_out", (".json", ".npz")),))

    p = add("nash-gap", cmd_nash_gap, "exact Nash gap of a product Markov policy, per player")
    p.add_argument("game", help=game_help)
    p.add_argument("policy", help=policy_help)

    p = add("sample", cmd_sample, "sample a Bradley-Terry preference dataset from a behaviour policy")
    p.add_argument("game", help=game_help)
    p.add_argument("policy", help=f"behaviour policy of both trajectories of a pair: {policy_help}")
    p.add_argument("--pairs", type=nonnegative_int, required=True, help="number of trajectory pairs")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed, a non-negative integer (default: %(default)s)")
    p.add_argument("--steepness", type=finite_float, default=1.0, help="factor on return differences (default %(default)s)")
    p.add_argument("--out", required=True, help="output dataset (.npz, marlcov.prefs/1)")
    p.set_defaults(output_files=(("out", (".npz",)),))

    p = add("coverage", cmd_coverage, "single / unilateral / uniform coverage of a preference dataset")
    p.add_argument("game", help=f"{game_help}, or an HDF5 dataset of deep/ (.h5/.hdf5)")
    p.add_argument("data", nargs="?", help="preference dataset (.npz, marlcov.prefs/1) of a finite game; none after an HDF5 dataset")
    p.add_argument("--policy", help="reference joint policy pi*: a policy file, or a checkpoint for an HDF5 dataset")
    p.add_argument("--lambda", dest="lam", type=positive_float, default=1.0, help="ridge lambda (default %(default)s)")
    hdf5 = {
        "features": ("--features", dict(default="random", help="HDF5 only: random | random-obs | reward-model:PATH | FILE")),
        "bootstrap": ("--bootstrap", dict(type=nonnegative_int, default=200, help="HDF5 only: bootstrap replicates (default %(default)s)")),
        "seed": ("--seed", dict(type=nonnegative_int, default=0, help="HDF5 only: seed of features and bootstrap")),
        "out": ("--out", dict(help="HDF5 only: directory for the plots")),
        "pairs_file": (
            "--pairs-file",
            dict(help="HDF5 only: preference pairs in a separate file (default: DATA.pairs.h5 when DATA holds none)"),
        ),
        "simulate": ("--simulate", dict(action="store_true", help="HDF5 only: roll out deviations in the simulator")),
        "feature_dim": ("--feature-dim", dict(type=positive_int, help="HDF5 only: dimension of the feature map")),
    }
    for dest, (flag, kwargs) in hdf5.items():
        p.add_argument(flag, dest=dest, **kwargs)
    p.set_defaults(hdf5_only={dest: (flag, p.get_default(dest)) for dest, (flag, _) in hdf5.items()})

    p = add("sbsm", cmd_sbsm, "pessimistic SBSM policy from a preference dataset (Algorithms 2-4)")
    p.add_argument(
        "game", help="game file: the feature map, sizes and horizon are used; rewards and transitions only to report the true Nash gap"
    )
    p.add_argument("data", help="preference dataset (.npz, marlcov.prefs/1)")
    p.add_argument(
        "--delta", type=open_unit_float, default=0.1, help="failure probability of the confidence sets, in (0, 1) (default %(default)s)"
    )
    p.add_argument("--c-r", dest="c_r", type=positive_float, help="reward radius C_r (default: Lemma 5's formula)")
    p.add_argument("--c-p", dest="c_p", type=positive_float, help="transition bonus scale C_P (default: Lemma 6's formula)")
    p.add_argument("--constant", type=positive_float, default=1.0, help="the unspecified constant C of the radii formulas (default 1)")
    p.add_argument(
        "--policy-class",
        choices=("deterministic", "mixed"),
        help="policies searched: 'deterministic' (exact enumeration, at most 50,000 joint policies) or 'mixed' "
        "(local search; exact for one step and two players); default: deterministic when small enough, else mixed",
    )
    p.add_argument(
        "--reward-set",
        dest="reward_set",
        choices=("paper", "identifiable"),
        default="paper",
        help="reward confidence set: 'paper' (Lemma 5, radius C_r) or 'identifiable' (on the identifiable subspace) (default %(default)s)",
    )
    p.add_argument("--lambda", dest="lam", type=positive_float, default=1.0, help="ridge lambda (default %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the local search's restarts (default %(default)s)")
    p.add_argument("--equilibrium", help="a Nash equilibrium policy of GAME, to report Theorem 4's bound")
    p.add_argument("--no-clip", action="store_true", help="drop the printed clipping at 0 and H (see the erratum marlhf.sbsm_clipping)")

    add_deep_parser(sub)
    return parser


def command_name(args) -> str:
    deep = getattr(args, "deep_command", None)
    return f"marlcov {args.command}" + (f" {deep}" if deep else "")


def check_options(args) -> None:
    """What the parser cannot check alone, before any work: output paths are usable and the
    options apply to the input given (HDF5-only options on a finite game)."""
    for dest, suffixes in getattr(args, "output_files", ()):
        if getattr(args, dest) is not None:
            check_output_file(getattr(args, dest), suffixes, f"--{dest.replace('_', '-')}")
    for dest in getattr(args, "output_dirs", ()):
        check_output_dir(getattr(args, dest), f"--{dest.replace('_', '-')}")
    hdf5_only = getattr(args, "hdf5_only", {})
    if hdf5_only:
        is_hdf5 = is_deep_dataset(args.game)
        if is_hdf5 and args.data is not None:
            raise GameError(
                f"DATA: {args.data} follows the HDF5 dataset {args.game}, which takes no second file "
                "(pairs in a separate file: --pairs-file)"
            )
        if is_hdf5 and args.out is not None:
            check_output_dir(args.out, "--out")
        for dest, (flag, default) in hdf5_only.items():
            if not is_hdf5 and getattr(args, dest) != default:
                raise GameError(f"{flag}: applies only to a deep dataset (.h5/.hdf5 or a vault directory); {args.game} is a finite game")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, and option errors (already on stderr)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    name = command_name(args)
    show = not getattr(args, "json", False) or getattr(args, "progress", False)
    display = StderrProgress(name) if show else None
    try:
        with listening(display):
            check_options(args)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = input_error_message(exc)
        if message is None or os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(one_line(f"{name}: error: {message}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if display is not None:
            display.close()


if __name__ == "__main__":
    sys.exit(main())
