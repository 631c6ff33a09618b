"""Environments: batched JaxMARL MPE (``deep.envs.mpe``) and the mpe2 parity harness
(``deep.envs.parity``). Both import jax and torch, so nothing is imported here."""
