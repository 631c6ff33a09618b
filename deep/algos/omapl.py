"""O-MAPL (Bui, Mai and Nguyen, arXiv 2501.18944): offline multi-agent learning of a soft
Q-function straight from preference pairs, discrete actions.

Networks: local soft Q-values ``q_i(o_i, .)`` and values ``v_i(o_i)`` (one network each, shared by
the agents with a one-hot id), a linear mixer with non-negative state-conditioned weights
``w(s)`` and bias ``b(s)`` giving ``Q_tot = M_s[q]`` and ``V_tot = M_s[v]`` (section 4.2), and
local policies ``pi_i(a_i | o_i)``. The losses are ``theory.objectives.omapl``'s functions:

* preference term (section 4.1, maximised): ``preference_objective`` of the implied rewards
  ``R_t = Q_tot(s_t, a_t) - gamma V_tot(s_{t+1})`` (``implied_rewards``; 0 after an episode's last
  step) of both trajectories of each pair. Its gradient reaches the q-network and the mixer;
  the local values ``v_i`` enter it as constants (the objective is concave in ``(q, w)`` for fixed
  ``v``, Proposition 4.1). The label ``y`` of a pair is the fraction of agents that prefer
  its first trajectory (every agent shares the team's label in the cooperative tasks).
* Extreme-V (minimised): ``extreme_v_loss(Q_tot, V_tot, beta)`` over the dataset's steps, with
  ``Q_tot`` and the mixer held fixed, so it fits the v-network (convex in ``v``).
* weighted behaviour cloning (section 4.3, maximised): ``wbc_objective`` with weights
  ``exp((Q_tot - V_tot)/beta)``, computed without gradient.

``value_form = "local"`` replaces the last two by the per-agent OMIGA-style forms of the
authors' public description: each ``v_i`` minimises Proposition 4.4's
``E[exp(w_i (q_i - v_i)/beta) + w_i v_i / beta]`` (``theory.objectives.omiga.local_value_loss``)
and each policy is fitted with weights ``exp(w_i (q_i - v_i)/beta)``
(``omiga.local_policy_objective``). The default ``"global"`` is the paper's printed form.

The steps of the trajectories in a batch of pairs also serve as the samples of the
Extreme-V and behaviour-cloning expectations. Padded steps (SMAX) are masked out: their implied
reward is 0 and they enter no expectation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from marlcov.deep.algos import (
    LinearMixer,
    LocalNet,
    OfflineData,
    clipped_exponent_values,
    evaluate_policy_net,
    fit,
    load_offline_data,
    load_policy,
    masked_log_probs,
    save_model,
    taken,
    write_metrics,
)
from marlcov.deep.common import TrainingState, resolve_device, seed_everything, torch_generator
from marlcov.deep.config_model import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigModel, config_values, load_config, one_of, setting
from marlcov.theory.objectives import omapl, omiga

__all__ = ["OMAPLConfig", "OMAPLModel", "omapl_losses", "train_omapl", "evaluate_omapl"]

VALUE_FORMS = ("global", "local")


@dataclass(frozen=True)
class OMAPLConfig(ConfigModel):
    """Hyperparameters of O-MAPL (``beta`` the temperature, ``reg_coef`` the weight of the
    chi^2 regulariser ``phi``; ``batch_pairs`` pairs per gradient step)."""

    hidden: int = setting(64, POSITIVE)
    layers: int = setting(2, POSITIVE)
    mixer_hidden: int = setting(32, POSITIVE)
    lr: float = setting(3e-4, POSITIVE)
    steps: int = setting(2000, POSITIVE)
    batch_pairs: int = setting(32, POSITIVE)
    gamma: float = setting(0.99, UNIT_INTERVAL)
    beta: float = setting(1.0, POSITIVE)
    reg_coef: float = setting(0.5, NON_NEGATIVE)
    value_form: str = setting("global", one_of(VALUE_FORMS))
    grad_clip: float = setting(10.0, POSITIVE)
    checkpoint_every: int = setting(200, NON_NEGATIVE)
    eval_episodes: int = setting(32, NON_NEGATIVE)


class OMAPLModel(torch.nn.Module):
    """The q-, v-, mixer and policy networks of O-MAPL for one dataset spec."""

    def __init__(self, obs_dim: int, state_dim: int, n_agents: int, n_actions: int, cfg: OMAPLConfig) -> None:
        super().__init__()
        self.q = LocalNet(obs_dim, n_agents, cfg.hidden, cfg.layers, n_actions)
        self.v = LocalNet(obs_dim, n_agents, cfg.hidden, cfg.layers, 1)
        self.mixer = LinearMixer(state_dim, n_agents, cfg.mixer_hidden)
        self.policy = LocalNet(obs_dim, n_agents, cfg.hidden, cfg.layers, n_actions)

    def values(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Network outputs on trajectories ``[B, H(+1), ...]``: ``q_taken [B, H, m]``,
        ``v [B, H+1, m]``, ``w [B, H+1, m]``, ``b [B, H+1]``, ``log_pi_taken [B, H, m]``."""
        H = batch["actions"].shape[1]
        q = self.q(batch["obs"][:, :H])
        logits = self.policy(batch["obs"][:, :H])
        w, b = self.mixer(batch["state"])
        return {
            "q_taken": taken(q, batch["actions"]),
            "v": self.v(batch["obs"]).squeeze(-1),
            "w": w,
            "b": b,
            "log_pi_taken": taken(masked_log_probs(logits, batch["avail"]), batch["actions"]),
        }


