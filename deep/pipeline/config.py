"""Pipeline configs (``deep/configs/<scale>.json`` merged with a user file), task names and the
validation of every section into its config dataclass (``deep.config_model``).

A pipeline config is a JSON or YAML mapping with one section per stage (``online_vdn``,
``collect``, ``label``, ``reward_model``, ``reference``, ``offline_vdn``, ``evaluate``,
``table3``), an ``envs`` section of per-environment overrides of those sections, ``seed_base``,
and free-text ``notes``. The trainers' sections are their trainers' config classes; the others
are the classes below, whose defaults are those the stages use for a missing key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlcov.deep.config_model import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    Check,
    ConfigModel,
    each,
    from_mapping,
    one_of,
    optional,
    read_config_file,
    setting,
)
from marlcov.deep.data.preferences import NORMALISATIONS

from .mixes import MIXES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCALES = ("small", "paper")
ENV_ALIASES = {"spread": "simple_spread_v3", "tag": "simple_tag_v3", "reference": "simple_reference_v3"}
ENV_LABELS = {"simple_spread_v3": "Spread-v3", "simple_tag_v3": "Tag-v3", "simple_reference_v3": "Reference-v3"}
TABLES = ("table2", "table3")
SECTIONS = ("env", "online_vdn", "collect", "label", "reward_model", "reference", "offline_vdn", "evaluate", "table3")
TOP_LEVEL = (*SECTIONS, "envs", "seed_base", "notes", "description")
#: The one JSON/YAML reader of ``deep.config_model``, under the name the command line imports.
read_mapping = read_config_file


#: A prey of simple_tag_v3 as ``deep.envs.tag_prey.prey_policy_from_spec`` reads it.
PREY_SPEC = Check(
    "'uniform' or 'marlhf:PATH' (PATH: the MARLHF repository's model/tag/fixed_good_agent.msgpack)",
    lambda v: v == "uniform" or (v.startswith("marlhf:") and len(v) > len("marlhf:")),
)


@dataclass(frozen=True)
class EnvironmentConfig(ConfigModel):
    """Section ``env``: the environment every stage plays (behaviour policies, collection,
    evaluation). ``prey``: simple_tag_v3's prey, ``"uniform"`` (uniform random) or
    ``"marlhf:PATH"``, the MARLHF paper's pretrained prey read from its parameter file; the
    other tasks have no prey and refuse anything but ``"uniform"``."""

    prey: str = setting("uniform", PREY_SPEC)


@dataclass(frozen=True)
class CollectConfig(ConfigModel):
    """Section ``collect``: trajectories per dataset, episodes played at a time, the
    exploration of the behaviour policies and the rookie level (None: the first)."""

    trajectories: int = setting(1024, POSITIVE)
    batch_size: int = setting(128, POSITIVE)
    epsilon: float = setting(0.0, UNIT_INTERVAL)
    rookie_steps: int | None = setting(None, optional(POSITIVE))


@dataclass(frozen=True)
class LabelConfig(ConfigModel):
    """Section ``label``: Bradley-Terry pairs per trajectory, the steepness of the label model
    and the normalisation of the returns it compares."""

    pairs_per_trajectory: int = setting(10, POSITIVE)
    steepness: float = setting(5.0, POSITIVE)
    normalisation: str = setting("min-max", one_of(NORMALISATIONS))


@dataclass(frozen=True)
class EvaluateConfig(ConfigModel):
    """Section ``evaluate``: test episodes per policy, played ``batch_size`` at a time."""

    episodes: int = setting(500, POSITIVE)
    batch_size: int = setting(250, POSITIVE)
    progress: bool = True


@dataclass(frozen=True)
class Table3Config(ConfigModel):
    """Section ``table3``: the dataset mix of Table 3 and its KL weights beta."""

    mix: str = setting("diversified", one_of(MIXES))
    betas: tuple[float, ...] = setting((0.0, 0.1, 1.0, 10.0, 100.0), each(NON_NEGATIVE))


def env_name(name: str) -> str:
    """The MPE task of ``name``: ``spread``, ``tag``, ``reference`` or a full name."""
    if name in ENV_ALIASES.values():
        return name
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    raise ValueError(f"--env: expected one of {sorted(ENV_ALIASES)} (or {sorted(ENV_ALIASES.values())}), got {name!r}")


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
    by ``source`` (a file or a mapping). Unknown sections or environments, a section that is
    not a mapping and a bad ``seed_base`` raise ValueError; the sections' fields are checked
    by ``stage_configs``."""
    if scale is not None and scale not in SCALES:
        raise ValueError(f"--scale: expected one of {list(SCALES)}, got {scale!r}")
    config = read_config_file(CONFIG_DIR / f"{scale}.json") if scale is not None else {}
    if source is not None:
        config = merge(config, source if isinstance(source, Mapping) else read_config_file(source))
    check_layout(config, SECTIONS, TOP_LEVEL, ENV_LABELS)
    return config


