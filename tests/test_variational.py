"""The data-emphasized ELBO against mathematics: the closed-form KL against dense linear algebra and scipy, the optimal
width against a numerical minimiser, and the whole fit against the optimum of a linear-Gaussian model found by dense
coordinate descent."""
import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from repro.experiments.spec import RunSpec
from repro.method.priors import IsotropicGaussianPrior, LowRankGaussianPrior, Widened, transfer_prior
from repro.method.samplers import CyclicalSchedule
from repro.method.variational import DataEmphasizedVI, optimal_width

D = torch.float64


def low_rank(d: int, K: int = 4, rank: int = 3, eps: float = 1e-3, seed: int = 0, tiny: int = 0) -> LowRankGaussianPrior:
    """A learned-style prior; ``tiny`` coordinates are stiff: SWAG variance 1e-7 and deviations to match, as a SWAG
    posterior's coordinates that barely moved."""
    g = torch.Generator().manual_seed(seed)
    diag = torch.rand(d, generator=g, dtype=D) + 0.2
    factor = torch.randn(d, K, generator=g, dtype=D)
    diag[:tiny], factor[:tiny] = 1e-7, factor[:tiny] * math.sqrt(1e-7)
    return LowRankGaussianPrior(torch.randn(d, generator=g, dtype=D), diag, factor, scale=2.5, rank=rank, eps=eps)


def dense_kl(m: np.ndarray, var: float, mu: np.ndarray, cov: np.ndarray) -> float:
    """KL(N(m, var I) || N(mu, cov)) as cross-entropy minus entropy, with scipy's entropy and dense inverses."""
    d = len(m)
    prec = np.linalg.inv(cov)
    cross = 0.5 * (d * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + var * np.trace(prec)
                   + (m - mu) @ prec @ (m - mu))
    return cross - stats.multivariate_normal(m, var * np.eye(d)).entropy()


