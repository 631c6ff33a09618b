"""The prey of simple_tag_v3 as the MARLHF paper's code plays it, and the uniform alternative.

What the official code does (NataliaZhang/Jax-MARLHF at commit e56826b,
``utils/tag_2_cooperative_wrapper.py``, class ``CooperativeEnvWrapperLoaded``, used by every Tag
script: data collection, reward model, imitation, offline VDN, IQL, BCQ): the prey ``agent_0``
is removed from the controlled agents and played by a *fixed, pretrained recurrent actor*
whose flax parameters ship in that repository as ``model/tag/fixed_good_agent.msgpack``. The
actor is a dense layer (16 -> 128, ReLU), a GRU cell (128), a dense layer (128 -> 128, ReLU)
and a dense output layer (128 -> 5 logits); the prey's 14 observation numbers are zero-padded
at the end to the adversaries' 16; the recurrent state starts at zero in every episode and the
action is *sampled* from the categorical distribution of the logits at every step. It is not a
scripted or heuristic prey, and it is not uniform random.

``MarlhfPreyPolicy`` is that actor in torch, read from the official parameter file with
``load_marlhf_prey``. The parameter file is not part of this package (the repository that
holds it states no licence): a user downloads it and passes its path, e.g. through
``prey_policy_from_spec("marlhf:PATH")``. Sampling noise is drawn per environment from its
reset seed (``reset(seeds)``, which ``MPEBatch.reset`` calls), so an episode is a function of
its seed and the adversaries' actions alone, whatever batch it is played in.

The GRU cell of flax (``flax.linen.GRUCell``) computes, for input x and state h,
``r = sigmoid(W_ir x + b_ir + W_hr h)``, ``z = sigmoid(W_iz x + b_iz + W_hz h)``,
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and ``h' = (1 - z) n + z h``: torch's
``GRUCell`` with ``b_hr = b_hz = 0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

#: Observation numbers of the prey in simple_tag_v3, and the adversaries' count it is padded to.
PREY_OBS_DIM = 14
PADDED_OBS_DIM = 16
HIDDEN = 128
N_MOVES = 5
#: ``fold_in`` constant separating the prey's sampling stream from the environment's own keys.
PREY_STREAM = 0x7072_6579
SPEC_UNIFORM = "uniform"
SPEC_MARLHF = "marlhf"

#: ``parameter path -> shape`` of the official actor (flax names; dense kernels are ``[in, out]``).
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "params/Dense_0/kernel": (PADDED_OBS_DIM, HIDDEN),
    "params/Dense_0/bias": (HIDDEN,),
    "params/Dense_1/kernel": (HIDDEN, HIDDEN),
    "params/Dense_1/bias": (HIDDEN,),
    "params/Dense_2/kernel": (HIDDEN, N_MOVES),
    "params/Dense_2/bias": (N_MOVES,),
    **{f"params/ScannedRNN_0/GRUCell/{g}/kernel": (HIDDEN, HIDDEN) for g in ("ir", "iz", "in", "hr", "hz", "hn")},
    **{f"params/ScannedRNN_0/GRUCell/{g}/bias": (HIDDEN,) for g in ("ir", "iz", "in", "hn")},
}


def _flat(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flat(value, name))
        else:
            out[name] = np.asarray(value)
    return out


def _gru_scope(flat: Mapping[str, np.ndarray], where: str) -> str:
    """The one GRU cell's scope under ``ScannedRNN_0`` (flax numbers it ``GRUCell_0`` or
    ``GRUCell_1`` depending on how the carry was initialised)."""
    scopes = sorted({k.split("/")[2] for k in flat if k.startswith("params/ScannedRNN_0/")})
    cells = [s for s in scopes if s.startswith("GRUCell")]
    if len(cells) != 1:
        raise ValueError(f"{where}: field 'params/ScannedRNN_0': expected one GRUCell scope, got {scopes}")
    return cells[0]


def marlhf_prey_state_dict(params: Mapping, where: str = "parameters") -> dict[str, torch.Tensor]:
    """Torch state dict of ``MarlhfPreyNetwork`` from the flax parameter tree of the official
    actor (``{"params": {...}}``); raises ValueError naming the first missing or misshapen field."""
    flat = _flat(params)
    cell = _gru_scope(flat, where)
    flat = {k.replace(f"/{cell}/", "/GRUCell/"): v for k, v in flat.items()}
    for name, shape in PARAM_SHAPES.items():
        if name not in flat:
            raise ValueError(f"{where}: field {name!r} is missing; expected the MARLHF Tag prey actor (flax ActorRNN)")
        if flat[name].shape != shape:
            raise ValueError(f"{where}: field {name!r}: expected shape {list(shape)}, got {list(flat[name].shape)}")
    extra = sorted(set(flat) - set(PARAM_SHAPES))
    if extra:
        raise ValueError(f"{where}: unexpected field(s) {extra}; expected the MARLHF Tag prey actor (flax ActorRNN)")

    def t(name: str) -> torch.Tensor:
        return torch.tensor(np.asarray(flat[name], dtype=np.float32))

    gru = "params/ScannedRNN_0/GRUCell/"
    return {
        "embed.weight": t("params/Dense_0/kernel").T,
        "embed.bias": t("params/Dense_0/bias"),
        "gru.weight_ih": torch.cat([t(gru + f"{g}/kernel").T for g in ("ir", "iz", "in")]),
        "gru.bias_ih": torch.cat([t(gru + f"{g}/bias") for g in ("ir", "iz", "in")]),
        "gru.weight_hh": torch.cat([t(gru + f"{g}/kernel").T for g in ("hr", "hz", "hn")]),
        "gru.bias_hh": torch.cat([torch.zeros(2 * HIDDEN), t(gru + "hn/bias")]),
        "hidden.weight": t("params/Dense_1/kernel").T,
        "hidden.bias": t("params/Dense_1/bias"),
        "logits.weight": t("params/Dense_2/kernel").T,
        "logits.bias": t("params/Dense_2/bias"),
    }


class MarlhfPreyNetwork(torch.nn.Module):
    """Dense(16, 128) + ReLU, GRU cell (128), Dense(128, 128) + ReLU, Dense(128, 5): one step."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(PADDED_OBS_DIM, HIDDEN)
        self.gru = torch.nn.GRUCell(HIDDEN, HIDDEN)
        self.hidden = torch.nn.Linear(HIDDEN, HIDDEN)
        self.logits = torch.nn.Linear(HIDDEN, N_MOVES)

    def forward(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, 5], h' [B, 128])`` from padded observations ``[B, 16]`` and state ``h``."""
        h = self.gru(torch.relu(self.embed(obs)), h)
        return self.logits(torch.relu(self.hidden(h))), h


