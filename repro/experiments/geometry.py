"""Loss geometry along 1-D slices (claim C1, paper Fig 2a).

The downstream test loss is evaluated along theta + t v for directions v that are either the leading
singular directions of the learned prior's deviation matrix or Gaussian random vectors. All directions
are filter-normalised (Li et al. 2018, ``tomgoldstein/loss-landscape`` ``net_plotter.py``): every filter
(output-channel slice) of v is rescaled to the norm of the matching filter of theta, and 1-D parameters
(BatchNorm weights/biases, biases) get a zero direction (their ``ignore='biasbn'`` option), so that
scale-invariant reparametrisations do not favour one kind of direction over the other.

Two ways to treat BatchNorm along a slice (``BN_MODES``): ``frozen`` keeps the running statistics of theta (eval
mode, as in Li et al.); ``reestimated`` recomputes them at every point on a fixed subset of downstream training
images. A filter followed by BatchNorm is scale-invariant, so the radial part of a direction (along the filter
itself, :func:`radial_share`) changes the loss only through statistics that no longer match the weights; with
frozen statistics such a direction looks sharp for that reason alone.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..analysis.stats import standard_error
from ..method.priors import LowRankGaussianPrior, top_directions
from ..profiles import Profile, results_dir
from ..train import flat_params, load_flat_, predict_logits, update_bn

BN_MODES = ("frozen", "reestimated")


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


def radial_share(direction: Tensor, theta: Tensor, shapes: list[tuple[int, ...]]) -> float:
    """Share of the squared norm of ``direction`` (over multi-dimensional weights) that lies along the filters of
    theta: sum over filters f of (v_f . w_f)^2 / |w_f|^2, divided by sum_f |v_f|^2. A random direction has a share
    of about 1 / fan-in; a pure rescaling of every filter has share 1."""
    along = total = 0.0
    sizes = [int(np.prod(s)) for s in shapes]
    for v, w, shape in zip(direction.double().split(sizes), theta.double().split(sizes), shapes):
        if len(shape) <= 1:
            continue
        v, w = v.view(shape[0], -1), w.view(shape[0], -1)
        along += ((v * w).sum(1).square() / w.square().sum(1).clamp_min(1e-300)).sum().item()
        total += v.square().sum().item()
    return along / total if total > 0 else float("nan")


def random_directions(dim: int, n: int, seed: int) -> Tensor:
    """n Gaussian random directions (n x dim)."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def slice_losses(model: nn.Module, module: nn.Module, direction: Tensor, ts: np.ndarray,
                 images: Tensor, labels: Tensor, bn_images: Tensor | None = None) -> list[float]:
    """Mean cross-entropy of ``model`` on (images, labels) at module parameters theta + t * direction.

    ``bn_images=None``: BatchNorm statistics stay those of theta (eval mode, as in Li et al.); otherwise they are
    recomputed on ``bn_images`` at every point (in order, so the result is deterministic). Parameters and
    statistics are restored afterwards.
    """
    theta = flat_params(module)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    losses = []
    try:
        for t in ts:
            load_flat_(module, theta + float(t) * direction)
            if bn_images is not None:
                update_bn(model, bn_images, max_batches=len(bn_images))
            losses.append(nn.functional.cross_entropy(predict_logits(model, images), labels).item())
    finally:
        load_flat_(module, theta)
        model.load_state_dict(buffers, strict=False)
    return losses


def loss_slices(model: nn.Module, module: nn.Module, prior: LowRankGaussianPrior, images: Tensor, labels: Tensor,
                n_top: int, n_random: int, ts: np.ndarray, seed: int = 0, bn_images: Tensor | None = None) -> pd.DataFrame:
    """Every slice's losses: columns direction_type (top / random), direction (index), t, loss, and the direction's
    ``radial_share`` (after filter normalisation) and ``cos_theta`` (cosine of the raw direction with theta)."""
    theta = flat_params(module)
    shapes = [tuple(p.shape) for p in module.parameters() if p.requires_grad]
    dirs = [("top", i, v) for i, v in enumerate(top_directions(prior.factor, n_top).to(prior.mean.dtype))]
    dirs += [("random", i, v) for i, v in enumerate(random_directions(len(theta), n_random, seed))]
    rows = []
    for kind, i, raw in tqdm(dirs, desc="loss slices", leave=False):
        raw = raw.to(theta.dtype)
        v = filter_normalize(raw, theta, shapes)
        info = dict(radial_share=radial_share(v, theta, shapes),
                    cos_theta=float(raw.double().dot(theta.double()) / (raw.double().norm() * theta.double().norm())))
        for t, loss in zip(ts, slice_losses(model, module, v, ts, images, labels, bn_images)):
            rows.append(dict(direction_type=kind, direction=i, t=float(t), loss=loss, **info))
    return pd.DataFrame(rows)


