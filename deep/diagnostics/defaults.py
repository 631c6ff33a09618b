"""Defaults and limits of the dataset diagnostic."""

from __future__ import annotations

DEFAULT_BOOTSTRAP = 200
#: Random-feature dimension of the diagnostic. Each bootstrap replicate and size prefix needs a
#: factorisation of Sigma_r (Hd x Hd) and keeps 2 H d^2 numbers, so d = 64 keeps 200 replicates
#: cheap; d = 256 (DEFAULT_DIM of deep.features) works for the point estimates at 10^6
#: transitions, with fewer groups (the memory budget decides) and replicates.
DEFAULT_FEATURE_DIM = 64
DEFAULT_REFERENCE_FRACTION = 0.1
#: Groups of pairs kept as accumulator slots (bootstrap over groups, size curve).
DEFAULT_GROUPS = 32
#: Trajectories per block of the pair schedule (pass 1) and per read elsewhere.
DEFAULT_BLOCK = 2048
#: Pairs per accumulator update.
PAIR_BATCH = 512
#: Anchor trajectories on which bootstrap replicates and dataset-size prefixes are evaluated.
DEFAULT_BOOTSTRAP_ANCHORS = 512
#: Cap on (anchor step x joint action) bonus evaluations for the uniform measure.
UNIFORM_EVALUATIONS = 1 << 22
#: Feature vectors per batch of bonus evaluation (bounds temporary memory).
EVAL_VECTORS = 1 << 15
#: Grid of the count discretisation of states and observations.
DEFAULT_COUNT_RESOLUTION = 0.1
#: Bradley-Terry minorise-maximise: iterations, relative tolerance, virtual games per trajectory.
BT_ITERATIONS = 500
BT_TOLERANCE = 1e-10
BT_PRIOR = 1.0
#: Per-step bonus values kept for the histograms.
HISTOGRAM_SAMPLES = 200_000
#: Episodes per rollout batch of the simulator.
SIMULATION_EPISODES = 256
#: Prefix fractions of the size curve of a finite-game dataset.
FINITE_SIZE_FRACTIONS = (0.125, 0.25, 0.5, 1.0)

_HASH_SEED = 0x5EED
