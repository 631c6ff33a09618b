"""Exact objects of offline multi-agent RL from preferences: games, policies, values, Nash gap,
Bradley-Terry preferences and coverage measures. Imports nothing else of marlcov."""
