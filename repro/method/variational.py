"""The prior's widths learned without a grid: variational inference on the data-emphasized ELBO (Harvey, Petrov &
Hughes, "Learning Hyperparameters via a Data-Emphasized Variational Objective").

q(theta) = N(m, sigma^2 I) over the flat parameter vector. The prior is a product of blocks (the learned backbone
prior and the head's isotropic one, or one isotropic block), each a fixed unit-width Gaussian N(mu_b, Sigma_b) times
a width w_b learned here: lambda, alpha or the head variance (:class:`~repro.method.priors.Widened`). Per training
example the objective minimised is

    J(m, sigma, w) = E_q[mean_i -log p(y_i | x_i, theta)] + KL(q || p_w) / (kappa N),

with kappa N = d, the number of parameters, for the data-emphasized ELBO (``"de_elbo"``: the likelihood up-weighted
by kappa = d / N) and kappa = 1 for the plain ELBO (``"elbo"``). With t_b = tr(Sigma_b^-1) and
q_b = (m_b - mu_b)^T Sigma_b^-1 (m_b - mu_b) (:meth:`~repro.method.priors.Prior.kl_from_isotropic`),

    KL_b = 1/2 [(sigma^2 t_b + q_b) / w_b - d_b + d_b log w_b + log|Sigma_b| - d_b log sigma^2],

whose minimiser over log w_b is closed-form: w_b* = (sigma^2 t_b + q_b) / d_b. The widths are therefore learned by
setting them to this optimum before every step (exact coordinate descent in log space: the fixed point a gradient
method on log w would approach, without its step size). Then, at those widths,

* m takes the study's MAP step (SGHMC at T = 0 on the data loss plus -log p_w(m) / (kappa N): dKL_b/dm_b is
  -d log p_w / dm_b), the prior's stiff diagonal part integrated exactly, the data gradient taken at
  theta = m + sigma eps (the reparameterisation trick);
* log sigma takes a step of SGD with m's momentum and scheduled learning rate (as the authors' code, which trains
  sigma through a softplus among the network's parameters) along  sigma eps . grad + (sigma^2 sum_b t_b / w_b - d) /
  (kappa N),  the gradient multiplied by kappa N / d: 1 for the data-emphasized ELBO; for the plain one, whose KL
  gradient would be d / N (thousands) times larger, the same step in units of its KL weight, so that it does not
  overshoot. A preconditioner: the optimum is unchanged.

Between steps the model's parameters hold the perturbed theta the next forward pass needs; :meth:`finish` puts m back.

Two properties of this objective to read its results by (both measured, in notebook 10):

* **The widths follow q's spread.** w_b* >= sigma^2 t_b / d_b, and t_b / d_b, the mean precision of a SWAG prior at
  unit width, is huge (~5e5 for the ``cpu`` supervised prior: its variances are ~1e-6), so a learned lambda can come
  mostly from sigma rather than from how far m moved. Each fit reports the share of every width that comes from
  sigma^2 t_b (``<name>_from_sigma``).
* **A collapsed start.** With the widths profiled, KL_b = d_b / 2 log(1 + q_b / (sigma^2 t_b)) + const, which pulls
  each block towards q_b = 0. A block started exactly at its prior mean (the backbone, at the source solution) starts
  there: its width is sigma^2 t_b / d_b, the KL's pull on sigma is zero, and only the data move m away; the
  objective also has stationary points with a block collapsed onto its mean. The tests start off the mean.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor

from .priors import ComposedPrior, Prior, Widened
from .samplers import SGHMC

OBJECTIVES = ("de_elbo", "elbo")     # data-emphasized (kappa = d / N) and plain (kappa = 1) ELBO
SIGMA_INIT = 1e-4                    # q's initial standard deviation (the authors'): the initialisation, barely perturbed


def optimal_width(block: Widened, m: Tensor, var: float) -> float:
    """w* = (var tr(Sigma^-1) + (m - mu)^T Sigma^-1 (m - mu)) / d: the width of ``block`` minimising KL(N(m, var I) || it)
    (Sigma is the block's unit-width covariance)."""
    return (var * block.base_trace + float(block.base.mahalanobis(m))) / block.dim


class DataEmphasizedVI(SGHMC):
    """Fit q = N(m, sigma^2 I) and the prior's widths on the (data-emphasized) ELBO, as an optimiser.

    Args:
        params: the model's parameters, in the prior's flat order (one group).
        lr: learning rate of m (the schedule may change it per step, as for the samplers).
        num_data: N, the number of training examples.
        blocks: (name, unit-width prior) of each consecutive block of the flat vector, e.g.
            ``[("scale", learned prior at scale 1), ("head_var", N(0, I))]``.
        objective: ``"de_elbo"`` (kappa = d / N) or ``"elbo"`` (kappa = 1).
    """

    def __init__(self, params: Iterable, lr: float, num_data: int, blocks: Sequence[tuple[str, Prior]],
                 objective: str = "de_elbo", momentum: float = 0.9, sigma_init: float = SIGMA_INIT,
                 generator: torch.Generator | None = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if not sigma_init > 0:
            raise ValueError(f"sigma_init must be > 0, got {sigma_init}")
        self.names = [name for name, _ in blocks]
        self.blocks = [Widened(base) for _, base in blocks]
        composed = ComposedPrior(self.blocks)
        self.dim = composed.dim
        self.kappa_n = self.dim if objective == "de_elbo" else num_data
        super().__init__(params, lr=lr, num_data=self.kappa_n, momentum=momentum, temperature=0.0,
                         generator=generator, prior=composed)
        self.log_sigma, self._sigma_velocity = math.log(sigma_init), 0.0
        self._eps: Tensor | None = None
        self._perturb()

    @property
    def sigma(self) -> float:
        return math.exp(self.log_sigma)

    @property
    def widths(self) -> dict[str, float]:
        """The learned width of each block, by name (lambda, alpha, head variance)."""
        return {name: b.width for name, b in zip(self.names, self.blocks)}

    @property
    def learned(self) -> dict[str, float]:
        """The widths, q's sigma, and the share of each width that comes from sigma (module docstring)."""
        var = self.sigma ** 2
        spread = {f"{name}_from_sigma": var * b.base_trace / (b.dim * b.width)
                  for name, b in zip(self.names, self.blocks)}
        return self.widths | {"sigma": self.sigma} | spread

    def _set_widths(self, var: float) -> None:
        """Every block at its optimal width for q = N(m, var I), m being the parameters now."""
        m = torch.cat([p.reshape(-1) for p in self._params()])
        for block, m_b in zip(self.blocks, m.split([b.dim for b in self.blocks])):
            block.width = optimal_width(block, m_b, var)

    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    def _shift(self, scale: float) -> None:
        """theta <- theta + scale * eps."""
        params = self._params()
        pieces = self._eps.split([p.numel() for p in params])
        torch._foreach_add_(params, [e.view_as(p) for e, p in zip(pieces, params)], alpha=scale)

    def _perturb(self) -> None:
        params = self._params()
        self._eps = torch.randn(self.dim, generator=self.generator, dtype=params[0].dtype).to(params[0].device)
        with torch.no_grad():
            self._shift(self.sigma)

    @torch.no_grad()
    def finish(self) -> None:
        """Leave the parameters at the mean m (training is over), the widths at their optimum for the final q."""
        if self._eps is not None:
            self._shift(-self.sigma)
            self._eps = None
            self._set_widths(self.sigma ** 2)

    @torch.no_grad()
    def step(self, closure=None):
        if self._eps is None:
            raise RuntimeError("finish() was called: this optimiser no longer holds a perturbation to step from")
        if closure is not None:   # it would re-evaluate the loss at m, not at the perturbed theta the step needs
            raise ValueError("DataEmphasizedVI takes no closure: call backward() on the loss at the current "
                             "parameters, then step()")
        params = self._params()
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        sigma = self.sigma
        data_grad_log_sigma = sigma * float(g.double().dot(self._eps.double()))
        self._shift(-sigma)                                           # back to m
        var = sigma * sigma
        self._set_widths(var)
        self.set_prior(self.prior)                                    # the diagonal at the new widths
        loss = super().step()                                         # m: MAP step at the widths w*
        kl_grad = var * sum(b.trace_precision() for b in self.blocks) - self.dim
        grad = (data_grad_log_sigma + kl_grad / self.kappa_n) * self.kappa_n / self.dim
        group = self.param_groups[0]
        self._sigma_velocity = group["momentum"] * self._sigma_velocity - group["lr"] * grad
        self.log_sigma += self._sigma_velocity
        self._perturb()
        return loss