def dense(prior) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of a prior, densely."""
    if isinstance(prior, Widened):
        mu, cov = dense(prior.base)
        return mu, prior.width * cov
    if isinstance(prior, LowRankGaussianPrior):
        return prior.mean.numpy(), prior.covariance().numpy()
    if isinstance(prior, IsotropicGaussianPrior):
        mean = prior.mean.numpy() if prior.mean is not None else np.zeros(prior.dim)
        return mean, prior.variance * np.eye(prior.dim)
    means, covs = zip(*(dense(p) for p in prior.parts))
    from scipy.linalg import block_diag
    return np.concatenate(means), block_diag(*covs)


PRIORS = {
    "low rank": lambda: low_rank(12),
    "low rank, stiff coordinates": lambda: low_rank(12, tiny=3, eps=0.0),
    "diagonal only": lambda: low_rank(9, rank=0),
    "isotropic with mean": lambda: IsotropicGaussianPrior(7, 0.3, mean=torch.linspace(-1, 1, 7, dtype=D)),
    "transfer prior": lambda: transfer_prior(low_rank(10), 4, head_variance=0.7),
    "widened": lambda: Widened(low_rank(8), 37.0),
}


@pytest.mark.parametrize("name", PRIORS)
def test_kl_from_isotropic_matches_dense_and_torch(name):
    prior = PRIORS[name]()
    mu, cov = dense(prior)
    m = torch.randn(prior.dim, generator=torch.Generator().manual_seed(1), dtype=D)
    for var in (1e-4, 0.05, 2.0):
        ours = prior.kl_from_isotropic(m, var).item()
        assert ours == pytest.approx(dense_kl(m.numpy(), var, mu, cov), rel=1e-8, abs=1e-8)
        q = torch.distributions.MultivariateNormal(m, var * torch.eye(prior.dim, dtype=D))
        p = torch.distributions.MultivariateNormal(torch.from_numpy(mu), torch.from_numpy(cov))
        assert ours == pytest.approx(torch.distributions.kl_divergence(q, p).item(), rel=1e-8, abs=1e-8)
    assert prior.log_det() == pytest.approx(np.linalg.slogdet(cov)[1], rel=1e-10)
    assert prior.trace_precision() == pytest.approx(np.trace(np.linalg.inv(cov)), rel=1e-8)


def test_widened_is_the_prior_with_its_covariance_times_the_width():
    base = low_rank(10)
    prior = Widened(base, 123.0)
    theta = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=D)
    ref = stats.multivariate_normal(base.mean.numpy(), 123.0 * base.covariance().numpy())
    logp, grad = prior.log_prob_and_grad(theta)
    assert logp.item() == pytest.approx(ref.logpdf(theta.numpy()), rel=1e-10)
    assert prior.log_prob(theta).item() == pytest.approx(ref.logpdf(theta.numpy()), rel=1e-10)
    prec = np.linalg.inv(ref.cov)
    np.testing.assert_allclose(grad.numpy(), -prec @ (theta - base.mean).numpy(), rtol=1e-8)
    np.testing.assert_allclose(prior.diagonal()[1].numpy(), base.inv_a.numpy() / 123.0)


@pytest.mark.parametrize("var", [1e-3, 0.5])
def test_optimal_width_minimises_the_kl(var):
    block = Widened(low_rank(9, tiny=2, eps=0.0))
    m = torch.randn(9, generator=torch.Generator().manual_seed(3), dtype=D) * 3
    mu, cov = dense(block.base)

    def kl(log_w: float) -> float:
        return dense_kl(m.numpy(), var, mu, math.exp(log_w) * cov)

    best = optimize.minimize_scalar(kl, bracket=(-5, 5), tol=1e-12).x
    assert math.log(optimal_width(block, m, var)) == pytest.approx(best, abs=1e-5)


def linear_gaussian_optimum(X, y, blocks, kappa, iters=3000):
    """(m, sigma^2, widths) minimising  kappa sum_i E_q[(y_i - x_i^T theta)^2 / 2] + KL(N(m, s^2 I) || prod_b
    N(mu_b, w_b Sigma_b)) by exact coordinate descent with dense linear algebra: m solves
    (kappa X^T X + P_w) m = kappa X^T y + P_w mu; s^2 = d / (kappa tr(X^T X) + tr(P_w)); w_b = (s^2 t_b + q_b) / d_b."""
    from scipy.linalg import block_diag
    parts = [dense(b) for b in blocks]
    mu = np.concatenate([p[0] for p in parts])
    base_prec = [np.linalg.inv(p[1]) for p in parts]
    sizes = np.cumsum([0] + [len(p[0]) for p in parts])
    d = len(mu)
    w, s2, m = np.ones(len(blocks)), 1e-2, mu.copy()
    for _ in range(iters):
        P = block_diag(*[bp / wb for bp, wb in zip(base_prec, w)])
        m = np.linalg.solve(kappa * X.T @ X + P, kappa * X.T @ y + P @ mu)
        s2 = d / (kappa * np.trace(X.T @ X) + np.trace(P))
        r = m - mu
        w = np.array([(s2 * np.trace(bp) + r[a:b] @ bp @ r[a:b]) / (b - a)
                      for bp, a, b in zip(base_prec, sizes[:-1], sizes[1:])])
    return m, s2, w


@pytest.mark.parametrize("objective", ["de_elbo", "elbo"])
@pytest.mark.parametrize("N, d1, d2, tiny", [(40, 5, 2, 1), (10, 10, 4, 1),   # more data than parameters, and fewer,
                                             (40, 5, 2, 0)])                  # ... without a stiff coordinate
def test_fit_reaches_the_joint_optimum_of_a_linear_gaussian_model(objective, N, d1, d2, tiny):
    """The optimiser, run as training runs it (full batch here, cosine schedule to 0), ends at the joint optimum of q
    and the widths that dense coordinate descent finds (a stationary point of the objective), a stiff prior
    coordinate included or not. It starts off the prior mean: exactly at it, with q = 0, the widths start at
    sigma^2 t / d and can stay collapsed onto a tiny sigma (see the module docstring)."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(N, d1 + d2, generator=g, dtype=D)
    y = X @ torch.randn(d1 + d2, generator=g, dtype=D) + 0.5 * torch.randn(N, generator=g, dtype=D)
    blocks = [("scale", low_rank(d1, K=3, rank=2, eps=0.0, tiny=tiny, seed=5).with_(scale=1.0)),
              ("head_var", IsotropicGaussianPrior(d2, 1.0))]
    kappa = (d1 + d2) / N if objective == "de_elbo" else 1.0
    m_star, s2_star, w_star = linear_gaussian_optimum(X.numpy(), y.numpy(), [Widened(b) for _, b in blocks], kappa)

    model = nn.Linear(d1 + d2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.cat([blocks[0][1].mean, torch.zeros(d2, dtype=D)])
                           + 0.3 * torch.randn(d1 + d2, generator=g, dtype=D))
    steps, lr = 6000, 0.05
    opt = DataEmphasizedVI(model.parameters(), lr=lr, num_data=N, blocks=blocks, objective=objective,
                           generator=torch.Generator().manual_seed(6))
    schedule = CyclicalSchedule(steps, 1, lr, 0.0)
    for step in range(steps):
        schedule.apply(opt, step)
        opt.zero_grad()
        (0.5 * (y - model(X)[:, 0]).square().mean()).backward()
        opt.step()
    opt.finish()
    np.testing.assert_allclose(model.weight.detach()[0].numpy(), m_star, atol=0.03)
    assert opt.sigma ** 2 == pytest.approx(s2_star, rel=0.03)
    np.testing.assert_allclose([opt.widths["scale"], opt.widths["head_var"]], w_star, rtol=0.03)
    share = opt.learned["scale_from_sigma"]
    assert 0 < share <= 1 and (tiny or share < 0.9)        # without a stiff coordinate the displacement counts