def loss_increase(curves: pd.DataFrame, t_star: float) -> pd.DataFrame:
    """Per direction: mean loss at t = +-t_star minus the loss at t = 0."""
    base = curves.loc[np.isclose(curves.t, 0)].groupby(["direction_type", "direction"]).loss.mean()
    at = curves.loc[np.isclose(curves.t.abs(), t_star)].groupby(["direction_type", "direction"]).loss.mean()
    return (at - base).rename("increase").reset_index()


def flatness_test(increase: pd.DataFrame) -> dict:
    """C1's comparison: loss increase along top directions against random ones. One-sided Welch t-tests both ways
    (``welch_p``: top flatter, the claim; ``welch_p_sharper``: top sharper, the reversal) and Mann-Whitney U."""
    top = increase.loc[increase.direction_type == "top", "increase"].to_numpy()
    rnd = increase.loc[increase.direction_type == "random", "increase"].to_numpy()
    welch = stats.ttest_ind(top, rnd, equal_var=False, alternative="less")
    sharper = stats.ttest_ind(top, rnd, equal_var=False, alternative="greater")
    mw = stats.mannwhitneyu(top, rnd, alternative="less")
    return dict(top_mean=float(top.mean()), top_se=standard_error(top), n_top=len(top),
                random_mean=float(rnd.mean()), random_se=standard_error(rnd), n_random=len(rnd),
                welch_t=float(welch.statistic), welch_p=float(welch.pvalue), welch_p_sharper=float(sharper.pvalue),
                mannwhitney_p=float(mw.pvalue))


SLICES_VERSION = 1   # bump when the slice computation changes, so that saved slice sets are recomputed


def c1_slices(profile: Profile, kind: str = "ssl", bn: str = "frozen", seed: int = 0) -> pd.DataFrame:
    """:func:`compute_slices`, saved per prior, BatchNorm mode and seed under ``results/<profile>/geometry/slices/``
    and read back while the prior (its protocol hash), :data:`SLICES_VERSION` and the profile's geometry knobs are
    unchanged, so that an interrupted notebook 02 keeps the slice sets it finished (each takes up to an hour on
    ``cpu``)."""
    from .pretrain import prior_protocol

    if bn not in BN_MODES:
        raise ValueError(f"unknown BatchNorm mode {bn!r}; valid: {', '.join(BN_MODES)}")
    knobs = [getattr(profile, k) for k in ("probe_n", "geometry_test_n", "geometry_bn_n", "geometry_points",
                                           "geometry_top_directions", "geometry_random_directions")]
    tag = hashlib.sha1(repr([SLICES_VERSION, prior_protocol(profile, kind), *knobs]).encode()).hexdigest()[:10]
    path = results_dir(profile) / "geometry" / "slices" / f"{kind}_{bn}_seed{seed}_{tag}.csv"
    if path.exists():
        return pd.read_csv(path)
    curves = compute_slices(profile, kind, bn, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    curves.to_csv(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)              # atomic: a killed run leaves no half-written file
    return curves


def compute_slices(profile: Profile, kind: str = "ssl", bn: str = "frozen", seed: int = 0) -> pd.DataFrame:
    """Notebook 02's experiment: CIFAR-10 test-loss slices around the SWA mean of the ``kind`` backbone.

    A linear head is fitted on frozen CIFAR-10 features (``probe_n`` training images), then only the
    backbone is perturbed (the head stays fixed), as in the paper. With ``bn='reestimated'`` the BatchNorm
    statistics are recomputed on ``geometry_bn_n`` CIFAR-10 training images (a fixed stratified subset, no
    augmentation) at theta before the head is fitted, and again at every point of every slice.
    """
    from .. import data
    from ..models import Classifier
    from .pretrain import load_source_model, load_source_prior
    from ..train import features, fit_linear_head

    train, test = data.load("cifar10", "train"), data.load("cifar10", "test")
    tr = data.stratified_subset(train.targets, min(profile.probe_n, len(train)), seed=0)
    te = data.stratified_subset(test.targets, profile.geometry_test_n, seed=0)
    bn_images = None
    if bn == "reestimated":
        bn_images = train.images[data.stratified_subset(train.targets, profile.geometry_bn_n, seed=2)]
    backbone = load_source_model(profile, kind, "swa").backbone
    model = Classifier(backbone, 10)
    if bn_images is not None:
        update_bn(model, bn_images, max_batches=len(bn_images))
    model.head = fit_linear_head(features(backbone, train.images[tr]), train.targets[tr], 10)
    prior = load_source_prior(profile, kind)
    ts = np.linspace(-1.0, 1.0, profile.geometry_points)
    curves = loss_slices(model, backbone, prior, test.images[te], test.targets[te],
                         profile.geometry_top_directions, profile.geometry_random_directions, ts, seed, bn_images)
    return curves.assign(kind=kind, bn=bn)

