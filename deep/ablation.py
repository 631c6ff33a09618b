"""The paper's public code against each of our former choices, one at a time.

The MARLHF pipeline follows the public code of the paper (NataliaZhang/Jax-MARLHF) by default:
labels from min-max normalised returns, labels redrawn every minibatch, a GRU reference, and
offline VDN with gamma 0.9, double Q-learning, the target copied every 3 updates and each
agent's KL reward clipped to [-10, 1]. ``run_ablation`` measures what each choice does on one
task: it makes the behaviour policies and one dataset (the ``small`` scale of
``deep/configs`` unless ``config`` says otherwise), then trains and evaluates the official
chain and, for each variant of ``VARIANTS``, the chain with that one choice reverted
(``former`` reverts them all). Stages are files, skipped when present, so a killed run
resumes. Besides test returns it records the label agreement with the true order of returns
for both normalisations and the share of KL terms that the clip changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlcov.deep.config_model import config_values, from_mapping
from marlcov.deep.pipeline import (
    Reproduction,
    check_stage_config,
    label_dataset_file,
    load_pipeline_config,
)

#: Each variant reverts one official choice to the former one: (stage, field, value).
VARIANTS: dict[str, list[tuple[str, str, Any]]] = {
    "official": [],
    "standardised-labels": [("label", "normalisation", "standardised")],
    "fixed-labels": [("reward_model", "labels", "fixed")],
    "mlp-reference": [("reference", "model", "mlp")],
    "gamma-0.99": [("offline_vdn", "gamma", 0.99)],
    "no-double-q": [("offline_vdn", "double_q", False)],
    "target-every-200": [("offline_vdn", "target_update", 200)],
    "no-kl-clip": [("offline_vdn", "kl_clip", None)],
}
VARIANTS["former"] = [change for name, changes in VARIANTS.items() if name != "official" for change in changes]

Log = Callable[[str], None]


def _variant_stages(changes: list[tuple[str, str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for stage, field, value in changes:
        out.setdefault(stage, {})[field] = value
    return out


def _variant(stages: Mapping[str, Any], stage: str, overrides: Mapping[str, Mapping[str, Any]], name: str) -> Any:
    """The config of ``stage`` with the ``overrides`` of variant ``name`` applied."""
    values = {**config_values(stages[stage]), **overrides.get(stage, {})}
    return from_mapping(type(stages[stage]), values, f"variant {name!r}, section {stage!r}")


def _tag(overrides: Mapping[str, Any]) -> str:
    """A directory name of a stage's overrides ('default' when none)."""
    if not overrides:
        return "default"
    return "_".join(f"{k}-{json.dumps(v).replace(' ', '')}" for k, v in sorted(overrides.items())).replace('"', "")


def _json(path: Path, make: Callable[[], Any], log: Log, name: str) -> Any:
    from marlcov.deep.common import atomic_write_text

    if path.exists():
        log(f"[skip] {name}")
        return json.loads(path.read_text())
    log(f"[run ] {name}")
    value = make()
    atomic_write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", path)
    return value


def kl_clip_share(
    dataset: str | os.PathLike, reference_path: str | os.PathLike, beta: float, clip: tuple[float, float], device: str = "cpu"
) -> dict[str, float]:
    """The share of per-agent KL terms ``beta (log pi_ref(a|o) + log |A|)`` over the real steps of
    a dataset that lie above ``clip[1]`` and below ``clip[0]``."""
    import torch

    from marlcov.deep.common import load_dataset_arrays, step_masks
    from marlcov.deep.marlhf.reference import load_reference
    from marlcov.deep.marlhf.vdn import REWARD_CHUNK

    spec, arrays = load_dataset_arrays(dataset, ["obs", "actions", "avail"])
    H = spec.horizon
    obs = torch.as_tensor(arrays["obs"][:, :H], dtype=torch.float32)
    actions = torch.as_tensor(arrays["actions"].astype(np.int64))
    avail = torch.as_tensor(arrays["avail"])
    valid = torch.as_tensor(step_masks(arrays["avail"])[0])
    ref = load_reference(reference_path, device)
    terms = []
    for k in range(0, obs.shape[0], REWARD_CHUNK):
        logp = ref.log_probs(obs[k : k + REWARD_CHUNK], avail[k : k + REWARD_CHUNK])
        taken = logp.gather(-1, actions[k : k + REWARD_CHUNK, ..., None]).squeeze(-1)
        n = avail[k : k + REWARD_CHUNK].sum(dim=-1).clamp_min(1)
        terms.append((beta * (taken + torch.log(n.to(taken.dtype))))[valid[k : k + REWARD_CHUNK]])
    t = torch.cat(terms).double()
    return {
        "above_high": float((t > clip[1]).double().mean()),
        "below_low": float((t < clip[0]).double().mean()),
        "mean_unclipped": float(t.mean()),
        "mean_clipped": float(t.clamp(clip[0], clip[1]).mean()),
    }


