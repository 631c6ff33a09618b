"""The MARLHF pipeline end to end (MARLHF paper, section 6, Tables 1-3 and Figure 2).

Stages, each written to its own file and skipped when that file exists (so a killed run
resumes where it stopped; inside a stage the trainers resume from their own checkpoints):

1. behaviour policies: online VDN, ``expert.pt`` and ``rookie_<steps>.pt``;
2. datasets: one HDF5 file per mix of Table 1, collected from the expert, unilateral (n-1
   experts and one rookie), rookie and trivial (uniform) joint policies in the mix's ratio;
3. labels: Bradley-Terry preference pairs in a pairs file beside the dataset;
4. reward model r_phi (loss (1)), 5. imitation reference pi_ref, 6. offline VDN on (3)-(4);
7. evaluation: greedy test return per agent, MSE of the standardised reward, plots.

Behaviour policies and datasets are made once per environment (from ``seed_base``); the
learning stages 4-7 are repeated for each of the K seeds, and tables report mean +- std over
those seeds. A run directory ``OUT`` holds ``OUT/<env>/...`` per environment and the tables
``OUT/table2.md`` / ``OUT/table3.md`` built from every environment run into ``OUT``.

A pipeline config (``deep/configs/small.json``, ``paper.json``) is a JSON or YAML mapping with
one section per stage (``online_vdn``, ``collect``, ``label``, ``reward_model``, ``reference``,
``offline_vdn``, ``evaluate``, ``table3``), an ``envs`` section of per-environment overrides of
those sections, ``seed_base``, and free-text ``notes``.
"""

from .collectors import (
    COLLECT_SEED_SPAN,
    PAIRS_SUFFIX,
    MixJob,
    collect_continuous,
    collect_dataset,
    collect_smax_dataset,
    label_dataset_file,
    pairs_path_for,
    smax_map,
)
from .config import (
    CONFIG_DIR,
    ENV_ALIASES,
    ENV_LABELS,
    SCALES,
    SECTIONS,
    TABLES,
    TOP_LEVEL,
    env_kwargs,
    env_name,
    load_pipeline_config,
    merge,
    read_mapping,
    section,
    stage_configs,
)
from .mixes import MIX_LABELS, MIXES, SOURCES, behaviour_checkpoints, mix_counts, proportional_counts, source_skill_order
from .stages import CELL_RESULT, LEARNING_STAGES, Reproduction, check_stage_config, learning_cell, run_learning_cells
from .tables import cell_text, reproduce, run_table2, run_table3, summary, write_table_markdown

__all__ = [
    "CELL_RESULT",
    "COLLECT_SEED_SPAN",
    "CONFIG_DIR",
    "ENV_ALIASES",
    "ENV_LABELS",
    "LEARNING_STAGES",
    "MIXES",
    "MIX_LABELS",
    "PAIRS_SUFFIX",
    "SCALES",
    "SECTIONS",
    "SOURCES",
    "TABLES",
    "TOP_LEVEL",
    "MixJob",
    "Reproduction",
    "behaviour_checkpoints",
    "cell_text",
    "check_stage_config",
    "collect_continuous",
    "collect_dataset",
    "collect_smax_dataset",
    "env_kwargs",
    "env_name",
    "label_dataset_file",
    "learning_cell",
    "load_pipeline_config",
    "merge",
    "mix_counts",
    "pairs_path_for",
    "read_mapping",
    "proportional_counts",
    "reproduce",
    "run_learning_cells",
    "run_table2",
    "run_table3",
    "section",
    "smax_map",
    "source_skill_order",
    "stage_configs",
    "summary",
    "write_table_markdown",
]
