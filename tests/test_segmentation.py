"""DeepLabv3+ structure, the segmentation metrics against hand counts, and smoke runs of every approach."""
import dataclasses
import pytest
import torch
from torch import nn

from repro.experiments.spec import RunSpec
from repro.experiments import algorithms, approaches, segmentation, transfer
from repro.method.priors import IsotropicGaussianPrior
from repro.method.samplers import SGLD
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
        RunSpec.default(P, "segmentation", "bayes_isotropic")
    with pytest.raises(ValueError, match=r"unknown segmentation run parameter\(s\) \['n_train'\]"):
        RunSpec.default(P, "segmentation", "sgd_transfer", n_train=10)


def test_a_segmentation_posterior_counts_labelled_pixels():
    masks = torch.tensor([[[0, 11], [3, 3]], [[11, 11], [1, 2]]])    # two 2x2 images, three void pixels
    assert segmentation.num_observations(masks, 11, "pixel") == 5
    assert segmentation.num_observations(masks, 11, "image") == 2
    with pytest.raises(ValueError, match="likelihood must be one of pixel, image, got 'patch'"):
        segmentation.num_observations(masks, 11, "patch")


def test_only_runs_with_a_prior_term_count_pixels_and_counting_images_keeps_the_first_keys():
    pixel = RunSpec.default(P, "segmentation", "map_learned")
    assert pixel.likelihood == "pixel"
    assert "likelihood" not in RunSpec.default(P, "segmentation", "sgd_transfer").keyed()    # N plays no part
    image = RunSpec.default(P, "segmentation", "map_learned", likelihood="image")
    assert image.keyed() == {k: v for k, v in pixel.keyed().items() if k != "likelihood"}   # as the first protocol
    with pytest.raises(ValueError, match="likelihood must be one of pixel, image .a transfer run counts images., "
                                         "got 'pixel'"):
        RunSpec.default(P, "transfer", "map_learned", likelihood="pixel")
    with pytest.raises(ValueError, match="likelihood must be one of pixel, image .a transfer run counts images., "
                                         "got 'patch'"):
        dataclasses.replace(pixel, likelihood="patch")


@pytest.mark.parametrize("approach, likelihood", [("map_learned", "pixel"), ("map_learned", "image"),
                                                  ("bayes_nonlearned", "pixel"), ("sgd_transfer", None)])
def test_a_run_hands_its_posterior_the_count_its_likelihood_names(smoke_priors_dir, monkeypatch, approach, likelihood):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(smoke_priors_dir))
    seen = {}

    def stop(*args, num_data=None, compile=False):
        seen["n"] = num_data
        raise InterruptedError

    monkeypatch.setattr(segmentation, "fit_or_sample", stop)
    kw = {} if likelihood is None else dict(likelihood=likelihood)
    with pytest.raises(InterruptedError):
        segmentation.run_segmentation(P, RunSpec.default(P, "segmentation", approach, **kw))
    _, masks = segmentation.load_split(P, "train")
    labelled = int((masks != segmentation.DATASETS["camvid"][1]).sum())
    assert labelled > 100 * len(masks)                              # thousands of pixels per image, not one
    assert seen["n"] == (labelled if likelihood == "pixel" else len(masks))


@pytest.mark.parametrize("num_data, expected", [(None, 40), (123_456, 123_456)])
def test_training_hands_the_sampler_the_observations_it_is_given(monkeypatch, num_data, expected):
    seen = []

    built = algorithms.Langevin.build

    def spy(self, params, p, num_data, prior, generator):
        seen.append(num_data)
        return built(self, params, p, num_data, prior, generator)

    monkeypatch.setattr(algorithms.Langevin, "build", spy)
    p = RunSpec.default(P, "segmentation", "bayes_nonlearned", steps=6)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    transfer.fit_or_sample(nn.Linear(6, 3), IsotropicGaussianPrior(21, 1.0), approaches.lookup("bayes_nonlearned", "segmentation"),
                           p, x, y, None, nn.functional.cross_entropy, num_data=num_data)
    assert seen == [expected]


