"""The one config model of ``deep`` (``deep.config_model``): every config class validates its
fields through the same validator, sections and files are read by ``from_mapping`` and
``read_config_file``, and the ``config.json`` of a run folder made before it still loads."""

import dataclasses
import json
import math
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.deep.algos.mamql import MAMQLConfig
from marlcov.deep.algos.omapl import OMAPLConfig
from marlcov.deep.algos.omiga import OMIGAConfig
from marlcov.deep.algos.score_decomposition import ScoreDecompositionConfig
from marlcov.deep.compare import CompareEvaluateConfig, load_compare_config, trainer_configs
from marlcov.deep.config_model import (
    CHECKS,
    NON_NEGATIVE,
    POSITIVE,
    ConfigModel,
    config_values,
    from_mapping,
    load_config,
    read_config_file,
)
from marlcov.deep.marlhf.online_vdn import OnlineVDNConfig
from marlcov.deep.marlhf.reference import ReferenceConfig
from marlcov.deep.marlhf.reward_model import RewardModelConfig
from marlcov.deep.marlhf.vdn import OfflineVDNConfig
from marlcov.deep.pipeline import load_pipeline_config, stage_configs
from marlcov.deep.pipeline.config import CollectConfig, EvaluateConfig, LabelConfig, Table3Config

pytestmark = pytest.mark.deep

TRAINER_CLASSES = (
    OMAPLConfig,
    ScoreDecompositionConfig,
    MAMQLConfig,
    OMIGAConfig,
    ReferenceConfig,
    RewardModelConfig,
    OfflineVDNConfig,
    OnlineVDNConfig,
)
CLASSES = (*TRAINER_CLASSES, CollectConfig, LabelConfig, EvaluateConfig, Table3Config, CompareEvaluateConfig)
ENV = "simple_spread_v3"


def _fields_with(check):
    """``(class, field name)`` of every field of ``CLASSES`` that carries ``check``."""
    return [(cls, f.name) for cls in CLASSES for f in dataclasses.fields(cls) if check in f.metadata.get(CHECKS, ())]


def _fields_of_type(tp):
    return [(cls, name) for cls in CLASSES for name, hint in typing.get_type_hints(cls).items() if hint is tp]


def test_every_config_class_uses_the_one_model_and_has_no_validator_of_its_own():
    for cls in CLASSES:
        assert issubclass(cls, ConfigModel) and dataclasses.is_dataclass(cls), cls
        assert cls.__post_init__ is ConfigModel.__post_init__, cls
        assert cls.__dataclass_params__.frozen, cls


def test_defaults_are_valid_and_round_trip_through_plain_json():
    for cls in CLASSES:
        default = cls()
        plain = json.loads(json.dumps(config_values(default)))
        assert from_mapping(cls, plain) == default, cls


