"""Evaluation metrics: classification (accuracy, NLL, ECE, reliability bins) and segmentation (IoU, mIoU). The
statistics that compare runs are in :mod:`repro.analysis.stats`.

torchmetrics supplies accuracy, ECE and the Jaccard index; only what it lacks is written here. All
metric functions return plain Python floats (or a tensor for per-class IoU) so results can go straight
into pandas.

ECE binning follows torchmetrics exactly (``reliability_bins`` mirrors it and checks the match):
confidences are cast to float32, bins are left-closed ``[k/B, (k+1)/B)``, and a confidence of exactly
1.0 falls into an extra zero-width bin ``[1, 1]`` of its own rather than into the last regular bin.
This differs from the Guo et al. (2017) convention ``(k/B, (k+1)/B]`` whenever softmax saturates to 1.0
(common in float32 for confident networks), so ECE values are not bit-comparable with that convention.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_jaccard_index,
)

__all__ = [
    "NLL_EPS",
    "accuracy",
    "nll",
    "ece",
    "reliability_bins",
    "classification_metrics",
    "iou_per_class",
    "miou",
]

#: Floor applied to the probability of the true label before taking the log, so that a prediction
#: assigning exactly 0 to the true class yields a large finite NLL (-log 1e-12 ~= 27.63) instead of inf,
#: which would make a whole seed's mean unusable.
NLL_EPS = 1e-12

# Tolerance on row sums of probability matrices: loose enough for float16/float32 averaging over many
# classes, tight enough to catch logits or unnormalised scores passed by mistake.
_ROW_SUM_ATOL = 1e-3


# --------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------

def _check_probs_labels(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a [N, C] probability matrix and [N] integer labels; return labels on probs' device."""
    if not isinstance(probs, Tensor):
        probs = torch.as_tensor(probs)
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape [N, C], got shape {tuple(probs.shape)}")
    n, c = probs.shape
    if n == 0:
        raise ValueError("probs is empty (N = 0)")
    if c < 2:
        raise ValueError(f"probs must have at least 2 classes, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating tensor, got dtype {probs.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels must have shape [N] = [{n}] to match probs {tuple(probs.shape)}, "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    labels = labels.to(probs.device)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= c:
        raise ValueError(f"labels out of range: must lie in [0, {c - 1}] for C = {c}, got min {lo}, max {hi}")
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probs contains NaN or inf")
    if bool((probs < 0).any()) or bool((probs > 1).any()):
        # torchmetrics would silently softmax such input as logits; refuse instead
        raise ValueError("probs must lie in [0, 1] (got values outside; were logits passed?)")
    max_dev = float((probs.sum(dim=1, dtype=torch.float64) - 1).abs().max())
    if max_dev > _ROW_SUM_ATOL:
        raise ValueError(f"rows of probs must sum to 1 (max deviation {max_dev:.3g} > {_ROW_SUM_ATOL})")
    return probs, labels


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


# --------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------

def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of [N, C] predictive probabilities against [N] integer labels."""
    probs, labels = _check_probs_labels(probs, labels)
    # micro average = fraction of correct predictions over all samples
    return float(multiclass_accuracy(probs, labels, num_classes=probs.shape[1], average="micro", validate_args=False))


def nll(probs: Tensor, labels: Tensor, eps: float = NLL_EPS) -> float:
    """Mean negative log predictive probability of the true label.

    The true-label probability is clamped below at ``eps`` (default 1e-12), so a zero probability
    contributes ``-log(eps)`` (~27.63) rather than inf. Computed in float64.
    """
    probs, labels = _check_probs_labels(probs, labels)
    p_true = probs.gather(1, labels.long().unsqueeze(1)).squeeze(1).to(torch.float64)
    return float(-torch.log(p_true.clamp_min(eps)).mean())


def ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error: L1, top-label, ``n_bins`` equal-width confidence bins (torchmetrics).

    See the module docstring for the exact binning (left-closed bins, confidence 1.0 in its own bin).
    """
    probs, labels = _check_probs_labels(probs, labels)
    _check_n_bins(n_bins)
    return float(
        multiclass_calibration_error(
            probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1", validate_args=False
        )
    )


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin numbers behind a reliability diagram, binned exactly as :func:`ece`.

    Returns ``n_bins + 1`` rows: the regular bins ``[k/B, (k+1)/B)`` and, last, the zero-width bin
    ``[1, 1]`` holding predictions whose confidence is exactly 1.0 (torchmetrics keeps those apart).
    Columns: ``bin_lower, bin_upper, count, confidence`` (mean max-probability in the bin),
    ``accuracy`` (fraction correct in the bin), ``gap = accuracy - confidence`` (negative =
    overconfident). Empty bins have count 0 and NaN confidence/accuracy/gap.

    ``sum(count * |gap|) / N`` equals :func:`ece`; this is checked on every call (RuntimeError if not),
    guarding against a torchmetrics change to its binning.
    """
    probs, labels = _check_probs_labels(probs, labels)
    _check_n_bins(n_bins)
    # mirror torchmetrics: top-label confidence cast to float32, float32 linspace boundaries,
    # bucketize(right=True) - 1 -> index k for b_k <= conf < b_{k+1}, index n_bins for conf == 1.0
    conf, pred = probs.max(dim=1)
    conf = conf.float()
    correct = pred.eq(labels).to(torch.float64)
    bounds = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32, device=conf.device)
    idx = torch.bucketize(conf, bounds, right=True) - 1

    nb = n_bins + 1
    count = torch.zeros(nb, dtype=torch.float64, device=conf.device).scatter_add_(0, idx, torch.ones_like(correct))
    conf_sum = torch.zeros_like(count).scatter_add_(0, idx, conf.to(torch.float64))
    acc_sum = torch.zeros_like(count).scatter_add_(0, idx, correct)
    count_np = count.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = conf_sum.cpu().numpy() / count_np  # NaN for empty bins
        mean_acc = acc_sum.cpu().numpy() / count_np
    b = bounds.to(torch.float64).cpu().numpy()
    df = pd.DataFrame(
        {
            "bin_lower": np.append(b[:-1], 1.0),
            "bin_upper": np.append(b[1:], 1.0),
            "count": count_np.astype(np.int64),
            "confidence": mean_conf,
            "accuracy": mean_acc,
            "gap": mean_acc - mean_conf,
        }
    )

    weighted = float(np.nansum(count_np * np.abs(df["gap"].to_numpy())) / count_np.sum())
    reference = ece(probs, labels, n_bins=n_bins)
    if not math.isclose(weighted, reference, rel_tol=1e-5, abs_tol=1e-6):
        raise RuntimeError(
            f"reliability_bins out of sync with torchmetrics ECE: count-weighted |gap| = {weighted}, "
            f"ece = {reference} (did torchmetrics change its binning?)"
        )
    return df


def classification_metrics(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """``{'accuracy', 'nll', 'ece'}`` for [N, C] probabilities and [N] labels."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "ece": ece(probs, labels, n_bins=n_bins),
    }


