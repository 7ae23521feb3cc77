"""Priors over flat parameter vectors: the learned low-rank Gaussian, isotropic baselines, compositions.

The learned prior is N(mu, Sigma) with Sigma = lambda * (1/2 diag + 1/2 D_k D_k^T / (K-1)) + eps I, where
D (d x K) holds the last K SWAG deviations and D_k its best rank-k approximation (top-k singular
directions). Writing Sigma = A + U U^T with A diagonal, Woodbury and the matrix-determinant lemma give
log-density and gradient in O(d k + k^3) without ever forming a d x d matrix:

    Sigma^-1 r = A^-1 r - W C^-1 W^T r,   W = A^-1 U,   C = I_k + U^T A^-1 U
    log|Sigma| = sum log a + log|C|
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..files import atomic_file

FORMAT_VERSION = 1
LOG_2PI = math.log(2 * math.pi)


class PriorFileError(ValueError):
    """A prior file that cannot be used: corrupt, truncated, inconsistent or not matching the model."""


class Prior:
    """A density over a flat parameter vector of length ``dim``."""

    dim: int

    def log_prob(self, theta: Tensor) -> Tensor:
        """log p(theta), differentiable with autograd."""
        return self.log_prob_and_grad(theta)[0]

    def log_prob_and_grad(self, theta: Tensor, without_diagonal: bool = False) -> tuple[Tensor, Tensor]:
        """(log p(theta), d log p / d theta) in closed form, without autograd: the training hot path.

        ``without_diagonal=True`` leaves out the term -diag(precision) (theta - mean) of :meth:`diagonal`,
        which a sampler then integrates implicitly (see :class:`repro.samplers.SGHMC`).
        """
        raise NotImplementedError

    def diagonal(self) -> tuple[Tensor, Tensor]:
        """(mean, precision) of the diagonal part of the precision matrix, P = diag(precision) - R with R
        positive semi-definite: the stiff part of the prior (tiny SWAG variances) that explicit steps cannot take."""
        raise NotImplementedError

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

    def log_prob(self, theta: Tensor) -> Tensor:
        r = self._check(theta) if self.mean is None else self._check(theta) - self.mean
        return -0.5 * (r.dot(r) / self.variance + self.dim * (math.log(self.variance) + LOG_2PI))


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
        # Top-k left singular directions via the small K x K Gram matrix: D V = U_svd S.
        gram = (D.T.double() @ D.double())
        _, V = torch.linalg.eigh(gram)                          # ascending eigenvalues
        return D @ V[:, -k:].flip(1).to(D.dtype)

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

    def log_prob(self, theta: Tensor) -> Tensor:
        r = self._check(theta) - self.mean
        quad = r.dot(r * self.inv_a)
        if self.rank:
            t = self._Wt @ r
            quad = quad - t.dot(torch.cholesky_solve(t[:, None], self._chol)[:, 0])
        return self._const - 0.5 * quad

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


def deviation_singular_values(D: Tensor) -> Tensor:
    """Singular values of D / sqrt(K - 1) (D is d x K), descending, via the K x K Gram matrix."""
    D = D.double()
    K = D.shape[1]
    return torch.linalg.eigvalsh(D.T @ D).clamp_min(0).sqrt().flip(0) / math.sqrt(max(K - 1, 1))


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

    def log_prob(self, theta: Tensor) -> Tensor:
        return sum(p.log_prob(t) for p, t in zip(self.parts, self._check(theta).split(self.sizes)))


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


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename: a reader never sees half a file."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def save_prior(path: str | os.PathLike, mean: Tensor, diag: Tensor, factor: Tensor, *,
               layout: Sequence[tuple[str, Sequence[int]]] = (), meta: dict | None = None,
               dtype: torch.dtype = torch.float32, factor_dtype: torch.dtype | None = None) -> None:
    """Save the SWAG moments that define a learned prior (scale and rank are chosen at load time).

    ``factor_dtype=torch.float16`` halves the file: the deviations need far fewer digits than the mean.
    """
    atomic_torch_save({
        "format": "repro.prior", "version": FORMAT_VERSION,
        "mean": mean.detach().to(dtype).cpu(), "diag": diag.detach().to(dtype).cpu(),
        "factor": factor.detach().to(factor_dtype or dtype).cpu().contiguous(),
        "names": [n for n, _ in layout], "shapes": [list(s) for _, s in layout],
        "meta": dict(meta or {}),
    }, path)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"prior file not found: {path}")
    try:
        # weights_only: a prior file from someone else can never run code on load.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickled objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PriorFileError(f"{path}: not a readable prior file (truncated, corrupt or not a tensor file): {first}") from None
    return obj


def _validated(path: Path, obj, expected: dict[str, int]) -> dict[str, Tensor]:
    """Check the tensors named in ``expected`` (name -> number of dims) are finite floating tensors."""
    if not isinstance(obj, dict):
        raise PriorFileError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    missing = [k for k in expected if k not in obj]
    if missing:
        raise PriorFileError(f"{path}: missing entries {missing} (has {sorted(obj)})")
    out = {}
    for key, ndim in expected.items():
        t = obj[key]
        if not isinstance(t, Tensor):
            raise PriorFileError(f"{path}: '{key}' is a {type(t).__name__}, not a tensor")
        if not t.is_floating_point():
            raise PriorFileError(f"{path}: '{key}' has dtype {t.dtype}; a floating dtype is required")
        if t.dim() != ndim:
            raise PriorFileError(f"{path}: '{key}' has shape {tuple(t.shape)}; expected {ndim} dimension(s)")
        bad = (~torch.isfinite(t)).sum().item()
        if bad:
            raise PriorFileError(f"{path}: '{key}' has {bad} non-finite value(s) (NaN or Inf)")
        out[key] = t
    return out


def load_prior(path: str | os.PathLike, *, scale: float = 1.0, rank: int | None = None,
               directions: str = "top", eps: float = 1e-8, module: nn.Module | None = None,
               dtype: torch.dtype = torch.float32) -> LowRankGaussianPrior:
    """Load a prior saved by :func:`save_prior`, validating it; ``module`` checks it covers that module."""
    path = Path(path)
    obj = _read(path)
    t = _validated(path, obj, {"mean": 1, "diag": 1, "factor": 2})
    mean, diag, factor = (t[k].to(dtype) for k in ("mean", "diag", "factor"))
    if diag.shape != mean.shape or factor.shape[0] != mean.shape[0]:
        raise PriorFileError(f"{path}: inconsistent shapes mean {tuple(mean.shape)}, diag {tuple(diag.shape)}, "
                             f"factor {tuple(factor.shape)} (expected (d,), (d,), (d, K))")
    nonpos = (diag <= 0).sum().item()
    if nonpos:
        raise PriorFileError(f"{path}: 'diag' has {nonpos} non-positive variance(s); variances must be > 0")
    if rank is not None and not 0 <= rank <= factor.shape[1]:
        raise PriorFileError(f"{path}: rank {rank} requested but the file stores {factor.shape[1]} deviations "
                             f"(valid ranks: 0..{factor.shape[1]})")
    if module is not None:
        layout = list(zip(obj.get("names", []), obj.get("shapes", [])))
        if layout:
            check_layout(layout, module, what=f"prior {path.name}")
        elif sum(p.numel() for p in module.parameters() if p.requires_grad) != mean.numel():
            raise PriorFileError(f"{path}: prior covers {mean.numel()} parameters, the model has "
                                 f"{sum(p.numel() for p in module.parameters())}")
    prior = LowRankGaussianPrior(mean, diag, factor, scale=scale, rank=rank, directions=directions, eps=eps)
    prior.meta = obj.get("meta", {})
    return prior


def prior_meta(path: str | os.PathLike) -> dict:
    """The metadata (training hyperparameters) stored beside a prior."""
    return _read(Path(path)).get("meta", {})


def import_authors_prior(prefix: str | os.PathLike, **kwargs) -> LowRankGaussianPrior:
    """Import a prior released by the paper's authors: ``{prefix}_mean.pt``, ``_variance.pt``, ``_covmat.pt``.

    Their ``_covmat.pt`` holds the SWAG deviations as K rows of length d (``cov_mat_sqrt``); we store
    the transpose. Their code scales the low-rank part by lambda^2 and adds 0.1 to the variance: we do
    not (see REPORT.md); the moments themselves are the same.
    """
    prefix = str(prefix)
    parts = {}
    for key, suffix, ndim in (("mean", "_mean.pt", 1), ("diag", "_variance.pt", 1), ("factor", "_covmat.pt", 2)):
        path = Path(prefix + suffix)
        parts[key] = _validated(path, {key: _read(path)}, {key: ndim})[key].float()
    mean, diag, rows = parts["mean"], parts["diag"], parts["factor"]
    if rows.shape[1] != mean.shape[0] or diag.shape != mean.shape:
        raise PriorFileError(f"{prefix}: authors' prior shapes disagree: mean {tuple(mean.shape)}, variance "
                             f"{tuple(diag.shape)}, covmat {tuple(rows.shape)} (expected (d,), (d,), (K, d))")
    return LowRankGaussianPrior(mean, diag.clamp_min(torch.finfo(diag.dtype).tiny), rows.T.contiguous(), **kwargs)

