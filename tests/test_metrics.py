"""Tests for repro.analysis.metrics: every expected value is worked out by hand in the comments."""
import math

import numpy as np
import pytest
import torch

from repro.analysis.metrics import (
    NLL_EPS,
    accuracy,
    classification_metrics,
    ece,
    iou_per_class,
    miou,
    nll,
    reliability_bins,
)

# Six 3-class predictions. Confidences (max prob), predicted class, label, correct?
#   0: .90 pred 0 label 0  correct    p(label) = .90
#   1: .85 pred 0 label 1  wrong      p(label) = .10
#   2: .70 pred 1 label 1  correct    p(label) = .70
#   3: .65 pred 1 label 0  wrong      p(label) = .30
#   4: .45 pred 0 label 0  correct    p(label) = .45
#   5: .50 pred 2 label 2  correct    p(label) = .50
# No confidence sits on a 1/5 or 1/3 bin boundary.
PROBS = torch.tensor(
    [
        [0.90, 0.05, 0.05],
        [0.85, 0.10, 0.05],
        [0.10, 0.70, 0.20],
        [0.30, 0.65, 0.05],
        [0.45, 0.35, 0.20],
        [0.25, 0.25, 0.50],
    ]
)
LABELS = torch.tensor([0, 1, 1, 0, 0, 2])

# 5 bins [0,.2) [.2,.4) [.4,.6) [.6,.8) [.8,1) (+ the [1,1] bin for conf == 1.0):
#   bin 2: {.45, .50}  conf = .475, acc = 2/2 = 1,  gap = +.525
#   bin 3: {.70, .65}  conf = .675, acc = 1/2,      gap = -.175
#   bin 4: {.90, .85}  conf = .875, acc = 1/2,      gap = -.375
#   ECE = (2*.525 + 2*.175 + 2*.375) / 6 = 2.15 / 6 = 0.358333...
ECE_5 = 2.15 / 6
# 3 bins [0,1/3) [1/3,2/3) [2/3,1):
#   bin 1: {.65, .45, .50}  conf = 1.6/3 = .53333, acc = 2/3 -> |gap| = .13333
#   bin 2: {.90, .85, .70}  conf = 2.45/3 = .81667, acc = 2/3 -> |gap| = .15
#   ECE = (3*.13333 + 3*.15) / 6 = (0.4 + 0.45) / 6 = 0.141667
ECE_3 = 0.85 / 6


# ------------------------------------------------------------------------------ classification

def test_accuracy_by_hand():
    # correct: rows 0, 2, 4, 5 -> 4 / 6
    assert accuracy(PROBS, LABELS) == pytest.approx(4 / 6, abs=1e-7)


def test_nll_by_hand():
    # -(ln .9 + ln .1 + ln .7 + ln .3 + ln .45 + ln .5) / 6
    # = -(-0.105361 - 2.302585 - 0.356675 - 1.203973 - 0.798508 - 0.693147) / 6 = 5.460249 / 6
    assert nll(PROBS, LABELS) == pytest.approx(5.460249 / 6, abs=1e-5)


def test_nll_zero_probability_is_large_but_finite():
    # row 0 gives the label prob 0 -> clamped to 1e-12: -ln 1e-12 = 27.631021; row 1: -ln .5 = 0.693147
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    value = nll(probs, torch.tensor([1, 0]))
    assert math.isfinite(value)
    assert NLL_EPS == 1e-12
    assert value == pytest.approx((27.631021 + 0.693147) / 2, abs=1e-5)


@pytest.mark.parametrize("n_bins, expected", [(5, ECE_5), (3, ECE_3)])
def test_ece_by_hand(n_bins, expected):
    assert ece(PROBS, LABELS, n_bins=n_bins) == pytest.approx(expected, abs=1e-6)


