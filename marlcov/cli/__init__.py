"""The ``marlcov`` command line (docs/formats.md lists every command's JSON keys).

Every command prints a table for people and, with ``--json``, one JSON document on stdout.
Bad input exits with status 2 and one line on stderr naming the file, the field and what was
expected. The commands live beside this file: ``finite`` (solve, nash-gap, sample, coverage,
sbsm), ``verify``, ``deep`` (the deep pipeline and the coverage study); the parser is here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from marlcov.cli._common import EXIT_BAD_INPUT
from marlcov.cli.deep import add_deep_parser
from marlcov.cli.finite import cmd_coverage, cmd_nash_gap, cmd_sample, cmd_sbsm, cmd_solve
from marlcov.cli.verify import cmd_verify
from marlcov.theory.games import GameError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marlcov", description="marlcov: theory, coverage diagnostics and verification for offline multi-agent RL from preferences.")
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

    p = add("solve", cmd_solve, "all extreme equilibria of a matrix game; a Markov perfect equilibrium of a Markov game")
    p.add_argument("game", help="game file (.json or .npz, marlcov.game/1); payoffs need not lie in [0, 1]")
    p.add_argument("--policy-out", metavar="POLICY", help="Markov games: write the equilibrium policy here (.json/.npz)")

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
