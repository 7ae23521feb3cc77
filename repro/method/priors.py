"""Priors over flat parameter vectors: the learned low-rank Gaussian, isotropic baselines, compositions.

The learned prior is N(mu, Sigma) with Sigma = lambda * (1/2 diag + 1/2 D_k D_k^T / (K-1)) + eps I, where
D (d x K) holds the last K SWAG deviations and D_k its best rank-k approximation (top-k singular
directions). Writing Sigma = A + U U^T with A diagonal, Woodbury and the matrix-determinant lemma give
log-density and gradient in O(d k + k^3) without ever forming a d x d matrix:

    Sigma^-1 r = A^-1 r - W C^-1 W^T r,   W = A^-1 U,   C = I_k + U^T A^-1 U
    log|Sigma| = sum log a + log|C|,   tr(Sigma^-1) = sum 1/a - tr(C^-1 W^T W)

The same three quantities give the KL divergence of an isotropic Gaussian from any of these priors in closed form
(:meth:`Prior.kl_from_isotropic`, the data-emphasized ELBO of :mod:`repro.method.variational`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError

LOG_2PI = math.log(2 * math.pi)


class PriorFileError(UserError, ValueError):
    """A prior file that cannot be used: corrupt, truncated, inconsistent or not matching the model."""


class Prior:
    """A density over a flat parameter vector of length ``dim``."""

    dim: int

    def log_prob(self, theta: Tensor) -> Tensor:
        """log p(theta), differentiable with autograd."""
        return -0.5 * (self.mahalanobis(theta) + self.log_det() + self.dim * LOG_2PI)

    def mahalanobis(self, theta: Tensor) -> Tensor:
        """(theta - mu)^T Sigma^-1 (theta - mu), differentiable with autograd."""
        raise NotImplementedError

    def log_prob_and_grad(self, theta: Tensor, without_diagonal: bool = False) -> tuple[Tensor, Tensor]:
        """(log p(theta), d log p / d theta) in closed form, without autograd: the training hot path.

        ``without_diagonal=True`` leaves out the term -diag(precision) (theta - mean) of :meth:`diagonal`,
        which a sampler then integrates exactly (see :mod:`repro.method.samplers`).
        """
        raise NotImplementedError

    def diagonal(self) -> tuple[Tensor, Tensor]:
        """(mean, precision) of the diagonal part of the precision matrix, P = diag(precision) - R with R
        positive semi-definite: the stiff part of the prior (tiny SWAG variances) that explicit steps cannot take."""
        raise NotImplementedError

    def log_det(self) -> float:
        """log |Sigma|, the log-determinant of the covariance."""
        raise NotImplementedError

    def trace_precision(self) -> float:
        """tr(Sigma^-1), the trace of the precision matrix."""
        raise NotImplementedError

    def kl_from_isotropic(self, m: Tensor, var: float) -> Tensor:
        """KL(N(m, var I) || p) in closed form, differentiable in ``m``:
        1/2 [var tr(Sigma^-1) + (m - mu)^T Sigma^-1 (m - mu) - d + log|Sigma| - d log var] (the quadratic and
        log-determinant terms are those of log p(m))."""
        return 0.5 * (var * self.trace_precision() + self.mahalanobis(m) - self.dim * (1 + math.log(var))
                      + self.log_det())

    def _check(self, theta: Tensor) -> Tensor:
        if theta.shape != (self.dim,):
            raise ValueError(f"{type(self).__name__} covers {self.dim} parameters, got a vector of shape {tuple(theta.shape)}")
        return theta


class IsotropicGaussianPrior(Prior):
    """N(mean, variance * I); ``mean=None`` is the zero-mean non-learned prior."""

    def __init__(self, dim: int, variance: float, mean: Tensor | None = None):
        if not variance > 0 or not math.isfinite(variance):
            raise ValueError(f"variance must be a positive finite number, got {variance}")
        if mean is not None and mean.shape != (dim,):
            raise ValueError(f"mean has shape {tuple(mean.shape)}, expected ({dim},)")
        self.dim, self.variance, self.mean = dim, float(variance), mean

    def log_prob_and_grad(self, theta: Tensor, without_diagonal: bool = False) -> tuple[Tensor, Tensor]:
        r = self._check(theta) if self.mean is None else self._check(theta) - self.mean
        grad = torch.zeros_like(r) if without_diagonal else r / -self.variance
        logp = -0.5 * (r.dot(r) / self.variance + self.dim * (math.log(self.variance) + LOG_2PI))
        return logp, grad

    def diagonal(self) -> tuple[Tensor, Tensor]:
        mean = self.mean if self.mean is not None else torch.zeros(self.dim)
        return mean, torch.full_like(mean, 1 / self.variance)

    def log_det(self) -> float:
        return self.dim * math.log(self.variance)

    def trace_precision(self) -> float:
        return self.dim / self.variance

    def mahalanobis(self, theta: Tensor) -> Tensor:
        r = self._check(theta) if self.mean is None else self._check(theta) - self.mean
        return r.dot(r) / self.variance


class LowRankGaussianPrior(Prior):
    """SWAG-shaped Gaussian: covariance ``scale * (diag/2 + D_k D_k^T / (2(K-1))) + eps I``.

    Args:
        mean: (d,) SWAG mean.
        diag: (d,) SWAG diagonal variance (must be > 0).
        factor: (d, K) SWAG deviation matrix, columns oldest to newest.
        scale: lambda, multiplies the whole covariance (diagonal and low-rank alike).
        rank: k <= K directions kept (``None`` = K; 0 = diagonal only).
        directions: ``"top"`` keeps the k leading singular directions of D (principled);
            ``"first"`` keeps the first k stored columns, as the authors' code does.
        eps: jitter added to the diagonal after scaling.
    """

    def __init__(self, mean: Tensor, diag: Tensor, factor: Tensor, scale: float = 1.0,
                 rank: int | None = None, directions: str = "top", eps: float = 1e-8):
        d = mean.shape[0]
        K = factor.shape[1] if factor.dim() == 2 else -1
        if mean.dim() != 1 or diag.shape != mean.shape or factor.dim() != 2 or factor.shape[0] != d:
            raise PriorFileError(
                f"inconsistent prior shapes: mean {tuple(mean.shape)}, diag {tuple(diag.shape)}, "
                f"factor {tuple(factor.shape)} (expected (d,), (d,), (d, K))")
        rank = K if rank is None else rank
        if not 0 <= rank <= K:
            raise ValueError(f"rank must be in 0..{K} (the number of stored deviations), got {rank}")
        if rank > 0 and K < 2:
            raise ValueError("a low-rank part needs at least K = 2 stored deviations")
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        if directions not in ("top", "first"):
            raise ValueError(f"directions must be 'top' or 'first', got {directions!r}")
        self.mean, self.diag, self.factor = mean, diag, factor
        self.dim, self.scale, self.rank, self.directions, self.eps = d, float(scale), rank, directions, float(eps)

        self.a = diag * (0.5 * scale) + eps                     # A = diag(a)
        self.inv_a = self.a.reciprocal()
        U = self._low_rank_factor() * math.sqrt(0.5 * scale / max(K - 1, 1))   # (d, k)
        W = U * self.inv_a[:, None]
        capacitance = torch.eye(rank, dtype=mean.dtype, device=mean.device) + U.T @ W
        self._chol = torch.linalg.cholesky(capacitance)
        self._Wt = W.T.contiguous()                             # (k, d): rows stream through memory
        self._U = U
        self._log_det = self.a.log().sum() + 2 * self._chol.diagonal().log().sum()
        self._const = -0.5 * (self._log_det + d * LOG_2PI)

    def _low_rank_factor(self) -> Tensor:
        """D_k (d x k) with D_k D_k^T the chosen rank-k part of D D^T."""
        D, k = self.factor, self.rank
        if k == 0:
            return D[:, :0]
        if self.directions == "first":
            return D[:, :k]
        _, V = deviation_svd(D)
        return D @ V[:, :k].to(D.dtype)                         # = U_svd S over the top k directions

    @torch.no_grad()
    def low_rank_displacement(self, theta: Tensor) -> float:
        """||P_U (theta - mu)||: the length of theta - mu along the prior's low-rank directions (the column span of its
        rank-k factor); 0 at rank 0. How far a run moved where the low-rank part, not the diagonal, sets the width."""
        if self.rank == 0:
            return 0.0
        basis = torch.linalg.qr(self._U.double()).Q                  # d x k, orthonormal
        return float((basis.T @ (theta - self.mean).double()).norm())

    @torch.no_grad()
    def log_prob_and_grad(self, theta: Tensor, without_diagonal: bool = False) -> tuple[Tensor, Tensor]:
        r = self._check(theta) - self.mean
        ra = r * self.inv_a
        quad = r.dot(ra)
        if not self.rank:
            return self._const - 0.5 * quad, (torch.zeros_like(r) if without_diagonal else ra.neg_())
        t = self._Wt @ r
        s = torch.cholesky_solve(t[:, None], self._chol)[:, 0]
        quad = quad - t.dot(s)
        correction = s @ self._Wt                               # + W C^-1 W^T r: the low-rank part
        return self._const - 0.5 * quad, (correction if without_diagonal else correction.sub_(ra))

    def diagonal(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.inv_a

    def log_det(self) -> float:
        return float(self._log_det)

    def trace_precision(self) -> float:
        if not self.rank:
            return float(self.inv_a.double().sum())
        gram = (self._Wt.double() @ self._Wt.T.double())               # W^T W, k x k
        return float(self.inv_a.double().sum() - torch.cholesky_solve(gram, self._chol.double()).trace())

    def mahalanobis(self, theta: Tensor) -> Tensor:
        r = self._check(theta) - self.mean
        if not self.rank:
            return r.dot(r * self.inv_a)
        s = torch.cholesky_solve((self._Wt @ r)[:, None], self._chol)[:, 0]
        # r^T A^-1 (r - U s), not r^T A^-1 r - t^T s: for a displacement along U the two terms nearly cancel, which in
        # float32 loses a few per cent of the result; the residual r - U s is small there, and the product exact
        return (r * self.inv_a).dot(r - self._U @ s)

    def singular_values(self) -> Tensor:
        """Spectrum of the stored deviations: singular values of D / sqrt(K - 1), descending."""
        return deviation_singular_values(self.factor)

    def covariance(self) -> Tensor:
        """The dense d x d covariance: for tests and tiny problems only."""
        return torch.diag(self.a) + self._U @ self._U.T

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """n draws (n x d): mean + sqrt(a) z1 + U z2."""
        z1 = torch.randn(n, self.dim, generator=generator, dtype=self.mean.dtype)
        z2 = torch.randn(n, self.rank, generator=generator, dtype=self.mean.dtype)
        return self.mean + z1 * self.a.sqrt() + z2 @ self._U.T

    def with_(self, **changes) -> "LowRankGaussianPrior":
        """The same learned prior with another scale, rank, directions or eps."""
        kw = dict(scale=self.scale, rank=self.rank, directions=self.directions, eps=self.eps) | changes
        return LowRankGaussianPrior(self.mean, self.diag, self.factor, **kw)


def deviation_svd(D: Tensor) -> tuple[Tensor, Tensor]:
    """(S, V) of the deviation matrix D (d x K): its singular values, descending, and right singular vectors (K x K,
    columns in the same order), in double precision. The one eigendecomposition of the package: through the small
    K x K Gram matrix D^T D = V S^2 V^T, never a d x K SVD. The left singular vectors are D V / S."""
    evals, V = torch.linalg.eigh(D.T.double() @ D.double())    # ascending
    return evals.flip(0).clamp_min(0).sqrt(), V.flip(1)


def deviation_singular_values(D: Tensor) -> Tensor:
    """Singular values of D / sqrt(K - 1) (D is d x K), descending: the SWAG spectrum."""
    return deviation_svd(D)[0] / math.sqrt(max(D.shape[1] - 1, 1))


def top_directions(D: Tensor, k: int) -> Tensor:
    """The k leading left singular vectors of D (k x d, unit norm, in D's dtype)."""
    S, V = deviation_svd(D)
    return (D.double() @ V[:, :k] / S[:k].clamp_min(1e-300)).T.to(D.dtype)


class ComposedPrior(Prior):
    """Independent priors over consecutive blocks of one flat vector (e.g. backbone then head)."""

    def __init__(self, parts: Sequence[Prior]):
        self.parts = list(parts)
        self.sizes = [p.dim for p in self.parts]
        self.dim = sum(self.sizes)

    def log_prob_and_grad(self, theta: Tensor, without_diagonal: bool = False) -> tuple[Tensor, Tensor]:
        pieces = [p.log_prob_and_grad(t, without_diagonal)
                  for p, t in zip(self.parts, self._check(theta).split(self.sizes))]
        return sum(lp for lp, _ in pieces), torch.cat([g for _, g in pieces])

    def diagonal(self) -> tuple[Tensor, Tensor]:
        means, precisions = zip(*(p.diagonal() for p in self.parts))
        return torch.cat(means), torch.cat(precisions)

    def log_det(self) -> float:
        return sum(p.log_det() for p in self.parts)

    def trace_precision(self) -> float:
        return sum(p.trace_precision() for p in self.parts)

    def mahalanobis(self, theta: Tensor) -> Tensor:
        return sum(p.mahalanobis(t) for p, t in zip(self.parts, self._check(theta).split(self.sizes)))


class Widened(Prior):
    """N(mu, width * Sigma) of a prior N(mu, Sigma): its covariance multiplied by ``width``, exactly (no jitter
    re-added, unlike a :class:`LowRankGaussianPrior` rebuilt at another scale), so that each block's KL has a
    closed-form optimal width (:mod:`repro.method.variational`). ``width`` may be changed in place."""

    def __init__(self, base: Prior, width: float = 1.0):
        self.base, self.dim, self.width = base, base.dim, float(width)
        self._base_log_det = base.log_det()
        self.base_trace = base.trace_precision()      # tr(Sigma^-1) of the base, read every step: computed once

    def log_prob_and_grad(self, theta: Tensor, without_diagonal: bool = False) -> tuple[Tensor, Tensor]:
        logp, grad = self.base.log_prob_and_grad(theta, without_diagonal)
        top = -0.5 * (self._base_log_det + self.dim * LOG_2PI)          # the base's log-density at its mean
        return (logp - top) / self.width + top - 0.5 * self.dim * math.log(self.width), grad / self.width

    def mahalanobis(self, theta: Tensor) -> Tensor:
        return self.base.mahalanobis(theta) / self.width

    def diagonal(self) -> tuple[Tensor, Tensor]:
        mean, precision = self.base.diagonal()
        return mean, precision / self.width

    def log_det(self) -> float:
        return self._base_log_det + self.dim * math.log(self.width)

    def trace_precision(self) -> float:
        return self.base_trace / self.width


# ---------------------------------------------------------------------------------------------
# Matching priors to models
# ---------------------------------------------------------------------------------------------

def parameter_layout(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every trainable parameter, in the flat-vector order."""
    return [(n, tuple(p.shape)) for n, p in module.named_parameters() if p.requires_grad]


def check_layout(prior_layout: Sequence[tuple[str, Sequence[int]]], module: nn.Module, what: str = "prior") -> None:
    """Raise one clear error naming the parameters whose shapes differ between a prior and a module."""
    have = [(n, tuple(s)) for n, s in prior_layout]
    want = parameter_layout(module)
    if have == want:
        return
    diffs = [f"{a[0]}: {what} {a[1]} vs model {b[1]}" for a, b in zip(have, want) if a[1] != b[1] or a[0] != b[0]]
    n_have, n_want = sum(math.prod(s) for _, s in have), sum(math.prod(s) for _, s in want)
    msg = (f"{what} does not match the model: {len(have)} tensors / {n_have} parameters in the {what}, "
           f"{len(want)} tensors / {n_want} parameters in the model")
    if diffs:
        msg += "; first differences: " + "; ".join(diffs[:5])
    raise PriorFileError(msg)


def transfer_prior(backbone_prior: Prior, head_dim: int, head_variance: float) -> ComposedPrior:
    """Learned (or any) prior over the backbone, zero-mean isotropic N(0, head_variance I) over the head."""
    return ComposedPrior([backbone_prior, IsotropicGaussianPrior(head_dim, head_variance)])
