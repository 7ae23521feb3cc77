"""SWAG on snapshots drawn from a known Gaussian: mean, diagonal and low-rank span must be recovered."""
import numpy as np
import pytest
import torch

from repro.method.prior_files import load_prior
from repro.method.swag import SWAG

D, R, N = 40, 2, 4000


@pytest.fixture(scope="module")
def known():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    sigma2 = torch.rand(D, generator=g, dtype=torch.float64) * 0.1 + 0.05
    V = torch.linalg.qr(torch.randn(D, R, generator=g, dtype=torch.float64))[0] * torch.tensor([3.0, 2.0], dtype=torch.float64)
    snaps = mu + torch.randn(N, D, generator=g, dtype=torch.float64) * sigma2.sqrt() + torch.randn(N, R, generator=g, dtype=torch.float64) @ V.T
    swag = SWAG(D, max_rank=200, dtype=torch.float64)
    for s in snaps:
        swag.collect(s)
    return mu, sigma2, V, snaps, swag


def test_mean_and_diagonal(known):
    mu, sigma2, V, snaps, swag = known
    true_var = sigma2 + (V ** 2).sum(1)
    # within 4 Monte-Carlo standard errors, elementwise
    assert torch.all((swag.mean - mu).abs() < 4 * (true_var / N).sqrt())
    assert torch.all((swag.diag - true_var).abs() < 4 * true_var * np.sqrt(2 / N))
    # and exactly the sample moments (population variance), up to round-off
    np.testing.assert_allclose(swag.mean.numpy(), snaps.mean(0).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(swag.diag.numpy(), snaps.var(0, unbiased=False).numpy(), rtol=1e-8)


def test_low_rank_span(known):
    _, _, V, snaps, swag = known
    Dev = swag.deviations
    assert Dev.shape == (D, 200)
    # deviations are the last 200 snapshots minus the running mean after each
    running_mean = snaps.cumsum(0) / torch.arange(1, N + 1, dtype=torch.float64)[:, None]
    np.testing.assert_allclose(Dev[:, -1].numpy(), (snaps[-1] - running_mean[-1]).numpy(), rtol=1e-9)
    np.testing.assert_allclose(Dev[:, 0].numpy(), (snaps[-200] - running_mean[-200]).numpy(), rtol=1e-9)
    # the top-2 singular directions span V's column space: cosines of principal angles near 1
    top = torch.linalg.svd(Dev, full_matrices=False)[0][:, :R]
    cosines = torch.linalg.svdvals(top.T @ torch.linalg.qr(V)[0])
    assert cosines.min() > 0.95
    # the leading singular values of D/sqrt(K-1) estimate the true low-rank standard deviations (3, 2),
    # inflated by the isotropic part; 200 snapshots give about 10 % accuracy
    sv = swag.singular_values()[:R]
    expected = torch.sqrt(torch.tensor([9.0, 4.0]) + 0.1)
    assert torch.allclose(sv.float(), expected.float(), rtol=0.2)


def test_samples_follow_the_swag_covariance(known):
    _, _, _, _, swag = known
    g = torch.Generator().manual_seed(1)
    prior = swag.to_prior(scale=1.0, eps=0.0)
    x = swag.sample(scale=4.0, n=4000, generator=g)
    assert swag.sample(generator=g).shape == (D,)
    # SWAG sample covariance: scale * (diag/2 + D D^T/(2(K-1))); uses the standard deviation, not the variance
    expected = 4.0 * prior.covariance()
    emp = torch.cov(x.T)
    se = torch.sqrt((expected.diagonal()[:, None] * expected.diagonal()[None, :] + expected ** 2) / 4000)
    assert ((emp - expected).abs() < 5 * se).float().mean() > 0.99


def test_ring_buffer_keeps_the_last_k_in_order():
    swag = SWAG(1, max_rank=3, dtype=torch.float64)
    xs = [1.0, 5.0, 2.0, 8.0, 4.0]
    for x in xs:
        swag.collect(torch.tensor([x], dtype=torch.float64))
    means = np.cumsum(xs) / np.arange(1, 6)
    np.testing.assert_allclose(swag.deviations[0].numpy(), (np.array(xs) - means)[-3:])


def test_save_load_and_resume(tmp_path, known):
    _, _, _, snaps, swag = known
    swag.save(tmp_path / "prior.pt", dtype=torch.float64, meta={"lr": 0.01})
    prior = load_prior(tmp_path / "prior.pt", scale=3.0, rank=5, dtype=torch.float64)
    ref = swag.to_prior(scale=3.0, rank=5)
    theta = snaps[0]
    assert prior.log_prob(theta).item() == pytest.approx(ref.log_prob(theta).item(), rel=1e-10)
    assert prior.meta == {"swag_snapshots": N, "lr": 0.01}
    # checkpoint mid-way, resume, and get what one uninterrupted run gets
    a, b = SWAG(D, 10, torch.float64), SWAG(D, 10, torch.float64)
    for s in snaps[:30]:
        a.collect(s)
    a.checkpoint(tmp_path / "swag.ckpt")
    b.load_state_dict(torch.load(tmp_path / "swag.ckpt", weights_only=True))
    for s in snaps[30:50]:
        a.collect(s)
        b.collect(s)
    assert torch.equal(a.deviations, b.deviations) and torch.equal(a.diag, b.diag)


def test_bad_inputs():
    with pytest.raises(ValueError, match="collects vectors of length 3"):
        SWAG(3).collect(torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        SWAG(3).to_prior()


# ------------------------------------------------------------------------- fit_swag: burn-in, then collection

class _Point(torch.nn.Module):
    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.theta = torch.nn.Parameter(start.clone())


def _ar1_swag(burnin: int, start: float, steps: int = 6000, snapshots: int = 600, seed: int = 0):
    """SGD at lr 1/2 on the loss |theta - x_b|^2 / 2 with x_b ~ N(m, S) iid: theta' = theta/2 + x_b/2, an AR(1) chain
    whose stationary law is N(m, S/3) (variance S (1/2)^2 / (1 - (1/2)^2)). Snapshots every 10 steps are nearly
    independent (autocorrelation 2^-10)."""
    from repro.method.swag import fit_swag
    g = torch.Generator().manual_seed(seed)
    m = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)
    S = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    model = _Point(torch.full((8,), start, dtype=torch.float64))
    per_epoch = 100

    def epoch_batches(epoch):
        return [(m + S.sqrt() * torch.randn(8, generator=g, dtype=torch.float64),) for _ in range(per_epoch)]

    swag, norms = fit_swag(model, lambda mod, b: 0.5 * (mod.theta - b[0]).square().sum(), epoch_batches,
                           torch.optim.SGD(model.parameters(), lr=0.5), per_epoch, lr=0.5, burnin_steps=burnin,
                           collect_steps=steps, snapshots=snapshots, max_rank=5)
    return m, S / 3, swag, norms


def test_fit_swag_burn_in_comes_before_the_first_snapshot_and_recovers_the_stationary_gaussian():
    m, var, swag, norms = _ar1_swag(burnin=100, start=50.0)
    n = swag.n
    assert n == 600 and len(norms) == 600
    # mean and variance of the stationary law, within 4 Monte-Carlo standard errors
    assert torch.all((swag.mean - m).abs() < 4 * (var / n).sqrt())
    assert torch.all((swag.diag - var).abs() < 4 * var * np.sqrt(2 / n))
    # the first snapshot is already stationary: its norm is that of a draw near m, not of the start (50 * sqrt(8))
    assert norms[0] < 10


def test_fit_swag_without_burn_in_is_biased_by_the_start():
    """The same chain started far away with no burn-in: the first snapshot (after 10 steps) still carries
    2^-10 of the start in every coordinate: from 1e6 that is ~1000, ~1.6 in the mean of 600 snapshots."""
    m, var, biased, _ = _ar1_swag(burnin=0, start=1e6)
    assert (biased.mean - m).abs().max() > 4 * (var / biased.n).sqrt().max()
    m, var, burnt, _ = _ar1_swag(burnin=100, start=1e6)
    assert torch.all((burnt.mean - m).abs() < 4 * (var / burnt.n).sqrt())


def test_fit_swag_refuses_too_few_collection_steps():
    from repro.method.swag import fit_swag
    model = _Point(torch.zeros(2))
    with pytest.raises(ValueError, match="collects over 3 steps for 5 snapshots"):
        fit_swag(model, lambda mod, b: mod.theta.sum(), lambda e: [], torch.optim.SGD(model.parameters(), lr=0.1),
                 10, lr=0.1, burnin_steps=0, collect_steps=3, snapshots=5, max_rank=2)