# --------------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------------

def iou_per_class(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """Per-class intersection-over-union (float64 tensor of length ``num_classes``).

    ``pred`` and ``target`` are integer label maps of the same shape, typically [N, H, W]. Pixels whose
    *target* is ``ignore_index`` are dropped from both sides (their prediction is irrelevant and may even
    be out of range). Counts are accumulated over the whole batch (dataset-level IoU, not per image).

    A class absent from both prediction and target on the valid pixels has undefined IoU and gets NaN
    (torchmetrics would report 0 with its default ``zero_division=0``), so :func:`miou` can skip it.
    If ``ignore_index`` is itself a class index in ``[0, num_classes)``, that class is NaN too.
    """
    if not isinstance(pred, Tensor):
        pred = torch.as_tensor(pred)
    if not isinstance(target, Tensor):
        target = torch.as_tensor(target)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer label map, got dtype {t.dtype}")
    target = target.to(pred.device)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    tv, pv = target[valid], pred[valid]
    if tv.numel() == 0:  # nothing to score: every class is absent
        return torch.full((num_classes,), float("nan"), dtype=torch.float64, device=pred.device)
    for name, v in (("target", tv), ("pred", pv)):
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= num_classes:
            where = "" if ignore_index is None else f" (on pixels whose target != ignore_index={ignore_index})"
            raise ValueError(
                f"{name} labels out of range{where}: must lie in [0, {num_classes - 1}], got min {lo}, max {hi}"
            )
    # torchmetrics drops target == ignore_index pixels from both sides before counting; zero_division=0
    # is overwritten below by NaN for absent classes (the only classes with a zero union)
    iou = multiclass_jaccard_index(
        pred, target, num_classes=num_classes, average=None, ignore_index=ignore_index,
        zero_division=0.0, validate_args=False,  # validated above, with clearer messages
    ).to(torch.float64)
    present = (torch.bincount(pv.long(), minlength=num_classes) + torch.bincount(tv.long(), minlength=num_classes)) > 0
    iou = torch.where(present, iou, torch.full_like(iou, float("nan")))
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        iou[ignore_index] = float("nan")
    return iou


def miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean IoU over the classes whose IoU is defined (NaN classes of :func:`iou_per_class` skipped)."""
    return float(torch.nanmean(iou_per_class(pred, target, num_classes, ignore_index)))
