"""Tag returns against the uniform prey and the MARLHF paper's pretrained prey.

    python benchmarks/tag_prey_returns.py --prey PATH/fixed_good_agent.msgpack
        [--experts DIR] [--episodes 512] [--json OUT.json]

``--prey``: the paper's prey parameters (``model/tag/fixed_good_agent.msgpack`` of
NataliaZhang/Jax-MARLHF). ``--experts``: a directory of the paper's VDN Tag experts
(``model/tag/vdn_ps*.safetensors`` of the same repository: flax parameters of a Dense(64),
GRU(64), Dense(5) Q-network over the observation zero-padded to 16 and a one-hot agent id,
as JaxMARL's ``CTRolloutManager`` feeds it), played greedily and with epsilon = 0.05 (the
paper's data collection noise). The adversaries always include the uniform random policy and
a scripted chaser (each adversary takes the move best aligned with the prey's relative
position). Return: the true return per agent (every adversary gets the team reward
``10 x collisions``), mean and standard error over episodes from reset seeds 1000, 1001, ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

BATCH = 256
#: Unit moves of MPE's discrete actions: no-op, -x, +x, -y, +y.
MOVES = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
#: Where an adversary's observation holds the prey's position relative to it (after its own
#: velocity and position, the two landmarks and the two other adversaries).
PREY_REL = slice(12, 14)
EXPERT_EPSILONS = (0.0, 0.05)


def chaser(obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
    return (obs[..., PREY_REL] @ MOVES.T).argmax(dim=-1)


def paper_expert(path: Path, epsilon: float, seed: int):
    """A greedy (or epsilon-greedy) policy of one of the paper's VDN Tag experts."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax.serialization import msgpack_restore

    p = msgpack_restore(path.read_bytes())["params"]
    (cell,) = [k for k in p["ScannedRNN_0"] if k.startswith("GRUCell")]
    hidden = p["Dense_0"]["kernel"].shape[1]
    dense0, gru, dense1 = nn.Dense(hidden), nn.GRUCell(features=hidden), nn.Dense(p["Dense_1"]["kernel"].shape[1])

    @jax.jit
    def q_values(h, x):
        e = jax.nn.relu(dense0.apply({"params": p["Dense_0"]}, x))
        h, y = gru.apply({"params": p["ScannedRNN_0"][cell]}, h, e)
        return h, dense1.apply({"params": p["Dense_1"]}, y)

    rng = np.random.default_rng(seed)
    state = {}

    def act(obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        B, m, _ = obs.shape
        if t == 0:
            state["h"] = jnp.zeros((B * m, hidden))
        x = np.concatenate([obs.numpy(), np.broadcast_to(np.eye(m, dtype=np.float32), (B, m, m))], axis=-1)
        state["h"], q = q_values(state["h"], jnp.asarray(x.reshape(B * m, -1)))
        greedy = np.asarray(q).argmax(axis=-1).reshape(B, m)
        explore = rng.random((B, m)) < epsilon
        return torch.as_tensor(np.where(explore, rng.integers(0, MOVES.shape[0], (B, m)), greedy))

    return act


def returns_of(policy, prey, episodes: int) -> np.ndarray:
    from marlcov.deep.envs.mpe import MPEBatch

    env = MPEBatch("simple_tag_v3", BATCH, prey_policy=prey)
    chunks = [env.rollout(policy, seeds=1000 + k * BATCH).returns()[:, 0] for k in range(-(-episodes // BATCH))]
    return np.concatenate(chunks)[:episodes]


def main(argv=None) -> int:
    from marlcov.deep.envs.mpe import UniformRandomPolicy
    from marlcov.deep.envs.tag_prey import load_marlhf_prey

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prey", required=True, help="fixed_good_agent.msgpack of the MARLHF repository")
    parser.add_argument("--experts", help="directory of the paper's vdn_ps*.safetensors Tag experts")
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    adversaries = [("uniform random", lambda: UniformRandomPolicy(1)), ("scripted chaser", lambda: chaser)]
    if args.experts:
        for path in sorted(Path(args.experts).glob("vdn_ps*.safetensors"), key=lambda q: int(q.stem[6:])):
            for eps in EXPERT_EPSILONS:
                adversaries.append((f"paper expert {path.stem}, eps {eps}", lambda path=path, eps=eps: paper_expert(path, eps, 0)))
    rows = []
    print(f"{'adversaries':40s} {'uniform prey':>16s} {'MARLHF prey':>16s}")
    for name, make in adversaries:
        row = {"adversaries": name}
        for prey_name, prey in (("uniform", None), ("marlhf", load_marlhf_prey(args.prey))):
            r = returns_of(make(), prey, args.episodes)
            row[prey_name] = {"mean": float(r.mean()), "sem": float(r.std(ddof=1) / np.sqrt(len(r))), "episodes": len(r)}
        rows.append(row)
        print(
            f"{name:40s} {row['uniform']['mean']:9.2f} ± {row['uniform']['sem']:4.2f} {row['marlhf']['mean']:9.2f} ± {row['marlhf']['sem']:4.2f}",
            flush=True,
        )
    if args.json:
        from marlcov.deep.common import atomic_write_text

        atomic_write_text(json.dumps({"episodes": args.episodes, "rows": rows}, indent=1) + "\n", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
