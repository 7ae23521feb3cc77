"""What a study measures on a transfer run besides its BMA's accuracy, NLL and ECE: one hook each, out of the one-run
function (:func:`.transfer.run_transfer` calls every hook of :data:`EVALUATIONS` that applies to the run, in that
pass over the kept samples, and adds what each returns to the run's record).

* :class:`SampleDiagnostics` (notebook 09): each kept sample's own accuracy, by the cycle it ends; on the holdout set
  with BatchNorm re-estimated, the same samples' BMA with their running statistics (rule 5).
* :class:`Displacement` (C2): how far a run under a learned prior moved from its mean, and how much of that along the
  prior's low-rank directions.
* :class:`ShiftedSet` (C8): the same models on the shifted test set, scored in the same pass as the test images (one
  BatchNorm refresh and one folded copy per sample instead of two).

A hook is a class: :meth:`Evaluation.applies` says whether a run gets it, :meth:`Evaluation.images` adds images to the
pass, :meth:`Evaluation.sample` sees each kept sample (the model holding it, and its probabilities on those images),
:meth:`Evaluation.finish` returns the metrics and the predictions to save.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

from torch import Tensor, nn

from ..analysis.metrics import classification_metrics
from ..data.shift import ShiftSet, shift_set
from ..method.priors import LowRankGaussianPrior, Prior
from ..method.samplers import bma_probs
from ..profiles import Profile
from ..train import flat_params
from .families import family

if TYPE_CHECKING:
    from .spec import RunSpec


class Evaluation:
    """One run's extra measurement (see the module docstring); built per run by :func:`hooks`."""

    def __init__(self, profile: Profile, p: "RunSpec", prior: Prior | None):
        self.profile, self.p, self.prior = profile, p, prior

    @staticmethod
    def applies(p: "RunSpec") -> bool:
        raise NotImplementedError

    def images(self) -> Tensor | None:
        """Images scored beside the run's evaluation images, in the same pass (none by default)."""
        return None

    def sample(self, model: nn.Module, probs: Tensor) -> None:
        """One kept sample: ``model`` holds it; ``probs`` are its softmax outputs on :meth:`images` (empty without)."""

    def finish(self, model: nn.Module, states: Sequence[dict], cycles: Sequence[int], each: Sequence[Tensor],
               ex: Tensor, ey: Tensor) -> tuple[dict, dict]:
        """(metrics, predictions) of the run, once every sample was seen: ``each`` holds every sample's
        probabilities on the evaluation images ``ex`` (labels ``ey``)."""
        raise NotImplementedError


class SampleDiagnostics(Evaluation):
    """Notebook 09: does every cycle end at a trained model (rule 3), and does re-estimating BatchNorm help (rule 5)?"""

    @staticmethod
    def applies(p):
        return p.approach_.bayes

    def finish(self, model, states, cycles, each, ex, ey):
        out = {"sample_accuracy": ";".join(f"{(q.argmax(1) == ey).float().mean().item():.4f}" for q in each),
               "sample_cycle": ";".join(map(str, cycles))}
        if self.p.bn_refresh and self.p.split == "holdout":      # the same samples with their running statistics
            out |= {f"bn_running_{k}": v for k, v in classification_metrics(bma_probs(model, states, ex), ey).items()}
        return out, {}


class Displacement(Evaluation):
    """C2: (||theta - mu||, ||P_U (theta - mu)||) of the backbone, mean over the kept samples."""

    @staticmethod
    def applies(p):
        return family(p.approach_.prior).learned

    def __init__(self, profile, p, prior):
        super().__init__(profile, p, prior)
        self.moved: list[tuple[float, float]] = []

    def sample(self, model, probs):
        self.moved.append(displacement(model, self.prior.parts[0]))

    def finish(self, model, states, cycles, each, ex, ey):
        return {"displacement": sum(d for d, _ in self.moved) / len(self.moved),
                "low_rank_displacement": sum(u for _, u in self.moved) / len(self.moved)}, {}


class ShiftedSet(Evaluation):
    """C8: the BMA on the profile's shifted CIFAR-10 test set (CIFAR-10 test runs only)."""

    @staticmethod
    def applies(p):
        return p.dataset == "cifar10" and p.split == "test"

    def __init__(self, profile, p, prior):
        super().__init__(profile, p, prior)
        self.shifted, self.total = _shift_set(profile), 0.0

    def images(self):
        return self.shifted.images

    def sample(self, model, probs):
        self.total = self.total + probs

    def finish(self, model, states, cycles, each, ex, ey):
        probs = self.total / len(states)
        metrics = {f"shift_{k}": v for k, v in classification_metrics(probs, self.shifted.labels).items()}
        return metrics | {"shift_set": self.shifted.name}, {"shift_probs": probs.half(),
                                                           "shift_labels": self.shifted.labels,
                                                           "shift_cell": self.shifted.cell}


EVALUATIONS: tuple[type[Evaluation], ...] = (SampleDiagnostics, Displacement, ShiftedSet)


def hooks(profile: Profile, p: "RunSpec", prior: Prior | None) -> list[Evaluation]:
    """The evaluation hooks of run ``p``, in :data:`EVALUATIONS`' order."""
    return [h(profile, p, prior) for h in EVALUATIONS if h.applies(p)]


def displacement(model: nn.Module, learned: LowRankGaussianPrior) -> tuple[float, float]:
    """(||theta - mu||, ||P_U (theta - mu)||) of the model's backbone (the learned prior's block of the flat
    parameter vector)."""
    theta = flat_params(model)[:learned.dim].double()
    return float((theta - learned.mean.double()).norm()), learned.low_rank_displacement(theta)


@functools.lru_cache(maxsize=2)
def _shift_set(profile: Profile) -> ShiftSet:
    return shift_set(profile)
