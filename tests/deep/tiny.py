"""Tiny configurations shared by the deep tests (one place, so every module trains the same
small networks on the same batch size and the environment compiles once)."""

#: One batch size everywhere (training, collection, evaluation).
B = 8
#: MPE episode length.
H = 25

#: Online VDN behaviour policies: an expert and one rookie level in a few hundred steps.
TINY_ONLINE_VDN = {
    "n_envs": B,
    "total_env_steps": B * H * 4,
    "rookie_steps": [B * H * 2],
    "hidden": 16,
    "layers": 2,
    "buffer_episodes": 32,
    "batch_episodes": 4,
    "updates_per_iteration": 2,
    "learning_starts": 0,
    "epsilon_decay_steps": B * H * 4,
    "eval_episodes": B,
    "target_update": 3,
    "progress": False,
}

#: The whole Table 2/3 pipeline at a size that runs in seconds.
TINY_PIPELINE = {
    "online_vdn": TINY_ONLINE_VDN,
    "collect": {"trajectories": 16, "batch_size": B},
    "label": {"pairs_per_trajectory": 2},
    "reward_model": {"hidden": 16, "layers": 2, "epochs": 2, "batch_size": 16, "progress": False},
    "reference": {"hidden": 16, "layers": 2, "epochs": 2, "batch_size": 8, "progress": False},
    "offline_vdn": {"hidden": 16, "layers": 2, "updates": 20, "batch_size": 8, "target_update": 5, "progress": False},
    "evaluate": {"episodes": B, "batch_size": B, "progress": False},
    "table3": {"betas": [0.0, 1.0]},
}
