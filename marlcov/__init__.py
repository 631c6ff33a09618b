"""marlcov: theory, coverage diagnostics and verification for offline multi-agent RL from preferences.

The names a user reaches for first are here; everything else is in the subpackages
``marlcov.theory`` (exact objects), ``marlcov.linear_games`` (solvers, estimators, SBSM),
``marlcov.proofs_checks`` (the registered checks) and ``marlcov.deep`` (torch pipelines).

>>> import marlcov
>>> game = marlcov.random_linear_markov_game(n_states=3, action_sizes=(2, 2), horizon=2, dim=4, seed=0)
>>> gap = marlcov.nash_gap(game, marlcov.uniform_policy(game))

The names are loaded on first use, so ``import marlcov`` stays light and never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

#: Top-level name -> the module that defines it.
_EXPORTS = {
    "GameError": "marlcov.theory.games",
    "MarkovGame": "marlcov.theory.games",
    "linear_markov_game": "marlcov.theory.games",
    "random_markov_game": "marlcov.theory.games",
    "random_linear_markov_game": "marlcov.theory.games",
    "uniform_policy": "marlcov.theory.policies",
    "random_policy": "marlcov.theory.policies",
    "evaluate_policy": "marlcov.theory.values",
    "best_response": "marlcov.theory.values",
    "nash_gap": "marlcov.theory.values",
    "PreferenceDataset": "marlcov.theory.preferences",
    "sample_preference_dataset": "marlcov.theory.preferences",
    "coverage_measures": "marlcov.theory.coverage",
    "load_game": "marlcov.theory.io",
    "save_game": "marlcov.theory.io",
    "load_policy": "marlcov.theory.io",
    "save_policy": "marlcov.theory.io",
    "load_dataset": "marlcov.theory.io",
    "save_dataset": "marlcov.theory.io",
    "zero_sum_solve": "marlcov.linear_games.matrix_games",
    "all_equilibria": "marlcov.linear_games.matrix_games",
    "lemke_howson": "marlcov.linear_games.matrix_games",
    "solve_one_shot": "marlcov.linear_games.solve",
    "solve_game": "marlcov.linear_games.solve",
    "markov_equilibrium": "marlcov.linear_games.markov_equilibria",
}

__all__ = sorted([*_EXPORTS, "verify", "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'marlcov' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def verify(only: list[str] | None = None, *, full: bool = False, seed: int = 0) -> list:
    """Run the registered checks (all, or the ids / ``paper.`` prefixes in ``only``) without
    writing a report; returns their ``CheckResult`` objects (``.status``, ``.verdict``).
    ``marlcov verify`` on the command line also writes ``verify.json`` and ``verify.md``."""
    from marlcov.proofs_checks.registry import CheckContext, run_check, select

    ctx = CheckContext(quick=not full, seed=seed, out_dir=None)
    return [run_check(chk, ctx) for chk in select(only)]
