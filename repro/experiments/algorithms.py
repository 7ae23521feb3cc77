"""The inference algorithms a downstream run names (its ``sampler`` field), one class each, in one registry
(:func:`algorithm`): which inference each serves (``map``: optimise; ``sampler``: SG-MCMC, predict with a BMA;
``variational``: fit q and the prior's widths), its versions, and how it builds the run's optimiser. A new algorithm is
its own class and one :func:`register`; an unknown name is one clear error, never a fallback to another algorithm.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..method.priors import Prior
from ..method.samplers import SGHMC, SGLD
from ..method.variational import DataEmphasizedVI
from ..registry import Registry
from .families import family

if TYPE_CHECKING:
    from .spec import RunSpec

INFERENCES = ("map", "sampler", "variational")


class Algorithm:
    """An inference algorithm: its ``name`` (what a run's ``sampler`` holds), its ``inference`` (one of
    :data:`INFERENCES`) and its ``versions`` (a run's ``sampler_version``: what a code change that alters its results is
    recorded as)."""

    name: ClassVar[str]
    inference: ClassVar[str]
    versions: ClassVar[tuple[int, ...]] = (1,)

    def build(self, params: Sequence[Tensor], p: "RunSpec", num_data: int, prior: Prior | None,
              generator: torch.Generator) -> Optimizer:
        """The optimiser of run ``p`` over ``params`` (in the prior's flat order), N = ``num_data``."""
        raise NotImplementedError


def _check(cls: type[Algorithm]) -> None:
    if cls.inference not in INFERENCES:
        raise ValueError(f"{cls.__name__}'s inference must be one of {', '.join(INFERENCES)}, got {cls.inference!r}")


ALGORITHMS: Registry[Algorithm] = Registry("sampler", _check)     # a run names its algorithm in its ``sampler``
register, algorithm = ALGORITHMS.register, ALGORITHMS.lookup


def of(inference: str) -> tuple[str, ...]:
    """The names of ``inference``'s algorithms, in registration order (the first is its default)."""
    return tuple(name for name, a in ALGORITHMS.items() if a.inference == inference)


@register
class SGD(Algorithm):
    """MAP: SGD with momentum. With a prior, SGHMC at T = 0, which integrates the prior's stiff diagonal exactly
    (:mod:`repro.method.samplers`); without one (SGD transfer), torch's SGD with the run's weight decay."""
    name, inference = "sgd", "map"

    def build(self, params, p, num_data, prior, generator):
        if prior is None:
            return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        return SGHMC(params, lr=p.lr, num_data=num_data, momentum=p.momentum, temperature=p.temperature,
                     generator=generator, prior=prior)


@register
class Langevin(Algorithm):
    """SGLD (Welling & Teh 2011) at the run's temperature."""
    name, inference = "sgld", "sampler"

    def build(self, params, p, num_data, prior, generator):
        return SGLD(params, lr=p.lr, num_data=num_data, temperature=p.temperature, generator=generator, prior=prior)


@register
class Hamiltonian(Algorithm):
    """SGHMC (Chen et al. 2014) at the run's temperature. Version 1: the exact rotation at a fixed step (a coordinate
    whose angle is k pi never mixes); version 2: each step's length drawn from U(0.5, 1.5) x the step (``jitter``
    0.5), which breaks that resonance and keeps the target."""
    name, inference = "sghmc", "sampler"
    JITTER = {1: 0.0, 2: 0.5}
    versions = tuple(JITTER)

    def build(self, params, p, num_data, prior, generator):
        return SGHMC(params, lr=p.lr, num_data=num_data, momentum=p.momentum, temperature=p.temperature,
                     generator=generator, prior=prior, jitter=self.JITTER[p.sampler_version])


class Variational(Algorithm):
    """q = N(m, sigma^2 I) and the prior's widths fitted on an ELBO (:class:`repro.method.variational.DataEmphasizedVI`),
    the widths those of the run's prior family's blocks."""
    inference = "variational"

    def build(self, params, p, num_data, prior, generator):
        blocks = family(p.approach_.prior).unit_blocks(prior)
        return DataEmphasizedVI(params, lr=p.lr, num_data=num_data, blocks=blocks, objective=self.name,
                                momentum=p.momentum, generator=generator)


@register
class DataEmphasizedELBO(Variational):
    """The data-emphasized ELBO (kappa = d / N; Harvey et al.)."""
    name = "de_elbo"


@register
class PlainELBO(Variational):
    """The plain ELBO (kappa = 1)."""
    name = "elbo"
