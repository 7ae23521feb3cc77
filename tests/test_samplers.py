"""SGLD and SGHMC against the closed-form posterior of Bayesian linear regression.

Thousands of independent chains run in parallel (one row each); the final states are independent
draws, so the Monte-Carlo standard error of every moment is known exactly.
"""
import math

import numpy as np
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


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-prior", "exact-prior"])
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


STIFFNESS = (0.01, 0.1, 1.0, 10.0, 100.0)          # c = eta p / N of the prior's diagonal part


def diagonal_prior(mean: torch.Tensor, variance: torch.Tensor):
    """N(mean, diag(variance)) as the learned prior's class holds it (rank 0, no jitter)."""
    from repro.method.priors import LowRankGaussianPrior

    return LowRankGaussianPrior(mean, 2 * variance, torch.zeros(len(mean), 1, dtype=mean.dtype), rank=0, eps=0.0)


def batch_means(series: torch.Tensor, batches: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(estimate, Monte-Carlo SE) of the time average of ``series`` (steps x groups) by batch means."""
    means = series[: len(series) // batches * batches].reshape(batches, -1, *series.shape[1:]).mean(1)
    return means.mean(0), means.std(0) / math.sqrt(batches)


def prior_alone_moments(name: str, stiffness: tuple[float, ...], T: float, jitter: float = 0.0, chains: int = 400,
                        burn: int = 2000, keep: int = 4000):
    """(mean, its MC SE, variance, its MC SE) per stiffness c of ``name``'s chains under a diagonal prior alone, in
    standardised units (target: 0 and 1), by batch means over time; the chains start 3 sd away, so the mean must be
    reached."""
    lr, N = 1e-2, 40
    c = torch.tensor(stiffness, dtype=torch.float64).repeat_interleave(chains)
    variance = lr / (N * c)                                          # c = lr p / N with p = 1 / variance
    mu = torch.linspace(-1, 1, len(c), dtype=torch.float64)
    w = torch.nn.Parameter(mu + 3 * (T * variance).sqrt())
    w.grad = torch.zeros_like(w)
    kw = dict(lr=lr, num_data=N, temperature=T, prior=diagonal_prior(mu, variance),
              generator=torch.Generator().manual_seed(11))
    opt = SGLD([w], **kw) if name == "sgld" else SGHMC([w], momentum=0.9, jitter=jitter, **kw)
    z = []
    for t in range(burn + keep):
        opt.step()
        if t >= burn:
            z.append(((w.detach() - mu) / (T * variance).sqrt()).view(len(stiffness), chains))
    z = torch.stack(z)                                               # steps x stiffness x chains, standardised
    return (*batch_means(z.mean(2)), *batch_means(z.square().mean(2)))


def assert_standard_moments(stiffness, mean, mean_se, var, var_se):
    """Mean 0 and variance 1 within 3 Monte-Carlo SEs and within 10 %, at every stiffness."""
    for i, ci in enumerate(stiffness):
        assert abs(mean[i]) < min(0.1, 3 * mean_se[i] + 1e-3), (ci, mean[i], mean_se[i])
        assert abs(var[i] - 1) < min(0.1, 3 * var_se[i] + 1e-3), (ci, var[i], var_se[i])


@pytest.mark.parametrize("T", [1.0, 0.5])
@pytest.mark.parametrize("name", ["sgld", "sghmc"])
def test_a_stiff_prior_alone_is_sampled_exactly(name, T):
    """The prior as the only force, stiffness c from 0.01 to 100: the chains' stationary mean and variance are those of
    N(mu, T v) within 3 Monte-Carlo SEs (batch means over time) and within 10 %. (An explicit step diverges from
    c = 2 on; the proximal step this replaced sampled (T v) / (1 + c / 2) with SGLD and 0.02 T v with SGHMC at c = 10.)"""
    assert_standard_moments(STIFFNESS, *prior_alone_moments(name, STIFFNESS, T))


RESONANT = (math.pi ** 2, 4 * math.pi ** 2)        # c where SGHMC's exact rotation is by pi and 2 pi


@pytest.mark.parametrize("T", [1.0, 0.5])
def test_jittered_sghmc_samples_a_prior_at_its_resonant_stiffness(T):
    """c = pi^2 and 4 pi^2: the rotation by k pi would freeze every coordinate (next test); with the step length
    jittered by +-50 % the chains' stationary mean and variance are those of N(mu, T v) within 3 MC SEs and 10 %."""
    assert_standard_moments(RESONANT, *prior_alone_moments("sghmc", RESONANT, T, jitter=0.5))


@pytest.mark.parametrize("T", [1.0, 0.5])
def test_without_jitter_sghmc_freezes_at_its_resonant_stiffness(T):
    """The failure the jitter removes: at phi = k pi each coordinate only flips sign (or stays), so the chains keep the
    3-sd start: standardised variance 9, not 1."""
    _, _, var, _ = prior_alone_moments("sghmc", RESONANT, T, jitter=0.0, chains=50, burn=200, keep=400)
    assert (var - 9).abs().max() < 1e-6


def test_jitter_zero_is_the_step_of_before_the_jitter_bit_for_bit():
    """20 SGHMC steps (stiffness 25 to 1e-5) end where the code of commit 2b03be3, before the jitter, ended them."""
    lr, N = 1e-2, 40
    variance = torch.tensor([1e-5, 1e-3, 1.0, 2.5e-4], dtype=torch.float64)
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    w.grad = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    opt = SGHMC([w], lr=lr, num_data=N, prior=diagonal_prior(torch.zeros(4, dtype=torch.float64), variance),
                generator=torch.Generator().manual_seed(3), jitter=0.0)
    for _ in range(20):
        opt.step()
    before = ["0x1.3a315a8b82484p-2", "-0x1.3af55f4f6e356p-2", "0x1.b73589cc08eb4p-1", "0x1.197e1e6197a69p-3"]
    assert [x.hex() for x in w.detach().tolist()] == before


@pytest.mark.parametrize("u", [0.6, 1.0, 1.37])
def test_a_jittered_step_is_the_exact_flow_for_u_times_the_step(u):
    """Noise-free, one step with duration factor u against scipy's matrix exponential of the affine Hamiltonian flow
    dx = r dt, dr = -(p x / N + g) dt over time u sqrt(lr) (v = sqrt(lr) r), then the friction v <- m v."""
    from scipy.linalg import expm
    lr, N, m = 1e-2, 40, 0.9
    variance = torch.tensor([1e-5, 1e-3, 2.5e-4], dtype=torch.float64)         # stiffness c = 25, 0.25, 1
    x0, v0, g = (torch.tensor(v, dtype=torch.float64) for v in ([0.4, -1.0, 2.0], [0.05, 0.2, -0.1], [0.3, -0.2, 0.1]))
    w = torch.nn.Parameter(x0.clone())
    w.grad = g.clone()
    opt = SGHMC([w], lr=lr, num_data=N, momentum=m, temperature=0.0, jitter=0.5,
                prior=diagonal_prior(torch.zeros(3, dtype=torch.float64), variance))
    opt.state[w]["momentum_buffer"] = v0.clone()
    opt._duration = lambda: u
    opt.step()
    tau = u * math.sqrt(lr)
    for i in range(3):
        w2 = 1 / (N * variance[i].item())                                     # p / N
        flow = expm(tau * np.array([[0.0, 1.0, 0.0], [-w2, 0.0, -g[i].item()], [0.0, 0.0, 0.0]]))
        x, r, _ = flow @ np.array([x0[i].item(), v0[i].item() / math.sqrt(lr), 1.0])
        assert math.isclose(w[i].item(), x, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(opt.state[w]["momentum_buffer"][i].item(), m * math.sqrt(lr) * r, rel_tol=1e-9,
                            abs_tol=1e-12)


@pytest.mark.parametrize("T", [1.0, 0.5])
@pytest.mark.parametrize("name", ["sgld", "sghmc"])
def test_a_stiff_prior_and_a_likelihood_sample_the_posterior(problem, name, T):
    """Bayesian linear regression under a prior whose diagonal stiffness is c = 25 (variance 1e-5): the moments of
    the chains match the closed-form tempered posterior within 3 Monte-Carlo SEs and 10 % of its sd."""
    X, y, _, _ = problem
    prior_var, lr = 1e-5, 1e-2
    mu0 = torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64)
    precision = X.T @ X / NOISE_VAR + torch.eye(DIM, dtype=torch.float64) / prior_var
    cov = torch.linalg.inv(precision)
    mean = cov @ (X.T @ y / NOISE_VAR + mu0 / prior_var)
    chains = 2000
    w = torch.zeros(chains, DIM, dtype=torch.float64, requires_grad=True)
    prior = diagonal_prior(mu0.repeat(chains), torch.full((chains * DIM,), prior_var, dtype=torch.float64))
    kw = dict(lr=lr, num_data=N_DATA, temperature=T, prior=prior, generator=torch.Generator().manual_seed(12))
    opt = SGLD([w], **kw) if name == "sgld" else SGHMC([w], momentum=0.9, **kw)
    z = []
    sd = (T * cov.diagonal()).sqrt()
    for t in range(3000):
        opt.zero_grad()
        ((X @ w.T - y[:, None]) ** 2 / (2 * NOISE_VAR)).mean(0).sum().backward()
        opt.step()
        if t >= 1000:
            z.append((w.detach() - mean) / sd)
    z = torch.stack(z)                                               # steps x chains x dims, standardised
    m, m_se = batch_means(z.mean(1))
    v, v_se = batch_means(z.square().mean(1))
    assert torch.all(m.abs() < torch.clamp(3 * m_se + 1e-3, max=0.1)), (m, m_se)
    assert torch.all((v - 1).abs() < torch.clamp(3 * v_se + 1e-3, max=0.1)), (v, v_se)


@pytest.mark.parametrize("name", ["sgld", "sghmc"])
def test_explicit_steps_blow_up_where_the_exact_prior_step_does_not(name):
    chains, N, lr = 1000, 40, 1e-2
    prior = diagonal_prior(torch.zeros(chains, dtype=torch.float64), torch.full((chains,), 1e-6, dtype=torch.float64))
    explicit = torch.nn.Parameter(torch.ones(chains, dtype=torch.float64))
    opt = SGLD([explicit], lr=lr, num_data=N, temperature=1.0)       # c = 250: explicit Euler multiplies x by -249
    for _ in range(20):
        explicit.grad = None
        add_prior_grad_([explicit], prior, N)
        opt.step()
    assert explicit.abs().max() > 1e10
    w = torch.nn.Parameter(torch.ones(chains, dtype=torch.float64))
    w.grad = torch.zeros_like(w)
    kw = dict(lr=lr, num_data=N, temperature=1.0, prior=prior)
    exact = SGLD([w], **kw) if name == "sgld" else SGHMC([w], momentum=0.9, **kw)
    for _ in range(200):
        exact.step()
    assert w.abs().max() < 10 * math.sqrt(1e-6)


@pytest.mark.parametrize("name", ["sgld", "sghmc"])
@pytest.mark.parametrize("prior_var", [PRIOR_VAR, 1e-5])
def test_exact_prior_step_at_zero_temperature_finds_the_map(problem, name, prior_var):
    X, y, _, _ = problem
    mu0 = torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64)
    cov = torch.linalg.inv(X.T @ X / NOISE_VAR + torch.eye(DIM, dtype=torch.float64) / prior_var)
    mean = cov @ (X.T @ y / NOISE_VAR + mu0 / prior_var)
    w = torch.zeros(1, DIM, dtype=torch.float64, requires_grad=True)
    prior = diagonal_prior(mu0, torch.full((DIM,), prior_var, dtype=torch.float64))
    kw = dict(lr=2e-2, num_data=N_DATA, temperature=0.0, prior=prior)
    opt = SGLD([w], **kw) if name == "sgld" else SGHMC([w], momentum=0.9, **kw)
    for _ in range(3000):
        opt.zero_grad()
        ((X @ w.T - y[:, None]) ** 2 / (2 * NOISE_VAR)).mean(0).sum().backward()
        opt.step()
    assert torch.allclose(w.detach()[0], mean, atol=1e-8, rtol=0)


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
    (dict(jitter=1.0), "jitter must be in \\[0, 1\\), got 1.0"),
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