def categorical_from_uniform(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from ``softmax(logits)`` ``[..., K]`` with uniforms ``u`` in [0, 1)
    ``[...]``: the first action whose cumulative probability exceeds ``u``."""
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(dim=-1)
    # Dividing by the total makes the last cumulative probability exactly 1, so u < 1 never
    # falls past it onto an action of probability zero.
    cdf = cdf / cdf[..., -1:]
    below = (cdf <= u.double().unsqueeze(-1)).sum(dim=-1)
    return below


@jax.jit
def _prey_uniforms(keys: jax.Array, t: jax.Array) -> jax.Array:
    return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, t)))(keys)


@jax.jit
def _prey_keys(seeds: jax.Array) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), PREY_STREAM))(seeds)


class MarlhfPreyPolicy:
    """The official Tag prey as a policy ``(obs [B, 1, 14], avail, t) -> actions [B, 1]``.

    Keeps the recurrent state of the B episodes; ``reset(seeds)`` (called by ``MPEBatch.reset``)
    zeroes it and keys each episode's sampling noise by its seed. A call at ``t = 0`` also
    zeroes the state, so the policy is usable by callers that never call ``reset`` (noise then
    comes from ``seed``).
    """

    name = "marlhf_pretrained"

    def __init__(self, params: Mapping, *, seed: int = 0, device: str | torch.device = "cpu", where: str = "parameters") -> None:
        self.device = torch.device(device)
        self.network = MarlhfPreyNetwork()
        self.network.load_state_dict(marlhf_prey_state_dict(params, where))
        self.network.to(self.device).eval().requires_grad_(False)
        self.seed = int(seed)
        self._keys: jax.Array | None = None
        self._h: torch.Tensor | None = None

    def reset(self, seeds: Sequence[int] | np.ndarray) -> None:
        """Start new episodes with reset seeds ``[B]``."""
        self._keys = _prey_keys(jnp.asarray(np.asarray(seeds).astype(np.uint32)))
        self._h = None

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        B, k, d = obs.shape
        if k != 1 or d != PREY_OBS_DIM:
            raise ValueError(f"prey obs: expected shape [B, 1, {PREY_OBS_DIM}], got {list(obs.shape)}")
        if self._keys is None or self._keys.shape[0] != B:
            self.reset(self.seed + np.arange(B))
        if t == 0 or self._h is None:
            self._h = torch.zeros((B, HIDDEN), device=self.device)
        x = torch.nn.functional.pad(obs[:, 0].to(self.device, torch.float32), (0, PADDED_OBS_DIM - PREY_OBS_DIM))
        with torch.no_grad():
            logits, self._h = self.network(x, self._h)
        logits = logits.masked_fill(~avail[:, 0].to(self.device), float("-inf"))
        u = torch.from_dlpack(_prey_uniforms(self._keys, jnp.uint32(t))).to(self.device)
        return categorical_from_uniform(logits, u)[:, None]


def read_flax_msgpack(path: str | os.PathLike) -> dict:
    """The parameter tree of a flax ``serialization.to_bytes`` file; ValueError naming the file
    when it is not one."""
    from flax.serialization import msgpack_restore

    path = Path(path)
    try:
        tree = msgpack_restore(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"{path}: not a flax msgpack parameter file ({type(exc).__name__}: {exc})") from None
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path}: expected a flax parameter tree (a mapping), got {type(tree).__name__}")
    return dict(tree)


def load_marlhf_prey(path: str | os.PathLike, *, seed: int = 0, device: str | torch.device = "cpu") -> MarlhfPreyPolicy:
    """The official MARLHF Tag prey from its parameter file ``fixed_good_agent.msgpack``."""
    return MarlhfPreyPolicy(read_flax_msgpack(path), seed=seed, device=device, where=str(path))


def prey_policy_from_spec(spec: str | None, *, seed: int = 0, device: str | torch.device = "cpu") -> MarlhfPreyPolicy | None:
    """The prey named by a configuration string: ``"uniform"`` (or None) gives None, which
    ``MPEBatch`` plays as the uniform random prey; ``"marlhf:PATH"`` the official prey read
    from PATH."""
    if spec is None or spec == SPEC_UNIFORM:
        return None
    kind, _, path = str(spec).partition(":")
    if kind == SPEC_MARLHF and path:
        return load_marlhf_prey(path, seed=seed, device=device)
    raise ValueError(
        f"prey_policy: expected {SPEC_UNIFORM!r} or '{SPEC_MARLHF}:PATH' (PATH: the MARLHF repository's "
        f"model/tag/fixed_good_agent.msgpack), got {spec!r}"
    )