def test_reliability_bins_rows_by_hand():
    df = reliability_bins(PROBS, LABELS, n_bins=5)
    assert list(df.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy", "gap"]
    assert len(df) == 6  # 5 regular bins + the [1, 1] bin
    np.testing.assert_allclose(df["bin_lower"], [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)
    np.testing.assert_allclose(df["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0], atol=1e-6)
    assert df["count"].tolist() == [0, 0, 2, 2, 2, 0]
    # empty bins: NaN statistics
    assert df.loc[[0, 1, 5], ["confidence", "accuracy", "gap"]].isna().all().all()
    np.testing.assert_allclose(df.loc[2:4, "confidence"], [0.475, 0.675, 0.875], atol=1e-6)
    np.testing.assert_allclose(df.loc[2:4, "accuracy"], [1.0, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(df.loc[2:4, "gap"], [0.525, -0.175, -0.375], atol=1e-6)
    # count-weighted |gap| == ECE (hand value and the function)
    weighted = np.nansum(df["count"] * df["gap"].abs()) / df["count"].sum()
    assert weighted == pytest.approx(ECE_5, abs=1e-6)
    assert weighted == pytest.approx(ece(PROBS, LABELS, n_bins=5), abs=1e-6)


def test_confidence_exactly_one_gets_its_own_bin():
    # torchmetrics' binning: conf 1.0 (wrong) alone in [1,1]: acc 0, gap -1, weight 1/2;
    # conf .9 (right) in [.8,1): acc 1, gap +.1, weight 1/2.  ECE = (1 + .1) / 2 = .55
    # (Guo et al. binning would merge them: |.5 - .95| = .45.)
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]])
    labels = torch.tensor([1, 0])
    assert ece(probs, labels, n_bins=5) == pytest.approx(0.55, abs=1e-6)
    df = reliability_bins(probs, labels, n_bins=5)
    assert df["count"].tolist() == [0, 0, 0, 0, 1, 1]
    assert df.loc[5, ["bin_lower", "bin_upper", "confidence", "accuracy", "gap"]].tolist() == [1.0, 1.0, 1.0, 0.0, -1.0]
    assert df.loc[4, "gap"] == pytest.approx(0.1, abs=1e-6)


def test_classification_metrics_dict():
    out = classification_metrics(PROBS, LABELS, n_bins=5)
    assert set(out) == {"accuracy", "nll", "ece"}
    assert out["accuracy"] == pytest.approx(4 / 6, abs=1e-7)
    assert out["nll"] == pytest.approx(5.460249 / 6, abs=1e-5)
    assert out["ece"] == pytest.approx(ECE_5, abs=1e-6)


@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (torch.tensor([0.5, 0.5]), torch.tensor([0]), r"shape \[N, C\].*\(2,\)"),
        (PROBS, torch.tensor([0, 1]), r"shape \[N\] = \[6\].*got shape \(2,\)"),
        (PROBS, torch.tensor([0, 1, 1, 0, 0, 3]), r"labels out of range.*\[0, 2\].*max 3"),
        (PROBS, torch.tensor([0, 1, 1, 0, 0, -1]), r"labels out of range.*min -1"),
        (PROBS, LABELS.float(), r"labels must be an integer"),
        (PROBS * 4 - 1, LABELS, r"\[0, 1\].*logits"),
        (PROBS * 0.5, LABELS, r"sum to 1"),
        (PROBS.long(), LABELS, r"floating"),
    ],
)
def test_classification_bad_inputs(probs, labels, match):
    for fn in (accuracy, nll, ece, reliability_bins, classification_metrics):
        with pytest.raises(ValueError, match=match):
            fn(probs, labels)


def test_ece_bad_n_bins():
    with pytest.raises(ValueError, match="n_bins"):
        ece(PROBS, LABELS, n_bins=0)


# ------------------------------------------------------------------------------ segmentation

# target (255 = ignore)     pred
#   0   0 1 1                0 1 1 1
#   0   2 2 1                0 2 1 1
#   255 2 1 1                2 2 1 0      <- pred 2 on the ignored pixel
TARGET = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [255, 2, 1, 1]]])
PRED = torch.tensor([[[0, 1, 1, 1], [0, 2, 1, 1], [2, 2, 1, 0]]])
# On the 11 valid pixels (|target| / |pred| / intersection -> union = |t| + |p| - inter):
#   class 0: t {(0,0),(0,1),(1,0)}=3, p {(0,0),(1,0),(2,3)}=3, inter 2 -> union 4 -> 2/4 = 0.5
#   class 1: t {(0,2),(0,3),(1,3),(2,2),(2,3)}=5, p {(0,1),(0,2),(0,3),(1,2),(1,3),(2,2)}=6,
#            inter 4 -> union 7 -> 4/7
#   class 2: t {(1,1),(1,2),(2,1)}=3, p {(1,1),(2,1)}=2, inter 2 -> union 3 -> 2/3
#            (counting the ignored pixel's pred 2 would make it 2/4 = 0.5)
#   class 3: nowhere -> NaN
#   mIoU = (0.5 + 4/7 + 2/3) / 3 = 0.579365
IOU = [0.5, 4 / 7, 2 / 3]
MIOU = (0.5 + 4 / 7 + 2 / 3) / 3