def test_burnin_cycles_keep_no_sample():
    s = CyclicalSchedule(total_steps=100, cycles=4, lr=0.2, explore_fraction=0.6, samples_per_cycle=2, burnin_cycles=1)
    collected = [t for t in range(100) if s.collect_at(t)]
    assert collected == [44, 49, 69, 74, 94, 99] and s.n_samples == 6          # cycle 0 (steps 0-24) kept nothing
    assert [s.cycle_of(t) for t in collected] == [1, 1, 2, 2, 3, 3]
    assert s.lr_at(25) == pytest.approx(0.2)                                   # the burn-in cycle's schedule is unchanged
    with pytest.raises(ValueError, match="burnin_cycles must be in 0..3"):
        CyclicalSchedule(total_steps=100, cycles=4, lr=0.1, burnin_cycles=4)


def test_bn_refresh_uses_the_statistics_of_the_given_images():
    """BMA with ``bn_images``: each sample predicts with BatchNorm statistics of those images (the running ones it
    carried are ignored; PyTorch's running variance is the unbiased one); without, with the running ones."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    x = torch.randn(64, 3) * 3 + 1
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["1.running_mean"].fill_(100.0)                      # stale statistics, far from the data's
    with torch.no_grad():
        h = model[0](x)
        expected = model[2]((h - h.mean(0)) / torch.sqrt(h.var(0) + 1e-5) * model[1].weight
                            + model[1].bias).softmax(1)
    refreshed = bma_probs(model, [state], x, bn_images=x)
    assert torch.allclose(refreshed, expected, atol=1e-5)
    stale = bma_probs(model, [state], x)
    assert not torch.allclose(stale, expected, atol=1e-2)
    assert torch.equal(bma_probs(model, [state], x, bn_images=x), refreshed)      # deterministic


def test_bma_averages_probabilities_not_logits():
    model = torch.nn.Linear(2, 2, bias=False)
    states = [{"weight": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}, {"weight": torch.tensor([[-3.0, 0.0], [0.0, 0.0]])}]
    x = torch.tensor([[1.0, 0.0]])
    p = bma_probs(model, states, x)
    sig = lambda z: 1 / (1 + math.exp(-z))
    assert p[0, 0].item() == pytest.approx((sig(1) + sig(-3)) / 2)
    with pytest.raises(ValueError, match="at least one collected sample"):
        bma_probs(model, [], x)


def test_a_step_is_the_same_in_channels_last_layout():
    """Downstream training runs channels-last: the samplers' flat parameter vector is in logical order, so one SGHMC
    step with a prior moves the parameters exactly as in the default layout (up to the convolution's rounding)."""
    from repro.method.priors import ComposedPrior, IsotropicGaussianPrior

    def step(layout):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        x = torch.randn(5, 3, 8, 8)
        model.to(memory_format=layout)
        params = list(model.parameters())
        d = sum(p.numel() for p in params)
        prior = ComposedPrior([IsotropicGaussianPrior(d - 10, 0.5, mean=torch.randn(d - 10)),
                               IsotropicGaussianPrior(10, 2.0)])
        opt = SGHMC(params, lr=0.1, num_data=5, momentum=0.9, temperature=1.0,
                    generator=torch.Generator().manual_seed(1), prior=prior)
        for _ in range(3):
            opt.zero_grad()
            model(x.contiguous(memory_format=layout)).square().mean().backward()
            opt.step()
        return torch.cat([p.detach().reshape(-1) for p in params])

    assert model_is_channels_last_capable()
    assert torch.allclose(step(torch.channels_last), step(torch.contiguous_format), atol=1e-5)


def model_is_channels_last_capable() -> bool:
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    return conv.weight.is_contiguous(memory_format=torch.channels_last)
