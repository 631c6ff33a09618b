"""Named numerical tolerances of the exact code.

Every comparison of floats in theory/ and linear_games/ goes through one of these, so that a
reader can see, and a user can tighten, what "equal" means.
"""

#: Absolute tolerance on probabilities: a row of a transition kernel or a policy must sum to
#: one within this, and no entry may be below ``-PROB_ATOL``.
PROB_ATOL = 1e-9

#: Absolute tolerance on rewards lying in [0, 1].
REWARD_ATOL = 1e-12

#: Values (Nash gaps, payoffs) closer than this are treated as equal: a Nash gap below it is an
#: exact equilibrium, a best response within it of the maximum is a best response.
VALUE_ATOL = 1e-9

#: Pivoting/degeneracy tolerance of the matrix-game solvers: a payoff difference below this
#: counts as a tie, a probability below it as zero.
PIVOT_ATOL = 1e-10

#: Tie tolerance of the minimum-ratio test of Lemke-Howson (normalised payoff units): ratios
#: closer than this are tied and the tie is broken lexicographically. Far below ``PIVOT_ATOL``:
#: a tie taken between ratios that truly differ pivots on the larger one and leaves the basis
#: infeasible by the difference (payoff differences of 1e-9 made the path cycle with ties at
#: ``PIVOT_ATOL``); far above the rounding of an exact tie (a few ulp per pivot).
RATIO_TIE_ATOL = 1e-13

#: Relative rank tolerance of the identifiable subspaces (``theory.identifiable``): a singular value
#: of a step's centred feature table below ``RANK_RTOL`` times the largest counts as zero.
RANK_RTOL = 1e-10

#: Stop the damped fixed-point iteration of a logit QRE stage game (``theory.soft_games``) when no
#: probability moves more than this; the result's Boltzmann residual is returned beside it, so a
#: caller sees how far from the fixed point the stop left it.
QRE_TOL = 1e-12

#: A joint action whose payoff is below the best payoff by at most this counts as coordinated
#: (``theory.objectives.score_decomposition.miscoordination_mass``): payoff tables are given, so
#: only input rounding (~1e-16 on O(1) payoffs) separates ties.
MISCOORDINATION_ATOL = 1e-12

#: Separation margin of the matrix-game enumeration (normalised payoff units): a vertex of a
#: best-response polytope whose nearest non-tight constraint (a probability, or a payoff gap to
#: the best response) is closer than this is *near-degenerate*: a perturbation of the payoffs
#: of that size could change the equilibrium set, so a floating-point answer is not certified.
SEPARATION_ATOL = 1e-7

#: Membership of a confidence ellipsoid: a ``Sigma``-norm computed from a quadratic form carries
#: a relative rounding of a few ulp times the conditioning, so a point on the boundary can come
#: out just outside; within ``NORM_RTOL`` of the radius it counts as inside.
NORM_RTOL = 1e-9

#: HiGHS's primal and dual feasibility tolerances for the zero-sum LPs (its default, 1e-7, lets
#: a payoff of that size in [0, 1]-normalised units be traded for another; 1e-10 is the
#: smallest HiGHS accepts).
HIGHS_FEASIBILITY_TOL = 1e-10
