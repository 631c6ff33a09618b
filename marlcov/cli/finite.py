"""``marlcov solve``, ``nash-gap``, ``sample``, ``coverage`` and ``sbsm``: the commands on finite games."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from marlcov.cli._common import console, fmt, is_deep_dataset, print_json
from marlcov.theory.games import GameError


# ----------------------------------------------------------------------------------------- solve
def cmd_solve(args) -> int:
    from marlcov.linear_games.solve import solve_game
    from marlcov.theory.io import load_game, save_policy

    # equilibria need no reward range: matrix games have arbitrary payoffs
    game = load_game(args.game, bounded_rewards=False)
    matrix_game = game.n_players == 2 and game.n_states == 1 and game.horizon == 1
    if args.policy_out and matrix_game:
        raise GameError(f"{args.game}: --policy-out applies to Markov games (H > 1 or S > 1); this is a matrix game")
    result = solve_game(game)
    if args.policy_out:
        save_policy([np.asarray(p) for p in result["policy"]["probs"]], args.policy_out)
        result["policy_path"] = str(args.policy_out)
    if args.json:
        print_json(result)
        return 0
    con = console()
    name = game.name or Path(args.game).name
    if "policy" in result:
        title = f"{name}: Markov perfect equilibrium by backward induction over {result['stage_games']} stage games ({result['selection']})"
        table = Table(title=title)
        for col in ("player", "V(s1)", "Nash gap term"):
            table.add_column(col)
        for i, (v, g) in enumerate(zip(result["values"], result["per_player"])):
            table.add_row(str(i), fmt(v), fmt(g))
        con.print(table)
        con.print(
            f"exact Nash gap = {fmt(result['nash_gap'])}"
            + (f"; policy written to {result['policy_path']}" if "policy_path" in result else "")
        )
        return 0
    title = f"{name}: {'zero-sum (constant-sum)' if result['zero_sum'] else 'general-sum'}"
    if result["value"] is not None:
        title += f", value for player 0 = {fmt(result['value'])}"
    table = Table(title=title)
    table.add_column("#")
    table.add_column("player 0 (rows)")
    table.add_column("player 1 (columns)")
    table.add_column("payoffs")
    for k, eq in enumerate(result["equilibria"]):
        x, y = eq["strategies"]
        table.add_row(str(k), " ".join(fmt(v) for v in x), " ".join(fmt(v) for v in y), ", ".join(fmt(v) for v in eq["payoffs"]))
    con.print(table)
    if not result["complete"]:
        why = (
            "degenerate: components of equilibria are shown by their extreme points"
            if result["degenerate"]
            else "near-degenerate: the floating-point answer is not certified"
        )
        con.print(f"[yellow]Not certified complete ({why}; smallest separation {fmt(result['separation'])}).[/yellow]")
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
        print_json(out)
        return 0
    table = Table(title=f"Nash gap = {fmt(gap.total)}")
    for col in ("player", "V^pi", "V^dagger", "gap"):
        table.add_column(col)
    for i in range(game.n_players):
        table.add_row(str(i), fmt(gap.values[i]), fmt(gap.best_response_values[i]), fmt(gap.per_player[i]))
    console().print(table)
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
        print_json(out)
        return 0
    feats = out["features"]
    described = f"{feats.get('kind', 'features')}, d = {feats.get('dim')}" if isinstance(feats, dict) else str(feats)
    table = Table(title=f"Coverage of {Path(args.game).name} (lambda = {fmt(out['lambda'])}, features: {described})")
    table.add_column("measure")
    table.add_column("value [bootstrap 95% interval]")
    for name, value in table_rows(out):
        table.add_row(name, value)
    con = console()
    con.print(table)
    for note in out.get("notes", []):
        con.print(f"note: {note}")
    return 0


# ---------------------------------------------------------------------------------------- sample
#: Peak memory of sampling over the bytes of the dataset it returns (measured 2.5: the two
#: trajectory batches, their stack and the labels are alive at once).
SAMPLE_PEAK_FACTOR = 3


#: Pairs drawn per call when sampling many: each chunk is a step of the progress shown.
SAMPLE_CHUNK_PAIRS = 2**17


def _sampled_in_chunks(game, policy, n_pairs: int, seed: int, steepness: float):
    """``sample_preference_dataset`` in chunks of ``SAMPLE_CHUNK_PAIRS`` drawn from one seeded
    generator (one call, the same pairs as the library's, up to one chunk), as a progress task."""
    from marlcov.theory.preferences import PreferenceDataset, sample_preference_dataset
    from marlcov.theory.progress import task

    if n_pairs <= SAMPLE_CHUNK_PAIRS:
        return sample_preference_dataset(game, policy, n_pairs, seed=seed, steepness=steepness)
    rng = np.random.default_rng(seed)
    sizes = [SAMPLE_CHUNK_PAIRS] * (n_pairs // SAMPLE_CHUNK_PAIRS) + [n_pairs % SAMPLE_CHUNK_PAIRS] * bool(n_pairs % SAMPLE_CHUNK_PAIRS)
    parts = []
    with task("sampling preference pairs", total=n_pairs) as progress:
        for size in sizes:
            parts.append(sample_preference_dataset(game, policy, size, seed=rng, steepness=steepness))
            progress.advance(size)
    return PreferenceDataset(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("states", "actions", "prefs")))


def cmd_sample(args) -> int:
    """Options are checked by the parser (types, ``--out`` usable and ``.npz``) before any work;
    a request over the memory budget is refused before sampling."""
    from marlcov.theory.io import MEMORY_BUDGET_BYTES, dataset_nbytes, load_game, load_policy, save_dataset

    game = load_game(args.game)
    policy = load_policy(args.policy, game)
    per_pair = SAMPLE_PEAK_FACTOR * dataset_nbytes(1, game.horizon, game.n_players)
    if args.pairs * per_pair > MEMORY_BUDGET_BYTES:
        raise GameError(
            f"--pairs: {args.pairs} pairs of horizon {game.horizon} need about {args.pairs * per_pair / 2**30:.3g} GiB, "
            f"over the budget of {MEMORY_BUDGET_BYTES / 2**30:.3g} GiB; sample at most "
            f"{MEMORY_BUDGET_BYTES // per_pair} pairs per file"
        )
    ds = _sampled_in_chunks(game, policy, args.pairs, args.seed, args.steepness)
    save_dataset(ds, args.out)
    out = {"path": str(args.out), "pairs": ds.n_pairs}
    if args.json:
        print_json(out)
    else:
        console().print(f"wrote {ds.n_pairs} preference pairs to {args.out}")
    return 0


# -------------------------------------------------------------------------------------- coverage
def cmd_coverage(args) -> int:
    if is_deep_dataset(args.game):
        return _dataset_coverage(args)
    if args.data is None:
        raise GameError("DATA: a finite game needs its preference dataset (.npz) after GAME")
    from marlcov.theory.identifiable import identifiable_report
    from marlcov.theory.io import load_dataset, load_game, load_policy

    if args.policy is None:
        raise GameError("--policy: required for a finite game (the reference joint policy pi*)")
    game = load_game(args.game)
    ds = load_dataset(args.data, game)
    policy = load_policy(args.policy, game)
    report = identifiable_report(game, ds, policy, lam=args.lam)
    cov, ident, ident_r = report["paper"], report["identifiable"], report["identifiable_reward_term"]
    out = {
        "lambda": cov.lam,
        "single": cov.single,
        "unilateral": cov.unilateral,
        "uniform": cov.uniform,
        "worst_deviator": {"player": cov.worst_player, "value": cov.unilateral},
        "identifiable": {
            "single": ident.single,
            "unilateral": ident.unilateral,
            "uniform": ident.uniform,
            "worst_deviator": {"player": ident.worst_player, "value": ident.unilateral},
            "per_player": ident.per_player.tolist(),
            "reward_term": {"single": ident_r.single, "unilateral": ident_r.unilateral, "uniform": ident_r.uniform},
            "reference": "c_h = E_pi*[psi_h(s_h, a_h)]",
        },
        "per_player": cov.per_player.tolist(),
        "worst_deviation": {"format": "marlcov.policy/1", "player": cov.worst_player, "probs": cov.worst_deviation.tolist()},
        "features": "game" if game.features is not None else "one-hot",
        "pairs": ds.n_pairs,
    }
    if args.json:
        print_json(out)
        return 0
    table = Table(title=f"Coverage of {args.data} (lambda = {fmt(cov.lam)}, {ds.n_pairs} pairs, {out['features']} features)")
    table.add_column("measure")
    table.add_column("Definition 1")
    table.add_column("identifiable")
    table.add_row("single U_D(pi*)", fmt(cov.single), fmt(ident.single))
    for i, (v, w) in enumerate(zip(cov.per_player, ident.per_player)):
        table.add_row(f"unilateral, player {i}", fmt(v), fmt(w))
    table.add_row("unilateral (max)", fmt(cov.unilateral), fmt(ident.unilateral))
    table.add_row("uniform", fmt(cov.uniform), fmt(ident.uniform))
    table.add_row("worst deviator", str(cov.worst_player), str(ident.worst_player))
    console().print(table)
    return 0


# ------------------------------------------------------------------------------------------ sbsm
def _policy_class(args, game) -> str:
    """``--policy-class``, checked against the size of the deterministic class (status 2 when it cannot
    be enumerated); chosen by size when the option is unset."""
    from marlcov.linear_games.sbsm import MAX_ENUMERATED_POLICIES, deterministic_class_size, game_spec

    chosen = getattr(args, "policy_class", None)
    if chosen not in (None, "deterministic"):
        return chosen
    size = deterministic_class_size(game_spec(game))
    if size <= MAX_ENUMERATED_POLICIES:
        return "deterministic"
    if chosen is None:
        return "mixed"
    raise GameError(
        f"--policy-class: the deterministic class of {args.game} has {size:.3g} policies, more than the "
        f"{MAX_ENUMERATED_POLICIES} that are enumerated; pass --policy-class mixed"
    )


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
        policy_class=_policy_class(args, game),
        reward_set=getattr(args, "reward_set", None) or "paper",
        lam=args.lam,
        seed=args.seed,
        constant=args.constant,
        clip=not args.no_clip,
    )
    if args.json:
        print_json(out)
        return 0
    table = Table(title=f"pessimistic SBSM on {args.data} ({out['policy_class']}, {'exact' if out['exact'] else 'best found'})")
    table.add_column("quantity")
    table.add_column("value")
    table.add_row("surrogate sum_i [Vbar^dagger - Vunder^pi]", fmt(out["surrogate"]))
    if out["lower_bound"] is not None:
        table.add_row("lower bound on the minimum", fmt(out["lower_bound"]))
    table.add_row("C_r / C_P", f"{fmt(out['c_r'])} / {fmt(out['c_p'])}")
    table.add_row("true Nash gap of the output", fmt(out["nash_gap"]))
    if out["bound"] is not None:
        table.add_row("Theorem 4 bound (printed / summed over players)", f"{fmt(out['bound'])} / {fmt(out['bound_summed'])}")
    cert = out["identifiable_certificate"]
    table.add_row(f"identifiable certificate (holds w.p. {fmt(cert['probability'])})", fmt(out["identifiable_bound"]))
    console().print(table)
    return 0
