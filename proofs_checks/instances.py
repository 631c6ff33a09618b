"""Instances on which the O-MAPL and OMIGA checks evaluate the shared objectives.

Preference datasets of trajectory pairs with local tables ``q, v`` and linear or two-layer
mixers (O-MAPL's ``L`` and ``J``, section 4.2), random soft games (section 3), and cooperative
games whose soft-optimal ``Q_tot`` is linearly mixed from local tables (section 4.3; OMIGA
section 4.2). The objectives are ``theory.objectives.omapl``; the soft Bellman operators are
``theory.soft_games``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from marlcov.theory.games import random_markov_game
from marlcov.theory.objectives import omapl
from marlcov.theory.policies import joint_action_probs, random_policy


@dataclass(frozen=True)
class PreferenceInstance:
    """Trajectory pairs and state-action samples on which O-MAPL's ``L`` and ``J`` are evaluated.

    Attributes:
        states: ``[N, 2, T+1]`` state indices of both trajectories of each pair.
        actions: ``[N, 2, T, n]`` joint actions.
        labels: ``[N]`` preference probabilities of the first trajectory.
        j_states, j_actions: ``[M]``, ``[M, n]`` samples for the Extreme-V objective.
        n_states, n_actions, n_agents: table sizes.
        gamma, beta, reg_coef: discount, temperature, chi^2 coefficient.
    """

    states: np.ndarray
    actions: np.ndarray
    labels: np.ndarray
    j_states: np.ndarray
    j_actions: np.ndarray
    n_states: int
    n_actions: int
    n_agents: int
    gamma: float = 0.9
    beta: float = 1.0
    reg_coef: float = 0.5


def random_preference_instance(
    rng: np.random.Generator, n_agents: int = 2, n_states: int = 3, n_actions: int = 2, n_pairs: int = 4, horizon: int = 2
) -> PreferenceInstance:
    """Random pairs of random trajectories with random soft labels."""
    n, S, A, T = n_agents, n_states, n_actions, horizon
    return PreferenceInstance(
        states=rng.integers(0, S, size=(n_pairs, 2, T + 1)),
        actions=rng.integers(0, A, size=(n_pairs, 2, T, n)),
        labels=rng.uniform(0.0, 1.0, size=n_pairs),
        j_states=rng.integers(0, S, size=3 * n_pairs),
        j_actions=rng.integers(0, A, size=(3 * n_pairs, n)),
        n_states=S,
        n_actions=A,
        n_agents=n,
        gamma=float(rng.uniform(0.5, 1.0)),
        beta=float(rng.uniform(0.5, 2.0)),
    )


@dataclass
class LocalTables:
    """Local values and linear-mixing parameters: ``q[n, S, A]``, ``v[n, S]``, ``w[S, n]``, ``b[S]``."""

    q: np.ndarray
    v: np.ndarray
    w: np.ndarray
    b: np.ndarray


def random_tables(rng: np.random.Generator, inst: PreferenceInstance) -> LocalTables:
    n, S, A = inst.n_agents, inst.n_states, inst.n_actions
    return LocalTables(rng.normal(size=(n, S, A)), rng.normal(size=(n, S)), rng.uniform(0.5, 1.5, size=(S, n)), rng.normal(size=S))


Mixer = Callable[[np.ndarray, np.ndarray, LocalTables], np.ndarray]


def linear_mixer(local: np.ndarray, states: np.ndarray, tab: LocalTables) -> np.ndarray:
    """``sum_i w_i(s) x_i + b(s)`` at the sample states."""
    return omapl.linear_mix(local, tab.w[states], tab.b[states])


def two_layer_mixer_from(rng: np.random.Generator, n_states: int, n_agents: int, hidden: int = 4) -> Mixer:
    """A fixed random QMIX-style two-layer mixer (state-dependent hypernetwork outputs); its
    parameters are attached as ``mixer.params`` (JSON lists) for counterexample files."""
    params = {
        "w1": rng.normal(size=(n_states, n_agents, hidden)).tolist(),
        "b1": rng.normal(size=(n_states, hidden)).tolist(),
        "w2": rng.normal(size=(n_states, hidden)).tolist(),
        "b2": rng.normal(size=n_states).tolist(),
    }
    mixer = mixer_from_params(params)
    mixer.params = params  # type: ignore[attr-defined]
    return mixer


def implied_rewards(inst: PreferenceInstance, tab: LocalTables, mixer: Mixer = linear_mixer) -> tuple[np.ndarray, np.ndarray]:
    """``R = Q_tot(s_t, a_t) - gamma V_tot(s_{t+1})`` along both trajectories, ``[N, T]`` each."""
    agents = np.arange(inst.n_agents)
    s_now, s_next = inst.states[..., :-1], inst.states[..., 1:]
    q_taken = tab.q[agents, s_now[..., None], inst.actions]
    v_next = tab.v[agents, s_next[..., None]]
    q_tot = mixer(q_taken, s_now, tab)
    v_tot_next = mixer(v_next, s_next, tab)
    terminal = np.zeros(s_now.shape[-1])
    terminal[-1] = 1.0
    R = omapl.implied_rewards(q_tot, v_tot_next * (1.0 - terminal), inst.gamma)
    return R[:, 0], R[:, 1]


def preference_objective(inst: PreferenceInstance, tab: LocalTables, mixer: Mixer = linear_mixer) -> float:
    """O-MAPL's ``L`` on the instance (maximised)."""
    R1, R2 = implied_rewards(inst, tab, mixer)
    return float(omapl.preference_objective(R1, R2, inst.labels, inst.reg_coef))


