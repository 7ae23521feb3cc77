"""Evaluation metrics: classification (accuracy, NLL, ECE, reliability bins), segmentation (IoU, mIoU)
and the statistics used to compare methods across seeds (standard error, grouped summaries, paired tests).

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
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
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
    "standard_error",
    "summarize",
    "paired_test",
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


# --------------------------------------------------------------------------------------------------
# statistics across seeds
# --------------------------------------------------------------------------------------------------

def _as_1d_float(values: Sequence[float] | np.ndarray | Tensor, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def standard_error(values: Sequence[float] | np.ndarray | Tensor) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)``; NaN if n < 2 (NaN values propagate)."""
    arr = _as_1d_float(values, "values")
    if arr.size < 2:
        return float("nan")
    return float(stats.sem(arr, ddof=1))


def summarize(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, standard error and group size per group.

    Columns: the ``by`` columns, then ``<metric>_mean`` and ``<metric>_se`` for each metric, then ``n``
    (rows in the group). NaN metric values propagate (a failed run should not be silently averaged away).
    An empty ``by`` summarises the whole frame in one row.
    """
    by, metrics = list(by), list(metrics)
    missing = [c for c in by + metrics if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in DataFrame: {missing}; available: {list(df.columns)}")

    def one(group: pd.DataFrame) -> dict[str, float]:
        row: dict[str, float] = {}
        for m in metrics:
            vals = group[m].to_numpy(dtype=np.float64)
            row[f"{m}_mean"] = float(np.mean(vals)) if vals.size else float("nan")
            row[f"{m}_se"] = standard_error(vals)
        row["n"] = len(group)
        return row

    if not by:
        return pd.DataFrame([one(df)])
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **one(group)})
    cols = by + [f"{m}_{s}" for m in metrics for s in ("mean", "se")] + ["n"]
    return pd.DataFrame(rows, columns=cols)


def paired_test(
    a: Sequence[float] | np.ndarray | Tensor,
    b: Sequence[float] | np.ndarray | Tensor,
    alternative: Literal["greater", "less", "two-sided"] = "greater",
) -> dict[str, float | int | str]:
    """Paired t-test of ``a`` vs ``b`` (same seeds, same order); ``'greater'`` tests mean(a - b) > 0.

    Returns ``mean_diff``, ``se_diff`` (standard error of a - b), ``t``, ``p``, ``n``, ``alternative``,
    and ``wilcoxon_stat`` / ``wilcoxon_p`` (signed-rank test, same alternative) when n >= 6, NaN
    otherwise. With n < 2 the t-test is undefined: t, p and se_diff are NaN. If all differences are
    equal (zero variance) t is +-inf (p = 0 or 1) or NaN when they are all zero.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    x, y = _as_1d_float(a, "a"), _as_1d_float(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be paired (same length), got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a and b must be finite (NaN/inf in a paired sample)")
    d = x - y
    n = int(d.size)
    nan = float("nan")
    out: dict[str, float | int | str] = {
        "mean_diff": float(d.mean()) if n else nan,
        "se_diff": standard_error(d),
        "t": nan,
        "p": nan,
        "n": n,
        "alternative": alternative,
        "wilcoxon_stat": nan,
        "wilcoxon_p": nan,
    }
    if n < 2:
        return out
    if np.all(d == d[0]):
        # zero variance: scipy warns and its result is numerically meaningless; state the limit instead
        if d[0] != 0:
            sign = 1.0 if d[0] > 0 else -1.0
            out["t"] = sign * math.inf
            if alternative == "two-sided":
                out["p"] = 0.0
            else:
                out["p"] = 0.0 if (sign > 0) == (alternative == "greater") else 1.0
    else:
        res = stats.ttest_rel(x, y, alternative=alternative)
        out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    # signed-rank needs some non-zero differences; n >= 6 so a one-sided exact p can reach 1/64 < 0.05
    if n >= 6 and np.any(d != 0):
        w = stats.wilcoxon(x, y, alternative=alternative)
        out["wilcoxon_stat"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
    return out
