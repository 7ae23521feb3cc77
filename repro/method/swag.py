"""SWAG (Maddox et al. 2019) on flat parameter vectors.

Running first and second moments of the snapshots theta_t, and the deviations theta_t - mean_t of the
last K snapshots (mean_t = running mean after snapshot t). The fitted Gaussian is
N(mean, 1/2 diag + 1/2 D D^T / (K - 1)); :meth:`SWAG.sample` draws from it with the *standard
deviation* sqrt(diag) (the authors' code uses the variance there).
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from ..files import atomic_torch_save
from .prior_files import load_prior, save_prior
from .priors import LowRankGaussianPrior, deviation_singular_values
from ..train import fit, flat_params


class SWAG:
    """Collects SWAG moments of a flat vector of length ``dim``, keeping the last ``max_rank`` deviations."""

    def __init__(self, dim: int, max_rank: int = 20, dtype: torch.dtype = torch.float32, min_var: float = 1e-30):
        if max_rank < 0:
            raise ValueError(f"max_rank must be >= 0, got {max_rank}")
        self.dim, self.max_rank, self.min_var = dim, max_rank, min_var
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)   # float64: running moments lose digits in float32
        self.sq_mean = torch.zeros(dim, dtype=torch.float64)
        self._dev = torch.zeros(max_rank, dim, dtype=dtype)   # ring buffer, row i = slot i
        self._slot = 0

    @torch.no_grad()
    def collect(self, theta: Tensor) -> None:
        """Add one snapshot (a flat parameter vector)."""
        if theta.shape != (self.dim,):
            raise ValueError(f"SWAG collects vectors of length {self.dim}, got shape {tuple(theta.shape)}")
        x = theta.detach().to(torch.float64)
        self.n += 1
        self.mean.add_(x - self.mean, alpha=1 / self.n)
        self.sq_mean.add_(x * x - self.sq_mean, alpha=1 / self.n)
        if self.max_rank:
            self._dev[self._slot % self.max_rank] = (x - self.mean).to(self._dev.dtype)
            self._slot += 1

    @property
    def diag(self) -> Tensor:
        """Diagonal variance E[theta^2] - E[theta]^2, clamped to ``min_var`` (round-off can make it negative)."""
        return (self.sq_mean - self.mean.square()).clamp_min(self.min_var)

    @property
    def deviations(self) -> Tensor:
        """D (dim x K), columns ordered oldest to newest."""
        K = min(self._slot, self.max_rank)
        if K < self.max_rank:
            return self._dev[:K].T
        start = self._slot % self.max_rank
        return torch.cat([self._dev[start:], self._dev[:start]]).T

    def sample(self, scale: float = 1.0, rank: int | None = None, n: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """theta = mean + sqrt(scale/2) * (sqrt(diag) z1 + D_k z2 / sqrt(K-1)); ``n`` draws as rows (n x d)."""
        draws = self.to_prior(scale=scale, rank=rank, eps=0.0).sample(n or 1, generator).to(self._dev.dtype)
        return draws if n is not None else draws[0]

    def to_prior(self, scale: float = 1.0, rank: int | None = None, directions: str = "top",
                 eps: float = 1e-8) -> LowRankGaussianPrior:
        """The rescaled learned prior N(mean, scale * Sigma_SWAG + eps I)."""
        if self.n < 2:
            raise ValueError(f"SWAG needs at least 2 snapshots, has {self.n}")
        D = self.deviations
        rank = D.shape[1] if rank is None else rank
        if rank > 0 and D.shape[1] < 2:
            raise ValueError("a low-rank part needs at least 2 collected deviations")
        dtype = self._dev.dtype
        return LowRankGaussianPrior(self.mean.to(dtype), self.diag.to(dtype), D, scale=scale, rank=rank,
                                    directions=directions, eps=eps)

    def singular_values(self) -> Tensor:
        """Singular values of D / sqrt(K - 1), descending: the SWAG low-rank spectrum."""
        return deviation_singular_values(self.deviations)

    def save(self, path: str | os.PathLike, layout=(), meta: dict | None = None, dtype: torch.dtype = torch.float32,
             factor_dtype: torch.dtype | None = None, first: int | None = None) -> None:
        """Save as a prior file (mean, diag, deviations); see :func:`repro.method.prior_files.save_prior`.

        ``first=d`` keeps the first d coordinates only: the marginal over the backbone, whose parameters
        come first in the flat order (the restriction of a Gaussian to a block is that block).
        """
        block = slice(0, first)
        save_prior(path, self.mean[block], self.diag[block], self.deviations[block], layout=layout,
                   meta={"swag_snapshots": self.n, **(meta or {})}, dtype=dtype, factor_dtype=factor_dtype)

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sq_mean": self.sq_mean, "dev": self._dev, "slot": self._slot}

    def load_state_dict(self, state: dict) -> None:
        self.n, self._slot = int(state["n"]), int(state["slot"])
        self.mean, self.sq_mean, self._dev = state["mean"], state["sq_mean"], state["dev"]
        self.max_rank, self.dim = self._dev.shape[0], self.mean.shape[0]

    def checkpoint(self, path: str | os.PathLike) -> None:
        """Atomic checkpoint of the full collector state (to resume collection)."""
        atomic_torch_save(self.state_dict(), path)


class _Trace(list):
    """A list of floats that :func:`repro.train.fit` checkpoints with the model."""

    def state_dict(self) -> dict:
        return {"values": torch.tensor(self, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self[:] = state["values"].tolist()


def fit_swag(model: nn.Module, loss_fn: Callable[[nn.Module, tuple], Tensor],
             epoch_batches: Callable[[int], Iterable[tuple]], optimizer: torch.optim.Optimizer, steps_per_epoch: int,
             lr: float, burnin_steps: int, collect_steps: int, snapshots: int, max_rank: int,
             checkpoint: str | os.PathLike | None = None, desc: str = "SWAG",
             norm_of: Callable[[Tensor], float] = lambda theta: theta.norm().item()) -> tuple[SWAG, list[float]]:
    """SGD at the constant ``lr``: ``burnin_steps`` without snapshots (so the chain is stationary), then
    ``collect_steps`` with ``snapshots`` evenly spaced ones, one every ``collect_steps // snapshots`` steps.

    Returns the collector and ``norm_of(theta)`` at every snapshot. Resumable through ``checkpoint``
    (see :func:`repro.train.fit`); ``epoch_batches(e)`` yields the batches of SWAG epoch e.
    """
    if collect_steps < max(2, snapshots):
        raise ValueError(f"SWAG collects over {collect_steps} steps for {snapshots} snapshots: "
                         f"collect longer or take fewer snapshots")
    swag, norms = SWAG(sum(p.numel() for p in model.parameters() if p.requires_grad), max_rank=max_rank), _Trace()
    total, every = burnin_steps + collect_steps, max(1, collect_steps // snapshots)

    def collect(step: int) -> None:
        if step >= burnin_steps and (step - burnin_steps + 1) % every == 0 and swag.n < snapshots:
            theta = flat_params(model).cpu()
            swag.collect(theta)
            norms.append(norm_of(theta))

    def batches(epoch: int):   # the last epoch stops early when the length is not a whole number of epochs
        return itertools.islice(epoch_batches(epoch), min(steps_per_epoch, total - epoch * steps_per_epoch))

    fit(model, loss_fn, batches, optimizer, math.ceil(total / steps_per_epoch), lr_at=lambda s: lr,
        checkpoint=checkpoint, on_step=collect, desc=desc, extra_state={"swag": swag, "norms": norms})
    return swag, list(norms)


__all__ = ["SWAG", "fit_swag", "load_prior"]
