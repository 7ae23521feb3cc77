"""Figures and tables the notebooks show and save under ``results/<profile>/``."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .analysis.wording import VERDICTS
from .experiments.approaches import APPROACHES, arm_parts
from .files import atomic_file
from .profiles import Profile, results_dir

sns.set_theme(context="notebook", style="whitegrid")


def save_table(df: pd.DataFrame, profile: Profile, name: str) -> Path:
    """Write ``results/<profile>/<name>.csv`` atomically (temp file + rename)."""
    path = results_dir(profile) / f"{name}.csv"
    with atomic_file(path, "w", newline="", encoding="utf-8") as f:
        df.to_csv(f, index=False)
    return path


def start(profile: Profile) -> None:
    """What a notebook's first cell sets up: a line naming the active profile (set by the parameters cell, else
    ``$REPRO_PROFILE``, else ``cpu``), and tables shown with 4 significant digits (a λ of 1e-6 shows as 1e-06, not
    as 0.0000)."""
    pd.set_option("display.float_format", "{:.4g}".format)
    print(f"profile {profile.name}: {profile.model} at {profile.image_size} px on {profile.device}, training sets of "
          f"{', '.join(map(str, profile.train_sizes))} images (repro/profiles.py)")


def save_figure(fig: plt.Figure, profile: Profile, name: str) -> Path:
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


def probes_by_epoch(probes: pd.DataFrame, matched: int | None = None) -> plt.Figure:
    """Linear-probe accuracy of every pre-training epoch (source and CIFAR-10), one line per kind."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, col, title in zip(axes, ["probe_source_acc", "probe_cifar10_acc"], ["source probe", "CIFAR-10 probe"]):
        sns.lineplot(probes, x="epoch", y=col, hue="kind", marker="o", ax=ax)
        ax.set(title=f"{title} by pre-training epoch", ylabel="accuracy")
        if matched is not None:
            ax.axvline(matched, color="grey", ls=":", label=f"matched supervised epoch ({matched})")
    axes[1].legend()
    return fig


def snapshot_norms(norms: pd.DataFrame) -> plt.Figure:
    """||θ|| of the backbone at every SWAG snapshot relative to the start of SWAG (filter-norm drift)."""
    rel = norms.assign(relative=norms.norm / norms.groupby("kind").norm.transform("first"))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(rel, x="snapshot", y="relative", hue="kind", marker="o", ax=ax)
    ax.set(xlabel="SWAG snapshot (0 = start of SWAG)", ylabel="||θ|| / ||θ_0||", title="Backbone norm during SWAG")
    return fig


def loss_slices(curves: pd.DataFrame) -> plt.Figure:
    """Fig 2a: test loss along top singular vs random filter-normalised directions; a panel per kind (columns) and
    BatchNorm mode (rows, when the curves have a ``bn`` column)."""
    kinds = list(dict.fromkeys(curves["kind"]))
    modes = list(dict.fromkeys(curves["bn"])) if "bn" in curves else [None]
    fig, axes = plt.subplots(len(modes), len(kinds), figsize=(5 * len(kinds), 3.4 * len(modes)), squeeze=False)
    for row, mode in zip(axes, modes):
        for ax, kind in zip(row, kinds):
            sub = curves[(curves.kind == kind) & ((curves.bn == mode) if mode else True)]
            sns.lineplot(sub, x="t", y="loss", hue="direction_type", errorbar="se", ax=ax,
                         hue_order=["top", "random"])
            ax.set(title=f"{kind} prior" + (f", BatchNorm {mode}" if mode else ""),
                   xlabel="t (filter-normalised step)", ylabel="CIFAR-10 test loss")
    fig.tight_layout()
    return fig


# One colour per approach in every figure (the paper's arms (1)-(5) first), one line style per temperature regime:
# a reader who learns "blue is (1) Bayes + learned" in one figure can rely on it in the next.
_ORDER = ("bayes_learned", "map_learned", "sgd_transfer", "bayes_nonlearned", "map_nonlearned", "deep_ensemble")
COLOURS = dict(zip((*_ORDER, *(a for a in APPROACHES if a not in _ORDER)),
                   [*sns.color_palette("tab10"), *sns.color_palette("dark", 6)]))
MARKERS = {"bayes": "o", "map": "s", "sgd": "^", "deep": "D", "vi": "v"}
LINESTYLES = {"cold": "--", "mid-slope λ": ":"}           # T = 1 and optimisers: solid


def style(name: str) -> dict:
    """Colour, marker and line style of an approach or arm (``"bayes_learned (cold)"``) in every figure; other
    names (a setting, a size) take matplotlib's cycle."""
    approach, regime = arm_parts(str(name))
    if approach not in COLOURS:
        return {"marker": "o"}
    return {"color": COLOURS[approach], "marker": MARKERS[approach.split("_")[0]],
            "linestyle": LINESTYLES.get(regime, "-")}


