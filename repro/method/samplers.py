"""SG-MCMC samplers (SGLD, SGHMC) as ``torch.optim.Optimizer``s, the cyclical schedule, and BMA prediction.

Convention (posteriors library): the loss handed to ``backward`` is the *mean* minibatch NLL plus
-log p(theta)/N, i.e. u(theta) = U(theta)/N with U the full negative log posterior. With learning rate
eta and temperature T, the chain targets p(theta | data)^(1/T):

    SGHMC:  v <- m v - eta grad u + sqrt(2 eta (1 - m) T / N) xi;   theta <- theta + v
    SGLD:   the same with m = 0:  theta <- theta - eta grad u + sqrt(2 eta T / N) xi

T = 1 is the true posterior; T = 0 is SGD (with momentum). Each param group may set ``noise=False``
(the exploration phase of a cycle) to run noise-free.

A learned SWAG prior has tiny variances in many coordinates (1e-9 and below), i.e. a precision that an
explicit step can only take with eta < 2 N a_min. Given ``prior=``, the optimiser adds the prior's
low-rank gradient explicitly and integrates its stiff diagonal part implicitly (a proximal step):

    theta' = mu + (theta + v - mu) / (1 + eta p / N),   p = diagonal precision,

which is stable for any eta, has the same fixed point as gradient descent on the posterior at T = 0,
and at T > 0 leaves the stationary variance of a diagonal Gaussian at (T / p) / (1 + eta p / (2N))
(explicit Euler: (T / p) / (1 - eta p / (2N))): the same O(eta) accuracy, without the blow-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..models import EVAL_BATCH_SIZE, for_evaluation
from .priors import Prior


def check_temperature(temperature: float) -> float:
    """The one rule for a temperature: a finite number >= 0 (NaN and inf are refused)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    return float(temperature)