# Written by hand in the shape the previous code saved (``config_dict``: tuples as lists,
# floats as written), as in a run folder's ``config.json``; the online VDN one predates the
# field ``expert_checks``, which takes its default.
OLD_RUN_FOLDERS = {
    "reward_model/config.json": (
        RewardModelConfig,
        {
            "config": {
                "model": "gru",
                "hidden": 64,
                "layers": 4,
                "alpha": 1.0,
                "variance": "none",
                "alpha_warmup_epochs": 0,
                "epochs": 5,
                "batch_size": 256,
                "lr": 0.001,
                "weight_decay": 0.0,
                "val_fraction": 0.1,
                "labels": "redrawn",
                "checkpoint_every": 500,
                "progress": False,
            },
            "seed": 0,
            "dataset": "/runs/spread/data/diversified.h5",
        },
        {"model": "gru", "hidden": 64, "variance": "none", "epochs": 5, "progress": False},
    ),
    "vdn/config.json": (
        OfflineVDNConfig,
        {
            "config": {
                "beta": 10.0,
                "gamma": 0.9,
                "hidden": 64,
                "layers": 3,
                "lr": 0.001,
                "batch_size": 64,
                "updates": 3000,
                "target_update": 3,
                "double_q": True,
                "kl_clip": [-10.0, 1.0],
                "grad_clip": 10.0,
                "checkpoint_every": 1000,
                "progress": True,
            },
            "seed": 1,
        },
        {"beta": 10.0, "hidden": 64, "updates": 3000, "kl_clip": (-10.0, 1.0)},
    ),
    "policies/config.json": (
        OnlineVDNConfig,
        {
            "config": {
                "n_envs": 64,
                "total_env_steps": 300000,
                "rookie_steps": [32000],
                "hidden": 64,
                "layers": 3,
                "lr": 0.0005,
                "gamma": 0.99,
                "buffer_episodes": 3000,
                "batch_episodes": 32,
                "updates_per_iteration": 32,
                "target_update": 200,
                "epsilon_start": 1.0,
                "epsilon_end": 0.05,
                "epsilon_decay_steps": 100000,
                "learning_starts": 3200,
                "grad_clip": 10.0,
                "horizon": 25,
                "local_ratio": 0.5,
                "eval_episodes": 128,
                "rookie_checks": 50,
                "checkpoint_every": 5,
                "checkpoint_seconds": 60.0,
                "progress": True,
            },
        },
        {"total_env_steps": 300000, "rookie_steps": (32000,), "epsilon_decay_steps": 100000, "eval_episodes": 128},
    ),
    "mamql/config.json": (
        MAMQLConfig,
        {
            "config": {
                "lam": 1,
                "gamma": 0.99,
                "reg_coef": 0.5,
                "policy_iterations": 2,
                "hidden": 128,
                "layers": 3,
                "lr": 0.0003,
                "reward_lr": 0.001,
                "batch_size": 32,
                "updates": 1500,
                "grad_clip": 10,
                "demo_field": "agent_policy",
                "demo_tags": ["expert"],
                "checkpoint_every": 250,
                "eval_episodes": 0,
                "eval_greedy": True,
            },
        },
        {"updates": 1500, "checkpoint_every": 250},
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_RUN_FOLDERS))
def test_config_json_of_an_old_run_folder_loads(tmp_path, name):
    cls, saved, changed = OLD_RUN_FOLDERS[name]
    path = tmp_path / name
    path.parent.mkdir()
    path.write_text(json.dumps(saved, indent=2))
    loaded = from_mapping(cls, read_config_file(path)["config"], str(path))
    assert loaded == cls(**changed)
    plain = config_values(loaded)
    assert {k: plain[k] for k in saved["config"]} == saved["config"]


def test_an_old_config_with_a_field_that_no_longer_exists_is_refused_naming_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": {"hidden": 64, "normalise_rewards": True}}))
    with pytest.raises(ValueError, match=r"config\.json: unknown field\(s\) \['normalise_rewards'\]; expected names from \['alpha'"):
        from_mapping(RewardModelConfig, read_config_file(path)["config"], str(path))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_fields_with(POSITIVE)), st.one_of(st.integers(-(10**6), 0), st.sampled_from([0.0, -1.5, math.nan, -math.inf])))
def test_a_value_that_must_be_positive_is_refused_naming_section_and_field(target, value):
    cls, name = target
    with pytest.raises(ValueError, match=rf"^sec: {name}: expected "):
        from_mapping(cls, {name: value}, "sec")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_fields_with(NON_NEGATIVE)), st.integers(-(10**6), -1))
def test_a_negative_value_where_non_negative_is_expected_is_refused(target, value):
    cls, name = target
    with pytest.raises(ValueError, match=rf"^sec: {name}: expected a finite number >= 0, got {value}(\.0)?$"):
        from_mapping(cls, {name: value}, "sec")


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(_fields_of_type(int)),
    st.one_of(st.text(max_size=4), st.booleans(), st.floats(0.1, 0.9), st.lists(st.integers(), max_size=2)),
)
def test_a_non_integer_where_an_integer_is_expected_is_refused(target, value):
    cls, name = target
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: {name}: expected an integer, got "):
        from_mapping(cls, {name: value})


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_fields_of_type(float)), st.one_of(st.text(max_size=4), st.booleans(), st.none()))
def test_a_non_number_where_a_number_is_expected_is_refused(target, value):
    cls, name = target
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: {name}: expected a number, got "):
        from_mapping(cls, {name: value})


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_fields_of_type(int)), st.integers(2, 10**4))
def test_whole_numbers_become_integers_and_integers_become_floats(target, value):
    cls, name = target
    if cls is OnlineVDNConfig and name == "total_env_steps":
        value += OnlineVDNConfig().rookie_steps[0]
    made = from_mapping(cls, {name: float(value)})
    assert type(getattr(made, name)) is int and getattr(made, name) == value
    for fcls, fname in _fields_of_type(float):
        default = getattr(fcls(), fname)
        if fcls is cls and default.is_integer():
            made = from_mapping(cls, {fname: int(default)})
            assert type(getattr(made, fname)) is float and getattr(made, fname) == default


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(CLASSES), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_an_unknown_key_is_refused_naming_it(cls, key):
    if key in {f.name for f in dataclasses.fields(cls)}:
        return
    with pytest.raises(ValueError, match=rf"^sec: unknown field\(s\) \['{key}'\]"):
        from_mapping(cls, {key: 1}, "sec")