def _errorbars(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, hue: str, labels: dict | None = None,
               colours: dict | None = None) -> None:
    """Mean ± SE over seeds of ``y`` against ``x``, one line per ``hue`` value, each arm in its own style (or the
    colour ``colours`` gives its value)."""
    for name, g in df.groupby(hue, sort=False):
        s = g.groupby(x)[y].agg(["mean", "sem"]).reset_index()
        look = style(name) | ({"color": colours[name]} if colours and name in colours else {})
        ax.errorbar(s[x], s["mean"], yerr=s["sem"].fillna(0), capsize=3, label=(labels or {}).get(name, name), **look)


def _legend(fig: plt.Figure, axes) -> None:
    """One legend for the whole figure, outside the panels on the right (never over data): every line of every
    panel once."""
    seen = {}
    for ax in getattr(axes, "flat", axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(seen.values(), seen.keys(), loc="outside right center", fontsize="small")   # clear of a suptitle


def rank_curve(rows: pd.DataFrame, labels: dict | None = None) -> plt.Figure:
    """Fig 2b: test accuracy of the learned-prior arms against rank, one line per ``arm`` (the approach where there is
    no such column); the isotropic learned-mean prior of each arm as a band."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4), layout="constrained")
    by = "arm" if "arm" in rows else "approach"
    learned = rows[rows.approach.isin(["bayes_learned", "map_learned"])]
    _errorbars(ax, learned, "rank", "accuracy", by, labels)
    for name, iso in rows[rows.approach == "bayes_isotropic"].groupby(by).accuracy:
        m, se = iso.mean(), iso.sem() if len(iso) > 1 else 0.0
        look = style(name)
        ax.axhline(m, color=look["color"], ls=look["linestyle"], label=(labels or {}).get(name, name))
        ax.axhspan(m - se, m + se, color=look["color"], alpha=0.15)
    ranks = sorted(learned["rank"].unique())
    ax.set(xscale="symlog", xlabel="rank k of the low-rank part (0 = diagonal only)", ylabel="test accuracy",
           title="Rank ablation (mean ± SE over seeds)")
    ax.set_xticks(ranks, [str(k) for k in ranks])
    ax.minorticks_off()
    _legend(fig, [ax])
    return fig


def metric_curves(rows: pd.DataFrame, x: str, xlabel: str, title: str, labels: dict | None = None,
                  xscale: str = "log", by: str = "approach", **scale_kw) -> plt.Figure:
    """Test accuracy and NLL against ``x``, one line per ``by`` value (mean ± SE over seeds): Fig 2d for x = lambda."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")     # labels never over the next panel
    for ax, metric in zip(axes, ("accuracy", "nll")):
        _errorbars(ax, rows, x, metric, by, labels)
        ax.set_xscale(xscale, **scale_kw)
        ax.set(xlabel=xlabel, ylabel=f"test {metric}")
    _legend(fig, axes)
    fig.suptitle(f"{title} (mean ± SE over seeds)")
    return fig


