"""Named tolerances and solver settings of the registered checks, in one place.

``theory/tolerances.py`` holds the exact code's; these say what "equal", "converged", "zero" and
"refuted" mean in a verdict. Each name bounds one kind of error, and its comment names the source
of the error it absorbs; two tolerances of different values never share a name.
"""

from marlcov.theory.tolerances import VALUE_ATOL

# -- exact arithmetic: float64 rounding only ---------------------------------------------------

#: Two exact computations of the same quantity (closed forms, DPs, round trips, Bellman residuals,
#: O(1) values) agree to this: float64 rounding, ~1e-15 per operation, summed over small games.
EXACT_ATOL = VALUE_ATOL

#: A Boltzmann fixed-point residual or an entropy-regularised Nash gap below this counts as zero
#: (MAMQL's QRE check): the QRE iteration stops at ``theory.tolerances.QRE_TOL`` (1e-12), which
#: the residual and the gap see amplified by the horizon and the rationality ``lam``.
FIXED_POINT_ATOL = 1e-9

#: A coverage value ``U_D`` decreasing to its closed-form limit may sit below the limit by rounding
#: of the covariance inverse, at most by this.
LIMIT_ATOL = 1e-9

#: A chain-rule log density and the mixture's log density (both O(10)) agree to this: rounding of
#: log-sum-exp and Cholesky solves.
LOG_DENSITY_ATOL = 1e-9

#: Tweedie's posterior noise mean and the noised mixture's score agree to this, relative to
#: ``1 + |score|``: rounding of the Gaussian conditioning, both sides closed forms.
TWEEDIE_RTOL = 1e-9

#: A midpoint second difference ``f(x+td) + f(x-td) - 2 f(x)`` beyond this refutes concavity
#: (positive) or convexity (negative): rounding of three O(1) objective values is ~1e-15.
SECOND_DIFF_TOL = 1e-10

# -- finite differences: truncation plus rounding over the step ----------------------------------

#: Step of the central-difference Hessian of MAMQL's critic objective; its rounding error is
#: about eps |J| / h^2 ~ 1e-7.
HESSIAN_FD_STEP = 1e-4

#: A Hessian eigenvalue above this is positive curvature: two orders above the difference error
#: that ``HESSIAN_FD_STEP`` leaves.
HESSIAN_FD_ATOL = 1e-5

#: Step of the central differences of log densities behind the score checks.
SCORE_FD_STEP = 1e-5

#: Central differences with ``SCORE_FD_STEP`` agree with analytic scores to this, relative to
#: ``1 + |score|``: truncation ~h^2 |f'''| / 6 and rounding ~eps |f| / h are each ~1e-10 for the
#: O(10) log densities of the checks.
SCORE_FD_RTOL = 1e-6

# -- solvers: stopping rules and the accuracy they give ------------------------------------------

#: Clarabel settings for the exponential-cone problems (tighter than the defaults, 1e-8).
CLARABEL_TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11}

#: A cvxpy optimum under Clarabel's default settings (KL-regularised optimum, the regularised
#: reward fits of the MARLHF checks) agrees with a closed form to this: measured ~1e-5.
CLARABEL_DEFAULT_ATOL = 1e-4

#: A cvxpy optimum under ``CLARABEL_TIGHT`` on exponential-cone problems with O(1) coefficients
#: (OMIGA's local values, the KL-regularised policies of the score-decomposition checks, alpha
#: down to 0.2) agrees with the closed form to this: measured <= 2.2e-6; planted bugs move the
#: compared quantities by 0.04 or more.
CLARABEL_TIGHT_ATOL = 1e-5

#: A local WBC optimum of O-MAPL by cvxpy (``CLARABEL_TIGHT``) agrees with the closed form to
#: this: the rows' coefficients span up to ~e^40 (arbitrary local values), where Clarabel's
#: probabilities are accurate to a few 1e-6 (5e-6 at most in the full run); planted bugs move
#: them by 0.5 or more.
WBC_SOLVER_ATOL = 1e-4

#: L-BFGS on the product-policy logits of the global WBC objective stops when the projected
#: gradient is below this.
LBFGS_GTOL = 1e-12

#: Two maximisers of the global WBC objective (3) (values O(1)) agree in value to this: the
#: measured gap between cvxpy's local optima and L-BFGS's best product policy is <= 2e-9.
WBC_OBJECTIVE_ATOL = 1e-7

# -- statistics and printed figures --------------------------------------------------------------

#: The exact Nash gap of SBSM's output counts as "driven to 0" below this (MARLHF's SBSM checks):
#: it absorbs the float error of the minimiser's mixed strategies; on Table 4's games a wrong
#: output has a gap of 0.5 or more.
NASH_GAP_ZERO = 1e-6

#: A difference between the top two substituted KL rewards below this is a tie, and the argmax is
#: not compared: the optimum's probabilities then differ by a factor exp(margin / beta), which
#: stays well above ``CLARABEL_DEFAULT_ATOL`` for beta <= 10.
ARGMAX_MARGIN = 1e-2

#: Distance, in the identifiable quotient, below which a small-alpha regularised fit counts as the
#: smoothest maximum-likelihood reward: the fit converges as O(alpha), alpha >= 1e-6 here, plus
#: the solver's ``CLARABEL_DEFAULT_ATOL``.
QUOTIENT_ATOL = 1e-3

#: Figures printed in a table of the paper are equal when they agree to the printed precision
#: (two decimals, rounded: half a unit of the last digit).
PRINTED_ATOL = 5e-3

#: A Monte Carlo mean that should be zero may lie this many standard errors from it (a false
#: alarm per comparison has probability ~6e-7 under the central limit theorem).
MC_Z_MAX = 5.0

#: The identifiable coverage must fall like n^{-1/2}: its log-log slope over the sampled n (medians
#: over seeds) lies within this of -1/2.
COVERAGE_SLOPE_SLACK = 0.2

#: "Stays at its floor": the paper's reward-term unilateral coverage at the largest n is at most
#: this factor above its exact floor (its decreasing part is O(n^{-1/2}), a few % at n = 10^4).
PAPER_FLOOR_FACTOR = 1.1
