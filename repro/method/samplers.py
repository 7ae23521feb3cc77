"""SG-MCMC samplers (SGLD, SGHMC) as ``torch.optim.Optimizer``s, the cyclical schedule, and BMA prediction.

Convention (posteriors library): the loss handed to ``backward`` is the *mean* minibatch NLL plus
-log p(theta)/N, i.e. u(theta) = U(theta)/N with U the full negative log posterior. With learning rate
eta and temperature T, the chain targets p(theta | data)^(1/T); T = 1 is the true posterior, T = 0 optimises.
Without a prior handed to the optimiser (the gradient then holds all of u):

    SGHMC:  v <- m v - eta grad u + sqrt(2 eta (1 - m) T / N) xi;   theta <- theta + v
    SGLD:   the same with m = 0:  theta <- theta - eta grad u + sqrt(2 eta T / N) xi

Each param group may set ``noise=False`` (the exploration phase of a cycle) to run noise-free.

**A stiff prior, integrated exactly** (``prior=``; docs/conventions.md section 2). A learned SWAG prior has tiny
variances in many coordinates (1e-9 and below): its diagonal precision p makes the per-step stiffness
c = eta p / N as large as 1e4, where an explicit step diverges and an implicit (proximal) one samples a variance
shrunk by 1/(1 + c/2) (SGLD) or worse (SGHMC). The optimiser therefore splits u into the diagonal Gaussian part
p (theta - mu)^2 / (2N) of the prior, which it integrates exactly, and the rest g (data and the prior's low-rank
part: explicit), held constant over the step. Per coordinate, with x = theta - mu:

* SGLD is the Ornstein-Uhlenbeck process dx = -(p x / N + g) dt + sqrt(2 T / N) dW over time eta, solved exactly
  (the exponential Euler step): with phi1(z) = (1 - e^-z) / z,

      x' = x - eta phi1(c) (p x / N + g) + sqrt(2 eta T phi1(2c) / N) xi,

  i.e. x' = e^-c x + ... : for g = 0 the chain is exactly N(0, T / p) at every step size, and the fixed point at
  T = 0 is the MAP, x = -g N / p.
* SGHMC is the damped oscillator dx = r dt, dr = -(p x / N + g) dt - gamma r dt + sqrt(2 gamma T / N) dW, with
  v = sqrt(eta) r, split into its Hamiltonian part, solved exactly with g constant (a rotation by the angle
  phi = sqrt(c) around x_eq = -g N / p; no resonance, since the constant force is part of the exact flow), and
  its friction + noise part, solved exactly (v <- m v + sqrt((1 - m^2) eta T / N) xi; the momentum m is the
  per-step friction factor e^(-gamma sqrt(eta))). With S1 = sin(phi)/phi and S2 = (1 - cos phi)/phi^2:

      x' = x cos(phi) + v S1 - eta g S2,      v' = m (v cos(phi) - (c x + eta g) S1) + sqrt((1 - m^2) eta T / N) xi.

  Both parts leave N(0, T / p) x N(0, eta T / N) invariant, so for g = 0 the chain samples the prior exactly at
  every step size; at T = 0 its fixed point is the MAP. As c -> 0 the step tends to the explicit one above
  (velocity Verlet form: x' = x + v - eta g / 2).

  **Resonance, and the jitter that breaks it** (``jitter=``). Invariance is not mixing: where phi = k pi the
  rotation maps x to +-x and S1 = 0, so neither v nor the noise ever reaches that coordinate (prior alone, c = pi^2:
  it stays where it started), and coordinates near it mix over very many steps. With ``jitter`` a > 0 each step runs
  the Hamiltonian part for u times the step's time, u ~ U(1 - a, 1 + a) drawn per step (randomised step length:
  Mackenzie 1989; Neal 2011, section 5.4.2.2): phi = u sqrt(c), and

      x' = x cos(phi) + u v S1 - u^2 eta g S2,      v' = m (v cos(phi) - u (c x + eta g) S1) + ...

  with S1, S2 at the new phi. Each step is still an exact solve of an invariant flow, so the prior's Gaussian target
  is unchanged, while no coordinate keeps an angle of k pi from step to step. What the jitter does change: the
  friction per step stays m, so the friction per unit time varies with u, and the data force g, held constant over
  the step, is held over up to (1 + a) times as long (a discretisation error of the data part, as a longer step's).

Both cost a handful of vector operations on the flat parameter vector (``python -m repro.bench step``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..models import EVAL_BATCH_SIZE, for_evaluation
from ..train import update_bn
from .priors import Prior


def check_temperature(temperature: float) -> float:
    """The one rule for a temperature: a finite number >= 0 (NaN and inf are refused)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    return float(temperature)