def panel_curves(rows: pd.DataFrame, x: str, xlabel: str, panel: str, hue: str, title: str,
                 metric: str = "accuracy", xscale: str = "log", hues: list | None = None) -> plt.Figure:
    """Test ``metric`` against ``x``, one panel per ``panel`` value and one line per ``hue`` value, a hue in the same
    colour in every panel (mean ± SE over seeds): many series that one panel could not show apart. ``hues`` fixes
    the colour order (a hue keeps its colour across figures that show only some of them)."""
    names, hues = list(dict.fromkeys(rows[panel])), hues or list(dict.fromkeys(rows[hue]))
    colours = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    cols = 2 if len(names) == 4 else min(3, len(names))             # four panels as a square
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(4.2 * cols + 2.4, 3.2 * -(-len(names) // cols)),
                             squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, names):
        _errorbars(ax, rows[rows[panel] == name], x, metric, hue, colours=colours)
        ax.set(xscale=xscale if rows[x].nunique() > 1 else "linear", title=name, xlabel=xlabel,
               ylabel=f"test {metric}")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    _legend(fig, axes)
    fig.suptitle(f"{title} (mean ± SE over seeds)")
    return fig


def model_comparison(rows: pd.DataFrame, title: str, by: str = "model") -> plt.Figure:
    """Test accuracy and NLL of each ``by`` value (a BMA, an ensemble), mean ± SE over seeds with every seed's value
    as a dot: C10's comparison, where a handful of models per regime tell more as points than as lines."""
    names = list(dict.fromkeys(rows[by]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(names) + 1.4), sharey=True, layout="constrained")
    for ax, metric in zip(axes, ("accuracy", "nll")):
        for i, name in enumerate(names):
            v = rows.loc[rows[by] == name, metric]
            ax.errorbar(v.mean(), i, xerr=v.sem() if len(v) > 1 else 0, fmt="o", capsize=3, color="k")
            ax.plot(v, [i] * len(v), ".", color="gray", alpha=0.6)
        ax.set(xlabel=f"test {metric}", yticks=range(len(names)), yticklabels=names)
    axes[0].invert_yaxis()                     # the first model on top (the axes share y: once for both)
    fig.suptitle(f"{title} (mean ± SE over seeds; grey: each seed)")
    return fig


SWEPT_LABELS = {"lr": "learning rate", "scale": "λ (learned prior's width)", "alpha": "α (non-learned prior's variance)"}


def validation_sweeps(rows: pd.DataFrame, metric: str, ylabel: str) -> plt.Figure:
    """How each arm was tuned: ``metric`` against the swept value (log), one panel per swept hyperparameter (column
    ``swept``, the value in ``value``), one line per ``setting`` (mean ± SE over the tuning seeds)."""
    names = list(dict.fromkeys(rows.swept))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.6), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], names):
        _errorbars(ax, rows[rows.swept == name], "value", metric, "setting")
        ax.set(xscale="log", xlabel=SWEPT_LABELS.get(name, name), ylabel=ylabel)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22))   # below: never over a point
    fig.suptitle("Validation sweeps (mean ± SE over the tuning seeds)")
    return fig


def data_efficiency(rows: pd.DataFrame, labels: dict | None = None, metric: str = "accuracy") -> plt.Figure:
    """Fig 3: ``metric`` against training-set size, one panel per (dataset, prior kind), one line per approach."""
    panels = [(ds, kind) for ds in dict.fromkeys(rows.dataset) for kind in dict.fromkeys(rows.prior_kind) if kind != "none"
              and ((rows.dataset == ds) & (rows.prior_kind == kind)).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 2.6, 3.6), squeeze=False, sharey=False,
                             layout="constrained")
    for ax, (ds, kind) in zip(axes[0], panels):
        sub = rows[(rows.dataset == ds) & rows.prior_kind.isin([kind, "none"])]
        _errorbars(ax, sub, "n_train", metric, "approach", labels)
        ax.set(xscale="log", xlabel="training images", ylabel=f"test {metric}", title=f"{ds}, {kind} prior")
    _legend(fig, axes)
    return fig


def reliability(bins: pd.DataFrame, by: str = "approach", labels: dict | None = None) -> plt.Figure:
    """Reliability diagrams (accuracy against confidence per bin), one panel per ``by`` value; below the
    diagonal = over-confident."""
    groups = list(dict.fromkeys(bins[by]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, name in zip(axes[0], groups):
        b = bins[(bins[by] == name) & (bins["count"] > 0)]
        width = (b.bin_upper - b.bin_lower).where(lambda w: w > 0, 0.02)
        ax.bar(b.bin_lower, b.accuracy, width=width, align="edge", edgecolor="k", alpha=0.7, label="accuracy",
               color=style(name).get("color"))
        share = b["count"] / b["count"].sum()          # how many predictions each bin holds: where the diagram weighs
        ax.bar(b.bin_lower, share, width=width, align="edge", color="k", alpha=0.35, label="share of predictions")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        title = (labels or {}).get(name, name).replace(", ", ",\n", 1)      # two short lines: titles never collide
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=title)
        ax.title.set_fontsize("small")
    axes[0][0].set_ylabel("accuracy in bin")
    _legend(fig, axes)
    return fig


def shift_cells(cells: pd.DataFrame, labels: dict | None = None) -> plt.Figure:
    """Accuracy under each corruption against severity, one line per approach (mean ± SE over seeds)."""
    names = list(dict.fromkeys(cells.corruption))
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names) + 2.6, 3.3), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, name in zip(axes[0], names):
        _errorbars(ax, cells[cells.corruption == name], "severity", "cell_accuracy", "approach", labels)
        ax.set(title=name, xlabel="severity", ylabel="test accuracy")
    _legend(fig, axes)
    return fig


# CamVid class colours of the SegNet tutorial (void = black)
CAMVID_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0)]


