"""Analyses of saved predictions, against hand-computed values."""
import pandas as pd
import pytest
import torch

from repro.analysis import metrics, predictions
from repro.data.shift import CELLS
from repro.profiles import get_profile

SMOKE = get_profile("smoke")


@pytest.fixture
def saved(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    folder = predictions.predictions_dir(SMOKE)
    folder.mkdir(parents=True)
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = torch.tensor([0, 1, 1, 1])
    cell = torch.tensor([0, 0, 5, 5])
    torch.save({"probs": probs.half(), "labels": labels, "shift_probs": probs.flip(1).half(), "shift_labels": labels,
                "shift_cell": cell}, folder / "aaa.pt")
    torch.save({"probs": probs.half(), "labels": 1 - labels}, folder / "bbb.pt")
    rows = pd.DataFrame({"key": ["aaa", "bbb", "ccc"], "approach": ["x", "x", "y"], "accuracy": [0.75, 0.25, 0.0],
                         "status": ["ok", "ok", "failed: X"]})
    return rows, probs, labels


def test_confidence_gap_is_mean_top_probability_minus_accuracy(saved):
    rows, probs, labels = saved
    out = predictions.confidence_gaps(SMOKE, rows)
    assert list(out.key) == ["aaa", "bbb"]                                     # failed runs dropped
    assert out.confidence.iloc[0] == pytest.approx((0.9 + 0.6 + 0.7 + 0.8) / 4, abs=1e-3)
    assert out.overconfidence.iloc[0] == pytest.approx(0.75 - 0.75, abs=1e-3)


def test_pooled_reliability_is_the_reliability_of_the_pooled_predictions(saved):
    rows, probs, labels = saved
    bins = predictions.pooled_reliability(SMOKE, rows, ["approach"], n_bins=5)
    expected = metrics.reliability_bins(torch.cat([probs.half().float()] * 2), torch.cat([labels, 1 - labels]), n_bins=5)
    assert (bins.approach == "x").all()
    pd.testing.assert_frame_equal(bins.drop(columns="approach"), expected)


def test_shift_by_cell(saved):
    rows, _, _ = saved
    cells = predictions.shift_by_cell(SMOKE, rows)
    assert len(cells) == 2                                                     # only 'aaa' has shift predictions
    first = cells[cells.corruption == CELLS[0][0]].iloc[0]
    assert first.severity == CELLS[0][1] and first.cell_accuracy == pytest.approx(0.5)   # flipped: [.1,.9],[.4,.6]
    last = cells[(cells.corruption == CELLS[5][0]) & (cells.severity == CELLS[5][1])].iloc[0]
    assert last.cell_accuracy == pytest.approx(0.0)


def test_missing_predictions_say_where_they_looked(saved):
    with pytest.raises(FileNotFoundError, match="no predictions for run zzz at .*zzz.pt: rerun its study"):
        predictions.load_predictions(SMOKE, "zzz")


def test_a_deep_ensemble_is_the_mean_of_its_members_and_refuses_a_lost_member(saved):
    rows, probs, labels = saved
    members = rows.assign(seed=[0, 0, 0], member=[0, 1, 2])
    mean, truth = predictions.ensemble_predictions(SMOKE, members.iloc[:2])[0]
    assert torch.allclose(mean, probs.half().float()) and torch.equal(truth, labels)   # identical members: their mean
    with pytest.raises(ValueError, match=r"1 deep-ensemble member\(s\) did not finish \(seed, member: 0, 2\)"):
        predictions.ensemble_predictions(SMOKE, members)                    # member 2 failed: no smaller ensemble
