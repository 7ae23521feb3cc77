"""Loss geometry along 1-D slices (claim C1, paper Fig 2a).

The downstream test loss is evaluated along theta + t v for directions v that are either the leading
singular directions of the learned prior's deviation matrix or Gaussian random vectors. All directions
are filter-normalised (Li et al. 2018, ``tomgoldstein/loss-landscape`` ``net_plotter.py``): every filter
(output-channel slice) of v is rescaled to the norm of the matching filter of theta, and 1-D parameters
(BatchNorm weights/biases, biases) get a zero direction (their ``ignore='biasbn'`` option), so that
scale-invariant reparametrisations do not favour one kind of direction over the other.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn
from tqdm.auto import tqdm

from .metrics import standard_error
from .priors import LowRankGaussianPrior
from .train import flat_params, load_flat_, predict_logits


def filter_normalize(direction: Tensor, theta: Tensor, shapes: list[tuple[int, ...]]) -> Tensor:
    """Filter-normalise a flat direction against flat weights ``theta`` laid out as ``shapes``."""
    out = []
    sizes = [int(np.prod(s)) for s in shapes]
    for v, w, shape in zip(direction.split(sizes), theta.split(sizes), shapes):
        if len(shape) <= 1:
            out.append(torch.zeros_like(v))                      # BN and bias: not perturbed
            continue
        v, w = v.view(shape[0], -1), w.view(shape[0], -1)
        out.append((v * (w.norm(dim=1, keepdim=True) / (v.norm(dim=1, keepdim=True) + 1e-10))).reshape(-1))
    return torch.cat(out)


def top_directions(prior: LowRankGaussianPrior, k: int) -> Tensor:
    """The k leading left singular vectors of the prior's deviation matrix D (k x d, unit norm)."""
    D = prior.factor.double()
    evals, V = torch.linalg.eigh(D.T @ D)
    order = evals.argsort(descending=True)[:k]
    U = D @ V[:, order] / evals[order].clamp_min(1e-300).sqrt()
    return U.T.to(prior.mean.dtype)


def random_directions(dim: int, n: int, seed: int) -> Tensor:
    """n Gaussian random directions (n x dim)."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def slice_losses(model: nn.Module, module: nn.Module, direction: Tensor, ts: np.ndarray,
                 images: Tensor, labels: Tensor) -> list[float]:
    """Mean cross-entropy of ``model`` on (images, labels) at module parameters theta + t * direction.

    BatchNorm statistics stay those of theta (eval mode), as in Li et al.
    """
    theta = flat_params(module)
    losses = []
    try:
        for t in ts:
            load_flat_(module, theta + float(t) * direction)
            losses.append(nn.functional.cross_entropy(predict_logits(model, images), labels).item())
    finally:
        load_flat_(module, theta)
    return losses


def loss_slices(model: nn.Module, module: nn.Module, prior: LowRankGaussianPrior, images: Tensor, labels: Tensor,
                n_top: int, n_random: int, ts: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Every slice's losses: columns direction_type (top / random), direction (index), t, loss."""
    theta = flat_params(module)
    shapes = [tuple(p.shape) for p in module.parameters() if p.requires_grad]
    dirs = [("top", i, v) for i, v in enumerate(top_directions(prior, n_top))]
    dirs += [("random", i, v) for i, v in enumerate(random_directions(len(theta), n_random, seed))]
    rows = []
    for kind, i, v in tqdm(dirs, desc="loss slices", leave=False):
        v = filter_normalize(v.to(theta.dtype), theta, shapes)
        for t, loss in zip(ts, slice_losses(model, module, v, ts, images, labels)):
            rows.append(dict(direction_type=kind, direction=i, t=float(t), loss=loss))
    return pd.DataFrame(rows)


def loss_increase(curves: pd.DataFrame, t_star: float) -> pd.DataFrame:
    """Per direction: mean loss at t = +-t_star minus the loss at t = 0."""
    base = curves.loc[np.isclose(curves.t, 0)].groupby(["direction_type", "direction"]).loss.mean()
    at = curves.loc[np.isclose(curves.t.abs(), t_star)].groupby(["direction_type", "direction"]).loss.mean()
    return (at - base).rename("increase").reset_index()


def flatness_test(increase: pd.DataFrame) -> dict:
    """Pre-registered C1 test: increase along top directions < along random ones (one-sided Welch t-test)."""
    top = increase.loc[increase.direction_type == "top", "increase"].to_numpy()
    rnd = increase.loc[increase.direction_type == "random", "increase"].to_numpy()
    welch = stats.ttest_ind(top, rnd, equal_var=False, alternative="less")
    mw = stats.mannwhitneyu(top, rnd, alternative="less")
    return dict(top_mean=float(top.mean()), top_se=standard_error(top), n_top=len(top),
                random_mean=float(rnd.mean()), random_se=standard_error(rnd), n_random=len(rnd),
                welch_t=float(welch.statistic), welch_p=float(welch.pvalue), mannwhitney_p=float(mw.pvalue))


def c1_slices(profile, kind: str = "ssl", seed: int = 0) -> pd.DataFrame:
    """Notebook 02's experiment: CIFAR-10 test-loss slices around the SWA mean of the ``kind`` backbone.

    A linear head is fitted on frozen CIFAR-10 features (``probe_n`` training images), then only the
    backbone is perturbed (the head stays fixed), as in the paper.
    """
    from . import data
    from .models import Classifier
    from .pretrain import load_source_model, load_source_prior
    from .profiles import get_profile
    from .train import features, fit_linear_head

    profile = get_profile(profile)
    train, test = data.load("cifar10", "train"), data.load("cifar10", "test")
    tr = data.stratified_subset(train.targets, min(profile.probe_n, len(train)), seed=0)
    te = data.stratified_subset(test.targets, profile.geometry_test_n, seed=0)
    backbone = load_source_model(profile, kind, "swa").backbone
    model = Classifier(backbone, 10)
    model.head = fit_linear_head(features(backbone, train.images[tr]), train.targets[tr], 10)
    prior = load_source_prior(profile, kind)
    ts = np.linspace(-1.0, 1.0, profile.geometry_points)
    curves = loss_slices(model, backbone, prior, test.images[te], test.targets[te],
                         profile.geometry_top_directions, profile.geometry_random_directions, ts, seed)
    return curves.assign(kind=kind)
