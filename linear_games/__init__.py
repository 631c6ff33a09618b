"""Solvers and estimators on finite and linear games: matrix games, reward estimation, SBSM, constructions."""
