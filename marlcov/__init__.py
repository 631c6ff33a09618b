"""marlcov: theory, coverage diagnostics and verification for offline multi-agent RL from preferences."""

__version__ = "0.1.0"
