"""Figures and tables the notebooks show and save under ``results/<profile>/``."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .files import atomic_file

from .profiles import Profile, results_dir

sns.set_theme(context="notebook", style="whitegrid")


def save_table(df: pd.DataFrame, profile: str | Profile, name: str) -> Path:
    """Write ``results/<profile>/<name>.csv`` atomically (temp file + rename)."""
    path = results_dir(profile) / f"{name}.csv"
    with atomic_file(path, "w", newline="", encoding="utf-8") as f:
        df.to_csv(f, index=False)
    return path


def save_figure(fig: plt.Figure, profile: str | Profile, name: str) -> Path:
    """Save ``results/<profile>/figures/<name>.png``."""
    path = results_dir(profile) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def spectrum(sv: pd.DataFrame) -> plt.Figure:
    """SWAG deviation spectra (columns kind, index, singular_value), log scale."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(sv, x="index", y="singular_value", hue="kind", marker="o", ax=ax)
    ax.set(yscale="log", xlabel="singular direction", ylabel="singular value of D / sqrt(K-1)",
           title="SWAG spectrum (source task)")
    return fig


def loss_slices(curves: pd.DataFrame) -> plt.Figure:
    """Fig 2a: test loss along top singular vs random filter-normalised directions, one panel per kind."""
    kinds = list(dict.fromkeys(curves["kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        sub = curves[curves.kind == kind]
        sns.lineplot(sub, x="t", y="loss", hue="direction_type", errorbar="se", ax=ax,
                     hue_order=["top", "random"])
        ax.set(title=f"{kind} prior", xlabel="t (filter-normalised step)", ylabel="CIFAR-10 test loss")
    return fig
