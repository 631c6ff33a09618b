"""Named tolerances of the MARLHF checks (beside ``theory/tolerances.py``, which holds the exact
code's): what "equal", "converged" and "driven to zero" mean in a verdict."""

from marlcov.theory.tolerances import VALUE_ATOL

#: Two values of a closed form or a DP are equal within this (float rounding only).
EXACT_ATOL = VALUE_ATOL

#: A coverage value is "bounded away from its limit" when it is above the limit by less than
#: this at worst (``U_D`` decreases to its limit from above; rounding may put it just below).
LIMIT_ATOL = 1e-9

#: A Nash gap below this counts as "driven to 0" in the statistical checks (finite n).
GAP_ZERO = 1e-6

#: Accuracy of the conic solver (Clarabel, default settings) on the KL-regularised optimum and the
#: reward fits: probabilities and parameters agree with a closed form to about this (1e-5 measured).
SOLVER_ATOL = 1e-4

#: A difference between the top two substituted rewards below this is treated as a tie and the
#: argmax is not compared: the optimum's probabilities then differ by a factor exp(margin / beta),
#: which must stay well above the solver's accuracy for beta <= 10.
ARGMAX_MARGIN = 1e-2

#: Distance, in the identifiable quotient, below which a small-alpha regularised fit counts as
#: the smoothest maximum-likelihood reward (it converges as O(alpha); alpha >= 1e-6 here).
QUOTIENT_ATOL = 1e-3

#: Figures printed in a table of the paper are equal when they agree to the printed precision.
PRINTED_ATOL = 5e-3