def run_ablation(
    env: str,
    out_dir: str | os.PathLike,
    *,
    scale: str = "small",
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    mix: str = "diversified",
    seed: int = 0,
    device: str = "cpu",
    variants: list[str] | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Test return of the official chain and of each variant in ``variants`` (default: all of
    ``VARIANTS``) on the ``mix`` dataset of ``env`` (shared by the seeds; labels and learning
    stages are seeded with ``seed``); writes ``OUT/<env>/ablation_seed<seed>.json`` and returns it."""
    from marlcov.deep.common import atomic_write_text
    from marlcov.deep.marlhf.evaluate import evaluate_policy, reward_metrics
    from marlcov.deep.marlhf.reference import train_reference
    from marlcov.deep.marlhf.reward_model import load_reward_model, train_reward_model
    from marlcov.deep.marlhf.vdn import train_offline_vdn

    log = log or (lambda line: None)
    names = list(variants or VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; expected names from {sorted(VARIANTS)}")
    cfg = load_pipeline_config(scale, config)
    rep = Reproduction(env, cfg, out_dir, device, log)
    shared = rep.dir / "ablation"
    root = shared / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    policies = rep.policies()
    data = shared / f"{mix}.h5"
    stages = rep.cfg
    if not data.exists():
        log(f"[run ] dataset {mix}")
        rep.collect(mix, data)
    ev = stages["evaluate"]
    results: dict[str, Any] = {}
    for name in names:
        over = _variant_stages(VARIANTS[name])
        lab = _variant(stages, "label", over, name)
        normalisation = lab.normalisation
        pairs = root / f"pairs_{normalisation}.h5"
        label = _json(
            root / f"labels_{normalisation}.json",
            lambda: label_dataset_file(
                data,
                pairs,
                pairs_per_trajectory=lab.pairs_per_trajectory,
                steepness=lab.steepness,
                seed=seed,
                overwrite=True,
                normalisation=normalisation,
            ),
            log,
            f"labels {normalisation}",
        )
        rm_over = {"normalisation": normalisation, **over.get("reward_model", {})}
        rm_dir = root / f"reward_{_tag(rm_over)}"
        rm_cfg = _variant(stages, "reward_model", over, name)
        check_stage_config(rm_dir, rm_cfg)
        _json(
            rm_dir / "done.json",
            lambda: train_reward_model(data, rm_cfg, rm_dir, device, seed, pairs_path=pairs),
            log,
            f"reward model {rm_dir.name}",
        )
        ref_over = over.get("reference", {})
        ref_dir = root / f"reference_{_tag(ref_over)}"
        ref_cfg = _variant(stages, "reference", over, name)
        check_stage_config(ref_dir, ref_cfg)
        _json(ref_dir / "done.json", lambda: train_reference(data, ref_cfg, ref_dir, device, seed), log, f"reference {ref_dir.name}")
        vdn_over = over.get("offline_vdn", {})
        vdn_dir = root / f"vdn_{rm_dir.name}_{ref_dir.name}_{_tag(vdn_over)}"
        vdn_cfg = _variant(stages, "offline_vdn", over, name)
        check_stage_config(vdn_dir, vdn_cfg)
        _json(
            vdn_dir / "done.json",
            lambda: train_offline_vdn(data, rm_dir / "reward_model.pt", ref_dir / "reference.pt", vdn_cfg, vdn_dir, device, seed),
            log,
            f"offline VDN {name}",
        )

        def evaluate() -> dict[str, Any]:
            res = evaluate_policy(
                vdn_dir / "policy.pt",
                rep.env,
                n_episodes=ev.episodes,
                seed=seed,
                batch_size=ev.batch_size,
                device=device,
                env_kwargs=rep.env_options,
                progress=False,
            )
            quality = reward_metrics(load_reward_model(rm_dir / "reward_model.pt", device), data, device)
            return {
                "return_per_agent": res["return_per_agent"],
                "return_sem": res["return_sem"],
                "episodes": res["n_episodes"],
                "reward_mse": quality["mse"],
                "label_agreement": label["agreement_with_true_order"],
            }

        results[name] = _json(vdn_dir / "eval.json", evaluate, log, f"evaluate {name}")
    vcfg = stages["offline_vdn"]
    clip = (
        _json(
            root / "kl_clip_share.json",
            lambda: kl_clip_share(data, root / "reference_default" / "reference.pt", vcfg.beta, vcfg.kl_clip or (-10.0, 1.0), device),
            log,
            "KL clip share",
        )
        if (root / "reference_default" / "reference.pt").exists()
        else None
    )
    behaviour = json.loads((policies / "metrics.json").read_text())["summary"].get("skill_order")
    out = {
        "env": rep.env,
        "mix": mix,
        "scale": scale,
        "seed": seed,
        "variants": {n: VARIANTS[n] for n in names},
        "results": results,
        "kl_clip_share": clip,
        "behaviour_skill_order": behaviour,
    }
    atomic_write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", rep.dir / f"ablation_seed{seed}.json")
    return out


def ablation_table(per_seed: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over the seeds of ``run_ablation`` results: per variant, the test
    return per agent, the reward MSE and the label agreement; and the markdown table."""
    from marlcov.deep.pipeline.tables import cell_text, summary

    names = [n for n in VARIANTS if all(n in r["results"] for r in per_seed)]
    rows = {
        n: {k: summary([r["results"][n][k] for r in per_seed]) for k in ("return_per_agent", "reward_mse", "label_agreement")}
        for n in names
    }
    official = [r["results"]["official"]["return_per_agent"] for r in per_seed] if "official" in names else None
    lines = [
        "| variant | reverts | test return per agent | minus official (per seed) | reward MSE | label agreement |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        reverts = ", ".join(f"{stage}.{field} = {json.dumps(value)}" for stage, field, value in VARIANTS[n]) or "nothing"
        if n == "former":
            reverts = "all of the above"
        diff = (
            ""
            if official is None or n == "official"
            else ", ".join(f"{r['results'][n]['return_per_agent'] - o:+.2f}" for r, o in zip(per_seed, official))
        )
        lines.append(
            f"| {n} | {reverts} | {cell_text(rows[n]['return_per_agent'])} | {diff} | "
            f"{cell_text(rows[n]['reward_mse'], 3)} | {cell_text(rows[n]['label_agreement'], 3)} |"
        )
    return {"seeds": [r["seed"] for r in per_seed], "rows": rows, "markdown": "\n".join(lines) + "\n"}


def run_ablation_seeds(env: str, out_dir: str | os.PathLike, seeds: int = 1, **kwargs: Any) -> dict[str, Any]:
    """``run_ablation`` for seeds ``0 .. seeds - 1`` (one dataset) and ``ablation_table`` of
    them, written to ``OUT/<env>/ablation.json`` and ``ablation.md``."""
    from marlcov.deep.common import atomic_write_text

    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected a positive integer, got {seeds!r}")
    per_seed = [run_ablation(env, out_dir, seed=k, **kwargs) for k in range(seeds)]
    table = ablation_table(per_seed)
    root = Path(out_dir) / per_seed[0]["env"]
    result = {
        "env": per_seed[0]["env"],
        "mix": per_seed[0]["mix"],
        **table,
        "kl_clip_share": [r["kl_clip_share"] for r in per_seed],
        "behaviour_skill_order": per_seed[0]["behaviour_skill_order"],
    }
    atomic_write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", root / "ablation.json")
    atomic_write_text(table["markdown"], root / "ablation.md")
    return result
