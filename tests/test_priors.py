"""The learned prior's log-density and gradient against scipy's dense multivariate normal."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from repro.method.prior_files import import_authors_prior, load_prior, save_prior
from repro.method.priors import (ComposedPrior, IsotropicGaussianPrior, LowRankGaussianPrior, PriorFileError,
                                 deviation_singular_values, top_directions, transfer_prior)


def random_swag(d, K, seed):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    diag = torch.rand(d, generator=g, dtype=torch.float64) * 0.5 + 0.05
    factor = torch.randn(d, K, generator=g, dtype=torch.float64) * 0.7
    return mean, diag, factor


def dense_covariance(diag, factor, scale, k, eps, directions="top"):
    """The covariance written out from its definition, independently of the Woodbury code."""
    K = factor.shape[1]
    D = factor.numpy()
    if directions == "top" and k:
        u, s, _ = np.linalg.svd(D, full_matrices=False)
        Dk = u[:, :k] * s[:k]
    else:
        Dk = D[:, :k]
    return scale * (0.5 * np.diag(diag.numpy()) + 0.5 * Dk @ Dk.T / (K - 1)) + eps * np.eye(len(diag))


@pytest.mark.parametrize("d", [1, 7, 50])
@pytest.mark.parametrize("k", [0, 1, 5])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_low_rank_log_prob_and_grad_match_scipy(d, k, scale):
    K = 6
    mean, diag, factor = random_swag(d, K, seed=d * 100 + k)
    prior = LowRankGaussianPrior(mean, diag, factor, scale=scale, rank=k, eps=1e-3)
    cov = dense_covariance(diag, factor, scale, k, 1e-3)
    mvn = stats.multivariate_normal(mean.numpy(), cov)
    for i in range(3):
        theta = mean + torch.randn(d, generator=torch.Generator().manual_seed(i), dtype=torch.float64) * 2
        logp, grad = prior.log_prob_and_grad(theta)
        expected_grad = -np.linalg.solve(cov, (theta - mean).numpy())
        assert logp.item() == pytest.approx(mvn.logpdf(theta.numpy()), rel=1e-5)
        np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-5, atol=1e-8 * np.abs(expected_grad).max())
        # the autograd path agrees with the closed form
        t = theta.clone().requires_grad_()
        prior.log_prob(t).backward()
        np.testing.assert_allclose(t.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-8 * np.abs(expected_grad).max())


def test_first_directions_option_matches_authors_choice():
    mean, diag, factor = random_swag(20, 6, seed=3)
    prior = LowRankGaussianPrior(mean, diag, factor, rank=2, directions="first", eps=1e-3)
    cov = dense_covariance(diag, factor, 1.0, 2, 1e-3, directions="first")
    theta = mean + 1.0
    assert prior.log_prob(theta).item() == pytest.approx(stats.multivariate_normal(mean.numpy(), cov).logpdf(theta.numpy()), rel=1e-5)
    np.testing.assert_allclose(prior.covariance().numpy(), cov, rtol=1e-10)


def test_top_directions_beat_any_other_rank_k_choice():
    """The principled rank-k part is the best rank-k approximation of D D^T (Eckart-Young)."""
    _, _, factor = random_swag(30, 8, seed=5)
    full = factor @ factor.T
    top = LowRankGaussianPrior(torch.zeros(30, dtype=torch.float64), torch.ones(30, dtype=torch.float64), factor, rank=3)
    first = top.with_(directions="first")
    err = lambda p: torch.linalg.matrix_norm(full - p._U @ p._U.T * (2 * 7)).item()  # undo 1/(2(K-1))
    s = torch.linalg.svdvals(factor) ** 2
    assert err(top) == pytest.approx(torch.sqrt((s[3:] ** 2).sum()).item(), rel=1e-8)
    assert err(top) < err(first)


def test_samples_have_the_prior_covariance():
    mean, diag, factor = random_swag(5, 4, seed=9)
    prior = LowRankGaussianPrior(mean, diag, factor, scale=2.0, rank=2, eps=1e-3)
    x = prior.sample(200_000, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.cov(x.numpy().T), prior.covariance().numpy(), atol=0.03)


def test_isotropic_and_composed_match_scipy():
    d1, d2 = 6, 4
    mean, diag, factor = random_swag(d1, 5, seed=1)
    learned = LowRankGaussianPrior(mean, diag, factor, scale=3.0, rank=2, eps=1e-4)
    prior = transfer_prior(learned, d2, head_variance=0.5)
    theta = torch.randn(d1 + d2, dtype=torch.float64)
    cov = np.zeros((d1 + d2, d1 + d2))
    cov[:d1, :d1] = learned.covariance().numpy()
    cov[d1:, d1:] = 0.5 * np.eye(d2)
    m = np.concatenate([mean.numpy(), np.zeros(d2)])
    logp, grad = prior.log_prob_and_grad(theta)
    assert logp.item() == pytest.approx(stats.multivariate_normal(m, cov).logpdf(theta.numpy()), rel=1e-6)
    np.testing.assert_allclose(grad.numpy(), -np.linalg.solve(cov, theta.numpy() - m), rtol=1e-6)
    iso = IsotropicGaussianPrior(d2, 2.0, mean=torch.ones(d2, dtype=torch.float64))
    x = torch.randn(d2, dtype=torch.float64)
    assert iso.log_prob(x).item() == pytest.approx(stats.multivariate_normal(np.ones(d2), 2.0 * np.eye(d2)).logpdf(x.numpy()), rel=1e-10)
    assert isinstance(prior, ComposedPrior) and prior.dim == d1 + d2


def test_save_load_round_trip(tmp_path):
    mean, diag, factor = random_swag(12, 5, seed=2)
    layout = [("w", (3, 4))]
    save_prior(tmp_path / "p.pt", mean, diag, factor, layout=layout, meta={"epochs": 3}, dtype=torch.float64)
    prior = load_prior(tmp_path / "p.pt", scale=5.0, rank=3, dtype=torch.float64)
    ref = LowRankGaussianPrior(mean, diag, factor, scale=5.0, rank=3)
    theta = torch.randn(12, dtype=torch.float64)
    assert prior.log_prob(theta).item() == pytest.approx(ref.log_prob(theta).item(), rel=1e-12)
    assert prior.meta == {"epochs": 3}


def test_authors_prior_importer(tmp_path):
    mean, diag, factor = random_swag(10, 4, seed=4)
    torch.save(mean.float(), tmp_path / "simclr_mean.pt")
    torch.save(diag.float(), tmp_path / "simclr_variance.pt")
    torch.save(factor.T.float().contiguous(), tmp_path / "simclr_covmat.pt")   # authors: K rows of length d
    prior = import_authors_prior(tmp_path / "simclr", scale=2.0, rank=4, eps=0.0)
    ref = LowRankGaussianPrior(mean.float(), diag.float(), factor.float(), scale=2.0, rank=4, eps=0.0)
    np.testing.assert_allclose(prior.covariance().numpy(), ref.covariance().numpy(), rtol=1e-5)
    torch.save(factor.float(), tmp_path / "bad_covmat.pt")
    torch.save(mean.float(), tmp_path / "bad_mean.pt")
    torch.save(diag.float(), tmp_path / "bad_variance.pt")
    with pytest.raises(PriorFileError, match=r"covmat \(10, 4\)"):
        import_authors_prior(tmp_path / "bad")


# ---- bad prior files: one clear error each ------------------------------------------------------

@pytest.fixture
def prior_file(tmp_path):
    mean, diag, factor = random_swag(12, 5, seed=2)
    path = tmp_path / "prior.pt"
    save_prior(path, mean, diag, factor, layout=[("0.weight", (2, 2, 3))])
    return path


def test_truncated_file(prior_file):
    data = prior_file.read_bytes()
    prior_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(PriorFileError, match="truncated, corrupt"):
        load_prior(prior_file)


def test_garbage_file(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"not a tensor file at all")
    with pytest.raises(PriorFileError, match="g.pt: not a readable prior file"):
        load_prior(tmp_path / "g.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="prior file not found"):
        load_prior(tmp_path / "nope.pt")


def test_wrong_parameter_count_names_the_shapes(prior_file):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 2))   # 24 + 3 parameters, the prior has 12
    with pytest.raises(PriorFileError, match=r"12 parameters in the prior.*27 parameters in the model.*\(2, 2, 3\) vs model \(3, 2, 2, 2\)"):
        load_prior(prior_file, module=model)


@pytest.mark.parametrize("edit, message", [
    (lambda o: o.update(diag=-o["diag"]), "non-positive variance"),
    (lambda o: o["mean"].__setitem__(0, float("nan")), "'mean' has 1 non-finite"),
    (lambda o: o.update(factor=o["factor"].to(torch.int64)), "'factor' has dtype torch.int64"),
    (lambda o: o.update(diag=o["diag"][:-1]), r"inconsistent shapes mean \(12,\), diag \(11,\)"),
    (lambda o: o.pop("factor"), r"missing entries \['factor'\]"),
])
def test_invalid_contents(prior_file, edit, message):
    obj = torch.load(prior_file, weights_only=True)
    edit(obj)
    torch.save(obj, prior_file)
    with pytest.raises(PriorFileError, match=message):
        load_prior(prior_file)


def test_rank_beyond_stored_deviations(prior_file):
    with pytest.raises(PriorFileError, match=r"rank 6 requested but the file stores 5 deviations"):
        load_prior(prior_file, rank=6)


def test_pickled_objects_are_refused(tmp_path):
    import argparse   # any importable class: unpickling it could run code, so it must be refused
    torch.save({"mean": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(PriorFileError, match="not a readable prior file"):
        load_prior(tmp_path / "evil.pt")


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=0.0), "scale must be a positive"),
    (dict(scale=-1.0), "scale must be a positive"),
    (dict(rank=-1), r"rank must be in 0\.\.5"),
    (dict(directions="last"), "directions must be"),
])
def test_out_of_range_arguments(kwargs, message):
    mean, diag, factor = random_swag(4, 5, seed=0)
    with pytest.raises(ValueError, match=message):
        LowRankGaussianPrior(mean, diag, factor, **kwargs)


def test_vector_of_wrong_length():
    mean, diag, factor = random_swag(4, 5, seed=0)
    with pytest.raises(ValueError, match="covers 4 parameters"):
        LowRankGaussianPrior(mean, diag, factor).log_prob(torch.zeros(5, dtype=torch.float64))
    assert math.isfinite(LowRankGaussianPrior(mean, diag, factor).log_prob(mean).item())


def test_top_directions_are_the_leading_left_singular_vectors():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(30, 6, generator=g, dtype=torch.float64)
    U = top_directions(D, 3)
    ref_u, ref_s, _ = torch.linalg.svd(D, full_matrices=False)
    assert torch.allclose(U.abs(), ref_u[:, :3].T.abs(), atol=1e-10)      # equal up to sign
    assert torch.allclose(U @ U.T, torch.eye(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(deviation_singular_values(D), ref_s / math.sqrt(6 - 1), atol=1e-10)
    # the learned prior's rank-k factor spans the same top-k directions: D_k D_k^T is the best rank-k part of D D^T
    prior = LowRankGaussianPrior(torch.zeros(30, dtype=torch.float64), torch.ones(30, dtype=torch.float64), D, rank=3)
    Dk = prior._low_rank_factor()
    best = ref_u[:, :3] @ torch.diag(ref_s[:3] ** 2) @ ref_u[:, :3].T
    assert torch.allclose(Dk @ Dk.T, best, atol=1e-10)
