"""The official-choice ablation: every variant changes exactly its one choice."""

import json

import pytest

from marlcov.deep.ablation import VARIANTS, run_ablation
from tests.deep.tiny import TINY_PIPELINE as TINY

pytestmark = pytest.mark.deep


def test_variants_revert_one_choice_each_and_former_reverts_all():
    singles = {name: changes for name, changes in VARIANTS.items() if name not in ("official", "former")}
    assert VARIANTS["official"] == [] and all(len(changes) == 1 for changes in singles.values())
    assert sorted(VARIANTS["former"]) == sorted(change for changes in singles.values() for change in changes)
    stages = {(stage, field) for changes in singles.values() for stage, field, _ in changes}
    assert len(stages) == len(singles)


@pytest.mark.slow
def test_ablation_runs_each_variant_and_records_what_it_measures(tmp_path):
    lines = []
    res = run_ablation("spread", tmp_path, config=TINY, variants=["official", "no-kl-clip", "standardised-labels"], log=lines.append)
    assert set(res["results"]) == {"official", "no-kl-clip", "standardised-labels"}
    for r in res["results"].values():
        assert r["episodes"] == TINY["evaluate"]["episodes"] and 0.0 <= r["label_agreement"] <= 1.0
    share = res["kl_clip_share"]
    assert 0.0 <= share["above_high"] <= 1.0 and share["mean_clipped"] <= 1.0
    root = tmp_path / "simple_spread_v3" / "ablation" / "seed0"
    # The official and the no-clip chains share the reward model and reference, not the policy.
    vdn_dirs = sorted(p.name for p in root.glob("vdn_*"))
    assert len(vdn_dirs) == 3 and len(list(root.glob("reward_*"))) == 2
    assert json.loads((tmp_path / "simple_spread_v3" / "ablation_seed0.json").read_text())["results"] == res["results"]
    again = run_ablation("spread", tmp_path, config=TINY, variants=["official"], log=lines.append)
    assert again["results"]["official"] == res["results"]["official"]
    assert any(line.startswith("[skip] evaluate official") for line in lines)
