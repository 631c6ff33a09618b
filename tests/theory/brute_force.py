"""Independent reference computations for tests: explicit enumeration of every trajectory.

Nothing here calls the dynamic programming of theory.values, so agreement is evidence.
"""

import itertools

import numpy as np


def trajectory_distribution(game, policy):
    """Every (probability, states[H+1], actions[H, m]) with positive probability."""
    H, m = game.horizon, game.n_players
    out = []
    joint_actions = list(itertools.product(*[range(a) for a in game.action_sizes]))

    def rec(h, s, prob, states, actions):
        if prob == 0.0:
            return
        if h == H:
            out.append((prob, np.array(states + [s]), np.array(actions).reshape(H, m)))
            return
        for a in joint_actions:
            pa = prob
            for i in range(m):
                pa *= policy[i][h, s, a[i]]
            if pa == 0.0:
                continue
            for s2 in range(game.n_states):
                p = game.transitions[(h, s, *a, s2)]
                if p > 0:
                    rec(h + 1, s2, pa * p, states + [s], actions + [list(a)])

    rec(0, game.initial_state, 1.0, [], [])
    return out


def expected_return(game, policy, reward):
    """E_pi[sum_h reward[h, s_h, a_h]] by enumeration; ``reward[H, S, A..]``."""
    total = 0.0
    for prob, states, actions in trajectory_distribution(game, policy):
        total += prob * sum(reward[(h, states[h], *actions[h])] for h in range(game.horizon))
    return total


def all_deterministic_policies(game, player):
    """Every deterministic Markov policy of one player as one-hot arrays [H, S, A_i]."""
    H, S, A = game.horizon, game.n_states, game.action_sizes[player]
    for choice in itertools.product(range(A), repeat=H * S):
        yield np.eye(A)[np.array(choice).reshape(H, S)]
