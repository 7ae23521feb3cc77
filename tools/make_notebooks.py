"""Write the thin notebooks (no outputs) from the cell lists below: one source of truth for their text.

Run ``python tools/make_notebooks.py`` after editing; executed copies live in results/<profile>/notebooks/.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1] / "notebooks"
PARAMS = '# papermill parameters: profile = "smoke" | "cpu" | "paper"; None -> $REPRO_PROFILE, else "cpu"\nprofile = None'


def notebook(cells):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src, *tags in cells:
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return nb


NOTEBOOKS = {}
NOTEBOOKS["01_prior_fitting.ipynb"] = [
    ("md", """# 01 · Source pre-training and SWAG prior fitting (paper step i)

The paper fits SWAG around ImageNet-pretrained ResNet-50s (torchvision supervised weights and a SimCLR checkpoint).
Here **Tiny-ImageNet at 32 px (200 classes, 60 k images) stands in for ImageNet**, and the backbone is the profile's
CIFAR-style ResNet (`cpu`: ResNet-20, width 16, 0.27 M backbone parameters). Two backbones are pre-trained:

* **supervised** — cross-entropy on the 200 source classes;
* **ssl** — SimCLR (NT-Xent, τ = 0.5) with SimCLR's CIFAR-scale augmentations (no hue jitter: see `repro.ssl`).

SWAG is then collected on the *same* loss (constant learning rate, evenly spaced snapshots, last K deviations kept) over the
whole model, and the prior is its marginal over the backbone. Every stage resumes from checkpoints and is skipped when its
artifact exists in `results/<profile>/priors/`."""),
    ("code", PARAMS, "parameters"),
    ("code", """import pandas as pd
import torch
from repro import plots, pretrain
from repro.profiles import get_profile

P = get_profile(profile)
pd.Series({k: getattr(P, k) for k in ["model", "width", "source_dataset", "source_train_n", "source_epochs",
                                      "ssl_epochs", "swag_epochs", "swag_snapshots", "swag_max_rank", "batch_size"]})"""),
    ("md", "## Pre-train and fit SWAG (resumable; skipped when the prior exists)"),
    ("code", """artifacts = {kind: pretrain.prepare(P, kind) for kind in pretrain.KINDS}
pd.DataFrame([{"kind": k, "file": a.prior.name, "size_MB": a.prior.stat().st_size / 2**20,
               **pretrain.load_source_prior(P, k).meta} for k, a in artifacts.items()]).T"""),
    ("md", """## Source and transfer quality of each backbone

`source_acc`: the supervised head on the source val split. `probe_*`: a linear probe on frozen features
(source train subset → source val; CIFAR-10 train subset → CIFAR-10 test subset). Rows `swag_sample_*` replace the
backbone by a draw from the learned prior at scale 1 (BatchNorm statistics recomputed)."""),
    ("code", """evaluation = pd.concat([pretrain.evaluate_source(P, kind) for kind in pretrain.KINDS], ignore_index=True)
plots.save_table(evaluation, P, "prior_fitting/source_evaluation")
evaluation.round(4)"""),
    ("md", "## SWAG spectrum: singular values of the deviation matrix"),
    ("code", """spectrum = pd.concat([pd.DataFrame({"kind": kind, "index": range(1, P.swag_max_rank + 1),
                                      "singular_value": pretrain.load_source_prior(P, kind).singular_values().numpy()})
                      for kind in pretrain.KINDS], ignore_index=True)
plots.save_table(spectrum, P, "prior_fitting/swag_spectrum")
fig = plots.spectrum(spectrum)
plots.save_figure(fig, P, "01_swag_spectrum")"""),
    ("md", """## Sanity check: SWAG samples at scale 1 stay close to the SWAG mean

