"""Batched MPE stepping: our wrapper (compiled vmapped step, torch actions in, torch tensors out
through DLPack) against JaxMARL's bare ``jit(vmap(step_env))`` with jax arrays, same run.

``python benchmarks/bench_envs.py`` prints the rows of ``run``; ``--table`` prints instead the
steps/s table of docs/deep_envs.md (batch 1, 64, 1024 and unbatched mpe2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from marlcov.deep.envs.mpe import ENV_NAMES, HORIZON, MPEBatch, make_jax_env  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ours_episode_seconds(name: str, batch: int, repeats: int) -> float:
    """Seconds for one reset plus ``HORIZON`` steps of ``MPEBatch`` (actions drawn beforehand)."""
    env = MPEBatch(name, batch)
    actions = torch.randint(0, env.spec.n_actions, (HORIZON, batch, env.spec.n_agents), generator=torch.Generator().manual_seed(0))

    def episode():
        env.reset(0)
        for t in range(HORIZON):
            out = env.step(actions[t])
        out.obs.sum().item()

    episode()
    return best_of(episode, repeats)


def bare_episode_seconds(name: str, batch: int, repeats: int) -> float:
    """Seconds for the same episode with JaxMARL's own jitted, vmapped reset and step_env."""
    env = make_jax_env(name)
    agents = env.agents
    n_actions = env.action_spaces[agents[0]].n if name != "simple_tag_v3" else 5
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step_env))
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    acts = jax.random.randint(jax.random.PRNGKey(1), (HORIZON, len(agents), batch), 0, n_actions)

    def episode():
        _, state = reset(keys)
        for t in range(HORIZON):
            obs, state, _, _, _ = step(keys, state, {a: acts[t, i] for i, a in enumerate(agents)})
        jax.block_until_ready(obs)

    episode()
    return best_of(episode, repeats)


def mpe2_steps_per_second(name: str, episodes: int) -> float:
    from marlcov.deep.envs.parity import mpe2_env

    env = mpe2_env(name)
    rng = np.random.default_rng(0)
    steps = 0
    start = time.perf_counter()
    for e in range(episodes):
        env.reset(seed=e)
        while env.agents:
            env.step({a: int(rng.integers(env.action_space(a).n)) for a in env.agents})
            steps += 1
    return steps / (time.perf_counter() - start)


def run(quick: bool) -> list[dict]:
    names = ["simple_spread_v3"] if quick else list(ENV_NAMES)
    batch, repeats = 1024, (3 if quick else 10)
    rows = []
    for name in names:
        ours = ours_episode_seconds(name, batch, repeats) / HORIZON
        bare = bare_episode_seconds(name, batch, repeats) / HORIZON
        rows.append(
            {
                "name": f"{name} step, batch {batch} (torch in/out)",
                "ours_s": ours,
                "baseline": "jaxmarl jit(vmap(step_env))",
                "baseline_s": bare,
                "ratio": ours / bare,
                "ours_steps_per_s": batch / ours,
                "baseline_steps_per_s": batch / bare,
            }
        )
    return rows


def table(repeats: int = 5, mpe2_episodes: int = 40) -> list[dict]:
    out = []
    for name in ENV_NAMES:
        row = {"env": name, "mpe2_unbatched": mpe2_steps_per_second(name, mpe2_episodes)}
        for batch in (1, 64, 1024):
            row[f"ours_b{batch}"] = batch * HORIZON / ours_episode_seconds(name, batch, repeats)
            row[f"jaxmarl_b{batch}"] = batch * HORIZON / bare_episode_seconds(name, batch, repeats)
        out.append(row)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table", action="store_true", help="env-steps/s at batch 1, 64, 1024 and mpe2")
    args = parser.parse_args()
    if args.table:
        for row in table():
            print(json.dumps({k: (round(v) if isinstance(v, float) else v) for k, v in row.items()}))
    else:
        for row in run(args.quick):
            print(
                f"{row['name']:<50} ours {row['ours_s'] * 1e3:.3f} ms ({row['ours_steps_per_s']:.0f} steps/s)  "
                f"{row['baseline']}: {row['baseline_s'] * 1e3:.3f} ms ({row['baseline_steps_per_s']:.0f} steps/s)  ratio {row['ratio']:.3f}"
            )