@settings(max_examples=30, deadline=None)
@given(st.floats(-100, 100), st.floats(-100, 100))
def test_kl_clip_is_a_finite_ordered_pair_or_null(low, high):
    if low <= high:
        assert from_mapping(OfflineVDNConfig, {"kl_clip": [low, high]}).kl_clip == (low, high)
    else:
        with pytest.raises(ValueError, match=r"kl_clip: expected null or \[low, high\] with finite low <= high"):
            from_mapping(OfflineVDNConfig, {"kl_clip": [low, high]})
    assert from_mapping(OfflineVDNConfig, {"kl_clip": None}).kl_clip is None
    with pytest.raises(ValueError, match="kl_clip: expected a list of 2 numbers or null"):
        from_mapping(OfflineVDNConfig, {"kl_clip": [low]})


def test_rules_between_fields_go_through_the_same_validator():
    cases = [
        (ReferenceConfig, {"model": "gru", "layers": 1}, r"model, layers: expected layers >= 2 for a GRU reference"),
        (RewardModelConfig, {"model": "mlp", "layers": 1}, r"model, layers: expected layers >= 2 .* unless model is 'linear'"),
        (ScoreDecompositionConfig, {"beta_min": 2.0, "beta_max": 2.0}, r"beta_min, beta_max: expected beta_min < beta_max, got 2.0, 2.0"),
        (OnlineVDNConfig, {"total_env_steps": 100, "rookie_steps": [100]}, r"rookie_steps, total_env_steps: expected rookie counts below"),
    ]
    for cls, values, message in cases:
        with pytest.raises(ValueError, match=message):
            from_mapping(cls, values)
    assert from_mapping(ReferenceConfig, {"model": "mlp", "layers": 1}).layers == 1
    assert from_mapping(RewardModelConfig, {"model": "linear", "layers": 1}).layers == 1


def test_choices_and_intervals_name_what_was_expected():
    cases = [
        (OMAPLConfig, {"value_form": "joint"}, r"value_form: expected one of \['global', 'local'\], got 'joint'"),
        (OMIGAConfig, {"tau": 0.0}, r"tau: expected a number in \(0, 1\], got 0.0"),
        (ReferenceConfig, {"val_fraction": 1.0}, r"val_fraction: expected a number in \[0, 1\), got 1.0"),
        (MAMQLConfig, {"gamma": 1.5}, r"gamma: expected a number in \[0, 1\], got 1.5"),
        (MAMQLConfig, {"demo_tags": "expert"}, r"demo_tags: expected a list of strings, got 'expert'"),
        (OfflineVDNConfig, {"double_q": 1}, r"double_q: expected true or false, got 1"),
        (OnlineVDNConfig, {"rookie_steps": [0]}, r"rookie_steps: expected entries each a finite number > 0, got \[0\]"),
        (OfflineVDNConfig, {"lr": "1e-3"}, r"lr: expected a number, got '1e-3' \(a number written as text"),
    ]
    for cls, values, message in cases:
        with pytest.raises(ValueError, match=message):
            from_mapping(cls, values)
    with pytest.raises(ValueError, match="value_form"):
        OMAPLConfig(value_form="joint")


def test_read_config_file_reads_json_and_yaml_and_names_the_file_otherwise(tmp_path):
    (tmp_path / "a.json").write_text('{"lr": 0.5, "steps": [3, 4]}')
    (tmp_path / "a.yaml").write_text("lr: 1.0e-3\nname: y\n")
    (tmp_path / "empty.yml").write_text("")
    assert read_config_file(tmp_path / "a.json") == {"lr": 0.5, "steps": [3, 4]}
    assert read_config_file(tmp_path / "a.yaml") == {"lr": 1e-3, "name": "y"}
    assert read_config_file(tmp_path / "empty.yml") == {}
    (tmp_path / "bad.json").write_text("{lr: }")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    (tmp_path / "c.txt").write_text("{}")
    for name, message in [
        ("bad.json", "not valid JSON"),
        ("list.json", "expected a mapping at the top level, got list"),
        ("bad.yaml", "not valid YAML"),
        ("c.txt", r"expected a \.json, \.yaml or \.yml config file"),
        ("missing.json", "config file not found"),
    ]:
        with pytest.raises(ValueError, match=rf"{name}: {message}"):
            read_config_file(tmp_path / name)


