"""How downstream training computes its loss: the precision of the forward and backward pass, and torch.compile.

Measured by ``python -m repro.bench step`` (and, on whole recorded runs, ``python -m repro.bench grid``):

* **precision**, a run parameter (``RunSpec.default(..., precision="bf16")``): ``"fp32"``, or ``"bf16"``: the model's
  forward pass (and so its backward) under ``torch.autocast`` in bfloat16, the loss in float32. Parameters,
  gradients, the optimiser, the prior, the samplers' noise and every evaluation stay float32: a run differs from its
  fp32 twin by the rounding of its activations and gradients only. That changes its results beyond float tolerance,
  so the precision is part of the run's key; fp32 runs, made before it existed, carry none
  (an added field of :class:`repro.experiments.spec.RunSpec`), so no recorded run is re-queued by it.
* **compile**, a profile setting (``Profile.compile``): the loss compiled by ``torch.compile``, **once per process**:
  :func:`training_loss` returns the same compiled function for every run of a worker, and dynamo reuses its graph
  for every model of the same architecture and shapes (parameters are graph inputs, not constants), so a worker pays
  the compilation once and the on-disk inductor cache (:func:`inductor_cache`) shortens it for the next process.
  Where compile is unavailable (no C++ compiler) the loss runs eagerly, said once in the log. It agrees with eager
  mode up to float rounding (tested on the smoke profile), so it is not part of a run's key. A new input shape or
  model architecture compiles a new graph (``TORCH_LOGS=recompiles`` shows it); past dynamo's cache limit (8 per
  function) it runs eagerly.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
from typing import Callable

import torch
from torch import Tensor, nn

DTYPES = {"fp32": None, "bf16": torch.bfloat16}     # precision -> autocast dtype (None: no autocast)
PRECISIONS = tuple(DTYPES)

log = logging.getLogger(__name__)

Loss = Callable[[nn.Module, Tensor, Tensor], Tensor]


def check_precision(name: str) -> str:
    """One clear error for an unknown precision (:data:`PRECISIONS`); returns ``name``."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def inductor_cache() -> str:
    """Where torch.compile keeps its compiled kernels across processes: ``$TORCHINDUCTOR_CACHE_DIR`` if set, else
    ``<REPRO_CACHE_DIR>/inductor`` beside the decoded data (it survives a reboot, unlike the default under /tmp)."""
    from .data.cache import cache_dir
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))


def can_compile() -> bool:
    """Whether torch.compile can build kernels here: inductor's CPU backend needs a C++ compiler."""
    return hasattr(torch, "compile") and shutil.which(os.environ.get("CXX", "g++")) is not None


@functools.lru_cache(maxsize=None)
def training_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], precision: str = "fp32",
                  compile: bool = False) -> Loss:
    """``loss(model, x, y) = loss_fn(model(x), y)`` with the model's forward pass in ``precision`` and the loss in
    float32; compiled if ``compile`` and :func:`can_compile`. Cached: one function (one compilation) per process."""
    dtype = DTYPES[check_precision(precision)]

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if dtype is None:
            return loss_fn(model(x), y)
        with torch.autocast(x.device.type, dtype=dtype):
            out = model(x)
        return loss_fn(out.float(), y)

    if not compile:
        return loss
    if not can_compile():
        log.warning("torch.compile is unavailable here (no C++ compiler): downstream training runs eagerly")
        return loss
    inductor_cache()
    return torch.compile(loss, dynamic=False)
