"""Sequential score decomposition (Qiao et al., section 4): the conditional diffusion model of
the joint behaviour, the per-agent scores used as policy regulariser, the offline actor-critic."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.deep.algos.score_decomposition import (
    Denoiser,
    Schedule,
    ScoreDecompositionConfig,
    agent_scores,
    denoising_loss,
    diffusion_loss,
    fit_score_decomposition,
    load_score_decomposition,
    noised_actions,
    sample_joint_actions,
    score_regulariser,
    train_score_decomposition,
    transitions,
    vp_alpha_bars,
)
from marlcov.theory.objectives import score_decomposition as theory_sd
from tests.strategies import distributions, float_arrays

pytestmark = pytest.mark.deep

ATOL = 1e-6
#: The deep loss and the theory function on the same float64 numbers.
LOSS_ATOL = 1e-12
#: abar of the "clean" step: the noised conditionals equal the clean ones up to O(1 - abar).
CLEAN_ALPHA_BAR = 1.0 - 1e-5
SCORE_RTOL = 2e-3


class GMMOracle(torch.nn.Module):
    """The exact noise predictor of a Gaussian-mixture behaviour (no observation dependence):
    for agent i, ``-sigma_t grad log p(x_t^i | a_given)`` from the theory module's conditional
    density of ``prefix_noised_gmm``, differentiated by autograd."""

    def __init__(self, weights, means, covs, blocks, schedule):
        super().__init__()
        self.w, self.m, self.c = (torch.as_tensor(x, dtype=torch.float64) for x in (weights, means, covs))
        self.blocks, self.schedule = [list(b) for b in blocks], schedule
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t, obs, actions, mask):
        B, m, da = x_t.shape
        mask = mask.expand(B, m, m)
        out = torch.zeros(B, m, da, dtype=torch.float64)
        for i in range(m):
            assert bool((t[:, i] == t[0, i]).all()) and bool((mask[:, i] == mask[0, i]).all())
            ab = float(self.schedule.alpha_bars[t[0, i]])
            given_agents = [j for j in range(m) if mask[0, i, j] > 0]
            given = [k for j in given_agents for k in self.blocks[j]]
            w, mu, cov = theory_sd.prefix_noised_gmm(self.w, self.m, self.c, given, self.blocks[i], ab)
            z_given = torch.cat([actions[:, j].double() for j in given_agents], dim=-1) if given else torch.zeros(B, 0, dtype=torch.float64)
            n_g = len(given)
            with torch.enable_grad():  # the deep scores are read under no_grad
                z_t = x_t[:, i].double().detach().requires_grad_(True)
                z = torch.cat([z_given, z_t], dim=-1)
                logp = theory_sd.conditional_log_density(z, w, mu, cov, list(range(n_g)), list(range(n_g, n_g + da)))
                (grad,) = torch.autograd.grad(logp.sum(), z_t)
            out[:, i] = -math.sqrt(1.0 - ab) * grad
        return out.to(x_t.dtype)


def test_schedule_and_noising_match_hand_computation():
    """T = 2, beta_min = 0.1, beta_max = 10: beta_1 = 1 - exp(-0.05 - 9.9/8), beta_2 = 1 -
    exp(-0.05 - 3 * 9.9/8); abar_2 = (1 - beta_1)(1 - beta_2)."""
    ab = vp_alpha_bars(2, 0.1, 10.0)
    b1, b2 = 1 - math.exp(-0.05 - 9.9 / 8), 1 - math.exp(-0.05 - 3 * 9.9 / 8)
    assert ab.tolist() == pytest.approx([1 - b1, (1 - b1) * (1 - b2)], abs=1e-12)
    assert noised_actions(np.array([2.0]), np.array([1.0]), 0.64).tolist() == pytest.approx([0.8 * 2 + 0.6], abs=1e-12)
    pred, eps = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [3.0, 4.0]])
    assert denoising_loss(pred, eps) == pytest.approx((5.0 + 25.0) / 2, abs=1e-12)
    assert denoising_loss(torch.tensor(pred), torch.tensor(eps)).item() == pytest.approx(15.0, abs=1e-12)


def test_score_regulariser_matches_hand_computation():
    """A denoiser that always predicts eps = 0.5: R = mean_B sum_i sigma (0.5 - eps) x_t."""

    class Constant(torch.nn.Module):
        def forward(self, x_t, t, obs, actions, mask):
            return torch.full_like(x_t, 0.5)

    sched = Schedule(np.array([0.64]))
    a = torch.tensor([[[0.5], [-1.0]]], requires_grad=True)
    eps = torch.tensor([[[1.0], [0.0]]])
    t = torch.zeros(1, 2, dtype=torch.long)
    r = score_regulariser(Constant(), sched, torch.zeros(1, 2, 1), a, "sequential", torch.Generator(), t, eps)
    x = [0.8 * 0.5 + 0.6 * 1.0, 0.8 * -1.0 + 0.0]
    hand = 0.6 * ((0.5 - 1.0) * x[0] + (0.5 - 0.0) * x[1])
    assert r.item() == pytest.approx(hand, abs=ATOL)
    r.backward()
    assert a.grad.flatten().tolist() == pytest.approx([0.6 * 0.8 * -0.5, 0.6 * 0.8 * 0.5], abs=ATOL)


@st.composite
def gmm_behaviours(draw, D, K=2):
    """``(weights, means, covariances)`` of a K-component Gaussian mixture on R^D with covariances
    ``0.3 (A A^T + I)``: multimodal and well conditioned."""
    weights = draw(distributions(K, min_weight=0.1))
    means = draw(float_arrays((K, D), -4.0, 4.0))
    A = draw(float_arrays((K, D, D), -2.0, 2.0))
    return weights, means, A @ np.swapaxes(A, -1, -2) * 0.3 + 0.3 * np.eye(D)


@settings(max_examples=12, deadline=None)
@given(data=st.data(), m=st.integers(2, 3), da=st.integers(1, 2), mode=st.sampled_from(["sequential", "independent"]))
def test_deep_scores_and_regulariser_equal_the_theory_decomposition(data, m, da, mode):
    """With the exact denoiser of a Gaussian-mixture behaviour at an almost clean step, agent i's
    deep score is the block of theory.sequential_conditional_scores that belongs to it
    (``grad_{a_i} log mu(a_i | a_<i)``) or, independent, of marginal_product_score; and the
    regulariser's gradient is ``-(sigma^2 sqrt(abar) / B)`` times that score."""
    D = m * da
    w, mu, cov = data.draw(gmm_behaviours(D))
    blocks = [list(range(i * da, (i + 1) * da)) for i in range(m)]
    sched = Schedule(np.array([CLEAN_ALPHA_BAR]))
    oracle = GMMOracle(w, mu, cov, blocks, sched)
    B = 4
    x = data.draw(float_arrays((B, D), -3.0, 3.0))
    actions = torch.tensor(x, dtype=torch.float32).reshape(B, m, da)
    t = torch.zeros(B, m, dtype=torch.long)
    scores, _, _ = agent_scores(oracle, sched, torch.zeros(B, m, 1), actions, t, torch.zeros(B, m, da), mode)
    x64 = actions.double().reshape(B, D).numpy()
    if mode == "sequential":
        theory_blocks = [s[:, blocks[i]] for i, s in enumerate(theory_sd.sequential_conditional_scores(x64, w, mu, cov, blocks))]
    else:
        full = theory_sd.marginal_product_score(x64, w, mu, cov, blocks)
        theory_blocks = [full[:, b] for b in blocks]
    want = np.stack(theory_blocks, axis=1)
    assert np.allclose(scores.double().numpy(), want, rtol=SCORE_RTOL, atol=SCORE_RTOL)
    a = actions.clone().requires_grad_(True)
    score_regulariser(oracle, sched, torch.zeros(B, m, 1), a, mode, torch.Generator(), t, torch.zeros(B, m, da)).backward()
    ab = float(sched.alpha_bars[0])
    assert np.allclose(a.grad.double().numpy(), -(1 - ab) * math.sqrt(ab) / B * want, rtol=SCORE_RTOL, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    data=st.data(),
    B=st.integers(1, 4),
    m=st.integers(1, 3),
    da=st.integers(1, 2),
    steps=st.integers(1, 5),
    dropout=st.floats(0.0, 1.0),
    mode=st.sampled_from(["sequential", "independent"]),
)
def test_deep_denoising_loss_and_scores_equal_the_checked_functions(seed, data, B, m, da, steps, dropout, mode):
    """``diffusion_loss`` (float64 denoiser, random data) is theory's ``denoising_loss`` of its
    noise predictions on ``noised_actions`` of the same draws (t, eps, prefix kept) recomputed in
    numpy, the functions the ``score.denoising_score`` check evaluates; ``agent_scores`` is
    ``score_from_noise`` of the predictions."""
    # seed: the denoiser's initial weights and diffusion_loss's own generator (torch draws inside the
    # code under test); the observations and actions are drawn.
    torch.manual_seed(seed)
    sched = Schedule(vp_alpha_bars(steps))
    den = Denoiser(2, da, m, steps, 16, 2).double()
    obs = torch.as_tensor(data.draw(float_arrays((B, m, 2), -3.0, 3.0)))
    actions = torch.as_tensor(data.draw(float_arrays((B, m, da), -3.0, 3.0)))
    seen = {}
    den.register_forward_hook(lambda mod, inputs, out: seen.update(inputs=inputs, out=out.detach().numpy()))
    loss = diffusion_loss(den, sched, obs, actions, dropout, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)  # the draws of diffusion_loss, in its order
    t = torch.randint(0, steps, (B, m), generator=g)
    eps = torch.randn(actions.shape, generator=g, dtype=torch.float64).numpy()
    keep = (torch.rand(B, m, 1, generator=g) >= dropout).double().numpy()
    ab = sched.alpha_bars[t].double().numpy()[..., None]
    x_t, t_in, _, _, mask = seen["inputs"]
    np.testing.assert_allclose(x_t.detach().numpy(), theory_sd.noised_actions(actions.numpy(), eps, ab), atol=LOSS_ATOL)
    assert torch.equal(t_in, t)
    np.testing.assert_array_equal(mask.numpy(), np.tril(np.ones((m, m)), -1) * keep)
    np.testing.assert_allclose(loss.item(), theory_sd.denoising_loss(seen["out"], eps), atol=LOSS_ATOL)
    scores, eps_pred, _ = agent_scores(den, sched, obs, actions, t, torch.as_tensor(eps), mode)
    np.testing.assert_allclose(scores.numpy(), theory_sd.score_from_noise(eps_pred.numpy(), ab), atol=LOSS_ATOL)