def check_layout(config: Mapping[str, Any], sections: tuple[str, ...], top_level: tuple[str, ...], envs: Mapping[str, Any] | None) -> None:
    """ValueError unless ``config`` has only ``top_level`` keys, each of ``sections`` and each
    environment override is a mapping of ``sections`` (environments from ``envs``, None: any),
    and ``seed_base`` is a non-negative integer."""
    unknown = sorted(set(config) - set(top_level))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected names from {sorted(top_level)}")
    overrides = config.get("envs", {})
    if not isinstance(overrides, Mapping):
        raise ValueError(f"config: envs: expected a mapping of environment names to sections, got {overrides!r}")
    if envs is not None:
        unknown_envs = sorted(set(overrides) - set(envs))
        if unknown_envs:
            raise ValueError(f"config: envs has unknown environment(s) {unknown_envs}; expected names from {sorted(envs)}")
    places = [(name, config[name]) for name in sections if name in config]
    for env, over in overrides.items():
        if not isinstance(over, Mapping):
            raise ValueError(f"config: envs.{env}: expected a mapping of sections, got {over!r}")
        bad = sorted(set(over) - set(sections))
        if bad:
            raise ValueError(f"config: envs.{env} has unknown section(s) {bad}; expected names from {sorted(sections)}")
        places += [(f"envs.{env}.{name}", value) for name, value in over.items()]
    for where, value in places:
        if not isinstance(value, Mapping):
            raise ValueError(f"config: {where}: expected a mapping of fields, got {value!r}")
    seed_base = config.get("seed_base", 0)
    if isinstance(seed_base, bool) or not isinstance(seed_base, int) or seed_base < 0:
        raise ValueError(f"config: seed_base: expected a non-negative integer, got {seed_base!r}")


def section(config: Mapping[str, Any], name: str, env: str | None = None) -> dict[str, Any]:
    """Section ``name`` of a pipeline config with the overrides of ``env`` applied."""
    out = dict(config.get(name, {}))
    if env is not None:
        out = merge(out, config.get("envs", {}).get(env, {}).get(name, {}))
    return out


def section_configs(config: Mapping[str, Any], env: str, classes: Mapping[str, type]) -> dict[str, Any]:
    """``name -> classes[name]`` instance of section ``name`` for ``env`` (ValueError naming
    the section, the field and what was expected)."""
    return {name: from_mapping(cls, section(config, name, env), f"config section {name!r}") for name, cls in classes.items()}


def stage_configs(config: Mapping[str, Any], env: str) -> dict[str, Any]:
    """Every section's config dataclass for ``env``, validated: the trainers'
    (``online_vdn``, ``reward_model``, ``reference``, ``offline_vdn``) and ``env``,
    ``collect``, ``label``, ``evaluate``, ``table3``."""
    from marlcov.deep.marlhf.online_vdn import OnlineVDNConfig
    from marlcov.deep.marlhf.reference import ReferenceConfig
    from marlcov.deep.marlhf.reward_model import RewardModelConfig
    from marlcov.deep.marlhf.vdn import OfflineVDNConfig

    classes = {
        "env": EnvironmentConfig,
        "online_vdn": OnlineVDNConfig,
        "reward_model": RewardModelConfig,
        "reference": ReferenceConfig,
        "offline_vdn": OfflineVDNConfig,
        "collect": CollectConfig,
        "label": LabelConfig,
        "evaluate": EvaluateConfig,
        "table3": Table3Config,
    }
    return section_configs(config, env, classes)


def env_kwargs(env: str, online_config, env_config: EnvironmentConfig | None = None) -> dict[str, Any]:
    """``MPEBatch`` keyword arguments matching the behaviour policies' environment: the
    horizon and ``local_ratio`` of ``online_config``, and simple_tag_v3's prey of
    ``env_config`` (as its configuration string, which the datasets record)."""
    kwargs: dict[str, Any] = {"horizon": int(online_config.horizon)}
    prey = "uniform" if env_config is None else env_config.prey
    if env != "simple_tag_v3":
        kwargs["local_ratio"] = float(online_config.local_ratio)
        if prey != "uniform":
            raise ValueError(f"config section 'env': prey: only simple_tag_v3 has a prey, got {prey!r} for {env}")
    elif prey != "uniform":
        kwargs["prey_policy"] = prey
    return kwargs