def test_iou_ignore_and_absent_class():
    iou = iou_per_class(PRED, TARGET, num_classes=4, ignore_index=255)
    assert iou.shape == (4,)
    np.testing.assert_allclose(iou[:3].numpy(), IOU, atol=1e-6)
    assert math.isnan(iou[3].item())
    assert miou(PRED, TARGET, num_classes=4, ignore_index=255) == pytest.approx(MIOU, abs=1e-6)


def test_ignored_pixel_prediction_is_irrelevant():
    for p in (0, 1, 3, 255):  # anything, even out of range, on the ignored pixel
        pred = PRED.clone()
        pred[0, 2, 0] = p
        iou = iou_per_class(pred, TARGET, num_classes=4, ignore_index=255)
        np.testing.assert_allclose(iou[:3].numpy(), IOU, atol=1e-6)
        assert math.isnan(iou[3].item())


def test_iou_without_ignore_index():
    # relabel the ignored pixel as class 2 (target), pred is 2 there -> class 2: t 4, p 3, inter 3 -> 3/4;
    # classes 0, 1 unchanged; mIoU = (0.5 + 4/7 + 0.75) / 3
    target = TARGET.clone()
    target[0, 2, 0] = 2
    iou = iou_per_class(PRED, target, num_classes=4)
    np.testing.assert_allclose(iou[:3].numpy(), [0.5, 4 / 7, 0.75], atol=1e-6)
    assert math.isnan(iou[3].item())
    assert miou(PRED, target, num_classes=4) == pytest.approx((0.5 + 4 / 7 + 0.75) / 3, abs=1e-6)


def test_class_only_predicted_is_zero_not_nan():
    # pred says 3 on one pixel where target is 1: class 3 has union 1, intersection 0 -> 0.0 (a real error);
    # class 1 loses one intersection: t 5, p 5, inter 3 -> union 7 -> 3/7
    pred = PRED.clone()
    pred[0, 0, 3] = 3
    iou = iou_per_class(pred, TARGET, num_classes=4, ignore_index=255)
    np.testing.assert_allclose(iou.numpy(), [0.5, 3 / 7, 2 / 3, 0.0], atol=1e-6)
    assert miou(pred, TARGET, num_classes=4, ignore_index=255) == pytest.approx((0.5 + 3 / 7 + 2 / 3 + 0.0) / 4, abs=1e-6)


def test_torchmetrics_default_reports_zero_for_absent_class():
    # why iou_per_class overrides: torchmetrics' default zero_division=0 gives 0 (not NaN) for class 3
    from torchmetrics.functional.classification import multiclass_jaccard_index

    raw = multiclass_jaccard_index(PRED, TARGET, num_classes=4, average=None, ignore_index=255)
    assert raw[3].item() == 0.0


def test_ignore_index_inside_class_range_is_nan():
    # ignore_index=2: pixels with target 2 dropped; class 2 itself reported NaN, others still defined
    iou = iou_per_class(PRED, TARGET.masked_fill(TARGET == 255, 0), num_classes=4, ignore_index=2)
    assert math.isnan(iou[2].item()) and math.isnan(iou[3].item())
    assert not math.isnan(iou[0].item()) and not math.isnan(iou[1].item())


def test_iou_all_pixels_ignored():
    t = torch.full((1, 2, 2), 255)
    iou = iou_per_class(torch.zeros(1, 2, 2, dtype=torch.long), t, num_classes=3, ignore_index=255)
    assert torch.isnan(iou).all()


@pytest.mark.parametrize(
    "pred, target, match",
    [
        (PRED[:, :2], TARGET, r"same shape.*\(1, 2, 4\) and \(1, 3, 4\)"),
        (PRED.float(), TARGET, r"pred must be an integer"),
        (PRED.masked_fill(PRED == 1, 4), TARGET, r"pred labels out of range.*\[0, 3\].*max 4"),
        (PRED, TARGET.masked_fill(TARGET == 1, 7), r"target labels out of range.*max 7"),
    ],
)
def test_iou_bad_inputs(pred, target, match):
    with pytest.raises(ValueError, match=match):
        iou_per_class(pred, target, num_classes=4, ignore_index=255)


def test_iou_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        iou_per_class(PRED, TARGET, num_classes=1, ignore_index=255)
