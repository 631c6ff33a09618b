"""marlcov.deep.checkpoints: one checkpoint format, its loader, and the files written before it."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from marlcov.deep.algos import LinearMixer, LocalNet, save_model
from marlcov.deep.algos import load_policy as load_offline_policy
from marlcov.deep.algos.mamql import JointCritic, MAMQLConfig, load_mamql, save_mamql
from marlcov.deep.algos.score_decomposition import (
    Actor,
    Denoiser,
    ScoreDecompositionConfig,
    load_score_decomposition,
    save_score_decomposition,
)
from marlcov.deep.checkpoints import (
    CHECKPOINT_FORMAT,
    KINDS,
    LEGACY_FORMATS,
    UnreadableCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from marlcov.deep.common import TrainingState
from marlcov.deep.config_model import config_values
from marlcov.deep.data.schema import DatasetSpec
from marlcov.deep.diagnostics import load_policy as load_reference_policy
from marlcov.deep.marlhf.reference import PolicyNet, ReferenceConfig, load_reference, save_reference
from marlcov.deep.marlhf.reward_model import RewardModelConfig, build_reward_net, load_reward_model, save_reward_model
from marlcov.deep.marlhf.vdn import AgentQNet, load_policy, save_policy

pytestmark = pytest.mark.deep

SPEC = DatasetSpec("simple_spread_v3", {"horizon": 3}, ("agent_0", "agent_1"), obs_dim=4, state_dim=6, n_actions=3, horizon=3)
SIZES = {"env_name": SPEC.env_name, "obs_dim": SPEC.obs_dim, "n_actions": SPEC.n_actions, "n_agents": SPEC.n_agents}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def offline_nets():
    torch.manual_seed(0)
    policy = LocalNet(SPEC.obs_dim, SPEC.n_agents, 8, 2, SPEC.n_actions)
    extra = {"q": LocalNet(SPEC.obs_dim, SPEC.n_agents, 8, 2, SPEC.n_actions), "mixer": LinearMixer(SPEC.state_dim, SPEC.n_agents, 4)}
    return policy, extra


def score_nets():
    torch.manual_seed(0)
    return Actor(4, 2, 2, hidden=8, layers=2), Denoiser(4, 2, 2, steps=5, hidden=8, layers=2)


def train_state(path, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    return net, gen, TrainingState(path, 1, {"net": net, "opt": opt}, {"batches": gen}, {"seed": seed, "lr": 0.1})


# ----------------------------------------------------------------------------- round trips
def test_every_kind_round_trips_through_its_loader(tmp_path):
    obs = torch.randn(5, 2, 4)
    avail = torch.ones(5, 2, 3, dtype=torch.bool)

    torch.manual_seed(0)
    q = AgentQNet(4, 3, 2, hidden=8, layers=2)
    path = save_policy(tmp_path / "q.pt", q, "simple_spread_v3", {"beta": 1.0}, {"trainer": "online-vdn", "level": "expert"})
    policy = load_policy(path, env_name="simple_spread_v3")
    assert same_weights(policy.net, q) and policy.meta["level"] == "expert" and policy.meta["config"] == {"beta": 1.0}
    assert torch.equal(policy(obs, avail, 0), q(obs).argmax(-1))

    net, extra = offline_nets()
    path = save_model(tmp_path / "model.pt", SPEC, {"hidden": 8, "layers": 2}, net, extra, "omapl")
    back, spec, config = load_offline_policy(path)
    assert same_weights(back, net) and spec == SPEC and config == {"hidden": 8, "layers": 2}

    cfg = MAMQLConfig(hidden=8, layers=2)
    critic, reward = JointCritic(4, 3, 2, 8, 2), JointCritic(4, 3, 2, 8, 2)
    path = save_mamql(tmp_path / "mamql.pt", critic, reward, SPEC, cfg, {"n_demonstrations": 3})
    boltzmann, reward_back = load_mamql(path)
    assert same_weights(boltzmann.critic, critic) and same_weights(reward_back, reward)

    actor, denoiser = score_nets()
    cfg = ScoreDecompositionConfig()
    path = save_score_decomposition(tmp_path / "sd.pt", actor, denoiser, "simple_spread_v3", cfg, {"updates": 2})
    actor_policy, denoiser_back, cfg_back = load_score_decomposition(path)
    assert same_weights(actor_policy.actor, actor) and same_weights(denoiser_back, denoiser) and cfg_back == cfg

    cfg = RewardModelConfig(hidden=8, layers=2)
    rnet = build_reward_net(SIZES, cfg)
    path = save_reward_model(tmp_path / "rm.pt", rnet, cfg, SIZES, 0.25, 4.0, {"summary": {"val_accuracy": 0.75}})
    model = load_reward_model(path)
    assert same_weights(model.net, rnet) and model.meta["config"] == cfg and model.meta["metrics"]["summary"]["val_accuracy"] == 0.75
    assert math.isclose(model.mean, 0.25) and math.isclose(model.var, 4.0)

    cfg = ReferenceConfig(model="gru", hidden=8, layers=2)
    pnet = PolicyNet(4, 3, 2, 8, 2, "gru")
    path = save_reference(tmp_path / "ref.pt", pnet, cfg, SIZES, {"summary": {}})
    assert same_weights(load_reference(path).net, pnet)

    net, gen, state = train_state(tmp_path / "train_state.pt")
    state.step, state.extra = 7, {"history": "[]"}
    gen.manual_seed(123)
    expected = torch.rand(3, generator=gen)
    gen.manual_seed(123)
    state.save()
    net2, gen2, resumed = train_state(tmp_path / "train_state.pt", seed=0)
    with torch.no_grad():
        net2.weight.add_(1.0)
    assert resumed.load() and resumed.step == 7 and resumed.extra == {"history": "[]"}
    assert same_weights(net2, net) and torch.equal(torch.rand(3, generator=gen2), expected)

    kinds = {load_checkpoint(p).kind for p in tmp_path.glob("*.pt")}
    assert kinds == set(KINDS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6)


@given(
    kind=st.sampled_from(sorted(KINDS)),
    trainer=st.none() | names,
    env_name=st.none() | names,
    config=json_objects,
    meta=json_objects,
    networks=st.dictionaries(names, st.dictionaries(names, st.integers(1, 64), max_size=3), max_size=3),
    shapes=st.dictionaries(names, st.lists(st.integers(0, 3), max_size=3), max_size=3),
)
def test_the_header_and_the_state_dicts_come_back_as_written(tmp_path_factory, kind, trainer, env_name, config, meta, networks, shapes):
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    tensors = {name: torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) for name, shape in shapes.items()}
    save_checkpoint(
        path,
        kind,
        {"m": tensors},
        trainer=trainer,
        env_name=env_name,
        config=config,
        meta=meta,
        networks=networks,
        dataset_spec=SPEC.to_attrs(),
        fields={"stats": {"mean": 0.5}},
    )
    back = load_checkpoint(path, kind)
    assert (back.kind, back.trainer, back.env_name, back.source_format) == (kind, trainer, env_name, CHECKPOINT_FORMAT)
    assert back.config == json.loads(json.dumps(config)) and back.meta == json.loads(json.dumps(meta))
    assert back.networks == networks and back.dataset_spec == SPEC.to_attrs() and back.fields == {"stats": {"mean": 0.5}}
    assert back.marlcov_version and back.state_dicts["m"].keys() == tensors.keys()
    assert all(torch.equal(back.state_dicts["m"][k], t) for k, t in tensors.items())


def test_a_config_dataclass_is_stored_as_its_fields(tmp_path):
    cfg = ReferenceConfig(hidden=8)
    save_checkpoint(tmp_path / "c.pt", "reference", {}, trainer="reference", config=cfg)
    assert load_checkpoint(tmp_path / "c.pt").config == config_values(cfg)
    with pytest.raises(ValueError, match="kind"):
        save_checkpoint(tmp_path / "d.pt", "model", {}, trainer=None)
    with pytest.raises(ValueError, match="header"):
        save_checkpoint(tmp_path / "d.pt", "policy", {}, trainer=None, fields={"meta": 1})
    assert not (tmp_path / "d.pt").exists()


# ----------------------------------------------------------------------------- files written before
def test_legacy_q_policy_loads(tmp_path):
    torch.manual_seed(0)
    q = AgentQNet(4, 3, 2, hidden=8, layers=2)
    network = {"obs_dim": 4, "n_actions": 3, "n_agents": 2, "hidden": 8, "layers": 2}
    old = {
        "format": "marlcov.deep-policy/1",
        "env_name": "simple_spread_v3",
        "network": json.dumps(network),
        "config": json.dumps({"beta": 1.0}),
        "meta": json.dumps({"trainer": "online-vdn", "level": "rookie", "env_steps": 400}),
        "state_dict": q.state_dict(),
    }
    torch.save(old, tmp_path / "rookie_400.pt")
    policy = load_policy(tmp_path / "rookie_400.pt", env_name="simple_spread_v3")
    assert same_weights(policy.net, q) and policy.meta["env_steps"] == 400 and policy.meta["config"] == {"beta": 1.0}
    assert same_weights(load_reference_policy(tmp_path / "rookie_400.pt").net, q)
    ckpt = load_checkpoint(tmp_path / "rookie_400.pt")
    assert (ckpt.kind, ckpt.trainer, ckpt.source_format, ckpt.marlcov_version) == ("q-policy", "online-vdn", "marlcov.deep-policy/1", None)
    del old["network"]
    torch.save(old, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="broken.pt: field 'network' is missing"):
        load_policy(tmp_path / "broken.pt")


def test_legacy_offline_policy_loads(tmp_path):
    net, extra = offline_nets()
    config = {"hidden": 8, "layers": 2, "lr": 3e-4}
    old = {
        "format": "marlcov.deep-offline-policy/1",
        "spec": json.dumps(SPEC.to_attrs()),
        "config": json.dumps(config),
        "policy": net.state_dict(),
        "modules": {k: m.state_dict() for k, m in extra.items()},
    }
    torch.save(old, tmp_path / "model.pt")
    back, spec, config_back = load_offline_policy(tmp_path / "model.pt")
    assert same_weights(back, net) and spec == SPEC and config_back == config
    assert sorted(load_checkpoint(tmp_path / "model.pt").state_dicts) == ["mixer", "policy", "q"]


def test_legacy_mamql_and_score_decomposition_load(tmp_path):
    cfg = MAMQLConfig(hidden=8, layers=2)
    critic, reward = JointCritic(4, 3, 2, 8, 2), JointCritic(4, 3, 2, 8, 2)
    torch.save(
        {
            "format": "marlcov.deep-mamql/1",
            "env_name": SPEC.env_name,
            "spec": json.dumps(SPEC.to_attrs()),
            "network": json.dumps(critic.network),
            "config": json.dumps(config_values(cfg)),
            "meta": json.dumps({"trainer": "mamql"}),
            "critic": critic.state_dict(),
            "reward": reward.state_dict(),
        },
        tmp_path / "mamql.pt",
    )
    boltzmann, reward_back = load_mamql(tmp_path / "mamql.pt")
    assert same_weights(boltzmann.critic, critic) and same_weights(reward_back, reward) and boltzmann.lam == cfg.lam

    actor, denoiser = score_nets()
    cfg = ScoreDecompositionConfig()
    torch.save(
        {
            "format": "marlcov.deep-score-decomposition/1",
            "env_name": "simple_spread_v3",
            "actor_network": json.dumps(actor.network),
            "denoiser_network": json.dumps(denoiser.network),
            "config": json.dumps(config_values(cfg)),
            "meta": json.dumps({"trainer": "score-decomposition"}),
            "actor": actor.state_dict(),
            "denoiser": denoiser.state_dict(),
        },
        tmp_path / "sd.pt",
    )
    actor_policy, denoiser_back, cfg_back = load_score_decomposition(tmp_path / "sd.pt")
    assert same_weights(actor_policy.actor, actor) and same_weights(denoiser_back, denoiser) and cfg_back == cfg


def test_legacy_reward_model_and_reference_load(tmp_path):
    cfg = RewardModelConfig(hidden=8, layers=2)
    rnet = build_reward_net(SIZES, cfg)
    torch.save(
        {
            "format": "marlcov.deep-reward-model/1",
            "config": json.dumps(config_values(cfg)),
            "sizes": json.dumps(SIZES),
            "state_dict": rnet.state_dict(),
            "stats": {"mean": 0.5, "var": 2.0},
            "metrics": json.dumps({"summary": {"val_nll": 0.6}}),
        },
        tmp_path / "reward_model.pt",
    )
    model = load_reward_model(tmp_path / "reward_model.pt")
    assert same_weights(model.net, rnet) and math.isclose(model.mean, 0.5) and math.isclose(model.var, 2.0)
    assert model.meta["metrics"] == {"summary": {"val_nll": 0.6}}

    pnet = PolicyNet(4, 3, 2, 8, 2, "mlp")
    fields = config_values(ReferenceConfig(model="mlp", hidden=8, layers=2))
    del fields["model"]  # written before the GRU reference: an MLP
    torch.save(
        {
            "format": "marlcov.deep-reference/1",
            "config": json.dumps(fields),
            "sizes": json.dumps(SIZES),
            "state_dict": pnet.state_dict(),
            "metrics": json.dumps({}),
        },
        tmp_path / "reference.pt",
    )
    back = load_reference(tmp_path / "reference.pt")
    assert back.net.kind == "mlp" and same_weights(back.net, pnet)


def test_a_legacy_training_state_resumes(tmp_path):
    net, gen, state = train_state(tmp_path / "new.pt")
    state.step, state.extra = 5, {"history": "[1]"}
    state.save()
    new = torch.load(tmp_path / "new.pt", weights_only=True)
    old = {
        "format": "marlcov.deep-train-state/1",
        "step": new["step"],
        "modules": new["state_dicts"],
        "generators": new["generators"],
        "rng": new["rng"],
        "extra": new["extra"],
        "config": json.dumps({"lr": 0.1, "seed": 0}, sort_keys=True),
    }
    torch.save(old, tmp_path / "train_state.pt")
    net2, gen2, resumed = train_state(tmp_path / "train_state.pt")
    with torch.no_grad():
        net2.bias.add_(1.0)
    assert resumed.load() and resumed.step == 5 and resumed.extra == {"history": "[1]"} and same_weights(net2, net)
    _, _, other = train_state(tmp_path / "train_state.pt", seed=1)
    with pytest.raises(ValueError, match="train_state.pt: checkpoint was made with another config"):
        other.load()


def test_every_legacy_format_is_tested_here():
    assert set(LEGACY_FORMATS) == {
        "marlcov.deep-policy/1",
        "marlcov.deep-offline-policy/1",
        "marlcov.deep-mamql/1",
        "marlcov.deep-score-decomposition/1",
        "marlcov.deep-reward-model/1",
        "marlcov.deep-reference/1",
        "marlcov.deep-train-state/1",
    }


@pytest.mark.parametrize("fmt", ["marlcov.deep-policy/0", "marlcov.deep-checkpoint/2", "marlcov.policy/1"])
def test_an_unknown_format_is_refused_naming_the_new_one(tmp_path, fmt):
    torch.save({"format": fmt, "state_dict": {}}, tmp_path / "p.pt")
    with pytest.raises(ValueError, match=f"p.pt: field 'format' is '{fmt}'; expected '{CHECKPOINT_FORMAT}'"):
        load_checkpoint(tmp_path / "p.pt")
    with pytest.raises(ValueError, match=CHECKPOINT_FORMAT):
        load_policy(tmp_path / "p.pt")


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint\n", b"junk", b'{"format": "marlcov.deep-checkpoint/1"}', bytes(range(256)), b"PK\x03\x04" + b"\0" * 40, b""],
)
def test_a_foreign_file_is_refused_naming_it(tmp_path, content):
    (tmp_path / "foreign.pt").write_bytes(content)
    with pytest.raises(UnreadableCheckpointError, match=f"foreign.pt: not a readable checkpoint .*{CHECKPOINT_FORMAT}") as info:
        load_checkpoint(tmp_path / "foreign.pt")
    assert len(str(info.value)) < 300
    with pytest.raises(ValueError, match="foreign.pt"):
        load_reward_model(tmp_path / "foreign.pt")


@given(data=st.data())
def test_any_damage_to_a_file_is_refused_naming_it(tmp_path_factory, data):
    """Random bytes, a cut, or a few flipped bytes of a real checkpoint: a ValueError naming the
    file, never another exception (torch's unpickler raises a dozen kinds)."""
    d = tmp_path_factory.mktemp("damaged")
    whole = save_policy(d / "whole.pt", AgentQNet(4, 3, 2, hidden=8, layers=2), "simple_spread_v3", {}, {}).read_bytes()
    damage = data.draw(st.sampled_from(["random", "cut", "flip"]))
    if damage == "random":
        content = data.draw(st.binary(max_size=256))
    elif damage == "cut":
        content = whole[: data.draw(st.integers(0, len(whole) - 1))]
    else:
        flips = data.draw(st.dictionaries(st.integers(0, len(whole) - 1), st.integers(0, 255), min_size=1, max_size=4))
        content = bytes(flips.get(i, b) for i, b in enumerate(whole))
    (d / "damaged.pt").write_bytes(content)
    try:
        policy = load_policy(d / "damaged.pt")
    except ValueError as exc:
        assert "damaged.pt" in str(exc)
    else:  # a flipped byte inside a weight leaves a readable file with other weights
        assert damage == "flip" and policy.net.network["obs_dim"] == 4


def test_a_pickled_object_or_a_dict_without_header_is_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled object, not weights
    with pytest.raises(UnreadableCheckpointError, match="module.pt"):
        load_checkpoint(tmp_path / "module.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt: field 'format' is missing"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_truncated_file_is_refused_naming_it(tmp_path):
    q = AgentQNet(4, 3, 2, hidden=8, layers=2)
    data = save_policy(tmp_path / "whole.pt", q, "simple_spread_v3", {}, {}).read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.pt: not a readable checkpoint"):
            load_policy(tmp_path / "cut.pt")


def test_a_file_of_another_kind_is_refused_naming_it_and_both_kinds(tmp_path):
    q = AgentQNet(4, 3, 2, hidden=8, layers=2)
    path = save_policy(tmp_path / "expert.pt", q, "simple_spread_v3", {}, {})
    with pytest.raises(ValueError, match="expert.pt: field 'kind' is 'q-policy'; expected a 'reward-model' checkpoint"):
        load_reward_model(path)
    with pytest.raises(ValueError, match="expert.pt: field 'kind' is 'q-policy'; expected a 'policy' checkpoint"):
        load_offline_policy(path)
    with pytest.raises(ValueError, match=r"expert.pt: field 'kind' is 'q-policy'; expected a \['reference', 'policy'\]"):
        load_checkpoint(path, ("reference", "policy"))
    torch.save({"format": "marlcov.deep-reward-model/1"}, tmp_path / "rm.pt")
    with pytest.raises(ValueError, match="rm.pt: field 'format' is 'marlcov.deep-reward-model/1', a 'reward-model' file"):
        load_reference(tmp_path / "rm.pt")
    with pytest.raises(ValueError, match="kind: expected names from"):
        load_checkpoint(path, "model")


def test_a_damaged_header_is_refused_naming_the_field(tmp_path):
    q = AgentQNet(4, 3, 2, hidden=8, layers=2)
    good = torch.load(save_policy(tmp_path / "p.pt", q, "simple_spread_v3", {}, {}), weights_only=True)
    cases = {
        "kind": (dict(good, kind="model"), "field 'kind' is 'model'"),
        "config": (dict(good, config="{not json"), "field 'config' is not JSON"),
        "meta": (dict(good, meta="[1, 2]"), "field 'meta' is a JSON list; expected an object"),
        "trainer": (dict(good, trainer=3), "field 'trainer' is 3"),
        "networks": ({k: v for k, v in good.items() if k != "networks"}, "field 'networks' is missing"),
        "shape": (dict(good, networks=json.dumps({"q": dict(q.network, obs_dim=5)})), "field 'state_dicts' entry 'q' does not fit"),
        "args": (dict(good, networks=json.dumps({"q": {"width": 3}})), "field 'networks' entry 'q' .* does not build a AgentQNet"),
        "weights": (dict(good, state_dicts={}), "field 'state_dicts' lacks 'q'"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        with pytest.raises(ValueError, match=f"{name}.pt: {message}"):
            load_policy(tmp_path / f"{name}.pt")
    good_path = tmp_path / "p.pt"
    with pytest.raises(ValueError, match="p.pt: field 'env_name' is 'simple_spread_v3'; expected 'simple_tag_v3'"):
        load_policy(good_path, env_name="simple_tag_v3")
    with pytest.raises(ValueError, match="p.pt: field 'dataset_spec' is missing"):
        load_checkpoint(good_path).spec_attrs()
    with pytest.raises(ValueError, match="p.pt: field 'stats' is missing"):
        load_checkpoint(good_path).field("stats")
