"""Registered checks of the papers' claims, run by `marlcov verify`."""
