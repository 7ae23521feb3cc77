"""Filter normalisation and the prior's leading directions, on hand-checkable cases."""
import numpy as np
import pandas as pd
import pytest
import torch

from repro.experiments.geometry import filter_normalize, flatness_test, loss_increase


def test_filter_normalize_matches_each_filter_norm_and_zeroes_1d_parameters():
    shapes = [(2, 1, 2), (3,)]                                   # two "filters" of 2 weights, then a bias/BN vector
    theta = torch.tensor([3.0, 4.0, 0.0, 2.0, 1.0, 1.0, 1.0])   # filter norms 5 and 2
    direction = torch.tensor([1.0, 0.0, 0.0, -6.0, 7.0, 8.0, 9.0])
    v = filter_normalize(direction, theta, shapes)
    assert torch.allclose(v, torch.tensor([5.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0]))


def test_loss_increase_and_one_sided_test():
    rows = [dict(direction_type=k, direction=i, t=t, loss=1.0 + (0.1 if k == "top" else 2.0) * (i + 1) * abs(t))
            for k, n in (("top", 3), ("random", 4)) for i in range(n) for t in (-0.5, 0.0, 0.5)]
    inc = loss_increase(pd.DataFrame(rows), 0.5)
    assert np.allclose(inc[inc.direction_type == "top"].increase, [0.05, 0.10, 0.15])
    result = flatness_test(inc)
    assert result["top_mean"] == pytest.approx(0.10) and result["random_mean"] == pytest.approx(2.5)
    assert result["welch_p"] < 0.05 and result["n_top"] == 3 and result["n_random"] == 4


def test_radial_share_by_hand():
    from repro.experiments.geometry import radial_share
    shapes = [(2, 2), (3,)]
    theta = torch.tensor([3.0, 4.0, 1.0, 0.0, 9.0, 9.0, 9.0])
    assert radial_share(theta, theta, shapes) == pytest.approx(1.0)                   # rescaling every filter
    assert radial_share(torch.tensor([-4.0, 3.0, 0.0, 2.0, 1.0, 1.0, 1.0]), theta, shapes) == pytest.approx(0.0)
    # filter 1: v = (3, 4) + (-4, 3) -> along 25 of |v|^2 = 50; filter 2: v = (1, 1) -> along 1 of 2; 1-D part ignored
    v = torch.tensor([-1.0, 7.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    assert radial_share(v, theta, shapes) == pytest.approx((25 + 1) / (50 + 2))


def _bn_model():
    from repro.models import Classifier, build_backbone
    torch.manual_seed(0)
    return Classifier(build_backbone("resnet8", width=4), 10)


def test_slices_with_batchnorm_reestimated_are_deterministic_and_restore_the_model():
    from repro.experiments.geometry import slice_losses
    from repro.train import flat_params
    model = _bn_model()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (64,), generator=g)
    bn_images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=g)
    module = model.backbone
    direction = torch.randn(flat_params(module).numel(), generator=g) * 0.05
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ts = np.array([-1.0, 0.0, 1.0])
    first = slice_losses(model, module, direction, ts, images, labels, bn_images)
    second = slice_losses(model, module, direction, ts, images, labels, bn_images)
    frozen = slice_losses(model, module, direction, ts, images, labels)
    assert first == second                                       # bit for bit
    assert first != frozen                                       # the statistics were recomputed
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running statistics restored


def _tests(flatter: dict, sharper: dict) -> pd.DataFrame:
    """A flatness-test table at t* = 0.5 with the given one-sided p-values per (kind, bn)."""
    rows = []
    for kind in ("ssl", "supervised"):
        for bn in ("frozen", "reestimated"):
            rows.append(dict(kind=kind, bn=bn, t_star=0.5, welch_p=flatter.get((kind, bn), 0.5),
                             welch_p_sharper=sharper.get((kind, bn), 0.5), n_top=5, top_mean=1.0, top_se=0.1,
                             n_random=10, random_mean=0.5, random_se=0.05))
    return pd.DataFrame(rows)


DIRECTIONS = pd.DataFrame([dict(kind=k, direction_type=t, radial_share=r) for k in ("ssl", "supervised")
                           for t, r in (("top", 0.4), ("random", 0.01))])


@pytest.mark.parametrize("flatter, sharper, word", [
    ({("ssl", "reestimated"): 0.001}, {}, "reproduced"),
    ({}, {("ssl", "reestimated"): 0.001}, "not reproduced"),
    ({("supervised", "frozen"): 0.001}, {}, "partially reproduced"),
    ({}, {}, "inconclusive"),
    # 0.02 alone passes at 5 % but not after Holm over the family of 4 (0.02 x 4 = 0.08)
    ({("ssl", "reestimated"): 0.02}, {}, "inconclusive"),
])
def test_c1_rule(flatter, sharper, word):
    from repro.analysis.verdicts import c1_verdict
    family, verdict, finding = c1_verdict(_tests(flatter, sharper), DIRECTIONS, 0.5)
    assert verdict == word and len(family) == 4
    assert finding.startswith("loss increase at t = ±0.5; primary: ssl prior, BN reestimated: top-5 1.000 ± 0.100")
    assert "0.40 (ssl), 0.40 (supervised), random 0.010" in finding



def test_slice_sets_are_kept_and_read_back_while_prior_and_knobs_are_unchanged(smoke_priors_dir, tmp_path, monkeypatch):
    import shutil

    from repro.experiments import geometry
    from repro.profiles import get_profile

    shutil.copytree(smoke_priors_dir, tmp_path / "results")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    calls = []
    monkeypatch.setattr(geometry, "compute_slices",
                        lambda *a: calls.append(a) or pd.DataFrame({"t": [0.0, 0.5], "loss": [1.0, 1.25]}))
    P = get_profile("smoke")
    first, again = geometry.c1_slices(P, "ssl", "frozen"), geometry.c1_slices(P, "ssl", "frozen")
    assert len(calls) == 1 and first.equals(again)                       # the second call reads the saved set
    geometry.c1_slices(P, "ssl", "reestimated")
    geometry.c1_slices(get_profile("smoke", geometry_points=7), "ssl", "frozen")
    assert len(calls) == 3                                               # another mode or knob: computed again
    monkeypatch.setattr(geometry, "SLICES_VERSION", geometry.SLICES_VERSION + 1)
    geometry.c1_slices(P, "ssl", "frozen")
    assert len(calls) == 4                                               # a new slice computation: computed again
    with pytest.raises(ValueError, match="unknown BatchNorm mode 'warm'"):
        geometry.c1_slices(P, "ssl", "warm")