def _coordination_data(n, generator):
    """Two agents with 1-D actions, both +1 or both -1 (probability 1/2 each), noise std 0.1."""
    s = torch.where(torch.rand(n, 1, generator=generator) < 0.5, -1.0, 1.0)
    return torch.cat([s + 0.1 * torch.randn(n, 1, generator=generator), s + 0.1 * torch.randn(n, 1, generator=generator)], 1)[..., None]


def _train_denoiser(seed=0, updates=1200):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = _coordination_data(4096, g)
    sched = Schedule(vp_alpha_bars(10))
    den = Denoiser(1, 1, 2, 10, 64, 3)
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    losses = []
    for _ in range(updates):
        idx = torch.randint(0, len(data), (256,), generator=g)
        loss = diffusion_loss(den, sched, torch.zeros(256, 2, 1), data[idx], 0.3, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return den, sched, losses


@pytest.fixture(scope="module")
def trained_denoiser():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_denoiser()
    finally:
        torch.set_num_threads(threads)


def test_denoiser_learns_the_coordination_modes(trained_denoiser):
    """Sequential sampling reproduces the two modes (about half each) and their coordination;
    sampling the marginals independently miscoordinates about half the time (the product of
    marginals, what per-agent regularisation targets)."""
    den, sched, losses = trained_denoiser
    assert np.mean(losses[-100:]) < 0.5 * np.mean(losses[:20])
    g = torch.Generator().manual_seed(1)
    x = sample_joint_actions(den, sched, torch.zeros(2000, 2, 1), "sequential", g)
    same = (torch.sign(x[:, 0, 0]) == torch.sign(x[:, 1, 0])).float().mean().item()
    positive = (x[:, 0, 0] > 0).float().mean().item()
    assert same > 0.93 and 0.35 < positive < 0.65
    assert (x.abs() - 1.0).abs().median().item() < 0.15
    y = sample_joint_actions(den, sched, torch.zeros(2000, 2, 1), "independent", g)
    assert (torch.sign(y[:, 0, 0]) != torch.sign(y[:, 1, 0])).float().mean().item() > 0.35


def test_learned_conditional_noise_is_close_to_the_exact_one(trained_denoiser):
    """Agent 2's learned noise prediction given a_1 matches the exact one of the data's mixture
    (closed form through the theory module) at a middle step, to 25% in relative L2."""
    den, sched, _ = trained_denoiser
    w = np.array([0.5, 0.5])
    means = np.array([[-1.0, -1.0], [1.0, 1.0]])
    covs = np.stack([0.01 * np.eye(2)] * 2)
    oracle = GMMOracle(w, means, covs, [[0], [1]], sched)
    B = 200
    g = torch.Generator().manual_seed(2)
    a = _coordination_data(B, g)
    for k in (3, 5):
        t = torch.full((B, 2), k, dtype=torch.long)
        eps = torch.randn(B, 2, 1, generator=g)
        x_t = noised_actions(a, eps, sched.alpha_bars[k])
        mask = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        with torch.no_grad():
            learned = den(x_t, t, torch.zeros(B, 2, 1), a, mask)[:, 1]
        exact = oracle(x_t, t, None, a, mask)[:, 1]
        assert ((learned - exact).norm() / exact.norm()).item() < 0.25


def test_sequential_regulariser_pulls_agents_into_one_mode(trained_denoiser):
    """Descending the regulariser alone from a miscoordinated start (a_1 = 0.5, a_2 = -0.3):
    the sequential scores move agent 2 to the sign of agent 1 (mu(a_2 | a_1) has one mode);
    the independent ones leave it on the other side (its marginal has a mode at -1 too)."""
    den, sched, _ = trained_denoiser
    final = {}
    for mode in ("sequential", "independent"):
        a = torch.nn.Parameter(torch.tensor([[0.5], [-0.3]]))
        opt = torch.optim.Adam([a], lr=0.02)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            reg = score_regulariser(den, sched, torch.zeros(64, 2, 1), a.expand(64, 2, 1), mode, g)
            opt.zero_grad()
            reg.backward()
            opt.step()
        final[mode] = a.detach().flatten().tolist()
    assert final["sequential"][0] > 0 and final["sequential"][1] > 0.3
    assert final["independent"][0] > 0 and final["independent"][1] < 0


def test_transitions_flatten_with_team_reward_and_last_flag():
    obs = np.arange(1 * 3 * 2 * 1, dtype=np.float32).reshape(1, 3, 2, 1)
    actions = np.zeros((1, 2, 2, 2), np.float32)
    rewards = np.array([[[1.0, 3.0], [0.0, -2.0]]], np.float32)
    tr = transitions(obs, actions, rewards)
    assert tr["reward"].tolist() == [2.0, -1.0] and tr["last"].tolist() == [0.0, 1.0]
    assert tr["next_obs"][0].tolist() == obs[0, 1].tolist() and tr["obs"][1].tolist() == obs[0, 1].tolist()


def test_fit_resumes_exactly_and_is_deterministic(tmp_path):
    g = torch.Generator().manual_seed(0)
    N, m = 64, 2
    data = {
        "obs": torch.randn(N, m, 3, generator=g),
        "next_obs": torch.randn(N, m, 3, generator=g),
        "actions": torch.rand(N, m, 2, generator=g) * 2 - 1,
        "reward": torch.randn(N, generator=g),
        "last": (torch.arange(N) % 4 == 3).float(),
    }
    cfg = ScoreDecompositionConfig(
        diffusion_steps=4,
        denoiser_hidden=16,
        denoiser_layers=2,
        hidden=16,
        layers=2,
        batch_size=16,
        diffusion_updates=6,
        updates=6,
        checkpoint_every=4,
    )
    full = fit_score_decomposition(data, cfg, seed=3, progress=False)
    path = tmp_path / "state.pt"
    original = torch.optim.Adam.step
    calls = {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    torch.optim.Adam.step = step
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_score_decomposition(data, cfg, seed=3, state_path=path, run_config={"r": 1}, progress=False)
    finally:
        torch.optim.Adam.step = original
    resumed = fit_score_decomposition(data, cfg, seed=3, state_path=path, run_config={"r": 1}, progress=False)
    again = fit_score_decomposition(data, cfg, seed=3, progress=False)
    for k in range(3):
        for run in (resumed, again):
            for p, q in zip(full[k].parameters(), run[k].parameters()):
                assert torch.equal(p, q)


def test_end_to_end_on_continuous_spread(tmp_path):
    """Collect a tiny continuous-action simple_spread dataset, train, save, load, evaluate."""
    from marlcov.deep.envs.mpe_continuous import collect_continuous_dataset, read_continuous_dataset

    path = collect_continuous_dataset(tmp_path / "c.h5", n_expert=8, n_random=8, horizon=5, batch_size=8, seed=0)
    spec, traj = read_continuous_dataset(path)
    assert traj.actions.shape == (16, 5, 3, 2) and set(traj.source.tolist()) == {"expert", "random"}
    assert np.abs(traj.actions).max() <= 1.0
    # the scripted assignment policy moves agents towards landmarks: better than uniform noise
    ret = traj.returns().mean(axis=1)
    assert ret[traj.source == "expert"].mean() > ret[traj.source == "random"].mean()
    cfg = {
        "diffusion_steps": 4,
        "denoiser_hidden": 32,
        "denoiser_layers": 2,
        "hidden": 32,
        "layers": 2,
        "batch_size": 32,
        "diffusion_updates": 20,
        "updates": 20,
        "checkpoint_every": 0,
        "eval_episodes": 8,
    }
    res = train_score_decomposition(path, cfg, tmp_path / "run", seed=0, progress=False)
    assert math.isfinite(res["eval_return_per_agent"]) and math.isfinite(res["final_critic_loss"])
    policy, den, loaded_cfg = load_score_decomposition(res["policy"])
    assert loaded_cfg.diffusion_steps == 4
    assert policy(torch.zeros(2, 3, spec.obs_dim), 0).shape == (2, 3, 2)


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        ScoreDecompositionConfig(mode="joint")
    with pytest.raises(ValueError, match="prefix_dropout"):
        ScoreDecompositionConfig(prefix_dropout=1.5)


def test_continuous_actions_push_agents_in_their_direction(tmp_path):
    """Against the same start and zero actions, u = (1, 0) changes an agent's velocity along +x
    only and u = (0, -1) along -y only, by the same amount in every environment (JaxMARL
    decodes (a[2] - a[1], a[4] - a[3]) of the 5-vector built here; collisions act alike in both)."""
    from marlcov.deep.envs.mpe_continuous import ContinuousMPEBatch, read_continuous_dataset, write_continuous_dataset

    env = ContinuousMPEBatch("simple_spread_v3", 8, horizon=5)
    obs0 = env.reset(0)
    still, _ = env.step(torch.zeros(8, 3, 2))
    env.reset(0)
    u = torch.zeros(8, 3, 2)
    u[:, 0, 0] = 1.0
    u[:, 1, 1] = -1.0
    obs1, rewards = env.step(u)
    dv = obs1[..., :2] - still[..., :2]  # an agent's observation starts with its own velocity
    assert bool((dv[:, 0, 0] > 0).all()) and torch.allclose(dv[:, 0, 0], dv[0, 0, 0].expand(8), atol=1e-5)
    assert torch.allclose(dv[:, 1, 1], -dv[:, 0, 0], atol=1e-5)
    assert dv[:, 0, 1].abs().max().item() < 1e-5 and dv[:, 1, 0].abs().max().item() < 1e-5 and dv[:, 2].abs().max().item() < 1e-5
    assert obs0.shape == obs1.shape and rewards.shape == (8, 3)
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(8, 3, 5))
    traj = env.rollout(lambda o, t: torch.zeros(8, 3, 2), 0, source="still")
    path = write_continuous_dataset(tmp_path / "s.h5", env.spec, [traj])
    spec, back = read_continuous_dataset(path)
    assert spec == env.spec and np.array_equal(back.obs, traj.obs) and back.source.tolist() == ["still"] * 8
    with pytest.raises(FileExistsError):
        write_continuous_dataset(path, env.spec, [traj])