class SGHMC(Optimizer):
    """Stochastic-gradient Hamiltonian Monte Carlo (Chen et al. 2014) in SGD-with-momentum form."""

    def __init__(self, params: Iterable, lr: float, num_data: int, momentum: float = 0.9,
                 temperature: float = 1.0, generator: torch.Generator | None = None, prior: Prior | None = None):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not num_data >= 1:
            raise ValueError(f"num_data must be >= 1, got {num_data}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        check_temperature(temperature)
        super().__init__(params, dict(lr=lr, num_data=num_data, momentum=momentum,
                                      temperature=temperature, noise=True))
        self.generator = generator
        self.prior, self.log_prior = prior, None
        if prior is not None:
            if len(self.param_groups) != 1:
                raise ValueError("an optimiser with a prior takes one parameter group (the prior's flat order)")
            params = self.param_groups[0]["params"]
            if sum(p.numel() for p in params) != prior.dim:
                raise ValueError(f"the prior covers {prior.dim} parameters, the optimiser has "
                                 f"{sum(p.numel() for p in params)}")
            mean, precision = prior.diagonal()
            self._mu, self._precision = mean.to(params[0].dtype), precision.to(params[0].dtype)
            self._flat_momentum: Tensor | None = None

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
            noise_std = math.sqrt(2 * lr * (1 - m) * T / N) if group["noise"] else 0.0
            if self.prior is not None:
                self._prior_step(group["params"], lr, m, noise_std, N)
                continue
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

    def _prior_step(self, params: list[Tensor], lr: float, m: float, noise_std: float, N: int) -> None:
        """The step with a prior, on one flat vector: a handful of vector ops instead of ~10 per-parameter
        ``_foreach`` calls, which on CPU loop over the parameters one kernel at a time (the step then costs
        what an SGD step costs; see ``python -m repro.bench step``)."""
        theta = torch.cat([p.reshape(-1) for p in params])
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        self.log_prior, prior_grad = self.prior.log_prob_and_grad(theta, without_diagonal=True)
        grad.add_(prior_grad, alpha=-1.0 / N)
        if m:
            move = self._momentum(params)
            move.mul_(m).add_(grad, alpha=-lr)
        else:
            move = grad.mul_(-lr)
        if noise_std:
            move.add_(torch.randn(theta.shape, generator=self.generator, dtype=theta.dtype, device=theta.device),
                      alpha=noise_std)
        # implicit step for the diagonal prior term: theta' = mu + (theta + v - mu) / (1 + lr p / N)
        new = theta.add(move).sub_(self._mu).div_(self._precision.mul(lr / N).add_(1.0)).add_(self._mu)
        if m:                                                    # the momentum is the move actually made
            torch.sub(new, theta, out=move)
        torch._foreach_copy_(params, [v.view_as(p) for v, p in zip(new.split([p.numel() for p in params]), params)])

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

    Within each cycle of ``ceil(total_steps / cycles)`` steps the learning rate falls from ``lr`` to 0
    along a half cosine; the first ``explore_fraction`` of the cycle is noise-free exploration; samples
    are collected at ``samples_per_cycle`` evenly spaced steps ending at the cycle's last step.
    """

    total_steps: int
    cycles: int
    lr: float
    explore_fraction: float = 0.5
    samples_per_cycle: int = 1

    def __post_init__(self):
        if self.cycles < 1 or self.total_steps < self.cycles:
            raise ValueError(f"need 1 <= cycles <= total_steps, got cycles={self.cycles}, total_steps={self.total_steps}")
        if not 0 <= self.explore_fraction < 1:
            raise ValueError(f"explore_fraction must be in [0, 1), got {self.explore_fraction}")
        sampling_steps = self.cycle_length - math.floor(self.explore_fraction * self.cycle_length)
        if not 1 <= self.samples_per_cycle <= sampling_steps:
            raise ValueError(f"samples_per_cycle must be in 1..{sampling_steps}, got {self.samples_per_cycle}")

    @property
    def cycle_length(self) -> int:
        return math.ceil(self.total_steps / self.cycles)

    def position(self, step: int) -> float:
        """Where ``step`` (0-based) sits in its cycle, in [0, 1)."""
        return (step % self.cycle_length) / self.cycle_length

    def lr_at(self, step: int) -> float:
        return 0.5 * self.lr * (math.cos(math.pi * self.position(step)) + 1)

    def noise_at(self, step: int) -> bool:
        return self.position(step) >= self.explore_fraction

    def collect_at(self, step: int) -> bool:
        """True where a sample is kept: the cycle's last step and evenly spaced steps before it."""
        S = self.cycle_length
        cycle_end = min((step // S + 1) * S, self.total_steps) - 1
        spacing = max(1, (S - math.ceil(self.explore_fraction * S)) // self.samples_per_cycle)
        back = cycle_end - step
        return back >= 0 and back % spacing == 0 and back // spacing < self.samples_per_cycle

    def apply(self, optimizer: Optimizer, step: int) -> None:
        """Set lr and the noise flag of every param group for ``step``."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(step)
            group["noise"] = self.noise_at(step)

    @property
    def n_samples(self) -> int:
        return sum(self.collect_at(t) for t in range(self.total_steps))


@torch.inference_mode()
def bma_probs(model: nn.Module, states: Sequence[dict], images: Tensor, batch_size: int = EVAL_BATCH_SIZE) -> Tensor:
    """Bayesian model average: mean over samples of softmax(model(x)) over the class dimension (dim 1: [N, C] for
    classification, [N, C, H, W] for segmentation); ``states`` are state dicts."""
    if not states:
        raise ValueError("BMA needs at least one collected sample; none were collected")
    total = None
    for state in states:
        model.load_state_dict(state)
        net = for_evaluation(model)                     # an eval-mode copy: BN folded, channels-last
        probs = torch.cat([net(images[i:i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)])
        total = probs if total is None else total.add_(probs)
    return total / len(states)