def segmentation_examples(images, masks, predictions: dict) -> plt.Figure:
    """Rows: test images; columns: image, ground truth, then one predicted map per entry of ``predictions``."""
    import numpy as np

    palette = np.array(CAMVID_COLOURS, dtype=np.uint8)
    cols = ["image", "ground truth"] + list(predictions)
    fig, axes = plt.subplots(len(images), len(cols), figsize=(2.2 * len(cols), 1.8 * len(images)), squeeze=False)
    for i in range(len(images)):
        panels = [images[i].permute(1, 2, 0).numpy(), palette[masks[i].numpy()]]
        panels += [palette[np.minimum(p[i].numpy(), len(palette) - 1)] for p in predictions.values()]
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j].replace(" (", "\n("), fontsize="small")
    return fig


def learning_curves(rows: pd.DataFrame, labels: dict | None = None, budgets: pd.DataFrame | None = None) -> plt.Figure:
    """Notebook 09: holdout accuracy against total steps (log2), one panel per training-set size, one line per arm
    (``rows`` have a column ``arm``); the chosen budget of each size as a dashed line."""
    sizes = sorted(rows.n_train.unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes) + 2.6, 3.6), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], sizes):
        _errorbars(ax, rows[rows.n_train == n], "steps", "accuracy", "arm", labels)
        if budgets is not None and n in set(budgets.n_train):
            b = budgets.set_index("n_train").budget.get(n)
            if pd.notna(b):
                ax.axvline(b, color="gray", ls="-", lw=4, alpha=0.25)
        ax.set(xscale="log", xlabel="total steps", ylabel="holdout accuracy", title=f"n = {n}")
        steps = sorted(rows[rows.n_train == n].steps.unique())      # the budgets tried, as plain numbers
        ax.set_xticks(steps, [f"{v:g}" for v in steps])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    _legend(fig, axes)
    fig.suptitle(f"Learning curves (mean ± SE over seeds{'; grey: the chosen budget' if budgets is not None else ''})")
    return fig


def accuracy_by_cycle(samples: pd.DataFrame, labels: dict | None = None) -> plt.Figure:
    """Notebook 09: the accuracy of each kept sample against the cycle it ends, at each size's largest budget
    (one line per arm); a flat line means every cycle ends at a trained model."""
    sizes = sorted(samples.n_train.unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes) + 2.6, 3.4), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], sizes):
        sub = samples[samples.n_train == n]
        sub = sub[sub.steps == sub.steps.max()]
        _errorbars(ax, sub, "cycle", "accuracy", "arm", labels)
        ax.set(xlabel="cycle (0 = burn-in, not kept)", ylabel="holdout accuracy of one sample",
               title=f"n = {n}, {int(sub.steps.max()) if len(sub) else 0} steps")
    _legend(fig, axes)
    return fig


#: One colour per verdict word, in the order of :data:`repro.analysis.wording.VERDICTS`.
VERDICT_COLOURS = dict(zip(VERDICTS, ("#1b9e77", "#d95f02", "#c0392b", "#7f7f7f"), strict=True))


def forest(effects: pd.DataFrame) -> plt.Figure:
    """Every claim's primary effect with its 95 % CI, in units of its equivalence margin (±1 point of accuracy or mIoU,
    ±0.05 nats of NLL) and signed so that right is the paper's direction, one panel per temperature regime; the grey
    band is the margin (inside it: no effect that matters), the colour the claim's verdict in that regime."""
    regimes = list(dict.fromkeys(effects.regime))
    labels = list(dict.fromkeys(effects.label))
    shown = [textwrap.fill(label, 60) for label in labels]          # a long label must not squeeze the panels away
    lines = sum(label.count("\n") + 1 for label in shown)
    fig, axes = plt.subplots(1, len(regimes), figsize=(5 * len(regimes) + 3, 0.18 * lines + 0.2 * len(labels) + 1.4),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    for ax, regime in zip(axes[0], regimes):
        ax.axvspan(-1, 1, color="0.85", zorder=0)
        ax.axvline(0, color="0.4", lw=0.8)
        for r in effects[effects.regime == regime].itertuples():
            y = labels.index(r.label)
            ax.errorbar(r.effect, y, xerr=[[r.effect - r.low], [r.high - r.effect]], fmt="o", capsize=3,
                        color=VERDICT_COLOURS[r.verdict])
        ax.set_xscale("asinh", linear_width=1)      # linear inside the margin, logarithmic beyond: 0.5 and 20 both read
        ticks = [t for t in (-50, -20, -5, -1, 0, 1, 5, 20, 50)
                 if effects.low.min() - 1 <= t <= effects.high.max() + 1 or abs(t) <= 1]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(title=regime)
        ax.set_yticks(range(len(labels)), shown)
    axes[0, 0].invert_yaxis()
    fig.supxlabel("effect in equivalence margins, 95 % CI (right of 0: the paper's direction; grey: within the margin)")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, loc="outside right center", fontsize="small", title="verdict")
    return fig