def test_a_step_does_not_recompute_the_priors_trace(monkeypatch):
    """tr(Sigma^-1) of a low-rank prior costs a d x K product in float64; read every step it was 40 % of a ``cpu``
    fit's step. Each block computes it once, when the optimiser is built."""
    calls = []
    trace = LowRankGaussianPrior.trace_precision
    monkeypatch.setattr(LowRankGaussianPrior, "trace_precision", lambda self: calls.append(1) or trace(self))
    model = nn.Linear(6, 1, bias=False).double()
    opt = DataEmphasizedVI(model.parameters(), lr=0.1, num_data=10, blocks=[("scale", low_rank(6))])
    built = len(calls)
    for _ in range(3):
        opt.zero_grad()
        model(torch.ones(2, 6, dtype=D)).sum().backward()
        opt.step()
    opt.finish()
    assert built == 1 and len(calls) == built and opt.learned["scale_from_sigma"] > 0


def test_a_closure_is_refused():
    model = nn.Linear(3, 1, bias=False)
    opt = DataEmphasizedVI(model.parameters(), lr=0.1, num_data=10, blocks=[("alpha", IsotropicGaussianPrior(3, 1.0))])
    with pytest.raises(ValueError, match="takes no closure"):
        opt.step(lambda: 0.0)


def test_bad_objective_is_one_clear_error():
    model = nn.Linear(3, 1, bias=False)
    with pytest.raises(ValueError, match="objective must be one of de_elbo, elbo"):
        DataEmphasizedVI(model.parameters(), lr=0.1, num_data=10, blocks=[("alpha", IsotropicGaussianPrior(3, 1.0))],
                         objective="map")


@pytest.mark.parametrize("approach, widths", [("vi_learned", ("scale", "head_var")), ("vi_nonlearned", ("alpha",))])
def test_a_variational_run_records_the_widths_it_learned(smoke_priors_dir, monkeypatch, approach, widths):
    from repro.experiments.transfer import run_transfer
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(smoke_priors_dir))
    P = get_profile("smoke")
    kind = "supervised" if approach == "vi_learned" else "none"
    out = run_transfer(P, RunSpec.default(P, "transfer", approach, prior_kind=kind, steps=6))
    assert all(out[f"learned_{w}"] > 0 and math.isfinite(out[f"learned_{w}"]) for w in widths)
    assert out["learned_sigma"] > 0 and 0 <= out["accuracy"] <= 1 and out["samples_collected"] == 1


def test_q_mean_is_the_map_at_kappa_times_the_learned_widths():
    """Notebook 10's amendment (:mod:`repro.experiments.learned_scale`): at the DE-ELBO's optimum, q's mean is the MAP
    (likelihood at weight one) under the prior at kappa x the learned widths, not at the learned widths."""
    from scipy.linalg import block_diag
    N, d1, d2 = 10, 10, 4
    g = torch.Generator().manual_seed(7)
    X = torch.randn(N, d1 + d2, generator=g, dtype=D).numpy()
    y = X @ torch.randn(d1 + d2, generator=g, dtype=D).numpy() + 0.5 * torch.randn(N, generator=g, dtype=D).numpy()
    blocks = [Widened(low_rank(d1, K=3, rank=2, eps=0.0, seed=5).with_(scale=1.0)), Widened(IsotropicGaussianPrior(d2, 1.0))]
    kappa = (d1 + d2) / N
    m_star, _, w = linear_gaussian_optimum(X, y, blocks, kappa)
    parts = [dense(b.base) for b in blocks]
    mu = np.concatenate([p[0] for p in parts])

    def map_at(widths):
        P = block_diag(*[np.linalg.inv(cov) / wb for (_, cov), wb in zip(parts, widths)])
        return np.linalg.solve(X.T @ X + P, X.T @ y + P @ mu)

    np.testing.assert_allclose(map_at(kappa * w), m_star, rtol=1e-8, atol=1e-10)
    assert np.abs(map_at(w) - m_star).max() > 0.05       # the unscaled widths give another model


@pytest.mark.parametrize("approach, kind", [("vi_learned", "supervised"), ("vi_nonlearned", "none")])
def test_kappa_is_the_fits_data_weight_relative_to_map(smoke_priors_dir, monkeypatch, approach, kind):
    """learned_scale.kappa against the dimension of the blocks a variational run's optimiser is built on."""
    from repro.data import DATASETS
    from repro.experiments import learned_scale
    from repro.experiments.approaches import lookup
    from repro.experiments.families import family
    from repro.experiments.transfer import build_model_and_prior
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(smoke_priors_dir))
    P, a = get_profile("smoke"), lookup(approach)
    p = RunSpec.default(P, "transfer", approach, prior_kind=kind)
    model, prior = build_model_and_prior(P, p, int(DATASETS[p.dataset].num_classes), a)
    d = sum(block.dim for _, block in family(a.prior).unit_blocks(prior))
    assert d == sum(q.numel() for q in model.parameters() if q.requires_grad)
    assert learned_scale.kappa(P, "de_elbo", 50) == pytest.approx(d / 50)
    assert learned_scale.kappa(P, "elbo", 50) == 1.0
