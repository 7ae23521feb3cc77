"""SGLD and SGHMC against the closed-form posterior of Bayesian linear regression.

Thousands of independent chains run in parallel (one row each); the final states are independent
draws, so the Monte-Carlo standard error of every moment is known exactly.
"""
import math

import pytest
import torch

from repro.method.priors import IsotropicGaussianPrior
from repro.method.samplers import SGHMC, SGLD, CyclicalSchedule, add_prior_grad_, bma_probs

N_DATA, DIM, NOISE_VAR, PRIOR_VAR = 40, 3, 1.0, 2.0
CHAINS = 4000


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N_DATA, DIM, generator=g, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 0.6]], dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + torch.randn(N_DATA, generator=g, dtype=torch.float64)
    precision = X.T @ X / NOISE_VAR + torch.eye(DIM, dtype=torch.float64) / PRIOR_VAR
    cov = torch.linalg.inv(precision)
    mean = cov @ X.T @ y / NOISE_VAR
    return X, y, mean, cov


def run_chains(problem, make_optimizer, temperature, steps=3000, implicit=False):
    """Explicit: the prior's gradient is added to the loss gradient. Implicit: the optimiser owns the prior."""
    X, y, _, _ = problem
    w = torch.zeros(CHAINS, DIM, dtype=torch.float64, requires_grad=True)
    prior = IsotropicGaussianPrior(CHAINS * DIM, PRIOR_VAR)
    opt = make_optimizer([w], temperature, prior) if implicit else make_optimizer([w], temperature)
    for _ in range(steps):
        opt.zero_grad()
        # mean NLL per chain, summed over chains (chains are independent); prior added in closed form
        nll = ((X @ w.T - y[:, None]) ** 2 / (2 * NOISE_VAR)).mean(0).sum()
        nll.backward()
        if not implicit:
            add_prior_grad_([w], prior, N_DATA)
        opt.step()
    return w.detach()


def assert_moments(samples, mean, cov):
    n = len(samples)
    mean_se = (cov.diagonal() / n).sqrt()
    assert torch.all((samples.mean(0) - mean).abs() < 3 * mean_se), (samples.mean(0), mean)
    emp = torch.cov(samples.T)
    cov_se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov ** 2) / n).sqrt()
    assert torch.all((emp - cov).abs() < 3 * cov_se), (emp, cov)


SAMPLERS = {
    "sgld": lambda params, T, prior=None: SGLD(params, lr=1e-2, num_data=N_DATA, temperature=T, prior=prior,
                                               generator=torch.Generator().manual_seed(1)),
    "sghmc": lambda params, T, prior=None: SGHMC(params, lr=2e-3, num_data=N_DATA, momentum=0.9, temperature=T,
                                                 prior=prior, generator=torch.Generator().manual_seed(2)),
}


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-prior", "implicit-prior"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_temperature_one_samples_the_posterior(problem, name, implicit):
    _, _, mean, cov = problem
    assert_moments(run_chains(problem, SAMPLERS[name], 1.0, implicit=implicit), mean, cov)


@pytest.mark.parametrize("name", SAMPLERS)
def test_temperature_half_halves_the_covariance(problem, name):
    _, _, mean, cov = problem
    samples = run_chains(problem, SAMPLERS[name], 0.5)
    assert_moments(samples, mean, 0.5 * cov)
    # and is clearly not the T = 1 covariance
    assert torch.cov(samples.T).diagonal().sum() < 0.6 * cov.diagonal().sum()


def test_temperature_zero_is_gradient_descent(problem):
    _, _, mean, _ = problem
    w = run_chains(problem, lambda p, T: SGLD(p, lr=5e-2, num_data=N_DATA, temperature=T), 0.0, steps=2000)
    assert torch.allclose(w, mean.expand_as(w), atol=1e-6)


@pytest.mark.parametrize("name", SAMPLERS)
def test_implicit_prior_step_is_stable_where_explicit_steps_blow_up(name):
    """Prior precision p = 1e6 with lr p / N = 250: explicit Euler diverges; the implicit step samples
    N(mu, T/p) up to its known discretisation factor, (T/p) / (1 + h/2) with h = lr p / N for SGLD."""
    chains, N, T, lr = 20_000, 40, 1.0, 1e-2
    mu = torch.linspace(-1, 1, chains, dtype=torch.float64)
    prior = IsotropicGaussianPrior(chains, 1e-6, mean=mu)
    w = torch.nn.Parameter(torch.zeros(chains, dtype=torch.float64))
    explicit = SGLD([torch.nn.Parameter(torch.zeros(chains, dtype=torch.float64))], lr=lr, num_data=N, temperature=T)
    for _ in range(20):
        add_prior_grad_(explicit.param_groups[0]["params"], prior, N)
        explicit.step()
        explicit.zero_grad(set_to_none=False)
    assert explicit.param_groups[0]["params"][0].abs().max() > 1e10          # diverged
    make = {"sgld": lambda: SGLD([w], lr=lr, num_data=N, temperature=T, prior=prior,
                                 generator=torch.Generator().manual_seed(3)),
            "sghmc": lambda: SGHMC([w], lr=lr, num_data=N, momentum=0.9, temperature=T, prior=prior,
                                   generator=torch.Generator().manual_seed(4))}[name]
    opt = make()
    for _ in range(200):
        opt.zero_grad(set_to_none=False)
        opt.step()
    r = (w.detach() - mu) / math.sqrt(1e-6 * T)              # standardised by the exact prior scale
    assert torch.isfinite(r).all() and r.mean().abs() < 4 / math.sqrt(chains)
    if name == "sgld":
        h = lr * 1e6 / N
        assert r.var().item() == pytest.approx(1 / (1 + h / 2), rel=4 * math.sqrt(2 / chains))
    else:
        assert 0 < r.var().item() < 1                           # over-damped by the implicit step, never inflated


