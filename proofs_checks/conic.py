"""The checks' cvxpy solves at tight settings: one place for the settings and the status test."""

from __future__ import annotations

import warnings

import cvxpy as cp

from .tolerances import CLARABEL_TIGHT


def solve_tight(problem: cp.Problem, what: str) -> None:
    """Solve ``problem`` with Clarabel at ``CLARABEL_TIGHT``; raise ``RuntimeError`` naming ``what``
    unless it ends optimal.

    Tight tolerances can end as "optimal_inaccurate" (its warning is silenced): every caller
    compares the optimum with a closed form within a stated tolerance, which judges the accuracy.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"{what}: cvxpy status {problem.status}")
