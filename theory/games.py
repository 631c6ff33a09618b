"""Finite episodic Markov games and linear Markov games (MARLHF paper, section 3, Assumption 1).

Array conventions (docs/formats.md): one axis per player's action.

- ``transitions`` ``P[h, s, a_1, ..., a_m, s']``: rows are distributions over ``s'``.
- ``rewards``     ``R[h, i, s, a_1, ..., a_m]`` in [0, 1]: mean reward of player ``i``.
- ``features``    ``psi[h, s, a_1, ..., a_m, d]`` (stored with the step axis; a step-independent
  map given as ``[s, a_1, ..., a_m, d]`` is broadcast along it).
- ``theta``       ``theta[h, i, d]``.

Steps are 0-based in code (``h = 0`` is the paper's ``h = 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .tolerances import PROB_ATOL, REWARD_ATOL, VALUE_ATOL


class GameError(ValueError):
    """A game, policy or dataset is malformed; the message names the field and the expectation."""


_NON_REAL_KINDS = {"U": "strings", "S": "bytes", "b": "booleans", "c": "complex numbers", "O": "non-numeric or ragged entries"}


def _as_float_array(value, field_name: str) -> np.ndarray:
    """``value`` as float64; strings, booleans and complex numbers are refused, not converted
    (``np.asarray("0.5", float)`` would silently parse, a complex array drop its imaginary part)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RecursionError):
        raise GameError(f"{field_name}: expected an array of numbers (ragged or non-numeric entries found)") from None
    if array.dtype.kind not in "iuf":
        found = _NON_REAL_KINDS.get(array.dtype.kind, f"dtype {array.dtype}")
        raise GameError(f"{field_name}: expected real numbers, found {found}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise GameError(f"{field_name}: expected finite numbers, found NaN or infinity")
    return array


def check_distribution(array: np.ndarray, field_name: str, axis: int = -1) -> None:
    """Raise GameError unless ``array`` is non-negative and sums to one along ``axis``."""
    if array.size == 0:
        raise GameError(f"{field_name}: expected a non-empty array")
    if np.min(array) < -PROB_ATOL:
        where = np.unravel_index(np.argmin(array), array.shape)
        raise GameError(f"{field_name}: expected probabilities >= 0, found {array[where]:.3g} at index {tuple(int(i) for i in where)}")
    sums = array.sum(axis=axis)
    bad = np.abs(sums - 1.0) > PROB_ATOL * max(1, array.shape[axis])
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise GameError(f"{field_name}: expected rows summing to 1 along the last axis, row {where} sums to {sums[where]:.12g}")


@dataclass(frozen=True, eq=False)
class MarkovGame:
    """A time-inhomogeneous general-sum Markov game with ``m`` players.

    Attributes:
        transitions: ``P[h, s, a_1..a_m, s']``, shape ``[H, S, A_1, ..., A_m, S]``.
        rewards: ``R[h, i, s, a_1..a_m]`` in [0, 1], shape ``[H, m, S, A_1, ..., A_m]``.
        initial_state: the start state ``s_1``.
        features: optional ``psi[h, s, a, d]`` (shape ``[H, S, A_1..A_m, d]``).
        theta: optional reward parameters ``theta[h, i, d]``; when given with ``features``,
            ``R = <psi, theta>`` is checked.
        name: optional label.
        bounded_rewards: check the reward assumption ``R in [0, 1]`` of the MARLHF theory
            (default). ``False`` accepts any finite rewards: equilibrium computation
            (``marlcov solve``) needs no range, and matrix games have arbitrary payoffs.
    """

    transitions: np.ndarray
    rewards: np.ndarray
    initial_state: int = 0
    features: np.ndarray | None = None
    theta: np.ndarray | None = None
    name: str | None = None
    bounded_rewards: bool = True
    _validated: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        P = _as_float_array(self.transitions, "transitions")
        R = _as_float_array(self.rewards, "rewards")
        if P.ndim < 4:
            raise GameError(f"transitions: expected shape [H, S, A_1, ..., A_m, S] with m >= 1, got {P.shape}")
        H, S = P.shape[0], P.shape[1]
        actions = P.shape[2:-1]
        if P.shape[-1] != S:
            raise GameError(f"transitions: last axis (next state) has {P.shape[-1]} entries, expected S = {S}")
        m = len(actions)
        expected_r = (H, m, S, *actions)
        if R.shape != expected_r:
            raise GameError(f"rewards: expected shape {list(expected_r)} ([H, m, S, A_1..A_m]), got {list(R.shape)}")
        if self.bounded_rewards and (np.min(R) < -REWARD_ATOL or np.max(R) > 1 + REWARD_ATOL):
            raise GameError(f"rewards: expected values in [0, 1], found range [{R.min():.6g}, {R.max():.6g}]")
        check_distribution(P, "transitions")
        s1 = self.initial_state
        if isinstance(s1, (bool, np.bool_)) or not isinstance(s1, (int, np.integer)) or not 0 <= int(s1) < S:
            raise GameError(f"initial_state: expected an integer in [0, {S - 1}], got {s1!r}")
        object.__setattr__(self, "transitions", P)
        object.__setattr__(self, "rewards", R)
        object.__setattr__(self, "initial_state", int(s1))
        if self.features is not None:
            psi = _as_float_array(self.features, "features")
            if psi.shape[:-1] == (S, *actions):
                psi = np.broadcast_to(psi, (H, *psi.shape))
            if psi.ndim < 2 or psi.shape[:-1] != (H, S, *actions):
                shape = list(psi.shape) if psi.ndim <= 2 * (m + 3) else f"{psi.ndim} axes"
                raise GameError(f"features: expected shape [S, A_1..A_m, d] or [H, S, A_1..A_m, d] = {[H, S, *actions, 'd']}, got {shape}")
            object.__setattr__(self, "features", psi)
        if self.theta is not None:
            th = _as_float_array(self.theta, "theta")
            if self.features is None:
                raise GameError("theta: given without features; a linear reward needs both")
            d = self.features.shape[-1]
            if th.shape != (H, m, d):
                shape = list(th.shape) if th.ndim <= 6 else f"{th.ndim} axes"
                raise GameError(f"theta: expected shape [H, m, d] = {[H, m, d]} (d = {d}, the last axis of features), got {shape}")
            implied = np.einsum("h...d,hid->hi...", self.features, th)
            err = float(np.max(np.abs(implied - R)))
            if err > VALUE_ATOL:
                raise GameError(f"features, theta: Assumption 1 needs rewards = <features, theta>; they differ by up to {err:.3g}")
            object.__setattr__(self, "theta", th)
        object.__setattr__(self, "_validated", True)

    @property
    def horizon(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_states(self) -> int:
        return self.transitions.shape[1]

    @property
    def action_sizes(self) -> tuple[int, ...]:
        return tuple(int(a) for a in self.transitions.shape[2:-1])

    @property
    def n_players(self) -> int:
        return len(self.action_sizes)

    @property
    def feature_dim(self) -> int | None:
        return None if self.features is None else int(self.features.shape[-1])

    def with_one_hot_features(self) -> MarkovGame:
        """The same game as a linear Markov game with one-hot features ``psi(s, a) = e_{(s, a)}``.

        ``d = S * prod(A_i)``; ``theta[h, i]`` is the flattened reward table and the transition
        factor ``mu_h(s') = P[h, :, ..., s']`` flattened, so Assumption 1 holds exactly.
        """
        shape = (self.n_states, *self.action_sizes)
        d = int(np.prod(shape))
        psi = np.eye(d).reshape(*shape, d)
        theta = self.rewards.reshape(self.horizon, self.n_players, d)
        return MarkovGame(self.transitions, self.rewards, self.initial_state, psi, theta, self.name, self.bounded_rewards)


def linear_markov_game(
    psi: np.ndarray,
    mu: np.ndarray,
    theta: np.ndarray,
    initial_state: int = 0,
    name: str | None = None,
) -> MarkovGame:
    """Build the Markov game of Assumption 1 from its factors.

    Args:
        psi: features ``psi[s, a_1..a_m, d]`` or ``[H, s, a_1..a_m, d]``.
        mu: ``mu[h, s', d]``, so that ``P_h(s'|s,a) = <psi(s,a), mu_h(s')>``.
        theta: ``theta[h, i, d]``, so that ``r_{h,i}(s,a) = <psi(s,a), theta_{h,i}>``.

    The products must be valid distributions and rewards in [0, 1]; a GameError says which fails.
    """
    psi = _as_float_array(psi, "psi")
    mu = _as_float_array(mu, "mu")
    theta = _as_float_array(theta, "theta")
    if mu.ndim != 3:
        raise GameError(f"mu: expected shape [H, S, d], got {list(mu.shape)}")
    H, S, d = mu.shape
    if psi.shape[-1] != d:
        raise GameError(f"psi: feature dimension {psi.shape[-1]} differs from mu's d = {d}")
    if theta.ndim != 3:
        raise GameError(f"theta: expected shape [H, m, d], got {list(theta.shape)}")
    m = theta.shape[1]
    # psi carries the step axis iff it has one axis more than [S, A_1..A_m, d].
    psi_h = psi if psi.ndim == m + 3 else np.broadcast_to(psi, (H, *psi.shape))
    if psi_h.ndim != m + 3 or psi_h.shape[0] != H or psi_h.shape[1] != S:
        raise GameError(
            f"psi: expected shape [S, A_1..A_m, d] or [H, S, A_1..A_m, d] with H = {H}, S = {S}, m = {m}, got {list(psi.shape)}"
        )
    P = np.einsum("h...d,htd->h...t", psi_h, mu)
    R = np.einsum("h...d,hid->hi...", psi_h, theta)
    return MarkovGame(P, R, initial_state, psi_h, theta, name)


def random_markov_game(
    n_states: int,
    action_sizes: Sequence[int],
    horizon: int,
    seed: int | np.random.Generator | None = None,
    initial_state: int = 0,
    name: str | None = None,
) -> MarkovGame:
    """A random tabular game: Dirichlet(1) transition rows, uniform [0, 1] rewards."""
    rng = np.random.default_rng(seed)
    actions = tuple(int(a) for a in action_sizes)
    shape = (horizon, n_states, *actions)
    P = rng.dirichlet(np.ones(n_states), size=shape)
    R = rng.uniform(0.0, 1.0, size=(horizon, len(actions), n_states, *actions))
    return MarkovGame(P, R, initial_state, name=name)


def random_linear_markov_game(
    n_states: int,
    action_sizes: Sequence[int],
    horizon: int,
    dim: int,
    seed: int | np.random.Generator | None = None,
    initial_state: int = 0,
    step_dependent_features: bool = False,
    name: str | None = None,
) -> MarkovGame:
    """A random *valid* linear Markov game.

    ``psi(s, a)`` lies on the simplex of R^d (Dirichlet), each ``mu_h[:, k]`` is a distribution
    over next states, and ``theta[h, i]`` lies in [0, 1]^d, so ``P`` is a distribution and
    ``r`` lies in [0, 1] by construction, and ``||psi|| <= 1``.
    """
    rng = np.random.default_rng(seed)
    actions = tuple(int(a) for a in action_sizes)
    lead = (horizon,) if step_dependent_features else ()
    psi = rng.dirichlet(np.full(dim, 0.5), size=(*lead, n_states, *actions))
    mu = rng.dirichlet(np.ones(n_states), size=(horizon, dim)).transpose(0, 2, 1)
    theta = rng.uniform(0.0, 1.0, size=(horizon, len(actions), dim))
    if not step_dependent_features:
        psi = np.broadcast_to(psi, (horizon, *psi.shape))
    return linear_markov_game(psi, mu, theta, initial_state, name)