A posterior approximation of the source task should keep source performance: the mean over samples of the probe
accuracy (and, for the supervised backbone, the head's source accuracy) is compared with the SWA mean's."""),
    ("code", """sanity = (evaluation.assign(group=evaluation.state.where(~evaluation.state.str.startswith("swag_sample"), "swag_samples"))
          .groupby(["kind", "group"])[["source_acc", "probe_source_acc"]].agg(["mean", "std"]).round(4))
sanity"""),
]

NOTEBOOKS["02_loss_geometry.ipynb"] = [
    ("md", """# 02 · Loss geometry along the prior's leading directions (claim C1, paper Fig 2a)

**Claim C1.** The downstream (CIFAR-10) test loss is flatter along the top singular directions of the learned SWAG
covariance than along random filter-normalised directions.

**Setup.** θ = the SWA mean of each source backbone (notebook 01); a linear head is fitted on frozen CIFAR-10
features and kept fixed. Directions: the top `geometry_top_directions` left singular vectors of the deviation matrix,
and `geometry_random_directions` Gaussian directions; every direction is filter-normalised (Li et al. 2018; 1-D
BatchNorm/bias parameters are not perturbed). Loss on a stratified CIFAR-10 test subset along θ + t·v, t ∈ [−1, 1].

**Pre-registered decision rule (written before any result).** For each direction, Δ(v) = mean loss at t = ±0.5 minus
the loss at t = 0. **C1 holds** for a prior if the mean Δ over top directions is below the mean Δ over random directions,
one-sided Welch t-test over directions at the 5 % level. The primary test is the **SSL prior** (the paper's setting); the
supervised prior is secondary. Robustness: Mann–Whitney U, and the same test at |t| = 1."""),
    ("code", PARAMS, "parameters"),
    ("code", """import pandas as pd
from repro import geometry, plots, pretrain
from repro.profiles import get_profile

P = get_profile(profile)
T_STAR = 0.5"""),
    ("code", """curves = pd.concat([geometry.c1_slices(P, kind) for kind in pretrain.KINDS], ignore_index=True)
plots.save_table(curves, P, "geometry/loss_slices")
fig = plots.loss_slices(curves)
plots.save_figure(fig, P, "02_loss_slices")"""),
    ("code", """tests = []
for kind in pretrain.KINDS:
    for t_star in (T_STAR, 1.0):
        inc = geometry.loss_increase(curves[curves.kind == kind], t_star)
        tests.append({"kind": kind, "t_star": t_star, **geometry.flatness_test(inc)})
tests = pd.DataFrame(tests)
plots.save_table(tests, P, "geometry/c1_tests")
tests.round(4)"""),
    ("md", "## Verdict (from the pre-registered rule)"),
    ("code", """from repro.report import record_claim

def holds(kind, t_star=T_STAR):
    r = tests[(tests.kind == kind) & (tests.t_star == t_star)].iloc[0]
    return bool(r.top_mean < r.random_mean and r.welch_p < 0.05), r

primary, r = holds("ssl")
secondary, s = holds("supervised")
verdict = "reproduced" if primary else ("partially reproduced" if secondary else "not reproduced")
finding = (f"loss increase at |t| = {T_STAR}: SSL prior top-{int(r.n_top)} {r.top_mean:.3f} ± {r.top_se:.3f} vs "
           f"random-{int(r.n_random)} {r.random_mean:.3f} ± {r.random_se:.3f} (Welch p = {r.welch_p:.2g}); "
           f"supervised prior {s.top_mean:.3f} ± {s.top_se:.3f} vs {s.random_mean:.3f} ± {s.random_se:.3f} "
           f"(p = {s.welch_p:.2g}); ± = SE over directions")
out = f"results/{P.name}"
record_claim(P, "C1", verdict, finding, f"[notebook]({out}/notebooks/02_loss_geometry.ipynb) · "
             f"[CSV]({out}/geometry/c1_tests.csv) · [curves]({out}/geometry/loss_slices.csv) · "
             f"[figure]({out}/figures/02_loss_slices.png)")"""),
]

if __name__ == "__main__":
    ROOT.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells), ROOT / name)
        print("wrote", ROOT / name)