def extreme_v_objective(inst: PreferenceInstance, tab: LocalTables, mixer: Mixer = linear_mixer) -> float:
    """O-MAPL's ``J`` on the instance's state-action samples (minimised)."""
    agents = np.arange(inst.n_agents)
    q_tot = mixer(tab.q[agents, inst.j_states[:, None], inst.j_actions], inst.j_states, tab)
    v_tot = mixer(tab.v[agents, inst.j_states[:, None]], inst.j_states, tab)
    return float(omapl.extreme_v_loss(q_tot, v_tot, inst.beta))


def mixer_from_params(params: dict) -> Mixer:
    """The two-layer mixer with the saved hypernetwork outputs ``params`` (``w1, b1, w2, b2``)."""
    w1, b1, w2, b2 = (np.asarray(params[k]) for k in ("w1", "b1", "w2", "b2"))

    def mixer(local: np.ndarray, states: np.ndarray, tab: LocalTables) -> np.ndarray:
        return omapl.two_layer_mix(local, w1[states], b1[states], w2[states], b2[states])

    return mixer


def random_soft_game(rng: np.random.Generator, n_agents: int = 2, n_states: int = 3, n_actions: int = 2, horizon: int = 3):
    """Transitions of a random game and a random joint behaviour policy (not a product)."""
    game = random_markov_game(n_states, [n_actions] * n_agents, horizon, rng)
    shape = game.transitions.shape[:-1]
    ref = rng.dirichlet(np.ones(n_actions**n_agents), size=shape[:2]).reshape(shape)
    return game.transitions, ref


@dataclass(frozen=True)
class MixedCooperativeGame:
    """A cooperative game whose soft-optimal Q-function is linearly mixed from local tables.

    ``Q_tot[h,s,a] = sum_i w[h,s,i] q_i[h,s,a_i] + b_q[h,s]`` and the reward is ``T* Q_tot``, so the
    soft-optimal joint policy is ``mu exp((Q_tot - V*)/beta)`` by construction; ``v`` and ``b_v``
    are arbitrary local values (not the optimal ones), as during training.
    """

    P: np.ndarray
    mu: tuple[np.ndarray, ...]
    q: tuple[np.ndarray, ...]
    v: np.ndarray
    w: np.ndarray
    b_q: np.ndarray
    b_v: np.ndarray
    beta: float

    @property
    def mu_joint(self) -> np.ndarray:
        return joint_action_probs(self.mu)

    def q_tot(self) -> np.ndarray:
        m = len(self.q)
        H, S = self.w.shape[:2]
        total = np.broadcast_to(self.b_q.reshape(H, S, *[1] * m), (H, S, *[x.shape[-1] for x in self.q])).copy()
        for i, qi in enumerate(self.q):
            shape = [H, S] + [1] * m
            shape[2 + i] = qi.shape[-1]
            total = total + self.w[..., i].reshape(H, S, *[1] * m) * qi.reshape(shape)
        return total

    def v_tot(self) -> np.ndarray:
        return omapl.linear_mix(self.v, self.w, self.b_v)


def random_mixed_game(
    rng: np.random.Generator, n_agents: int = 2, n_states: int = 3, n_actions: int = 3, horizon: int = 2
) -> MixedCooperativeGame:
    game = random_markov_game(n_states, [n_actions] * n_agents, horizon, rng)
    mu = random_policy(game, rng)
    H, S = horizon, n_states
    q = tuple(rng.normal(scale=1.5, size=(H, S, n_actions)) for _ in range(n_agents))
    return MixedCooperativeGame(
        game.transitions,
        mu,
        q,
        rng.normal(size=(H, S, n_agents)),
        rng.uniform(0.3, 2.0, size=(H, S, n_agents)),
        rng.normal(size=(H, S)),
        rng.normal(size=(H, S)),
        float(rng.uniform(0.3, 2.0)),
    )
