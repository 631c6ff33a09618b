"""Pipeline configs (``deep/configs/<scale>.json`` merged with a user file), task names and the
validation of every stage's section into its trainer's config dataclass.

A pipeline config is a JSON or YAML mapping with one section per stage (``online_vdn``,
``collect``, ``label``, ``reward_model``, ``reference``, ``offline_vdn``, ``evaluate``,
``table3``), an ``envs`` section of per-environment overrides of those sections, ``seed_base``,
and free-text ``notes``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCALES = ("small", "paper")
ENV_ALIASES = {"spread": "simple_spread_v3", "tag": "simple_tag_v3", "reference": "simple_reference_v3"}
ENV_LABELS = {"simple_spread_v3": "Spread-v3", "simple_tag_v3": "Tag-v3", "simple_reference_v3": "Reference-v3"}
TABLES = ("table2", "table3")
SECTIONS = ("online_vdn", "collect", "label", "reward_model", "reference", "offline_vdn", "evaluate", "table3")
TOP_LEVEL = (*SECTIONS, "envs", "seed_base", "notes", "description")


def env_name(name: str) -> str:
    """The MPE task of ``name``: ``spread``, ``tag``, ``reference`` or a full name."""
    if name in ENV_ALIASES.values():
        return name
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    raise ValueError(f"--env: expected one of {sorted(ENV_ALIASES)} (or {sorted(ENV_ALIASES.values())}), got {name!r}")


def read_mapping(source: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a JSON or YAML config file (ValueError naming the file otherwise)."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    elif path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    else:
        raise ValueError(f"{path}: expected a .json, .yaml or .yml config file")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return values


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursively for nested mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_pipeline_config(scale: str | None = "small", source: str | os.PathLike | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline config of ``scale`` (``deep/configs/<scale>.json``; None: empty) updated
    by ``source`` (a file or a mapping). Unknown top-level keys raise ValueError."""
    if scale is not None and scale not in SCALES:
        raise ValueError(f"--scale: expected one of {list(SCALES)}, got {scale!r}")
    config = read_mapping(CONFIG_DIR / f"{scale}.json") if scale is not None else {}
    if source is not None:
        config = merge(config, source if isinstance(source, Mapping) else read_mapping(source))
    unknown = sorted(set(config) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected names from {sorted(TOP_LEVEL)}")
    unknown_envs = sorted(set(config.get("envs", {})) - set(ENV_LABELS))
    if unknown_envs:
        raise ValueError(f"config: envs has unknown environment(s) {unknown_envs}; expected names from {sorted(ENV_LABELS)}")
    return config


def section(config: Mapping[str, Any], name: str, env: str | None = None) -> dict[str, Any]:
    """Section ``name`` of a pipeline config with the overrides of ``env`` applied."""
    out = dict(config.get(name, {}))
    if env is not None:
        out = merge(out, config.get("envs", {}).get(env, {}).get(name, {}))
    return out


def stage_configs(config: Mapping[str, Any], env: str) -> dict[str, Any]:
    """The trainers' config dataclasses of ``env``, validated (ValueError naming the field)."""
    from marlcov.deep.common import load_config
    from marlcov.deep.marlhf.online_vdn import OnlineVDNConfig
    from marlcov.deep.marlhf.reference import ReferenceConfig
    from marlcov.deep.marlhf.reward_model import RewardModelConfig
    from marlcov.deep.marlhf.vdn import OfflineVDNConfig

    out = {}
    for name, cls in (
        ("online_vdn", OnlineVDNConfig),
        ("reward_model", RewardModelConfig),
        ("reference", ReferenceConfig),
        ("offline_vdn", OfflineVDNConfig),
    ):
        try:
            out[name] = load_config(cls, section(config, name, env))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config section {name!r}: {exc}") from None
    return out


def env_kwargs(env: str, online_config) -> dict[str, Any]:
    """``MPEBatch`` keyword arguments matching the behaviour policies' environment."""
    kwargs: dict[str, Any] = {"horizon": int(online_config.horizon)}
    if env != "simple_tag_v3":
        kwargs["local_ratio"] = float(online_config.local_ratio)
    return kwargs
