"""The MARLHF deep pipeline (MARLHF paper, sections 5-6 and appendix B), in torch.

Stages, each a function of files to files (configs are dataclasses read from JSON/YAML):

* ``online_vdn.train_behaviour_policies``: online VDN on the batched MPE, saving expert and
  rookie checkpoints; ``trivial_policy``, ``level_policy`` and ``unilateral_policy`` build the
  joint behaviour policies of Table 1.
* ``reward_model.train_reward_model``: r_phi(s, a_i) from preferences with loss (1)-(2).
* ``reference.train_reference``: pi_ref by behaviour cloning.
* ``vdn.train_offline_vdn``: offline VDN on r_std (4) plus the KL reward of (3).
* ``evaluate.evaluate_policy``, ``evaluate.reward_metrics``, ``evaluate.plot_reward_trajectory``.

Importing this package loads torch but not jax; the environment is imported by the functions
that step it.
"""

from .evaluate import evaluate_policy, plot_reward_trajectory, reward_metrics
from .online_vdn import OnlineVDNConfig, level_policy, train_behaviour_policies, trivial_policy, unilateral_policy
from .reference import ReferenceConfig, load_reference, train_reference
from .reward_model import RewardModelConfig, load_reward_model, reward_model_loss, train_reward_model
from .vdn import OfflineVDNConfig, load_policy, train_offline_vdn

__all__ = [
    "OfflineVDNConfig",
    "OnlineVDNConfig",
    "ReferenceConfig",
    "RewardModelConfig",
    "evaluate_policy",
    "level_policy",
    "load_policy",
    "load_reference",
    "load_reward_model",
    "plot_reward_trajectory",
    "reward_metrics",
    "reward_model_loss",
    "train_behaviour_policies",
    "train_offline_vdn",
    "train_reference",
    "train_reward_model",
    "trivial_policy",
    "unilateral_policy",
]


def __getattr__(name: str):
    if name == "POLICY_FORMAT":
        raise AttributeError(
            f"{__name__}.POLICY_FORMAT is now marlcov.deep.checkpoints.CHECKPOINT_FORMAT "
            "(marlcov.theory.io.POLICY_FORMAT is the tabular policy file)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
