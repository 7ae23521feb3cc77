"""DeepLabv3+ structure, the segmentation metrics against hand counts, and smoke runs of every approach."""
import pytest
import torch

from repro import data, pretrain, segmentation
from repro.models import DeepLabV3Plus, build_backbone
from repro.profiles import get_profile

P = get_profile("smoke")


@pytest.mark.parametrize("name, size", [("resnet8", (45, 60)), ("resnet50", (64, 96))])
def test_deeplab_outputs_logits_at_input_resolution_with_backbone_first(name, size):
    backbone = build_backbone(name, width=8)
    model = DeepLabV3Plus(backbone, 11, channels=16, rates=(1, 2, 3)).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8))
    assert out.shape == (2, 11, *size)
    names = [n for n, _ in model.named_parameters()]
    n_backbone = len(list(backbone.parameters()))
    assert all(n.startswith("backbone.") for n in names[:n_backbone])
    assert all(n.startswith("head.") for n in names[n_backbone:]) and len(names) > n_backbone


def test_evaluate_matches_hand_counts_and_ignores_void():
    masks = torch.tensor([[[0, 0, 1, 11]]])                        # one 1x4 image; the last pixel is void
    probs = torch.zeros(1, 11, 1, 4)
    probs[0, 0, 0, 0] = probs[0, 1, 0, 1] = probs[0, 1, 0, 2] = probs[0, 3, 0, 3] = 1.0   # pred 0, 1, 1, (3 on void)
    out = segmentation.evaluate(probs, masks)
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 1, FP 1, FN 0 -> 1/2; other classes absent -> NaN, skipped
    assert out["miou"] == pytest.approx(0.5) and out["pixel_accuracy"] == pytest.approx(2 / 3)
    assert out["iou_sky"] == pytest.approx(0.5) and out["iou_building"] == pytest.approx(0.5)
    assert out["iou_road"] != out["iou_road"]                      # NaN: absent, not counted as 0


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="unknown segmentation approach 'bayes_isotropic'; valid: sgd_transfer"):
        segmentation.default_params(P, "bayes_isotropic")
    with pytest.raises(ValueError, match=r"unknown segmentation parameter\(s\) \['n_train'\]"):
        segmentation.default_params(P, "sgd_transfer", n_train=10)


@pytest.fixture(scope="module")
def smoke_priors(tmp_path_factory, data_available):
    folder = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRO_RESULTS_DIR", str(folder))
        for kind in pretrain.KINDS:
            pretrain.prepare(P, kind)
        yield folder


@pytest.mark.parametrize("approach", list(segmentation.APPROACHES))
def test_every_approach_runs_on_camvid(smoke_priors, monkeypatch, approach):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(smoke_priors))
    p = segmentation.default_params(P, approach, prior_kind="ssl" if approach == "map_learned" else "supervised")
    out = segmentation.run_segmentation(P, p)
    assert 0 <= out["miou"] <= 1 and out["samples_collected"] == (P.bma_samples if approach.startswith("bayes") else 1)
    pred = out["predictions"]["pred"]
    assert pred.shape == (segmentation.EXAMPLES, *P.segmentation_size) and int(pred.max()) < 11
    again = segmentation.run_segmentation(P, p)
    assert again["miou"] == out["miou"]                              # deterministic
