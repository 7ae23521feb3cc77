"""Figures: one look per arm in every figure, and legends outside the panels."""
import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from repro import plots  # noqa: E402
from repro.experiments.approaches import APPROACHES, ARM_LABELS  # noqa: E402


def test_every_arm_has_one_colour_and_each_regime_its_own_line_style():
    arms = [a for a in ARM_LABELS if a.split(" ")[0] in APPROACHES or a == "deep_ensemble"]
    colours = {a.split(" ")[0]: plots.style(a)["color"] for a in arms}
    assert len(set(colours.values())) == len(colours)            # approaches never share a colour
    assert plots.style("bayes_learned (cold)")["color"] == plots.style("bayes_learned")["color"]
    assert plots.style("bayes_learned (cold)")["linestyle"] != plots.style("bayes_learned (T1)")["linestyle"]
    assert "color" not in plots.style("n = 100")                  # anything else takes matplotlib's cycle


def test_a_figures_legend_sits_outside_its_panels():
    rows = pd.DataFrame([dict(dataset="cifar10", prior_kind=k, approach=a, n_train=n, seed=s, accuracy=0.5 + 0.01 * s)
                         for k, a in (("ssl", "bayes_learned"), ("ssl", "map_learned"), ("none", "map_nonlearned"))
                         for n in (100, 1000) for s in (0, 1)])
    fig = plots.data_efficiency(rows, ARM_LABELS)
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = fig.legends[0]
    assert ax.get_legend() is None and len(legend.get_texts()) == 3
    box, panel = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= panel.x1                                      # right of the panel, over no data


def test_panel_curves_keep_a_series_in_one_colour_across_panels():
    rows = pd.DataFrame([dict(setting=p, widths=w, n_train=n, seed=s, accuracy=0.5)
                         for p in ("learned, map", "learned, cold", "none, map", "none, cold")
                         for w in ("grid", "de_elbo") for n in (100, 1000) for s in (0, 1)])
    fig = plots.panel_curves(rows, "n_train", "training images", "setting", "widths", "E1")
    colours = {}
    for ax in fig.axes:
        for bars in ax.containers:                               # one errorbar container per series
            colours.setdefault(bars.get_label(), set()).add(bars.lines[0].get_color())
    assert all(len(c) == 1 for c in colours.values()) and len(colours) == 2
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4


def test_panel_curves_give_a_series_the_colour_of_its_place_in_hues():
    rows = pd.DataFrame([dict(setting="learned, map", widths=w, n_train=n, seed=s, accuracy=0.5)
                         for w in ("grid", "matched") for n in (100, 1000) for s in (0, 1)])

    def colours(**kw):
        fig = plots.panel_curves(rows, "n_train", "training images", "setting", "widths", "E1", **kw)
        return {bars.get_label(): bars.lines[0].get_color() for bars in fig.axes[0].containers}

    alone, placed = colours(), colours(hues=["grid", "de_elbo", "matched"])
    assert alone["grid"] == placed["grid"] and alone["matched"] != placed["matched"]   # "matched" takes the third


def test_model_comparison_lists_the_models_top_down_in_order():
    rows = pd.DataFrame([dict(model=m, seed=s, accuracy=0.5 + 0.01 * s, nll=1.0) for m in ("BMA", "ensemble", "equal")
                         for s in (0, 1, 2)])
    fig = plots.model_comparison(rows, "C10")
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    tops = {t.get_text(): t.get_window_extent().y0 for t in ax.get_yticklabels()}
    assert labels == ["BMA", "ensemble", "equal"] and tops["BMA"] > tops["ensemble"] > tops["equal"]