def omapl_losses(
    out: dict[str, torch.Tensor], valid: torch.Tensor, last: torch.Tensor, y: torch.Tensor, cfg: OMAPLConfig
) -> dict[str, torch.Tensor]:
    """O-MAPL's three terms on a batch of P pairs laid out as ``2P`` trajectories (first members,
    then second members): ``out`` from ``OMAPLModel.values``, ``valid``/``last [2P, H]``,
    labels ``y [P]``. Returns the minimised ``loss`` and its parts ``preference`` (L),
    ``extreme_v`` (J, or Proposition 4.4's local objective) and ``wbc`` (Psi)."""
    H = last.shape[1]
    q_taken, v, w, b = out["q_taken"], out["v"], out["w"], out["b"]
    q_tot = omapl.linear_mix(q_taken, w[:, :H], b[:, :H])
    v_next = omapl.linear_mix(v.detach()[:, 1:], w[:, 1:], b[:, 1:])
    v_next = torch.where(last, torch.zeros_like(v_next), v_next)
    rewards = torch.where(valid, omapl.implied_rewards(q_tot, v_next, cfg.gamma), torch.zeros_like(q_tot))
    P = y.shape[0]
    preference = omapl.preference_objective(rewards[:P], rewards[P:], y, cfg.reg_coef)
    w_now, b_now = w[:, :H].detach()[valid], b[:, :H].detach()[valid]
    v_now = v[:, :H][valid]
    log_pi = out["log_pi_taken"][valid]
    if cfg.value_form == "global":
        q_tot_d = omapl.linear_mix(q_taken.detach()[valid], w_now, b_now)
        v_tot = omapl.linear_mix(v_now, w_now, b_now)
        value = omapl.extreme_v_loss(q_tot_d, v_tot, cfg.beta)
        v_tot_d = v_tot.detach()
        q_w = clipped_exponent_values(q_tot_d, v_tot_d, 1.0, cfg.beta)
        # Agents' policies share the global weight of a step: the mean over agents is the sum
        # of the m per-agent objectives Psi_i divided by m.
        wbc = omapl.wbc_objective(log_pi, q_w[:, None], v_tot_d[:, None], cfg.beta)
    else:
        q_loc = q_taken.detach()[valid]
        value = torch.mean(omiga.local_value_loss(q_loc[..., None], v_now, w_now, cfg.beta))
        q_w = clipped_exponent_values(q_loc, v_now.detach(), w_now, cfg.beta)
        wbc = omiga.local_policy_objective(log_pi, q_w, v_now.detach(), w_now, cfg.beta)
    return {"loss": -preference + value - wbc, "preference": preference, "extreme_v": value, "wbc": wbc}


def _run_config(cfg: OMAPLConfig, dataset_path: Path, seed: int) -> dict[str, Any]:
    return {**config_values(cfg), "dataset": str(dataset_path), "seed": int(seed)}


def train_omapl(
    dataset_path: str | os.PathLike,
    config: OMAPLConfig | dict | str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "omapl_run",
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
    evaluate: bool = False,
    pairs_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train O-MAPL on the preference pairs stored in ``dataset_path`` (or in the pairs file
    ``pairs_path`` written for it, e.g. ``DATA.pairs.h5`` of ``marlcov deep label``).

    Args:
        config: an ``OMAPLConfig``, a dict of its fields or a JSON/YAML file.
        out_dir: receives ``train_state.pt`` (resumable checkpoint), ``model.pt`` and
            ``metrics.json``; a run killed at any point continues from the checkpoint.
        evaluate: also play ``eval_episodes`` greedy episodes in the environment, evaluation
            run ``seed`` (reset seeds from ``deep.common.eval_seed_start(seed, eval_episodes)``).
    Returns metrics: final loss terms, the per-step history, and the evaluation if asked.
    """
    cfg = load_config(OMAPLConfig, config)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    data: OfflineData = load_offline_data(dataset_path, dev, need_pairs=True, pairs_path=pairs_path)
    spec = data.spec
    first, second, y = data.pairs
    model = OMAPLModel(spec.obs_dim, spec.state_dim, spec.n_agents, spec.n_actions, cfg).to(dev)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch_generator(seed, "cpu")
    run_config = _run_config(cfg, Path(dataset_path), seed)
    if pairs_path is not None:
        run_config["pairs"] = str(pairs_path)
    state = TrainingState(out / "train_state.pt", cfg.checkpoint_every, {"model": model, "optim": optim}, {"batches": gen}, run_config)
    if resume:
        state.load(dev)

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(y), (min(cfg.batch_pairs, len(y)),), generator=gen).to(dev)
        traj = torch.cat([first[idx], second[idx]])
        batch = data.take(traj)
        terms = omapl_losses(model.values(batch), batch["valid"], batch["last"], y[idx], cfg)
        optim.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        return {k: v.detach() for k, v in terms.items()}

    history = fit(state, cfg.steps, step, progress, "O-MAPL")
    save_model(out / "model.pt", spec, config_values(cfg), model.policy, {"q": model.q, "v": model.v, "mixer": model.mixer}, "omapl")
    metrics: dict[str, Any] = {
        "algo": "omapl",
        "env": spec.env_name,
        "seed": int(seed),
        "steps": len(history),
        "final": history[-1] if history else {},
        "history": history,
    }
    if evaluate:
        metrics["eval"] = evaluate_policy_net(model.policy, spec, cfg.eval_episodes, seed, dev)
    write_metrics(out, metrics)
    return metrics


def evaluate_omapl(model_path: str | os.PathLike, n_episodes: int = 32, seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """Greedy (argmax) play of a trained O-MAPL policy (``out_dir/model.pt``) in its
    environment: mean return, and the win rate on SMAX."""
    dev = resolve_device(device)
    policy, spec, _ = load_policy(model_path, dev)
    return evaluate_policy_net(policy, spec, n_episodes, seed, dev)
