"""Filter normalisation and the prior's leading directions, on hand-checkable cases."""
import numpy as np
import pandas as pd
import pytest
import torch

from repro.geometry import filter_normalize, flatness_test, loss_increase, top_directions
from repro.priors import LowRankGaussianPrior


def test_filter_normalize_matches_each_filter_norm_and_zeroes_1d_parameters():
    shapes = [(2, 1, 2), (3,)]                                   # two "filters" of 2 weights, then a bias/BN vector
    theta = torch.tensor([3.0, 4.0, 0.0, 2.0, 1.0, 1.0, 1.0])   # filter norms 5 and 2
    direction = torch.tensor([1.0, 0.0, 0.0, -6.0, 7.0, 8.0, 9.0])
    v = filter_normalize(direction, theta, shapes)
    assert torch.allclose(v, torch.tensor([5.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0]))


def test_top_directions_are_the_leading_left_singular_vectors():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(30, 6, generator=g, dtype=torch.float64)
    prior = LowRankGaussianPrior(torch.zeros(30, dtype=torch.float64), torch.ones(30, dtype=torch.float64), D)
    U = top_directions(prior, 3)
    ref = torch.linalg.svd(D, full_matrices=False)[0][:, :3].T
    assert torch.allclose(U.abs(), ref.abs(), atol=1e-10)      # equal up to sign
    assert torch.allclose(U @ U.T, torch.eye(3, dtype=torch.float64), atol=1e-10)


def test_loss_increase_and_one_sided_test():
    rows = [dict(direction_type=k, direction=i, t=t, loss=1.0 + (0.1 if k == "top" else 2.0) * (i + 1) * abs(t))
            for k, n in (("top", 3), ("random", 4)) for i in range(n) for t in (-0.5, 0.0, 0.5)]
    inc = loss_increase(pd.DataFrame(rows), 0.5)
    assert np.allclose(inc[inc.direction_type == "top"].increase, [0.05, 0.10, 0.15])
    result = flatness_test(inc)
    assert result["top_mean"] == pytest.approx(0.10) and result["random_mean"] == pytest.approx(2.5)
    assert result["welch_p"] < 0.05 and result["n_top"] == 3 and result["n_random"] == 4
