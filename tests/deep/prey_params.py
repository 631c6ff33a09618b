"""A parameter file laid out as the MARLHF paper's Tag prey (``fixed_good_agent.msgpack``),
with random values: the official file is not part of the package."""

from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from flax.serialization import msgpack_serialize

from marlcov.deep.envs.tag_prey import HIDDEN, N_MOVES, PADDED_OBS_DIM


def flax_layers():
    return (nn.Dense(HIDDEN), nn.GRUCell(features=HIDDEN), nn.Dense(HIDDEN), nn.Dense(N_MOVES))


def flax_params(seed: int = 0) -> dict:
    """A parameter tree laid out as the official ``fixed_good_agent.msgpack`` (random values)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    d0, gru, d1, d2 = flax_layers()
    x = np.zeros((1, HIDDEN), np.float32)
    return {
        "params": {
            "Dense_0": d0.init(k[0], np.zeros((1, PADDED_OBS_DIM), np.float32))["params"],
            "ScannedRNN_0": {"GRUCell_1": gru.init(k[1], x, x)["params"]},
            "Dense_1": d1.init(k[2], x)["params"],
            "Dense_2": d2.init(k[3], x)["params"],
        }
    }


def write_prey_file(path: Path, seed: int = 0) -> Path:
    """Write ``flax_params(seed)`` to ``path`` as flax's msgpack."""
    path.write_bytes(msgpack_serialize(flax_params(seed)))
    return path
