"""Environments: batched JaxMARL MPE (``deep.envs.mpe``), SMAX (``deep.envs.smax``) and the mpe2
parity harness (``deep.envs.parity``). They import jax and torch, so nothing is imported here
until ``make_batch_env`` is called: the one factory of batched environments in ``deep``."""

from __future__ import annotations

from typing import Any


def make_batch_env(env_name: str, batch_size: int, device: Any = "cpu", **kwargs: Any):
    """``batch_size`` environments of ``env_name``: ``SMAXBatch`` for a SMAX map (``"smax_" +
    map``; ``kwargs`` may set only ``horizon``), else ``MPEBatch`` with ``kwargs`` (``horizon``,
    ``local_ratio``, ``num_agents``, ``prey_policy``). ``device`` receives the tensors they return."""
    if env_name.startswith("smax_"):
        from .smax import SMAXBatch

        unknown = sorted(set(kwargs) - {"horizon"})
        if unknown:
            raise ValueError(f"env_kwargs: a SMAX map takes only 'horizon', got {unknown} for {env_name!r}")
        return SMAXBatch(env_name, batch_size, device=device, **kwargs)
    from .mpe import ENV_NAMES, MPEBatch

    if env_name not in ENV_NAMES:
        raise ValueError(f"env_name: expected an MPE task {list(ENV_NAMES)} or a SMAX map ('smax_<map>'), got {env_name!r}")
    return MPEBatch(env_name, batch_size, device=device, **kwargs)


def spec_env_kwargs(spec) -> dict[str, Any]:
    """The ``make_batch_env`` keyword arguments that rebuild a dataset's environment from its
    ``DatasetSpec``: the horizon, and for MPE the ``local_ratio`` and ``num_agents`` it recorded
    and simple_tag_v3's prey when it was not the uniform one (its configuration string)."""
    kwargs: dict[str, Any] = {"horizon": int(spec.horizon)}
    if not spec.env_name.startswith("smax_"):
        cfg = dict(spec.env_config)
        kwargs.update({k: cfg[k] for k in ("local_ratio", "num_agents") if k in cfg})
        if cfg.get("prey_policy", "uniform") != "uniform":
            kwargs["prey_policy"] = cfg["prey_policy"]
    return kwargs
