"""Score decomposition's two-phase training on ``deep.training.fit``: records per phase, the
actor's terms averaged over the delayed actor updates only, and a killed run that resumes to
the history and parameters of an uninterrupted one."""

import numpy as np
import pytest
import torch

from marlcov.deep.algos import score_decomposition as sd
from marlcov.deep.algos.score_decomposition import ScoreDecompositionConfig, fit_score_decomposition

pytestmark = pytest.mark.deep

#: Means of a few float32 losses recomputed in float64.
MEAN_RTOL = 1e-6
#: 41 denoiser steps, then 40 actor-critic steps: a record every 2 steps (``max(D, U) // 20``),
#: so the phase boundary falls inside a record of the first phase; an actor update every 3rd.
CFG = ScoreDecompositionConfig(
    diffusion_steps=4,
    denoiser_hidden=16,
    denoiser_layers=2,
    hidden=16,
    layers=2,
    batch_size=16,
    diffusion_updates=41,
    updates=40,
    policy_delay=3,
    checkpoint_every=5,
)
RECORD = 2


def _data():
    g = torch.Generator().manual_seed(0)
    N, m = 64, 2
    return {
        "obs": torch.randn(N, m, 3, generator=g),
        "next_obs": torch.randn(N, m, 3, generator=g),
        "actions": torch.rand(N, m, 2, generator=g) * 2 - 1,
        "reward": torch.randn(N, generator=g),
        "last": (torch.arange(N) % 4 == 3).float(),
    }


def test_records_stay_in_their_phase_and_average_the_actor_terms_over_actor_updates(monkeypatch):
    steps = {"critic": [], "actor": []}
    critic_loss, actor_loss = sd.critic_loss, sd.actor_loss

    def logged_critic(*args, **kwargs):
        loss = critic_loss(*args, **kwargs)
        steps["critic"].append(loss.item())
        return loss

    def logged_actor(*args, **kwargs):
        loss, reg = actor_loss(*args, **kwargs)
        steps["actor"].append((len(steps["critic"]) - 1, loss.item(), reg.item()))
        return loss, reg

    monkeypatch.setattr(sd, "critic_loss", logged_critic)
    monkeypatch.setattr(sd, "actor_loss", logged_actor)
    history = fit_score_decomposition(_data(), CFG, seed=1, progress=False)[-1]
    D, U = CFG.diffusion_updates, CFG.updates
    diffusion = [r for r in history if r["phase"] == "diffusion"]
    actor_critic = [r for r in history if r["phase"] == "actor-critic"]
    # The last denoiser step (40) is dropped with its unfinished record, not mixed into the next phase.
    assert [r["update"] for r in diffusion] == list(range(RECORD - 1, D - 1, RECORD))
    assert [r["update"] for r in actor_critic] == list(range(D + RECORD - 1, D + U, RECORD))
    assert all(set(r) == {"phase", "update", "denoising_loss"} for r in diffusion)
    assert [k for k, _, _ in steps["actor"]] == list(range(0, U, CFG.policy_delay))
    for r in actor_critic:
        window = range(r["update"] - D - RECORD + 1, r["update"] - D + 1)
        assert r["critic_loss"] == pytest.approx(np.mean([steps["critic"][k] for k in window]), rel=MEAN_RTOL)
        actor = [(a, s) for k, a, s in steps["actor"] if k in window]
        if actor:
            assert r["actor_loss"] == pytest.approx(np.mean([a for a, _ in actor]), rel=MEAN_RTOL)
            assert r["score_regulariser"] == pytest.approx(np.mean([s for _, s in actor]), rel=MEAN_RTOL)
        else:
            assert "actor_loss" not in r and "score_regulariser" not in r


def test_a_killed_run_resumes_to_the_history_and_parameters_of_an_uninterrupted_one(tmp_path, monkeypatch):
    full = fit_score_decomposition(_data(), CFG, seed=3, progress=False)
    path = tmp_path / "state.pt"
    original = torch.optim.Adam.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        # Killed at step 53 (the 12th actor-critic step); the last checkpoint, after 50 steps,
        # holds half a record.
        if calls["n"] > 41 + 17:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", step)
        with pytest.raises(KeyboardInterrupt):
            fit_score_decomposition(_data(), CFG, seed=3, state_path=path, run_config={"r": 1}, progress=False)
    assert path.exists()
    resumed = fit_score_decomposition(_data(), CFG, seed=3, state_path=path, run_config={"r": 1}, progress=False)
    assert resumed[-1] == full[-1]
    for k in range(3):
        for p, q in zip(full[k].parameters(), resumed[k].parameters()):
            assert torch.equal(p, q)
