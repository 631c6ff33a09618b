"""Tolerances of the tests that evaluate one loss formula in torch and in numpy."""

#: float64 evaluations of one formula in two array libraries agree to rounding: the deep losses
#: and the ``theory.objectives`` functions on the same float64 numbers (absolute, and relative
#: for the behaviour-cloning terms whose weights exp((Q - V)/beta) reach e^10).
LOSS_ATOL = 1e-10
LOSS_RTOL = 1e-10