def test_implicit_prior_at_zero_temperature_finds_the_map(problem):
    _, _, mean, _ = problem
    w = run_chains(problem, lambda p, T, prior: SGLD(p, lr=5e-2, num_data=N_DATA, temperature=T, prior=prior),
                   0.0, steps=2000, implicit=True)
    assert torch.allclose(w, mean.expand_as(w), atol=1e-6)


def _quadratic_chain(shapes, steps, generator_seed=5, resume_at=None):
    """SGHMC with a learned-style prior on f(theta) = |theta - 1|^2 / 2 over parameters of ``shapes``; returns the
    final theta flattened. ``resume_at``: move the optimiser state to a fresh optimiser at that step."""
    from repro.method.priors import LowRankGaussianPrior

    d = sum(math.prod(s) for s in shapes)
    g = torch.Generator().manual_seed(0)
    prior = LowRankGaussianPrior(torch.randn(d, generator=g, dtype=torch.float64),
                                 torch.rand(d, generator=g, dtype=torch.float64) + 0.1,
                                 torch.randn(d, 3, generator=g, dtype=torch.float64), scale=2.0, rank=2)
    params = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    make = lambda: SGHMC(params, lr=1e-2, num_data=10, momentum=0.9, prior=prior,
                         generator=torch.Generator().manual_seed(generator_seed))
    opt = make()
    for t in range(steps):
        if t == resume_at:
            state, rng = opt.state_dict(), opt.generator.get_state()
            opt = make()
            opt.load_state_dict(state)
            opt.generator.set_state(rng)
        opt.zero_grad()
        sum(((p - 1) ** 2).sum() / 2 for p in params).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in params])


def test_prior_step_on_many_parameters_equals_one_flat_parameter():
    # The flat-vector step must split and write back in the prior's order: one (12,) parameter is the reference.
    one = _quadratic_chain([(12,)], steps=50)
    many = _quadratic_chain([(2, 3), (4,), (1, 2)], steps=50)
    assert torch.allclose(one, many, rtol=0, atol=1e-12)
    assert not torch.allclose(one, torch.zeros_like(one))


def test_momentum_survives_a_state_dict_round_trip():
    assert torch.equal(_quadratic_chain([(2, 3), (6,)], steps=40),
                       _quadratic_chain([(2, 3), (6,)], steps=40, resume_at=20))


def test_prior_must_cover_the_parameters():
    with pytest.raises(ValueError, match="the prior covers 3 parameters, the optimiser has 2"):
        SGLD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, num_data=1, prior=IsotropicGaussianPrior(3, 1.0))


def test_noise_flag_turns_noise_off():
    p = torch.nn.Parameter(torch.zeros(5))
    opt = SGLD([p], lr=0.1, num_data=1, temperature=1.0)
    opt.param_groups[0]["noise"] = False
    p.grad = torch.ones(5)
    opt.step()
    assert torch.equal(p.detach(), torch.full((5,), -0.1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(num_data=0), "num_data must be >= 1"),
    (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
])
def test_bad_hyperparameters(kwargs, message):
    args = dict(lr=0.1, num_data=10, momentum=0.5, temperature=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        SGHMC([torch.nn.Parameter(torch.zeros(2))], **args)


def test_cyclical_schedule():
    s = CyclicalSchedule(total_steps=100, cycles=4, lr=0.2, explore_fraction=0.6, samples_per_cycle=2)
    assert s.cycle_length == 25
    assert s.lr_at(0) == pytest.approx(0.2) and s.lr_at(25) == pytest.approx(0.2)
    assert s.lr_at(12) == pytest.approx(0.1 * (math.cos(math.pi * 12 / 25) + 1))
    assert [s.noise_at(t) for t in (0, 14, 15, 24)] == [False, False, True, True]
    collected = [t for t in range(100) if s.collect_at(t)]
    assert collected == [19, 24, 44, 49, 69, 74, 94, 99] and s.n_samples == 8
    assert all(s.noise_at(t) for t in collected)
    with pytest.raises(ValueError, match="cycles <= total_steps"):
        CyclicalSchedule(total_steps=3, cycles=4, lr=0.1)


def test_bma_averages_probabilities_not_logits():
    model = torch.nn.Linear(2, 2, bias=False)
    states = [{"weight": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}, {"weight": torch.tensor([[-3.0, 0.0], [0.0, 0.0]])}]
    x = torch.tensor([[1.0, 0.0]])
    p = bma_probs(model, states, x)
    sig = lambda z: 1 / (1 + math.exp(-z))
    assert p[0, 0].item() == pytest.approx((sig(1) + sig(-3)) / 2)
    with pytest.raises(ValueError, match="at least one collected sample"):
        bma_probs(model, [], x)
