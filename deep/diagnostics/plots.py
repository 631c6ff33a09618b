"""Figures of the diagnostic: unilateral coverage per agent, bonus histograms, coverage against dataset size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from marlcov.theory.atomic import save_figure

from .report import DiagnosticResult


# ----------------------------------------------------------------------------- plots
def write_plots(result: DiagnosticResult, out_dir: str | os.PathLike) -> list[str]:
    """Per-agent unilateral coverage bars, bonus histograms and coverage against dataset size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = [a["name"] for a in result.per_agent]
    vals = [np.nan if a["unilateral"] is None else a["unilateral"] for a in result.per_agent]
    err = None
    if all("bootstrap" in a and a["bootstrap"].get("low") is not None for a in result.per_agent):
        err = np.array(
            [[max(v - a["bootstrap"]["low"], 0.0), max(a["bootstrap"]["high"] - v, 0.0)] for v, a in zip(vals, result.per_agent)]
        ).T
    ax.bar(names, vals, yerr=err, capsize=4, color="tab:orange", label="unilateral (agent deviates)")
    ax.axhline(result.single, color="tab:blue", ls="--", label="single")
    if result.uniform is not None:
        ax.axhline(result.uniform, color="tab:gray", ls=":", label="uniform")
    ax.set_ylabel("U_D")
    ax.set_title("Unilateral coverage per agent")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(str(out / "unilateral_per_agent.png"))
    save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (
        ("reference", "reference actions"),
        ("worst_deviation", "worst unilateral deviation"),
        ("joint_max", "worst joint action"),
    ):
        vals = result.histograms.get(key)
        if vals is not None and len(vals):
            ax.hist(vals, bins=50, alpha=0.5, label=label)
    ax.set_xlabel("per-step bonus")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(str(out / "bonus_histograms.png"))
    save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)

    if result.sizes:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        pairs = [s["pairs"] for s in result.sizes]
        for key, style in (("single", "o-"), ("unilateral", "s-"), ("uniform", "^-")):
            ys = [np.nan if s[key] is None else s[key] for s in result.sizes]
            ax.plot(pairs, ys, style, label=key)
        ax.set_xscale("log")
        ax.set_xlabel("preference pairs (prefix of the dataset)")
        ax.set_ylabel("U_D")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(str(out / "coverage_vs_size.png"))
        save_figure(fig, paths[-1], dpi=120)
        plt.close(fig)
    return paths