class SGHMC(Optimizer):
    """Stochastic-gradient Hamiltonian Monte Carlo (Chen et al. 2014) in SGD-with-momentum form."""

    def __init__(self, params: Iterable, lr: float, num_data: int, momentum: float = 0.9,
                 temperature: float = 1.0, generator: torch.Generator | None = None, prior: Prior | None = None,
                 jitter: float = 0.0):
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not num_data >= 1:
            raise ValueError(f"num_data must be >= 1, got {num_data}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        check_temperature(temperature)
        super().__init__(params, dict(lr=lr, num_data=num_data, momentum=momentum,
                                      temperature=temperature, noise=True))
        self.generator, self.jitter = generator, jitter
        self.prior, self.log_prior = None, None
        self._flat_momentum: Tensor | None = None
        if prior is not None:
            if len(self.param_groups) != 1:
                raise ValueError("an optimiser with a prior takes one parameter group (the prior's flat order)")
            self.set_prior(prior)

    def set_prior(self, prior: Prior) -> None:
        """Take ``prior`` from the next step on (its diagonal part is read once, here)."""
        params = self.param_groups[0]["params"]
        if sum(p.numel() for p in params) != prior.dim:
            raise ValueError(f"the prior covers {prior.dim} parameters, the optimiser has "
                             f"{sum(p.numel() for p in params)}")
        mean, precision = prior.diagonal()
        self.prior, self._mu, self._precision = prior, mean.to(params[0].dtype), precision.to(params[0].dtype)

    def _noise(self, params: Sequence[Tensor]) -> list[Tensor]:
        # One draw for the whole group, split into views: no per-parameter RNG calls.
        flat = torch.randn(sum(p.numel() for p in params), generator=self.generator,
                           dtype=params[0].dtype, device=params[0].device)
        return [n.view_as(p) for n, p in zip(flat.split([p.numel() for p in params]), params)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, T, N = group["lr"], group["momentum"], group["temperature"], group["num_data"]
            if self.prior is not None:
                self._prior_step(group["params"], lr, m, T if group["noise"] else 0.0, N)
                continue
            noise_std = math.sqrt(2 * lr * (1 - m) * T / N) if group["noise"] else 0.0
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if m:
                bufs = [self._state_tensor(p, "momentum_buffer") for p in params]
                torch._foreach_mul_(bufs, m)
                torch._foreach_add_(bufs, grads, alpha=-lr)
                moves = bufs
            else:
                moves = torch._foreach_mul(grads, -lr)
            if noise_std:
                torch._foreach_add_(moves, self._noise(params), alpha=noise_std)
            torch._foreach_add_(params, moves)
        return loss

    def _state_tensor(self, p: Tensor, key: str) -> Tensor:
        if key not in self.state[p]:
            self.state[p][key] = torch.zeros_like(p)
        return self.state[p][key]

    def _prior_step(self, params: list[Tensor], lr: float, m: float, T: float, N: int) -> None:
        """One step with the prior's diagonal Gaussian part integrated exactly (see the module docstring), on one flat
        vector: a handful of vector ops instead of ~10 per-parameter ``_foreach`` calls, which on CPU loop over the
        parameters one kernel at a time. ``T`` is 0 in a noise-free phase."""
        theta = torch.cat([p.reshape(-1) for p in params])
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        self.log_prior, prior_grad = self.prior.log_prob_and_grad(theta, without_diagonal=True)
        g.add_(prior_grad, alpha=-1.0 / N).mul_(lr)                      # eta g: data and low-rank prior, explicit
        x = theta.sub_(self._mu)
        c = self._precision.mul(lr / N)                                  # per-coordinate stiffness eta p / N
        if m:
            u = self._duration()                                         # 1 unless jittered
            phi = c.sqrt().mul_(u)
            s1 = torch.sinc(phi / math.pi).mul_(u)                       # u sin(phi) / phi, exact at phi = 0
            s2 = torch.sinc(phi / (2 * math.pi)).square_().mul_(0.5 * u * u)  # u^2 (1 - cos phi) / phi^2
            cos = c.mul(s2).neg_().add_(1.0)                              # cos(phi) = 1 - c u^2 (1 - cos phi) / phi^2
            v = self._momentum(params)
            new_x = x * cos
            new_x.addcmul_(v, s1).addcmul_(g, s2, value=-1.0)
            v.mul_(cos).sub_(x.mul_(c).add_(g).mul_(s1)).mul_(m)       # v' = m (v cos - (c x + eta g) S1)
            if T:
                v.add_(self._randn(v), alpha=math.sqrt((1 - m * m) * lr * T / N))
            x = new_x
        else:
            phi1 = torch.expm1(-c).neg_().div_(c).nan_to_num_(nan=1.0)  # (1 - e^-c) / c, -> 1 as c -> 0
            x.sub_(x.mul(c).add_(g).mul_(phi1))                          # x - eta phi1(c) (p x / N + g)
            if T:
                c2 = c.mul_(2.0)
                var = torch.expm1(-c2).neg_().div_(c2).nan_to_num_(nan=1.0).mul_(2 * lr * T / N)
                x.addcmul_(self._randn(x), var.sqrt_())
        new = x.add_(self._mu)
        torch._foreach_copy_(params, [t.view_as(p) for t, p in zip(new.split([p.numel() for p in params]), params)])

    def _duration(self) -> float:
        """How long this step's Hamiltonian part runs, in units of the step (u: phi = u sqrt(c)): 1, or with
        ``jitter`` a draw from U(1 - jitter, 1 + jitter) per step, so that no coordinate keeps an angle of k pi."""
        if not self.jitter:
            return 1.0
        return 1.0 + self.jitter * (2 * torch.rand((), generator=self.generator, dtype=torch.float64).item() - 1)

    def _randn(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype, device=like.device)

    def _momentum(self, params: list[Tensor]) -> Tensor:
        """The momentum as one flat buffer whose views are each parameter's ``momentum_buffer`` state (rebuilt
        from the state when it was replaced, e.g. by ``load_state_dict``)."""
        flat = self._flat_momentum
        bufs = [self.state[p].get("momentum_buffer") for p in params]
        if flat is None or any(b is None for b in bufs) or bufs[0].data_ptr() != flat.data_ptr():
            flat = torch.cat([(b if b is not None else torch.zeros_like(p)).reshape(-1) for b, p in zip(bufs, params)])
            for v, p in zip(flat.split([p.numel() for p in params]), params):
                self.state[p]["momentum_buffer"] = v.view_as(p)
            self._flat_momentum = flat
        return flat


class SGLD(SGHMC):
    """Stochastic-gradient Langevin dynamics (Welling & Teh 2011): SGHMC without momentum."""

    def __init__(self, params: Iterable, lr: float, num_data: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None, prior: Prior | None = None):
        super().__init__(params, lr=lr, num_data=num_data, momentum=0.0, temperature=temperature,
                         generator=generator, prior=prior)


@torch.no_grad()
def add_prior_grad_(params: Sequence[Tensor], prior: Prior, num_data: int, without_diagonal: bool = False) -> Tensor:
    """Add the gradient of -log p(theta)/N to ``p.grad`` of each parameter; returns log p(theta).

    ``params`` must be in the prior's flat order. The gradient is closed-form (no autograd graph).
    """
    theta = torch.cat([p.reshape(-1) for p in params])
    logp, grad = prior.log_prob_and_grad(theta, without_diagonal)
    pieces = [g.view_as(p) for g, p in zip(grad.split([p.numel() for p in params]), params)]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch._foreach_add_([p.grad for p in params], pieces, alpha=-1.0 / num_data)
    return logp


@dataclass(frozen=True)
class CyclicalSchedule:
    """Cosine cycles (Zhang et al. 2020, cSG-MCMC).

    The ``total_steps`` are split into ``cycles`` cycles of ``total_steps // cycles`` or one more steps (cycle c starts
    at floor(c T / C), so every cycle, the last included, runs its whole cosine). Within each cycle the learning rate
    falls from ``lr`` to 0 along a half cosine; the first ``explore_fraction`` of the cycle is noise-free
    exploration; samples are collected at ``samples_per_cycle`` evenly spaced steps ending at the cycle's last step,
    in every cycle after the first ``burnin_cycles`` (burn-in: the chain is still travelling from its initialisation).
    """

    total_steps: int
    cycles: int
    lr: float
    explore_fraction: float = 0.5
    samples_per_cycle: int = 1
    burnin_cycles: int = 0

    def __post_init__(self):
        if self.cycles < 1 or self.total_steps < self.cycles:
            raise ValueError(f"need 1 <= cycles <= total_steps, got cycles={self.cycles}, total_steps={self.total_steps}")
        if not 0 <= self.burnin_cycles < self.cycles:
            raise ValueError(f"burnin_cycles must be in 0..{self.cycles - 1}, got {self.burnin_cycles}")
        if not 0 <= self.explore_fraction < 1:
            raise ValueError(f"explore_fraction must be in [0, 1), got {self.explore_fraction}")
        sampling_steps = self.cycle_length - math.ceil(self.explore_fraction * self.cycle_length)
        if not 1 <= self.samples_per_cycle <= sampling_steps:
            raise ValueError(f"samples_per_cycle must be in 1..{sampling_steps}, got {self.samples_per_cycle}")

    @property
    def cycle_length(self) -> int:
        """The length of the shortest cycle (the others are one step longer)."""
        return self.total_steps // self.cycles

    def start(self, cycle: int) -> int:
        """The first step of ``cycle`` (``start(cycles)`` = ``total_steps``)."""
        return cycle * self.total_steps // self.cycles

    def cycle_of(self, step: int) -> int:
        """The (0-based) cycle ``step`` belongs to: the largest c with start(c) <= step."""
        return ((step + 1) * self.cycles + self.total_steps - 1) // self.total_steps - 1

    def position(self, step: int) -> float:
        """Where ``step`` (0-based) sits in its cycle, in [0, 1)."""
        c = self.cycle_of(step)
        return (step - self.start(c)) / (self.start(c + 1) - self.start(c))

    def lr_at(self, step: int) -> float:
        return 0.5 * self.lr * (math.cos(math.pi * self.position(step)) + 1)

    def noise_at(self, step: int) -> bool:
        return self.position(step) >= self.explore_fraction

    def collect_at(self, step: int) -> bool:
        """True where a sample is kept: past the burn-in cycles, the cycle's last step and evenly spaced steps
        before it."""
        c = self.cycle_of(step)
        if c < self.burnin_cycles:
            return False
        length = self.start(c + 1) - self.start(c)
        spacing = max(1, (length - math.ceil(self.explore_fraction * length)) // self.samples_per_cycle)
        back = self.start(c + 1) - 1 - step
        return back % spacing == 0 and back // spacing < self.samples_per_cycle

    def apply(self, optimizer: Optimizer, step: int) -> None:
        """Set lr and the noise flag of every param group for ``step``."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(step)
            group["noise"] = self.noise_at(step)

    @property
    def n_samples(self) -> int:
        return sum(self.collect_at(t) for t in range(self.total_steps))


@torch.inference_mode()
def sample_probs(model: nn.Module, states: Sequence[dict], images: Tensor, batch_size: int = EVAL_BATCH_SIZE,
                 bn_images: Tensor | None = None) -> Iterator[Tensor]:
    """softmax(model(x)) over the class dimension (dim 1) for each state dict in ``states``, in order.
    ``bn_images``: re-estimate BatchNorm statistics for each state on them first (else the state's running ones)."""
    for state in states:
        model.load_state_dict(state)
        if bn_images is not None:
            update_bn(model, bn_images)
        net = for_evaluation(model)                     # an eval-mode copy: BN folded, channels-last
        yield torch.cat([net(images[i:i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)])


@torch.inference_mode()
def bma_probs(model: nn.Module, states: Sequence[dict], images: Tensor, batch_size: int = EVAL_BATCH_SIZE,
              bn_images: Tensor | None = None) -> Tensor:
    """Bayesian model average: the mean of :func:`sample_probs` over ``states`` ([N, C] for classification,
    [N, C, H, W] for segmentation)."""
    if not states:
        raise ValueError("BMA needs at least one collected sample; none were collected")
    total = None
    for probs in sample_probs(model, states, images, batch_size, bn_images):
        total = probs if total is None else total.add_(probs)
    return total / len(states)
