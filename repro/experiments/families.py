"""The prior families a downstream approach puts over its parameters, one class each, in one registry
(:func:`family`): how each builds its prior from a run's parameters, what its width is called, and the recipe its
MAP and sampler arms are tuned by (:mod:`.tuning` interprets it). An approach names its family
(:attr:`.approaches.Approach.prior`); an unknown name is one clear error.

================  =========================================  ==========  =========================================
family            prior over (backbone, head)                width       MAP tuning (then a sampler's width sweep)
================  =========================================  ==========  =========================================
``learned``       source SWAG N(mu, lambda Sigma + eps I),   ``scale``   SGD transfer's lr; lambda swept over
                  head N(0, head_var I)                                  ``tuning_scales``; head_var x factors
``isotropic``     N(0, alpha I) over all parameters          ``alpha``   lr over ``lr_grid``; alpha x factors
``isotropic_mean`` N(mu, alpha I), head N(0, head_var I)     ``alpha``   SGD transfer's lr; alpha x factors
``weight_decay``  none: weight decay in the optimiser        (none)      lr over ``lr_grid``; weight decay x
                                                                         factors, at ``study_n`` only
================  =========================================  ==========  =========================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from ..method.priors import IsotropicGaussianPrior, Prior, transfer_prior
from ..profiles import Profile
from ..registry import Registry
from .pretrain import load_source_prior

if TYPE_CHECKING:
    from .spec import RunSpec


@dataclass(frozen=True)
class Stage:
    """One step of a MAP tuning recipe: ``name`` over ``grid`` — "lr" (the profile's ``lr_grid``), "factors" (the
    default value x ``factor_grid``) or "scales" (``tuning_scales``, extended while the best is at an edge) — and,
    where ``at_study_n``, chosen at ``study_n`` only and taken at every other size."""
    name: str
    grid: str
    at_study_n: bool = False


class PriorFamily:
    """A family of priors: its ``name``, the run parameter of its ``width`` (None: no prior term), whether its
    covariance is ``learned`` from a source model, its default ``alpha``, its MAP tuning recipe (``lr_from_sgd``: the
    learning rate SGD transfer chose, from the same initialisation; then ``stages``) and the grid of a sampler's width
    sweep at T = 1 (``sampler_grid``: "scales" or "factors" around the MAP value)."""

    name: ClassVar[str]
    width: ClassVar[str | None]
    learned: ClassVar[bool] = False
    alpha: ClassVar[float] = 1.0
    lr_from_sgd: ClassVar[bool] = False
    stages: ClassVar[tuple[Stage, ...]]
    sampler_grid: ClassVar[str] = "factors"

    def build(self, profile: Profile, p: "RunSpec", backbone: nn.Module, d_head: int) -> Prior | None:
        """The prior over a model's flat parameters (``backbone`` first, then a head of ``d_head``)."""
        raise NotImplementedError

    def unit_blocks(self, prior: Prior) -> list[tuple[str, Prior]]:
        """The blocks of :meth:`build`'s prior at unit width, each named by the run parameter that sets its width: what
        a variational fit learns."""
        raise NotImplementedError(f"the {self.name} prior has no widths to learn")


FAMILIES: Registry[PriorFamily] = Registry("prior family")
register, family = FAMILIES.register, FAMILIES.lookup


@register
class Learned(PriorFamily):
    name, width, learned, lr_from_sgd, sampler_grid = "learned", "scale", True, True, "scales"
    stages = (Stage("scale", "scales"), Stage("head_var", "factors"))

    def build(self, profile, p, backbone, d_head):
        source = load_source_prior(profile, p.prior_kind, scale=p.scale, rank=p.rank, module=backbone)
        return transfer_prior(source, d_head, p.head_var)

    def unit_blocks(self, prior):
        backbone, head = prior.parts          # the learned block drops its jitter, so that widening it is exact
        return [("scale", backbone.with_(scale=1.0, eps=0.0)), ("head_var", IsotropicGaussianPrior(head.dim, 1.0))]


@register
class Isotropic(PriorFamily):
    name, width = "isotropic", "alpha"
    stages = (Stage("lr", "lr"), Stage("alpha", "factors"))

    def build(self, profile, p, backbone, d_head):
        return IsotropicGaussianPrior(sum(q.numel() for q in backbone.parameters()) + d_head, p.alpha)

    def unit_blocks(self, prior):
        return [("alpha", IsotropicGaussianPrior(prior.dim, 1.0))]


@register
class IsotropicMean(PriorFamily):
    name, width, alpha, lr_from_sgd = "isotropic_mean", "alpha", 1e-2, True
    stages = (Stage("alpha", "factors"),)

    def build(self, profile, p, backbone, d_head):
        mean = load_source_prior(profile, p.prior_kind, rank=0, module=backbone).mean
        d_backbone = sum(q.numel() for q in backbone.parameters())
        return transfer_prior(IsotropicGaussianPrior(d_backbone, p.alpha, mean=mean), d_head, p.head_var)

    def unit_blocks(self, prior):
        backbone, head = prior.parts
        return [("alpha", IsotropicGaussianPrior(backbone.dim, 1.0, mean=backbone.mean)),
                ("head_var", IsotropicGaussianPrior(head.dim, 1.0))]


@register
class WeightDecay(PriorFamily):
    name, width = "weight_decay", None
    stages = (Stage("lr", "lr"), Stage("weight_decay", "factors", at_study_n=True))

    def build(self, profile, p, backbone, d_head):
        return None                                       # weight decay in the optimiser
