"""Two-player matrix games: the names of the public API, gathered from the modules that hold them.

- :mod:`.bimatrix`: :class:`Equilibrium`, :class:`EquilibriumSet`, :class:`DegenerateGameError`,
  :func:`nash_gap_bimatrix`
- :mod:`.zero_sum`: :func:`zero_sum_solve` -> :class:`ZeroSumSolution`
- :mod:`.vertex_enumeration`: :func:`all_equilibria`, :func:`is_degenerate`
- :mod:`.exact_enumeration`: the rational ground truth used for near-degenerate games
- :mod:`.support_enumeration`: :func:`support_enumeration` (the tests' cross-check)
- :mod:`.lemke_howson`: :func:`lemke_howson`, :func:`lemke_howson_batch` (many games and starting labels in one compiled call)
"""

from .bimatrix import DegenerateGameError, Equilibrium, EquilibriumSet, nash_gap_bimatrix
from .lemke_howson import lemke_howson, lemke_howson_batch
from .support_enumeration import support_enumeration
from .vertex_enumeration import all_equilibria, is_degenerate
from .zero_sum import ZeroSumSolution, zero_sum_solve

__all__ = [
    "ZeroSumSolution",
    "Equilibrium",
    "EquilibriumSet",
    "DegenerateGameError",
    "zero_sum_solve",
    "is_degenerate",
    "all_equilibria",
    "lemke_howson",
    "lemke_howson_batch",
    "nash_gap_bimatrix",
    "support_enumeration",
]
