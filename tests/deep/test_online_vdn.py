"""Online VDN behaviour policies on the batched MPE, joint behaviour policies, evaluation."""

import json

import numpy as np
import pytest
import torch

from marlcov.deep.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from marlcov.deep.common import EVAL_SEED_BASE, TrainingState
from marlcov.deep.marlhf.evaluate import evaluate_policy
from marlcov.deep.marlhf.online_vdn import (
    SELECTION_SEED_OFFSET,
    TRAIN_SEED_SPAN,
    EpisodeReplay,
    JointPolicy,
    OnlineVDNConfig,
    _expert_check_due,
    _iteration_seed,
    _rookie_try_due,
    level_policy,
    skill_order,
    train_behaviour_policies,
    trivial_policy,
    unilateral_policy,
)
from marlcov.deep.marlhf.vdn import load_policy
from tests.deep.tiny import TINY_ONLINE_VDN, B, H  # noqa: E402

pytestmark = pytest.mark.deep

ENV = "simple_spread_v3"
TINY = {**TINY_ONLINE_VDN, "checkpoint_every": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("online")
    return out, train_behaviour_policies(ENV, TINY, out, "cpu", seed=0)


def test_checkpoints_at_each_proficiency_level(trained):
    out, res = trained
    assert res["env_steps"] == B * H * 4 and res["updates"] == 4 * TINY["updates_per_iteration"]
    assert [lv["name"] for lv in res["levels"]] == [f"rookie_{B * H * 2}", "expert"]
    rookie_level, expert_level = res["levels"]
    assert rookie_level["env_steps"] >= B * H * 2
    # The expert is the candidate with the best selection return, the last iterate among them.
    candidates = res["expert_candidates"]
    assert [c["env_steps"] for c in candidates] == [B * H * 2, B * H * 3, B * H * 4]
    best = max(candidates, key=lambda c: c["selection_return_per_agent"])
    assert expert_level["env_steps"] == best["env_steps"]
    # Table 1's order: the trivial return is that of uniform play on the same evaluation episodes.
    trivial = evaluate_policy(
        trivial_policy(3, 0), ENV, n_episodes=B, seed=0, batch_size=B, env_kwargs={"horizon": H, "local_ratio": 0.5}, progress=False
    )["return_per_agent"]
    order = res["skill_order"]
    assert order["test_return_per_agent"]["trivial"] == pytest.approx(trivial, abs=1e-9)
    assert rookie_level["above_trivial"] == (rookie_level["test_return_per_agent"] > trivial)
    assert rookie_level["above_trivial"] or rookie_level["env_steps"] == B * H * 4  # tried again until the end
    for lv in res["levels"]:
        obj = torch.load(lv["path"], weights_only=True)
        assert obj["format"] == CHECKPOINT_FORMAT and obj["env_name"] == ENV
        p = load_policy(lv["path"], env_name=ENV)
        assert p.meta["level"] == lv["level"] and p.meta["env_steps"] == lv["env_steps"]
        assert np.isfinite(lv["test_return_per_agent"])
    rookie = load_checkpoint(res["rookies"][str(B * H * 2)]).state_dicts["q"]
    expert = load_checkpoint(res["expert"]).state_dicts["q"]
    if rookie_level["env_steps"] < expert_level["env_steps"]:
        assert not all(torch.equal(rookie[k], expert[k]) for k in rookie)  # the rookie is an earlier stop
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 4
    assert metrics["history"][0]["epsilon"] == pytest.approx(1.0)


def test_resumed_run_equals_uninterrupted(trained, tmp_path, monkeypatch):
    _, whole = trained
    original = TrainingState.maybe_save

    def interrupt(self):
        saved = original(self)
        if saved and self.step == 3:
            raise KeyboardInterrupt
        return saved

    with monkeypatch.context() as mp:
        mp.setattr(TrainingState, "maybe_save", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_behaviour_policies(ENV, TINY, tmp_path, "cpu", seed=0)
    assert not (tmp_path / "expert.pt").exists()
    resumed = train_behaviour_policies(ENV, TINY, tmp_path, "cpu", seed=0)
    a = load_checkpoint(whole["expert"]).state_dicts["q"]
    b = load_checkpoint(resumed["expert"]).state_dicts["q"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [lv["name"] for lv in resumed["levels"]] == [lv["name"] for lv in whole["levels"]]


def test_joint_policies_take_each_agent_from_its_policy(trained):
    _, res = trained
    expert = load_policy(res["expert"])
    rookie_path = res["rookies"][str(B * H * 2)]
    rookie = load_policy(rookie_path)
    obs = torch.randn(64, 3, 18)
    avail = torch.ones(64, 3, 5, dtype=torch.bool)
    uni = unilateral_policy(res["expert"], rookie_path, deviator=1, n_agents=3)
    assert uni.agent_tags == ["expert", "rookie", "expert"]
    a = uni(obs, avail, 0)
    assert torch.equal(a[:, [0, 2]], expert(obs, avail, 0)[:, [0, 2]])
    assert torch.equal(a[:, 1], rookie(obs, avail, 0)[:, 1])
    lv = level_policy(res["expert"], 3)
    assert lv.agent_tags == ["expert"] * 3 and torch.equal(lv(obs, avail, 0), expert(obs, avail, 0))
    with pytest.raises(ValueError, match="deviator"):
        unilateral_policy(res["expert"], rookie_path, deviator=3, n_agents=3)
    const = JointPolicy(
        [lambda o, v, t: torch.zeros(o.shape[:2], dtype=torch.long), lambda o, v, t: torch.full(o.shape[:2], 4)], ["a", "b"], "const"
    )
    assert const(obs[:, :2], avail[:, :2], 0).tolist() == [[0, 4]] * 64


def test_trivial_policy_draws_available_actions_uniformly():
    avail = torch.ones(4000, 3, 5, dtype=torch.bool)
    avail[:, 2, 3:] = False
    p = trivial_policy(3, seed=0)
    a = p(torch.zeros(4000, 3, 18), avail, 0)
    assert p.agent_tags == ["trivial"] * 3
    assert bool(avail.gather(-1, a.unsqueeze(-1)).all())
    freq = np.bincount(a[:, 0].numpy(), minlength=5) / 4000
    assert np.allclose(freq, 0.2, atol=0.03)


def test_evaluate_policy_is_seeded_and_matches_rollout_returns():
    p = trivial_policy(3, seed=0)
    r1 = evaluate_policy(p, ENV, n_episodes=12, seed=2, batch_size=B, progress=False)
    r2 = evaluate_policy(trivial_policy(3, seed=0), ENV, n_episodes=12, seed=2, batch_size=B, progress=False)
    assert r1["returns"] == r2["returns"] and len(r1["returns"]) == 12
    returns = np.asarray(r1["returns"])
    assert r1["return_per_agent"] == pytest.approx(returns.mean())
    assert r1["per_agent"] == pytest.approx(returns.mean(axis=0).tolist())
    assert r1["return_std"] == pytest.approx(returns.mean(axis=1).std())
    from marlcov.deep.envs.mpe import MPEBatch

    direct = MPEBatch(ENV, B).rollout(trivial_policy(3, seed=0), EVAL_SEED_BASE + 2 * 12).returns()
    assert np.allclose(returns[:B], direct)
    with pytest.raises(ValueError, match="seed"):
        evaluate_policy(p, ENV, n_episodes=10, seed=2**31, progress=False)


def test_replay_buffer_ring_and_state():
    buf = EpisodeReplay(5, 2, 1, 1, 2, torch.device("cpu"))
    for k in range(3):
        buf.add(
            torch.full((2, 3, 1, 1), float(k)),
            torch.zeros(2, 2, 1, dtype=torch.long),
            torch.ones(2, 2, 1, 2, dtype=torch.bool),
            torch.zeros(2, 2),
        )
    assert buf.size == 5 and buf.pos == 1
    assert buf.obs[:, 0, 0, 0].tolist() == [2.0, 0.0, 1.0, 1.0, 2.0]  # the third add wraps round
    other = EpisodeReplay(5, 2, 1, 1, 2, torch.device("cpu"))
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.obs, buf.obs) and other.pos == 1


def test_seeds_and_config_validation():
    seeds = [_iteration_seed(0, it, 128) for it in range(50)]
    assert len(set(seeds)) == 50 and max(seeds) + 128 <= TRAIN_SEED_SPAN <= EVAL_SEED_BASE
    with pytest.raises(ValueError, match="rookie_steps"):
        OnlineVDNConfig(total_env_steps=100, rookie_steps=(200,))
    with pytest.raises(ValueError, match="epsilon_end"):
        OnlineVDNConfig(epsilon_end=2.0)
    cfg = OnlineVDNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100)
    assert cfg.epsilon(0) == 1.0 and cfg.epsilon(50) == pytest.approx(0.55) and cfg.epsilon(1000) == pytest.approx(0.1)


def test_a_rookie_below_the_trivial_policy_is_tried_again_and_the_best_candidate_is_the_expert(tmp_path, monkeypatch):
    """Scripted returns in call order: trivial -10; iteration 2: the rookie at its target (-20,
    below trivial) and expert candidate 1 (-15); iteration 3: the rookie again (-5, above) and
    candidate 2 (-8); iteration 4: candidate 3 (-12); then the chosen expert's test return (-1).
    The rookie is the second try; the expert is candidate 2, not the last iterate."""
    from marlcov.deep.marlhf import evaluate

    scores = iter([-10.0, -20.0, -15.0, -5.0, -8.0, -12.0, -1.0])
    seeds = []

    def scripted(*args, seed, **kwargs):
        seeds.append(seed)
        return {"return_per_agent": next(scores), "return_std": 0.0}

    monkeypatch.setattr(evaluate, "evaluate_policy", scripted)
    res = train_behaviour_policies(ENV, TINY, tmp_path, "cpu", seed=0)
    rookie_level, expert_level = res["levels"]
    assert rookie_level["env_steps"] == B * H * 3 and rookie_level["test_return_per_agent"] == -5.0 and rookie_level["above_trivial"]
    assert expert_level["env_steps"] == B * H * 3 and load_policy(expert_level["path"]).meta["env_steps"] == B * H * 3
    # Candidates are scored on selection episodes; every reported return on the test episodes.
    assert seeds == [0, 0, SELECTION_SEED_OFFSET, 0, SELECTION_SEED_OFFSET, SELECTION_SEED_OFFSET, 0]
    assert res["skill_order"] == {
        "test_return_per_agent": {f"rookie_{B * H * 2}": -5.0, "expert": -1.0, "trivial": -10.0},
        "order": "expert > rookie > trivial",
        "holds": True,
    }
    assert load_policy(rookie_level["path"]).meta["env_steps"] == B * H * 3


def test_skill_order_and_the_schedule_of_rookie_tries():
    levels = [
        {"name": "rookie_5", "level": "rookie", "test_return_per_agent": -30.0},
        {"name": "expert", "level": "expert", "test_return_per_agent": -20.0},
    ]
    assert skill_order(levels, -26.0)["holds"] is False  # a small-scale rookie measured below uniform play
    assert skill_order(levels, -31.0)["holds"] is True
    assert skill_order(levels[:1], -31.0)["holds"] is True
    assert skill_order([levels[0], dict(levels[1], test_return_per_agent=-40.0)], -31.0)["holds"] is False
    # target reached in iteration 9 (0-based) of 100, 10 tries: every 9th iteration after it, and the last.
    due = [it for it in range(100) if _rookie_try_due(it, 10 * 100, 100, 100, 10)]
    assert due == list(range(9, 100, 9))
    assert all(b - a <= 9 for a, b in zip(due, due[1:]))
    # expert candidates from iteration 9 of 100, 10 checks: every 9th counted back from the last.
    checks = [it for it in range(100) if _expert_check_due(it, 9, 100, 10)]
    assert checks[-1] == 99 and checks[0] >= 9 and len(checks) == 11 and set(np.diff(checks)) == {9}


def test_checkpoints_are_written_by_time_as_well_as_by_step(tmp_path, monkeypatch):
    from marlcov.deep import training

    now = [100.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: now[0])
    net = torch.nn.Linear(2, 2)
    state = TrainingState(tmp_path / "s.pt", 0, {"net": net}, every_seconds=60.0)
    state.step = 1
    assert not state.maybe_save()
    now[0] += 59.0
    assert not state.maybe_save()
    now[0] += 1.0
    assert state.maybe_save() and (tmp_path / "s.pt").exists()
    assert not state.maybe_save()
    with pytest.raises(ValueError, match="checkpoint_seconds"):
        TrainingState(tmp_path / "s.pt", 0, {"net": net}, every_seconds=-1.0)


def test_checkpoint_cadence_is_not_part_of_the_resumed_config(tmp_path):
    cfg = dict(TINY, total_env_steps=B * H * 2, rookie_steps=[B * H])
    train_behaviour_policies(ENV, cfg, tmp_path, "cpu", seed=0)
    (tmp_path / "metrics.json").unlink()
    again = train_behaviour_policies(ENV, dict(cfg, checkpoint_every=7, checkpoint_seconds=5.0), tmp_path, "cpu", seed=0)
    assert again["env_steps"] == B * H * 2
