"""Independent value of a small two-player zero-sum Markov game: one sequence-form LP.

The finite-horizon game is unrolled into its game tree (a node is a history
``s_0, a_0, s_1, ..., s_h``; both players observe it, and move simultaneously), and the value is
the optimum of the sequence-form LP of Koller, Megiddo and von Stengel (1996) for the
minimising player 1:

    min_{y, p} p_root   s.t.   E^T p - A y >= 0,   F y = f,   y >= 0,

where ``E x = e`` and ``F y = f`` are the realization-plan constraints of the two players and
``A[sigma_0, sigma_1]`` the chance-weighted reward of player 0 collected where the two sequences
meet. No backward induction, no stage games: a test-only cross-check of
``markov_equilibrium``. The tree grows like ``(S A_0 A_1)^H``; keep the games tiny.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix


def sequence_form_value(transitions: np.ndarray, reward0: np.ndarray, s1: int) -> float:
    """Value for player 0 (the maximiser) of rewards ``reward0[h, s, a0, a1]``."""
    H, S, A0, A1 = transitions.shape[:4]
    n0 = n1 = 1  # sequence 0 is the empty sequence of each player
    E, F = [{0: 1.0}], [{0: 1.0}]  # realization-plan rows; the first: the empty sequence = 1
    payoff: dict[tuple[int, int], float] = {}
    frontier = [(s1, 1.0, 0, 0)]
    for h in range(H):
        nxt = []
        for s, prob, p0, p1 in frontier:
            b0, b1 = n0, n1
            n0, n1 = n0 + A0, n1 + A1
            E.append({p0: -1.0, **{b0 + a: 1.0 for a in range(A0)}})
            F.append({p1: -1.0, **{b1 + a: 1.0 for a in range(A1)}})
            for a0 in range(A0):
                for a1 in range(A1):
                    key = (b0 + a0, b1 + a1)
                    payoff[key] = payoff.get(key, 0.0) + prob * reward0[h, s, a0, a1]
                    for t in np.flatnonzero(transitions[h, s, a0, a1] > 0):
                        nxt.append((int(t), prob * transitions[h, s, a0, a1, t], b0 + a0, b1 + a1))
        frontier = nxt

    def sparse(rows, n_cols):
        r, c, v = zip(*[(i, j, x) for i, row in enumerate(rows) for j, x in row.items()])
        return coo_matrix((v, (r, c)), shape=(len(rows), n_cols)).toarray()

    Em, Fm = sparse(E, n0), sparse(F, n1)
    Am = np.zeros((n0, n1))
    for (i, j), v in payoff.items():
        Am[i, j] = v
    k = len(E)
    # variables: y (n1, >= 0), p (k, free); minimise p[0]
    c = np.concatenate([np.zeros(n1), np.eye(k)[0]])
    A_ub = np.hstack([Am, -Em.T])  # A y - E^T p <= 0
    A_eq = np.hstack([Fm, np.zeros((len(F), k))])
    b_eq = np.eye(len(F))[0]
    bounds = [(0, None)] * n1 + [(None, None)] * k
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(n0), A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    assert res.status == 0, res.message
    return float(res.fun)