def test_load_config_takes_an_instance_a_mapping_a_file_or_nothing_with_overrides(tmp_path):
    (tmp_path / "r.yaml").write_text("hidden: 32\nlayers: 2\n")
    assert load_config(ReferenceConfig, tmp_path / "r.yaml") == ReferenceConfig(hidden=32, layers=2)
    assert load_config(ReferenceConfig, {"hidden": 8}, epochs=3) == ReferenceConfig(hidden=8, epochs=3)
    assert load_config(ReferenceConfig) == ReferenceConfig()
    base = ReferenceConfig(hidden=16)
    assert load_config(ReferenceConfig, base) is base
    assert load_config(ReferenceConfig, base, lr=0.5) == ReferenceConfig(hidden=16, lr=0.5)
    with pytest.raises(ValueError, match=r"r\.yaml: epochs: expected a finite number > 0, got 0"):
        load_config(ReferenceConfig, tmp_path / "r.yaml", epochs=0)


def test_pipeline_sections_are_read_into_their_classes_and_errors_name_the_section():
    configs = stage_configs(load_pipeline_config("small"), ENV)
    assert configs["collect"] == CollectConfig(trajectories=3072, batch_size=256, epsilon=0.0)
    assert configs["label"] == LabelConfig(pairs_per_trajectory=10, steepness=5.0, normalisation="min-max")
    assert configs["table3"].betas == (0.0, 0.1, 1.0, 10.0, 100.0)
    assert configs["evaluate"] == EvaluateConfig(episodes=500, batch_size=250)
    bad = [
        ({"collect": {"trajectories": 0}}, r"config section 'collect': trajectories: expected a finite number > 0, got 0"),
        ({"label": {"normalisation": "z"}}, r"config section 'label': normalisation: expected one of \['min-max', 'standardised'\]"),
        ({"table3": {"betas": [1.0, -1.0]}}, r"config section 'table3': betas: expected entries each a finite number >= 0"),
        ({"envs": {ENV: {"reward_model": {"lr": "fast"}}}}, r"config section 'reward_model': lr: expected a number, got 'fast'"),
    ]
    for override, message in bad:
        with pytest.raises(ValueError, match=message):
            stage_configs(load_pipeline_config("small", override), ENV)


def test_pipeline_layout_errors_name_the_place():
    bad = [
        ({"envs": {ENV: {"rewards": {}}}}, rf"config: envs\.{ENV} has unknown section\(s\) \['rewards'\]"),
        ({"collect": [1, 2]}, r"config: collect: expected a mapping of fields, got \[1, 2\]"),
        ({"envs": {ENV: {"label": 3}}}, rf"config: envs\.{ENV}\.label: expected a mapping of fields, got 3"),
        ({"envs": {ENV: 3}}, rf"config: envs\.{ENV}: expected a mapping of sections"),
        ({"seed_base": -1}, r"config: seed_base: expected a non-negative integer, got -1"),
        ({"seed_base": 1.5}, r"config: seed_base: expected a non-negative integer, got 1\.5"),
    ]
    for override, message in bad:
        with pytest.raises(ValueError, match=message):
            load_pipeline_config("small", override)


def test_compare_evaluate_section_defaults_its_batch_to_the_episodes_and_refuses_unknown_keys():
    cfg = load_compare_config(None, {"evaluate": {"episodes": 7}})
    assert trainer_configs(cfg, ENV)["evaluate"] == {"episodes": 7, "batch_size": 7}
    with pytest.raises(ValueError, match=r"config section 'evaluate': unknown field\(s\) \['episode'\]"):
        trainer_configs(load_compare_config(None, {"evaluate": {"episode": 7}}), ENV)
    with pytest.raises(ValueError, match=r"config section 'evaluate': batch_size: expected null or a finite number > 0, got 0"):
        trainer_configs(load_compare_config(None, {"evaluate": {"batch_size": 0}}), ENV)
    with pytest.raises(ValueError, match=r"config section 'mamql': demo_field: expected one of"):
        trainer_configs(load_compare_config("small", {"envs": {"smax_3m": {"mamql": {"demo_field": "x"}}}}), "smax_3m")