def test_counting_images_is_the_pixel_likelihood_hotter_and_with_a_narrower_prior():
    """The relabelling the study states: SGLD on the image likelihood at (T, prior variance v) takes the same steps,
    noise included, as on the pixel likelihood (N x P) at (T P, v / P), the stiff prior's exact step too."""
    target, n, pixels = torch.tensor([1.0, -2.0, 0.5, 3.0]), 7, 1000

    def run(num_data, temperature, variance):
        theta = torch.zeros(4, requires_grad=True)
        opt = SGLD([theta], lr=0.05, num_data=num_data, temperature=temperature,
                   generator=torch.Generator().manual_seed(3), prior=IsotropicGaussianPrior(4, variance))
        for _ in range(200):
            opt.zero_grad()
            (0.5 * (theta - target) ** 2).mean().backward()       # the minibatch's mean loss per observation
            opt.step()
        return theta.detach()

    image = run(n, 0.3, 0.02)
    assert torch.allclose(image, run(n * pixels, 0.3 * pixels, 0.02 / pixels), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(image, run(n * pixels, 0.3, 0.02), atol=1e-2)       # the same T and v: another chain


@pytest.mark.parametrize("approach", approaches.TASKS["segmentation"].approaches)
def test_every_approach_runs_on_camvid(smoke_priors_dir, monkeypatch, approach):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(smoke_priors_dir))
    p = RunSpec.default(P, "segmentation", approach, prior_kind="ssl" if approach == "map_learned" else "supervised")
    out = segmentation.run_segmentation(P, p)
    assert 0 <= out["miou"] <= 1 and out["samples_collected"] == (P.bma_samples if approach.startswith("bayes") else 1)
    pred = out["predictions"]["pred"]
    assert pred.shape == (segmentation.EXAMPLES, *P.segmentation_size) and int(pred.max()) < 11
    again = segmentation.run_segmentation(P, p)
    assert again["miou"] == out["miou"]                              # deterministic


def fake_voc(root, n=3, size=(20, 30)):
    """A VOC 2012 layout with ``n`` tiny images (masks with classes 0/15 and void 255), as torchvision reads it."""
    import numpy as np
    from PIL import Image

    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2012_{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((*size, 3), 40 * i, dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros(size, dtype=np.uint8)
        mask[:, size[1] // 2:] = 15
        mask[0] = 255
        Image.fromarray(mask, mode="L").save(base / "SegmentationClass" / f"{name}.png")
    for split in ("train", "val"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names))


def test_paper_profile_reads_voc_with_torchvision_and_keeps_void(tmp_path, monkeypatch):
    from repro.data import voc

    fake_voc(tmp_path / "voc")
    x, y = voc.voc_split(tmp_path / "voc", "train", (10, 15))
    assert x.shape == (3, 3, 10, 15) and x.dtype == torch.uint8 and y.shape == (3, 10, 15)
    assert set(y.unique().tolist()) == {0, 15, 255}                 # nearest resize keeps labels and void
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path))
    paper = get_profile("paper", segmentation_size=(10, 15), val_fraction=0.34)
    segmentation.load_split.cache_clear()
    try:
        assert len(segmentation.load_split(paper, "train")[0]) == 1 and len(segmentation.load_split(paper, "val")[0]) == 2
        assert len(segmentation.load_split(paper, "test")[0]) == 3
    finally:
        segmentation.load_split.cache_clear()
    probs = torch.nn.functional.one_hot(y.clamp(max=20), 21).permute(0, 3, 1, 2).float()
    assert segmentation.evaluate(probs, y, "voc")["miou"] == pytest.approx(1.0)   # void rows ignored


def test_missing_voc_says_where_and_how(tmp_path):
    from repro.data import voc

    with pytest.raises(FileNotFoundError, match="Pascal VOC 2012 not found under .*VOCSegmentation"):
        voc.voc_split(tmp_path / "nowhere", "train", (10, 10))
