"""The learned prior's file: save, load with validation (one clear error for a bad file), metadata, and import of
the prior files the paper's authors released. A file stores the SWAG moments (mean, diagonal variance, deviations)
and the parameter layout they cover; scale and rank are chosen when it is loaded."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..files import atomic_torch_save
from .priors import LowRankGaussianPrior, PriorFileError, check_layout

FORMAT_VERSION = 1


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


def unusable(path: str | os.PathLike) -> str | None:
    """Why the prior file at ``path`` cannot be used (truncated, corrupt, inconsistent), or None when it loads."""
    try:
        load_prior(path)
    except PriorFileError as e:
        return str(e)
    return None


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

